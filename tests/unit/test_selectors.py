"""The top_k and random span selectors on real tokenizer offsets."""

import numpy as np
from helpers import assert_well_formed

from axolotl_decselfmask.stage1.selectors import (
    hysteresis,
    random_like_relevance,
    top_k,
)
from axolotl_decselfmask.stage1.spans import SpanSettings

TEXT = ("A 71-year-old man with dilated cardiomyopathy and complete heart block received a dual-chamber "
        "pacemaker. He has type 2 diabetes treated with metformin and reports no chest pain.")


def _scores(tok, seed):
    offsets = tok(TEXT, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return np.random.default_rng(seed).normal(size=len(offsets)), offsets


def test_top_k_keeps_about_the_ratio_of_tokens(smollm_tok):
    scores, offsets = _scores(smollm_tok, 0)
    few = top_k(scores, offsets, TEXT, SpanSettings(top_k_ratio=0.1, sigma=0.0, max_span_fraction=1.0), None)
    many = top_k(scores, offsets, TEXT, SpanSettings(top_k_ratio=0.4, sigma=0.0, max_span_fraction=1.0), None)
    assert_well_formed(few, TEXT)
    assert_well_formed(many, TEXT)
    assert 0 < sum(e - s for s, e in few) < sum(e - s for s, e in many)
    # the single highest-scoring token is inside a chosen span
    best = offsets[int(np.argmax(np.abs(scores)))]
    assert any(s <= best[0] + (TEXT[best[0]] == " ") and best[1] <= e for s, e in few)


def test_random_spans_copy_count_and_lengths_not_places(smollm_tok):
    settings = SpanSettings(rescale_after_smoothing=True)
    for seed in range(5):
        _, offsets = _scores(smollm_tok, seed)
        scores = np.zeros(len(offsets))  # a few peaks, as real relevance has
        peaks = np.random.default_rng(seed).choice(len(offsets), size=3, replace=False)
        scores[peaks] = [1.0, 0.8, 0.9]
        guided = hysteresis(scores, offsets, TEXT, settings, None)
        a = random_like_relevance(scores, offsets, TEXT, settings, np.random.default_rng(seed))
        b = random_like_relevance(scores, offsets, TEXT, settings, np.random.default_rng(seed))
        assert a == b  # seeded
        assert 0 < len(guided) and 0 < len(a) <= len(guided)
        assert all(TEXT[s:e].strip() == TEXT[s:e] and e - s > 0 for s, e in a)
        assert all(e0 < s1 for (_, e0), (s1, _) in zip(a, a[1:]))
        # random spans grow word by word until they reach a guided span's length
        lengths = sorted(e - s for s, e in guided)
        assert sorted(e - s for s, e in a)[-1] >= min(lengths)
