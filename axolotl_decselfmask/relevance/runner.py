"""Relevance of many prompts: length-bucketed batches, items of a text together, out-of-memory back-off,
and the items scored for each text."""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np
import torch

from axolotl_decselfmask.relevance.prompt import RelevancePrompt, shared_prefix_key

LOG = logging.getLogger(__name__)


def iter_batches(prompts: list[RelevancePrompt], batch_size: int, by_text: bool = False) -> Iterator[list[int]]:
    """Indices of ``prompts`` in batches of similar length (less padding), in a fixed order.

    ``by_text``: a batch holds ``batch_size`` texts with all of their items (prompts that
    share every token before the item), for methods that share work between the items of a
    text (:attr:`..methods.base.RelevanceMethod.scores_items_together`). With one item per
    text both give the same batches.
    """
    if not by_text:
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i].input_ids), i))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]
        return
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(shared_prefix_key(p), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (max(len(prompts[i].input_ids) for i in g), g[0]))
    for start in range(0, len(ordered), batch_size):
        yield [i for g in ordered[start : start + batch_size] for i in g]


def compute_relevance(
    method, prompts: list[RelevancePrompt], batch_size: int, progress=None
) -> list[np.ndarray]:
    """Relevance of every prompt, batched by length; results in the input order.

    ``batch_size`` counts texts: a method that scores the items of a text together gets all
    the items of each text of the batch in one call (see :func:`iter_batches`).
    A call that runs out of accelerator memory is retried with half as many prompts (the halves
    give the same values: prompts are independent), and the size that fitted is kept for the rest
    of the pass, as ``accelerate.utils.find_executable_batch_size`` keeps it: every later batch is
    cut to it, never tried at the size that failed.
    """
    results: list[np.ndarray | None] = [None] * len(prompts)
    by_text = bool(getattr(method, "scores_items_together", False))
    limit = BatchLimit()
    for batch in iter_batches(prompts, batch_size, by_text):
        for index, rel in zip(batch, attribute_within(method, [prompts[i] for i in batch], limit)):
            results[index] = rel
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]


class BatchLimit:
    """The most prompts per call that fitted in memory in this pass (None: no call has run out yet)."""

    def __init__(self) -> None:
        self.size: int | None = None


def attribute_within(method, prompts: list[RelevancePrompt], limit: BatchLimit) -> list[np.ndarray]:
    """``method.attribute`` over ``prompts`` in calls of at most ``limit.size`` prompts; on
    out-of-memory the size is halved, for this call and every later one."""
    out: list[np.ndarray] = []
    start = 0
    while start < len(prompts):
        size = min(limit.size or len(prompts), len(prompts) - start)
        try:
            out += method.attribute(prompts[start : start + size])
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size == 1:
                raise torch.OutOfMemoryError(
                    f"decselfmask: one prompt of {len(prompts[start].input_ids)} tokens does not fit in memory for "
                    "relevance; lower sequence_len, or set decselfmask.relevance.load_in_4bit: true"
                ) from None
            limit.size = size // 2
            LOG.warning("decselfmask: out of memory with %d prompts per call; %d from now on in this pass",
                        size, limit.size)
            continue
        start += size
    return out


def items_for_texts(n_texts: int, items: list[str], per_text: int, seed: int) -> list[list[str]]:
    """The task items scored for each text: ``per_text`` distinct items drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    k = min(per_text, len(items))
    if k == len(items):
        return [list(items) for _ in range(n_texts)]
    return [[items[j] for j in sorted(rng.choice(len(items), size=k, replace=False))] for _ in range(n_texts)]
