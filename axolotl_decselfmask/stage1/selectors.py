"""Span selectors: relevance scores of one text -> character spans to mask.

Signature of a selector: ``selector(scores, offsets, text, settings, rng) -> list[(start, end)]``
(sorted, disjoint, word-aligned). Other packages add selectors through the
``decselfmask_span_selectors`` hook (see :mod:`.hookspecs`).
"""

from __future__ import annotations

import re

import numpy as np

from axolotl_decselfmask.stage1.spans import (
    SpanSettings,
    gaussian_smooth,
    normalise,
    select_spans,
    widen_to_words,
)


def hysteresis(scores, offsets, text, settings: SpanSettings, rng: np.random.Generator):
    """The method's selector: normalise, smooth, hysteresis, widen to words."""
    return select_spans(scores, offsets, text, settings)


def top_k(scores, offsets, text, settings: SpanSettings, rng: np.random.Generator):
    """The ``settings.top_k_ratio`` share of text tokens with the highest smoothed scores,
    grouped into runs and widened to words."""
    smooth = gaussian_smooth(normalise(scores, settings.sign), settings.sigma, settings.truncate)
    k = max(1, int(round(settings.top_k_ratio * len(smooth))))
    if not smooth.any():
        return []
    chosen = np.zeros(len(smooth), dtype=bool)
    chosen[np.argsort(-smooth, kind="stable")[:k]] = True
    runs, start = [], None
    for i, on in enumerate(list(chosen) + [False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append((start, i))
            start = None
    spans = widen_to_words(runs, offsets, text)
    limit = settings.max_span_fraction * len(text)
    return [(s, e) for s, e in spans if e - s <= limit]


def random_like_relevance(scores, offsets, text, settings: SpanSettings, rng: np.random.Generator):
    """As many spans, of the same character lengths, as :func:`hysteresis` would choose,
    placed at random word-aligned positions (no overlap)."""
    lengths = [e - s for s, e in select_spans(scores, offsets, text, settings)]
    words = [m.span() for m in re.finditer(r"\S+", text)]
    spans: list[tuple[int, int]] = []
    for length in sorted(lengths, reverse=True):
        for _ in range(50):  # a few tries; a span that fits nowhere is dropped
            first = last = int(rng.integers(len(words)))
            while last + 1 < len(words) and words[last][1] - words[first][0] < length:
                last += 1
            start, end = words[first][0], words[last][1]
            if all(end < s or start > e for s, e in spans):
                spans.append((start, end))
                break
    return sorted(spans)


BUILTIN_SELECTORS = {"hysteresis": hysteresis, "top_k": top_k, "random": random_like_relevance}
