"""Turn per-token relevance scores into character spans of a text.

DecSelfMask masks the parts of a training text that the model found most relevant. The
attribution step yields one score per token; this module turns those scores into
half-open character spans of the original text:

1. :func:`normalise` -- ``|r| / max|r|`` so thresholds are scale free and sign blind;
2. :func:`gaussian_smooth` -- spread relevance to neighbouring tokens so that a relevant
   word split into several sub-word tokens forms one run;
3. :func:`hysteresis_spans` -- keep runs above a low threshold that reach a high one;
4. :func:`widen_to_words` -- map token runs to characters through the tokenizer's offset
   mapping and widen them to whole words, so a mask never cuts a word in half.

:func:`select_spans` chains the four steps under a :class:`SpanSettings`.

Only the offset mapping and the text are used -- never token strings -- so the code is the
same for byte-level BPE ("Ġ" spaces), WordPiece ("##" continuations), SentencePiece or
character tokenizers. Offsets may or may not include a token's leading space; spans are
stripped of surrounding whitespace either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = [
    "Span",
    "SpanSettings",
    "gaussian_smooth",
    "hysteresis_spans",
    "normalise",
    "select_spans",
    "widen_to_words",
]

Span = tuple[int, int]
"""A half-open ``(start, end)`` interval: token indices or character indices."""

# Characters that join two word characters into one word ("patient's", "beta-blocker").
_JOINERS = frozenset("'-\u2019\u2010\u2011")


def _as_1d_float(scores: Any, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a new 1-D float64 array, rejecting NaN and infinities.

    Accepts sequences, numpy arrays and (CPU or GPU, any dtype, with or without grad)
    torch tensors without importing torch.
    """
    if hasattr(scores, "detach"):  # torch.Tensor: bfloat16 has no numpy dtype
        scores = scores.detach().float().cpu().numpy()
    arr = np.array(scores, dtype=np.float64)  # always a copy
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per token), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = []
        if np.isnan(arr).any():
            bad.append(f"{int(np.isnan(arr).sum())} NaN")
        if np.isinf(arr).any():
            bad.append(f"{int(np.isinf(arr).sum())} infinite")
        raise ValueError(f"{name} contain {' and '.join(bad)} value(s); relevance scores must be finite")
    return arr


SIGNS = ("absolute", "positive")


def normalise(scores: Any, sign: str = "absolute") -> np.ndarray:
    """Scale relevance scores to ``[0, 1]`` by their largest value.

    Args:
        scores: one relevance score per token (1-D sequence, array or tensor).
        sign: ``"absolute"``: the sign is ignored, strongly negative relevance counts as
            relevant (``|r| / max|r|``, the authors' scripts); ``"positive"``: only relevance
            that raises the target counts (``max(r, 0) / max(r)``; negative tokens get 0).

    Returns:
        The scaled scores as a new float64 array. An all-zero (or empty) input, or with
        ``"positive"`` one without a positive score, gives all zeros.

    Raises:
        ValueError: if the input is not 1-D or holds NaN or infinite values, or ``sign`` is
            unknown.
    """
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    raw = _as_1d_float(scores)
    arr = np.abs(raw) if sign == "absolute" else np.clip(raw, 0.0, None)
    peak = arr.max() if arr.size else 0.0
    if peak == 0.0:
        return np.zeros_like(arr)
    return arr / peak


def _gaussian_kernel(sigma: float, radius: int) -> np.ndarray:
    """Normalised Gaussian weights for offsets ``-radius..radius`` (as SciPy builds them)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 / (sigma * sigma) * x * x)
    return weights / weights.sum()


def gaussian_smooth(scores: Any, sigma: float = 1.0, truncate: float = 1.0) -> np.ndarray:
    """Smooth a score sequence with a 1-D Gaussian kernel.

    Same result as ``scipy.ndimage.gaussian_filter1d(scores, sigma, mode="reflect",
    truncate=truncate)``: the kernel radius is ``int(truncate * sigma + 0.5)`` and the
    sequence is extended by mirroring it about its edges, edge value repeated (``d c b a |
    a b c d | d c b a``), as often as the kernel needs.

    At sigma 1 the default ``truncate=1.0`` gives 3 taps (weights 0.274, 0.452, 0.274: the
    kernel of the authors' scripts), ``truncate=4.0`` (scipy's default) 9 taps (centre 0.399).

    Args:
        scores: 1-D scores.
        sigma: standard deviation of the kernel in tokens; ``0`` returns a copy.
        truncate: kernel radius in standard deviations (scipy's meaning).

    Returns:
        A new float64 array of the same length.

    Raises:
        ValueError: for a negative or non-finite ``sigma`` or ``truncate``, or bad ``scores``.
    """
    arr = _as_1d_float(scores)
    sigma, truncate = float(sigma), float(truncate)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if not np.isfinite(truncate) or truncate < 0:
        raise ValueError(f"truncate must be a finite number >= 0, got {truncate}")
    radius = int(truncate * sigma + 0.5)
    if sigma == 0 or radius == 0 or arr.size == 0:
        return arr
    weights = _gaussian_kernel(sigma, radius)
    # numpy's "symmetric" pad is scipy's "reflect"; numpy repeats it for wide pads.
    padded = np.pad(arr, radius, mode="symmetric")
    return np.convolve(padded, weights, mode="valid")


def hysteresis_spans(scores: Any, high: float = 0.4, low: float = 0.2) -> list[Span]:
    """Find token runs by hysteresis thresholding.

    A span is a maximal run of consecutive positions whose score is strictly above
    ``low`` that holds at least one position strictly above ``high``: a strong peak
    seeds a span, which then grows in both directions while the score stays above the
    weak threshold.

    Args:
        scores: 1-D scores (normally normalised and smoothed).
        high: seed threshold.
        low: growth threshold; ``high == low`` gives plain thresholding.

    Returns:
        Half-open token-index spans, sorted and non-overlapping (separated by at least
        one position at or below ``low``).

    Raises:
        ValueError: if ``high < low`` or the scores are not finite and 1-D.
    """
    if high < low:
        raise ValueError(f"high ({high}) must be >= low ({low})")
    arr = _as_1d_float(scores)
    above_low = arr > low
    above_high = arr > high
    spans: list[Span] = []
    # Run boundaries: where above_low switches on (starts) and off (ends).
    edges = np.diff(np.concatenate(([0], above_low.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    for start, end in zip(starts.tolist(), ends.tolist()):
        if above_high[start:end].any():
            spans.append((start, end))
    return spans


def _is_word_char(text: str, i: int) -> bool:
    """Whether ``text[i]`` belongs to a word.

    Letters, digits and ``_`` always do; an apostrophe or hyphen does only between two
    such characters ("patient's", "beta-blocker"), never at a word's edge ("pacemaker's'").
    """
    ch = text[i]
    if ch.isalnum() or ch == "_":
        return True
    if ch in _JOINERS and 0 < i < len(text) - 1:
        before, after = text[i - 1], text[i + 1]
        return (before.isalnum() or before == "_") and (after.isalnum() or after == "_")
    return False


def _strip(text: str, start: int, end: int) -> Span:
    """Shrink ``[start, end)`` past whitespace at both ends (may become empty)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _widen(text: str, start: int, end: int) -> Span:
    """Grow ``[start, end)`` so neither edge falls strictly inside a word.

    An edge moves only when the characters on both of its sides are word characters, so a
    span that already starts or ends at a word boundary (e.g. on punctuation) keeps it:
    a span ", and" does not swallow the word before the comma.
    """
    if start < end:
        if _is_word_char(text, start):
            while start > 0 and _is_word_char(text, start - 1):
                start -= 1
        if _is_word_char(text, end - 1):
            while end < len(text) and _is_word_char(text, end):
                end += 1
    return start, end


def _merge(spans: list[Span]) -> list[Span]:
    """Sort spans and merge those that overlap or touch (``end == start``)."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def _char_extent(offset: Sequence[int], text_len: int) -> Span | None:
    """A token's ``(start, end)`` clipped to the text, or ``None`` if it covers nothing."""
    start, end = int(offset[0]), int(offset[1])
    start, end = max(start, 0), min(end, text_len)
    if end <= start:
        return None
    return start, end


def widen_to_words(
    token_spans: list[Span], offsets: Sequence[Sequence[int]], text: str
) -> list[Span]:
    """Map token-index spans to whole-word character spans of ``text``.

    For each token span the character extent of its tokens is taken from ``offsets``,
    widened so that neither edge cuts a word (see :func:`_is_word_char` for what a word
    character is; an edge already on a word boundary, such as a space or punctuation,
    stays put), and stripped of surrounding whitespace (byte-level BPE offsets often
    include a token's leading space). Spans that then overlap or touch
    (``end == start``) are merged; spans separated by whitespace only stay separate.

    Args:
        token_spans: half-open token-index spans, e.g. from :func:`hysteresis_spans`.
        offsets: ``offsets[i] = (char_start, char_end)`` of token ``i`` inside ``text``,
            as given by a fast tokenizer's ``return_offsets_mapping=True`` (shifted to
            index ``text`` if the text was tokenised inside a prompt). Tokens with empty
            offsets -- ``(0, 0)`` for special tokens -- are ignored, as are the parts of
            offsets outside ``[0, len(text)]``.
        text: the text the offsets index into.

    Returns:
        Sorted, non-overlapping, non-empty half-open character spans.

    Raises:
        ValueError: if a token span is empty, reversed, or reaches past ``offsets``.
    """
    n_tokens = len(offsets)
    char_spans: list[Span] = []
    for tok_start, tok_end in token_spans:
        if not 0 <= tok_start < tok_end <= n_tokens:
            raise ValueError(
                f"token span ({tok_start}, {tok_end}) is empty or outside the "
                f"{n_tokens} tokens of the offset mapping"
            )
        extents = [e for e in (_char_extent(offsets[i], len(text)) for i in range(tok_start, tok_end)) if e]
        if not extents:
            continue
        # Widening never crosses whitespace, so a leading space in the offsets is harmless.
        start, end = _widen(text, min(s for s, _ in extents), max(e for _, e in extents))
        start, end = _strip(text, start, end)
        if start < end:
            char_spans.append((start, end))
    return _merge(char_spans)


@dataclass(frozen=True)
class SpanSettings:
    """How :func:`select_spans` turns token scores into character spans.

    Attributes:
        sigma: Gaussian smoothing width in tokens (``0`` disables smoothing).
        truncate: kernel radius in sigmas, as scipy's ``truncate`` (radius ``int(truncate *
            sigma + 0.5)``): ``1.0`` gives the authors' 3 taps at sigma 1, ``4.0`` 9 taps.
        high: hysteresis seed threshold on the normalised, smoothed scores.
        low: hysteresis growth threshold (``<= high``).
        max_spans: keep at most this many token spans -- those with the highest peak
            smoothed score, ties going to the earlier span -- before widening;
            ``None`` keeps all. Widening can merge spans, so fewer may come back.
        max_span_fraction: a character span (after widening and merging) longer than
            this fraction of ``len(text)`` is dropped: masking most of a text teaches
            nothing. ``1.0`` keeps everything.
        rescale_after_smoothing: divide the smoothed scores by their maximum again.
            Smoothing lowers isolated peaks: at sigma 1 a lone 1 becomes ~0.45 with 3 taps
            (still above the default ``high``, so it seeds a span) but ~0.40 with 9 taps
            (``truncate=4``: it does not). True lets the single most relevant token always
            seed a span.
        sign: how :func:`normalise` treats the sign of the relevance: ``"absolute"``
            (``|r|``) or ``"positive"`` (``max(r, 0)``).
    """

    sigma: float = 1.0
    truncate: float = 1.0
    high: float = 0.4
    low: float = 0.2
    max_spans: int | None = None
    max_span_fraction: float = 0.5
    rescale_after_smoothing: bool = False
    top_k_ratio: float = 0.15
    sign: str = "absolute"

    def __post_init__(self) -> None:
        if self.sign not in SIGNS:
            raise ValueError(f"sign must be one of {SIGNS}, got {self.sign!r}")
        if not np.isfinite(self.sigma) or self.sigma < 0:
            raise ValueError(f"sigma must be a finite number >= 0, got {self.sigma}")
        if not np.isfinite(self.truncate) or self.truncate < 0:
            raise ValueError(f"truncate must be a finite number >= 0, got {self.truncate}")
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        if self.max_spans is not None and self.max_spans < 0:
            raise ValueError(f"max_spans must be None or >= 0, got {self.max_spans}")
        if not 0 < self.max_span_fraction <= 1:
            raise ValueError(f"max_span_fraction must be in (0, 1], got {self.max_span_fraction}")


def select_spans(
    scores: Any,
    offsets: Sequence[Sequence[int]],
    text: str,
    settings: SpanSettings = SpanSettings(),
) -> list[Span]:
    """Choose the character spans of ``text`` to mask from per-token relevance.

    Pipeline: :func:`normalise` (``settings.sign``) -> :func:`gaussian_smooth` (optionally scaled to peak 1
    again, ``settings.rescale_after_smoothing``) -> :func:`hysteresis_spans` -> keep the ``settings.max_spans`` spans with the highest peak smoothed score ->
    :func:`widen_to_words` -> drop spans longer than ``settings.max_span_fraction`` of
    the text.

    Tokens that cover no character of ``text`` (special tokens with ``(0, 0)`` offsets,
    prompt tokens shifted before the text) get score 0 before normalising, so that a
    large score on, e.g., a BOS token cannot dwarf the text's own scores.

    Args:
        scores: one relevance score per token (its sign treated as ``settings.sign``).
        offsets: the tokenizer offset mapping, one ``(char_start, char_end)`` per token.
        text: the text the offsets index into.
        settings: thresholds and limits.

    Returns:
        Sorted, non-overlapping, non-empty, word-aligned character spans; empty if all
        scores are zero.

    Raises:
        ValueError: if ``scores`` and ``offsets`` differ in length or scores are not finite.
    """
    raw = _as_1d_float(scores)
    if len(raw) != len(offsets):
        raise ValueError(f"{len(raw)} scores but {len(offsets)} offsets; need one score per token")
    in_text = np.array([_char_extent(o, len(text)) is not None for o in offsets], dtype=bool)
    raw[~in_text] = 0.0
    norm = normalise(raw, settings.sign)
    if not norm.any():
        return []
    smooth = gaussian_smooth(norm, settings.sigma, settings.truncate)
    if settings.rescale_after_smoothing:
        smooth = normalise(smooth)
    token_spans = hysteresis_spans(smooth, settings.high, settings.low)
    if settings.max_spans is not None and len(token_spans) > settings.max_spans:
        by_peak = sorted(
            range(len(token_spans)),
            key=lambda k: -smooth[token_spans[k][0] : token_spans[k][1]].max(),
        )  # sorted() is stable: ties keep position order
        token_spans = sorted(token_spans[k] for k in by_peak[: settings.max_spans])
    char_spans = widen_to_words(token_spans, offsets, text)
    limit = settings.max_span_fraction * len(text)
    return [(s, e) for s, e in char_spans if e - s <= limit]
