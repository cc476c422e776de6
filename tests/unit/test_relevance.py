"""Gradient x input: finite-difference check on a tiny model; real-model behaviour on SmolLM2."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.relevance import (
    build_relevance_prompt,
    compute_relevance,
    items_for_texts,
)
from axolotl_decselfmask.relevance.methods import GradientXInput

LEAD_IN = "Which clinical finding does the text above describe?"
TEXT = (
    "A 71-year-old man with dilated cardiomyopathy and complete heart block received a "
    "dual-chamber pacemaker. He has type 2 diabetes treated with metformin."
)


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float64)
    model.eval().requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_llama):
    """A float64 GPT-2: Llama's RMSNorm computes in float32, which drowns a finite
    difference in rounding noise, while GPT-2 runs in float64 end to end."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=512)
    model = GPT2LMHeadModel(config).double().eval().requires_grad_(False)
    return model, tok


@pytest.mark.parametrize("target", ["sum_logprob", "token_logit"])
def test_grad_x_input_matches_finite_differences(tiny_gpt2, target):
    """Each relevance value equals a central finite difference of the target."""
    model, tok = tiny_gpt2
    method = GradientXInput(model, tok, target=target)
    prompt = build_relevance_prompt(tok, TEXT[:60], "Presence of pacemaker", LEAD_IN)
    ids = torch.tensor([prompt.input_ids])
    emb = model.get_input_embeddings()(ids).detach()

    def target_value(e):
        logits = model(inputs_embeds=e, use_cache=False).logits[0]
        pos = method.scored_positions(prompt)
        if target == "sum_logprob":
            lp = logits.log_softmax(-1)
            return sum(lp[q - 1, prompt.input_ids[q]] for q in pos)
        return logits[pos[0] - 1, prompt.input_ids[pos[0]]]

    rel = method.attribute([prompt])[0]
    assert rel.shape == (len(prompt.text_positions),)
    assert np.abs(rel).max() > 0
    # Relevance at a token is d(target)/d(scale) of that token's embedding at scale 1,
    # i.e. sum_k e_k * g_k: compare with a central difference in the scale.
    for j in range(len(prompt.text_positions)):
        pos = prompt.text_positions[j]
        h = 1e-6
        up, down = emb.clone(), emb.clone()
        up[0, pos] *= 1 + h
        down[0, pos] *= 1 - h
        fd = (target_value(up) - target_value(down)).item() / (2 * h)
        assert rel[j] == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_batched_equals_one_by_one_with_padding(tiny):
    model, tok = tiny
    method = GradientXInput(model, tok)
    prompts = [build_relevance_prompt(tok, t, item, LEAD_IN) for t, item in [
        (TEXT, "Presence of pacemaker"), (TEXT[:50], "Presence of diabetes"), (TEXT[:90], "heart block")]]
    batched = compute_relevance(method, prompts, batch_size=3)
    for p, b in zip(prompts, batched):
        single = method.attribute([p])[0]
        np.testing.assert_allclose(b, single, rtol=1e-6, atol=1e-9)


def test_score_uses_no_label_and_attribute_changes_no_weights(tiny):
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    GradientXInput(model, tok).attribute([build_relevance_prompt(tok, TEXT, "pacemaker", LEAD_IN)])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def _corr(a, b):
    return float(np.corrcoef(np.abs(a), np.abs(b))[0, 1])


def test_different_items_give_different_maps_on_real_model(smollm_model, smollm_tok):
    """Default target: two items give different maps; the paper's middle-token logit does not."""
    items = ["Presence of pacemaker", "Presence of diabetes"]
    prompts = [build_relevance_prompt(smollm_tok, TEXT, it, LEAD_IN) for it in items]
    default = GradientXInput(smollm_model, smollm_tok).attribute(prompts)
    middle = GradientXInput(smollm_model, smollm_tok, target="token_logit", token_position="middle")
    mids = middle.attribute(prompts)
    # The middle token of both items is the same shared token ("ence" or " of") ...
    toks = [[smollm_tok.decode([p.input_ids[i]]) for i in p.item_positions] for p in prompts]
    assert toks[0][(len(toks[0]) - 1) // 2] == toks[1][(len(toks[1]) - 1) // 2]
    # ... and everything before it is identical, so its maps are identical.
    np.testing.assert_allclose(mids[0], mids[1], rtol=1e-4, atol=1e-6)
    # The summed log-probability of the whole item sees the item's last word.
    assert not np.allclose(default[0], default[1], rtol=1e-2, atol=1e-4)
    assert _corr(default[0], default[1]) < 0.999


def test_items_for_texts_is_seeded_and_distinct():
    items = [f"item {i}" for i in range(10)]
    a = items_for_texts(50, items, 3, seed=1)
    assert a == items_for_texts(50, items, 3, seed=1)
    assert a != items_for_texts(50, items, 3, seed=2)
    assert all(len(set(x)) == 3 for x in a)
    assert items_for_texts(2, items[:2], 5, seed=0) == [items[:2], items[:2]]


def test_out_of_memory_splits_the_batch_and_gives_the_same_values(tiny):
    """Fault injection: a method that runs out of memory above 1 prompt per batch."""
    model, tok = tiny

    class SmallMemory(GradientXInput):
        calls = []

        def attribute(self, prompts):
            self.calls.append(len(prompts))
            if len(prompts) > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().attribute(prompts)

    prompts = [build_relevance_prompt(tok, TEXT[: 40 + 10 * k], "pacemaker", LEAD_IN) for k in range(4)]
    method = SmallMemory(model, tok)
    got = compute_relevance(method, prompts, batch_size=4)
    assert method.calls == [4, 2, 1, 1, 1, 1]  # 4 fails, 2 fails, then ones: the size that fitted is kept
    ref = compute_relevance(GradientXInput(model, tok), prompts, batch_size=1)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_the_batch_size_that_fitted_is_kept_for_the_rest_of_the_pass(tiny, caplog):
    """A real out-of-memory error above 2 prompts per forward (a wrapper around the model's forward
    raises it): the runner halves once, and no later batch is tried at 4 again."""
    model, tok = tiny
    sizes = []
    forward = model.forward

    def small_memory_forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        rows = (ids if ids is not None else kwargs["inputs_embeds"]).shape[0]
        sizes.append(rows)
        if rows > 2:
            raise torch.OutOfMemoryError(f"CUDA out of memory: {rows} rows (simulated by the test's forward)")
        return forward(*args, **kwargs)

    prompts = [build_relevance_prompt(tok, TEXT[: 30 + 7 * k], "pacemaker", LEAD_IN) for k in range(12)]
    model.forward = small_memory_forward
    try:
        with caplog.at_level("WARNING"):
            got = compute_relevance(GradientXInput(model, tok), prompts, batch_size=4)
    finally:
        del model.forward
    assert sizes.count(4) == 1 and max(sizes[1:]) == 2  # one failure at 4, then never 4 again
    assert sum(s for s in sizes[1:]) == 12  # every prompt scored once after the failure
    assert [r.message for r in caplog.records if "out of memory" in r.message] == [
        "decselfmask: out of memory with 4 prompts per call; 2 from now on in this pass"]
    ref = compute_relevance(GradientXInput(model, tok), prompts, batch_size=1)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
