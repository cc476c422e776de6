"""Several items of one text scored together (shared prompt prefix) give the maps of scoring
each item on its own; the pipeline hands a text's items to the method together."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.relevance import (
    build_relevance_prompt,
    compute_relevance,
    iter_batches,
)
from axolotl_decselfmask.relevance.methods import GradientXInput

LEAD_IN = "Which clinical finding does the text above describe?"
TEXT = (
    "A 71-year-old man with dilated cardiomyopathy and complete heart block received a "
    "dual-chamber pacemaker. He has type 2 diabetes treated with metformin."
)
ITEMS = ["Presence of pacemaker", "Presence of diabetes", "heart block", "neoplasms", "x"]
TARGETS = [("sum_logprob", "middle"), ("token_logit", "middle"), ("token_logit", "last"), ("max_logit", "middle"),
           ("max_logit", "last")]


@pytest.fixture(scope="module")
def tiny_models(tiny_llama):
    """float64 Llama and GPT-2 (two attention and cache layouts), with SmolLM2's tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    llama = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float64).eval().requires_grad_(False)
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=512))
    return {"llama": llama, "gpt2": gpt2.double().eval().requires_grad_(False)}, tok


def _prompts(tok, text=TEXT, items=ITEMS):
    return [build_relevance_prompt(tok, text, item, LEAD_IN) for item in items]


def _max_rel_diff(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("target,position", TARGETS)
def test_shared_prefix_equals_separate_scorings_float64(tiny_models, family, target, position):
    models, tok = tiny_models
    method = GradientXInput(models[family], tok, target=target, token_position=position)
    prompts = _prompts(tok)
    shared = method.attribute_shared_prefix(prompts)
    assert shared is not None  # the shared path ran (plain cache layers)
    separate = [method.attribute([p])[0] for p in prompts]
    for p, s, r in zip(prompts, shared, separate):
        assert s.shape == (len(p.text_positions),) and np.abs(r).max() > 0
        np.testing.assert_allclose(s, r, rtol=1e-6, atol=1e-12)
    # attribute() takes the same path for prompts of one text
    for a, r in zip(method.attribute(prompts), separate):
        np.testing.assert_allclose(a, r, rtol=1e-6, atol=1e-12)
    # and the items still differ from each other (each got its own backward pass)
    if target == "sum_logprob":
        assert not np.allclose(shared[0], shared[2])


@pytest.mark.parametrize("target", ["sum_logprob", "token_logit"])
def test_shared_prefix_equals_separate_scorings_on_smollm2(smollm_model, smollm_tok, target):
    """float32 on the real model: as close as a padded batch is to one-by-one scoring."""
    method = GradientXInput(smollm_model, smollm_tok, target=target)
    prompts = _prompts(smollm_tok, items=ITEMS[:4])
    shared = method.attribute_shared_prefix(prompts)
    assert shared is not None
    separate = [method.attribute([p])[0] for p in prompts]
    for s, r in zip(shared, separate):
        assert _max_rel_diff(s, r) < 2e-3
        assert np.corrcoef(s, r)[0, 1] > 0.99999
    if target == "sum_logprob":  # the items' maps differ, the shared path kept them apart
        assert _max_rel_diff(shared[0], shared[1]) > 1e-2


def test_mixed_texts_and_singletons_in_one_call(tiny_models):
    """One call with two texts of 3 and 1 items (in shuffled order) and a text of 2."""
    models, tok = tiny_models
    method = GradientXInput(models["llama"], tok)
    pairs = [(TEXT, "neoplasms"), (TEXT[:60], "heart block"), (TEXT, "diabetes"), (TEXT[:90], "x"),
             (TEXT, "Presence of pacemaker"), (TEXT[:90], "y z")]
    prompts = [build_relevance_prompt(tok, t, it, LEAD_IN) for t, it in pairs]
    got = method.attribute(prompts)
    for p, g in zip(prompts, got):
        np.testing.assert_allclose(g, method.attribute([p])[0], rtol=1e-6, atol=1e-12)


def test_sliding_window_cache_falls_back_to_a_padded_batch():
    """A model whose cache is not plain (sliding-window layers) is scored without sharing."""
    from conftest import require_smollm
    from transformers import MistralConfig, MistralForCausalLM

    tok = AutoTokenizer.from_pretrained(require_smollm())
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=16)
    model = MistralForCausalLM(config).double().eval().requires_grad_(False)
    method = GradientXInput(model, tok)
    prompts = _prompts(tok, items=ITEMS[:3])
    assert method.attribute_shared_prefix(prompts) is None
    for a, p in zip(method.attribute(prompts), prompts):
        np.testing.assert_allclose(a, method.attribute([p])[0], rtol=1e-6, atol=1e-12)


def test_prompts_of_different_texts_are_refused(tiny_models):
    models, tok = tiny_models
    prompts = [build_relevance_prompt(tok, TEXT, "x", LEAD_IN), build_relevance_prompt(tok, TEXT[:50], "x", LEAD_IN)]
    with pytest.raises(ValueError, match="do not share"):
        GradientXInput(models["llama"], tok).attribute_shared_prefix(prompts)


def test_compute_relevance_hands_every_item_of_a_text_together(tiny_models):
    models, tok = tiny_models

    class Recording(GradientXInput):
        def attribute(self, prompts):
            self.calls.append(sorted({p.text for p in prompts}))
            return super().attribute(prompts)

    method = Recording(models["llama"], tok)
    method.calls = []
    texts = [TEXT, TEXT[:70], TEXT[:100]]
    pairs = [(t, it) for t in texts for it in ("neoplasms", "diabetes", "heart block")]
    prompts = [build_relevance_prompt(tok, t, it, LEAD_IN) for t, it in pairs]
    got = compute_relevance(method, prompts, batch_size=1)
    assert len(method.calls) == 3 and all(len(c) == 1 for c in method.calls)  # one text a call, all its items
    assert sorted(c[0] for c in method.calls) == sorted(texts)
    for p, g in zip(prompts, got):  # results in the input order
        np.testing.assert_allclose(g, GradientXInput(models["llama"], tok).attribute([p])[0], rtol=1e-6, atol=1e-12)
    # batch_size counts texts; a method without sharing keeps the old batches of prompts
    assert [len(b) for b in iter_batches(prompts, 2, by_text=True)] == [6, 3]
    assert [len(b) for b in iter_batches(prompts, 2)] == [2, 2, 2, 2, 1]
    # one item per text: both give the same batches
    single = prompts[::3]
    assert list(iter_batches(single, 2, by_text=True)) == list(iter_batches(single, 2))


def test_fast_backward_restores_the_precision_and_keeps_the_maps(smollm_model, smollm_tok):
    from axolotl_decselfmask.hardware import cpu_bf16_native, read_cpu_info

    if cpu_bf16_native(read_cpu_info(), measure=lambda: 1.0)[0]:
        pytest.skip("on a CPU with native bf16 (AMX) matmul precision 'medium' computes in bfloat16, so the maps "
                    "differ by bf16 rounding; fast_backward: auto is off there")
    prompts = _prompts(smollm_tok, items=ITEMS[:2])
    before = torch.get_float32_matmul_precision()
    default = GradientXInput(smollm_model, smollm_tok).attribute(prompts)
    fast = GradientXInput(smollm_model, smollm_tok, fast_backward=True)
    assert fast.fast_backward
    got = fast.attribute(prompts)
    assert torch.get_float32_matmul_precision() == before
    for a, b in zip(got, default):
        assert _max_rel_diff(a, b) < 1e-2 and np.corrcoef(a, b)[0, 1] > 0.9999
    assert not GradientXInput(smollm_model, smollm_tok).fast_backward


def test_precompute_with_several_items_matches_separate_scorings(tmp_path, tiny_llama):
    """The precompute (shards that cut a text's items apart included) stores the maps of
    scoring each (text, item) on its own."""
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.precompute import run_precompute

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    texts = [TEXT, TEXT[:80], TEXT[:120]]
    items = ["neoplasms", "diabetes", "heart block"]
    cfg = DecSelfMaskConfig(items=items, items_per_text=3,
                            relevance={"method": "grad_x_input", "batch_size": 2, "shard_size": 4, "dtype": "float32"},
                            spans={"high": 0.05, "low": 0.01, "max_span_fraction": 1.0})
    run_precompute(texts, cfg, tok, str(tiny_llama), tmp_path, progress=False)
    parts = sorted(tmp_path.glob("relevance-*/part-*.json"))
    assert len(parts) == 3  # 9 pairs, 4 a shard: the second shard holds items of two texts
    records = [r for part in parts for r in json.loads(part.read_text())["records"]]
    assert [(r["text_index"], r["item"]) for r in records] == [(i, it) for i in range(3) for it in items]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval().requires_grad_(False)
    method = GradientXInput(model, tok)
    for r in records:
        ref = method.attribute([build_relevance_prompt(tok, texts[r["text_index"]], r["item"], cfg.relevance.lead_in)])[0]
        np.testing.assert_allclose(r["scores"], ref, rtol=1e-4, atol=1e-7)  # stored rounded to 7 decimals
        assert np.abs(ref).max() > 1e-5


def test_fast_backward_auto_is_on_only_for_cpus_without_amx():
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.hardware import cpu_has_amx
    from axolotl_decselfmask.stage1.cache import fast_backward

    assert cpu_has_amx("processor : 0\nflags : fpu avx512f amx_bf16 amx_tile amx_int8\n")
    assert not cpu_has_amx("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n")
    assert cpu_has_amx("processor : 0\n")  # no flags line: unknown, stay exact
    auto = DecSelfMaskConfig(relevance={"device": "cpu"})
    assert auto.relevance.fast_backward == "auto"
    assert fast_backward(auto) == (not cpu_has_amx())
    assert fast_backward(DecSelfMaskConfig(relevance={"fast_backward": True}))
    assert not fast_backward(DecSelfMaskConfig(relevance={"device": "cpu", "fast_backward": False}))
