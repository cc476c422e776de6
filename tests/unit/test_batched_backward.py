"""``batched_backward``: the items of one note get their prefix gradients from one vectorised backward
pass (``is_grads_batched``) instead of one pass each; the maps are those of scoring each item alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import COMMON, FAMILIES
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.relevance import build_relevance_prompt, compute_relevance
from axolotl_decselfmask.relevance.methods import AttnLRP, GradientXInput

TEXT = ("A 71-year-old man with dilated cardiomyopathy and complete heart block received a "
        "dual-chamber pacemaker. He has type 2 diabetes treated with metformin.")
ITEMS = ["neoplasms", "heart block", "Presence of pacemaker", "diabetes"]


@pytest.mark.parametrize("cls", [GradientXInput, AttnLRP])
@pytest.mark.parametrize("target", ["sum_logprob", "max_logit"])
def test_batched_backward_gives_each_items_own_map(tiny_llama, cls, target):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float64).eval().requires_grad_(False)
    prompts = [build_relevance_prompt(tok, TEXT, item, "Which clinical finding does the text above describe?")
               for item in ITEMS]
    alone = [cls(model, tok, target).attribute([p])[0] for p in prompts]
    looped = compute_relevance(cls(model, tok, target, batched_backward=False), prompts, 4)
    method = cls(model, tok, target)
    assert method.batched_backward  # the default
    calls = []
    original = method._prefix_backward

    def spy(*args):
        calls.append(len(args[2][0]))
        return original(*args)

    method._prefix_backward = spy
    together = compute_relevance(method, prompts, 4)
    assert calls == [len(ITEMS)]  # the shared path ran, once, for every item
    for a, b, c in zip(together, alone, looped):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())
        np.testing.assert_allclose(c, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())
    if target == "sum_logprob":  # the items' maps differ, so no item's gradient went to another
        assert min(np.abs(alone[0] - m).max() for m in alone[1:]) > 1e-6 * np.abs(alone[0]).max()


class _ReadsItsGradient(torch.autograd.Function):
    """Identity whose backward looks at the gradient's value: that cannot be vectorised (vmap)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.0 if float(grad.abs().sum()) >= 0 else grad


def test_a_backward_that_cannot_be_vectorised_falls_back_to_one_pass_per_item(tiny_llama, caplog):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float64).eval().requires_grad_(False)
    prompts = [build_relevance_prompt(tok, TEXT, item, "Which finding?") for item in ITEMS]
    alone = [GradientXInput(model, tok).attribute([p])[0] for p in prompts]
    hook = model.model.layers[0].register_forward_hook(
        lambda module, args, out: (_ReadsItsGradient.apply(out[0]), *out[1:]) if isinstance(out, tuple)
        else _ReadsItsGradient.apply(out))
    try:
        method = GradientXInput(model, tok)
        with caplog.at_level("WARNING"):
            got = compute_relevance(method, prompts, 4)
    finally:
        hook.remove()
    assert not method.batched_backward and "cannot be vectorised" in caplog.text
    for a, b in zip(got, alone):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_vectorises_the_items_backward_with_the_same_maps(smollm_tok, family):
    """Tiny float64 models of every supported family: where the prefix is shared (plain caches), the
    vectorised backward runs (no fall-back) and gives each item's own map, for grad x input and AttnLRP."""
    kwargs = {**COMMON, **FAMILIES[family]}
    config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=len(smollm_tok),
                                  pad_token_id=smollm_tok.pad_token_id, eos_token_id=smollm_tok.eos_token_id, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).double().eval().requires_grad_(False)
    prompts = [build_relevance_prompt(smollm_tok, TEXT, item, "Which finding?") for item in ITEMS[:3]]
    for cls in (GradientXInput, AttnLRP):
        method = cls(model, smollm_tok)
        calls = []
        original = method._prefix_backward
        method._prefix_backward = lambda *args: calls.append(1) or original(*args)
        together = method.attribute(prompts)
        # vectorised (no fall-back), unless the cache cannot be shared (sliding-window layers: Gemma 2/3, Mistral)
        assert method.batched_backward and len(calls) == (0 if family in ("gemma2", "gemma3_text", "mistral") else 1)
        alone = [cls(model, smollm_tok).attribute([p])[0] for p in prompts]
        for got, ref in zip(together, alone):
            np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-10 * np.abs(ref).max())


def test_out_of_memory_in_the_vectorised_backward_goes_to_the_runners_back_off(tiny_llama, monkeypatch):
    """Running out of memory is not a reason to stop vectorising: the runner scores fewer items at once."""
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float64).eval().requires_grad_(False)
    prompts = [build_relevance_prompt(tok, TEXT, item, "Which finding?") for item in ITEMS]
    alone = [GradientXInput(model, tok).attribute([p])[0] for p in prompts]
    real_grad, sizes = torch.autograd.grad, []

    def grad(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            sizes.append(kwargs["grad_outputs"][0].shape[0])
            if sizes[-1] == len(ITEMS):  # all the items at once do not fit
                raise torch.OutOfMemoryError("out of memory (test)")
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    method = GradientXInput(model, tok)
    got = compute_relevance(method, prompts, 4)
    assert method.batched_backward and sizes == [4, 2, 2]
    for a, b in zip(got, alone):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())
