"""benchmarks/faithfulness.py: its deletions and controls delete what they claim (no model needed)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import ROOT
from helpers import data_rows


@pytest.fixture(scope="module")
def faith():
    spec = importlib.util.spec_from_file_location("faithfulness", ROOT / "benchmarks" / "faithfulness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through its module
    spec.loader.exec_module(module)
    return module


def test_controls_match_the_method_in_count_runs_and_deciles(faith):
    rng = np.random.default_rng(0)
    n = 157
    rel = rng.normal(size=n)
    for k in faith.KS:
        top = faith.top_tokens(rel, k)
        assert len(top) == faith.n_tokens(k, n) == round(k / 100 * n)
        assert set(top) == set(np.argsort(-np.abs(rel))[: len(top)])
        spans = faith.random_runs(n, faith.runs(top), np.random.default_rng(k))
        assert len(set(spans.tolist())) == len(top) and spans.min() >= 0 and spans.max() < n
        # the same run lengths, unless two placed runs happen to touch (then they read as one longer run)
        assert sum(faith.runs(spans)) == len(top) and len(faith.runs(spans)) <= len(faith.runs(top))
        deciles = faith.same_deciles(n, top, np.random.default_rng(k))
        assert Counter(faith.decile(i, n) for i in deciles) == Counter(faith.decile(i, n) for i in top)
        assert len(set(deciles.tolist())) == len(top)
    assert faith.runs(np.array([1, 2, 3, 7, 9, 10])) == [3, 1, 2]


def test_selection_follows_the_span_sign_and_the_default_is_the_plugins(faith):
    rel = np.array([0.5, -3.0, 2.0, -0.1, 1.0, 0.0, -2.5, 0.2, 0.3, 0.05])
    assert faith.top_tokens(rel, 20).tolist() == [1, 6]  # by |r|
    assert faith.top_tokens(rel, 20, "positive").tolist() == [2, 4]  # by r: what raises the target
    from axolotl_decselfmask.args import DecSelfMaskConfig

    rel_cfg = DecSelfMaskConfig().relevance
    assert faith.METHODS[faith.DEFAULT] == (rel_cfg.method, rel_cfg.target, rel_cfg.prompt_style)
    assert faith.span_sign_of("attnlrp") == "positive" and faith.span_sign_of("grad_x_input") == "absolute"
    assert faith.method_fp("f", "absolute") == "f" != faith.method_fp("f", "positive")


def test_mask_tokens_puts_one_mask_per_token_and_keeps_the_rest(faith, smollm_tok):
    text = data_rows("abstracts_test.jsonl", 1)[0]["text"]
    cut = faith.cut_to_tokens(smollm_tok, text, 40)
    assert text.startswith(cut) and text[len(cut)] in " .,;:" and len(cut) < len(text)
    offsets = smollm_tok(cut, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chosen = [0, 1, 5, 6, 7, 20]
    masked = faith.mask_tokens(cut, offsets, chosen)
    assert masked.count(faith.MASK) == len(chosen)
    assert masked.startswith(f"{faith.MASK} {faith.MASK} of duplex")  # "Current status of duplex ..."
    # removing the masks gives the text without the chosen tokens' characters (their leading spaces kept)
    gone = np.zeros(len(cut), dtype=bool)
    for i in chosen:
        s, e = offsets[i]
        gone[s + len(cut[s:e]) - len(cut[s:e].lstrip()): e] = True
    assert masked.replace(faith.MASK, "") == "".join(c for c, g in zip(cut, gone) if not g)
    assert " " + faith.MASK in masked  # a word-initial token keeps the space before it
    assert faith.is_stop_span("of the") and faith.is_stop_span(", and") and not faith.is_stop_span("the tumour")
