"""Masked-reconstruction examples: each span becomes one mask token; the answer is the span."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.stage1.spans import SpanSettings

Span = tuple[int, int]


@dataclass(frozen=True)
class MaskedExample:
    masked_text: str
    answer: str
    spans: tuple[Span, ...]  # character spans of the original text that were masked


def mask_text(text: str, spans: list[Span], mask_token: str) -> str:
    """``text`` with every span replaced by one ``mask_token`` (spans sorted, disjoint)."""
    pieces, cursor = [], 0
    for start, end in spans:
        if start < cursor or end <= start or end > len(text):
            raise ValueError(f"spans must be sorted, disjoint and inside the text; got {spans}")
        pieces.append(text[cursor:start])
        pieces.append(mask_token)
        cursor = end
    pieces.append(text[cursor:])
    return "".join(pieces)


def unmask(masked_text: str, answers: list[str], mask_token: str) -> str:
    """Inverse of :func:`mask_text`: put the answers back in order."""
    parts = masked_text.split(mask_token)
    if len(parts) != len(answers) + 1:
        raise ValueError("number of mask tokens and answers differ")
    out = [parts[0]]
    for answer, rest in zip(answers, parts[1:]):
        out.extend([answer, rest])
    return "".join(out)


def build_examples(
    text: str, spans: list[Span], mask_token: str, spans_per_example: int = 1, separator: str = "\n"
) -> list[MaskedExample]:
    """One example per span, or up to ``spans_per_example`` consecutive spans per example."""
    examples = []
    for start in range(0, len(spans), spans_per_example):
        group = spans[start : start + spans_per_example]
        answer = separator.join(text[s:e] for s, e in group)
        examples.append(MaskedExample(mask_text(text, group, mask_token), answer, tuple(group)))
    return examples


def span_settings(config: DecSelfMaskConfig) -> SpanSettings:
    s = config.spans
    return SpanSettings(
        sigma=s.sigma, truncate=s.truncate, high=s.high, low=s.low, max_spans=s.max_spans_per_text,
        max_span_fraction=s.max_span_fraction, rescale_after_smoothing=s.rescale_after_smoothing,
        top_k_ratio=s.top_k_ratio, sign=span_sign(config),
    )


def span_sign(config: DecSelfMaskConfig) -> str:
    """``spans.sign`` resolved: ``auto`` is ``positive`` for AttnLRP, ``absolute`` for the other methods
    (what the faithfulness benchmark measured best for each, docs/benchmark.md)."""
    if config.spans.sign != "auto":
        return config.spans.sign
    return "positive" if config.relevance.method == "attnlrp" else "absolute"


def usable_scores(scores) -> bool:
    """A record's relevance can give spans: present, finite and not all zero."""
    if scores is None:
        return False
    values = np.asarray(scores, dtype=np.float64)
    return values.size > 0 and bool(np.all(np.isfinite(values))) and bool(np.any(values))


def examples_of_record(text: str, rec: dict, config: DecSelfMaskConfig, select) -> tuple[list, list[dict]]:
    """The spans of one (text, item) relevance record and its masked example rows (the precompute's
    rule, also used by the inspector to recompute spans from the shards)."""
    rng = np.random.default_rng([config.seed, rec["text_index"], zlib.crc32(rec["item"].encode("utf-8"))])
    spans = select(np.asarray(rec["scores"], dtype=np.float64), [tuple(o) for o in rec["offsets"]], text,
                   span_settings(config), rng)
    m = config.masking
    if m.mask_token == "auto":  # prepare_pool sets the chosen token (mask_token.resolve_mask_setting)
        raise ValueError("masking.mask_token is still 'auto': resolve it with the tokenizer first")
    rows = [{"text_index": rec["text_index"], "item": rec["item"], "masked_text": ex.masked_text,
             "answer": ex.answer, "spans": [list(s) for s in ex.spans]}
            for ex in build_examples(text, spans, m.mask_token, m.spans_per_example, m.answer_separator)]
    return spans, rows
