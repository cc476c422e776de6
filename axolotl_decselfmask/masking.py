"""Masked-reconstruction examples: each span becomes one mask token; the answer is the span."""

from __future__ import annotations

from dataclasses import dataclass

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
