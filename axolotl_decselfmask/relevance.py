"""Self-relevance prompts, batching and model loading.

The model reads the text, then a lead-in question, and the assistant turn holds the task
item (no label is used). A method of :mod:`.methods` scores each text token against a
scalar target:

- ``sum_logprob`` (default): the summed log-probability of the item's tokens under teacher
  forcing. Every token of the item counts, so "Presence of pacemaker" and "Presence of
  diabetes" give different maps.
- ``token_logit``: the logit of one item token (first, middle or last), as in the paper.
  For items that share a prefix ("Presence of ...") the middle token is the same word
  for every item, so every item gives the same map; kept for comparison.

This module builds the prompts (:func:`build_relevance_prompt`), orders them into
length-bucketed batches (:func:`compute_relevance`), picks the items of each text and loads
the scoring model.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from .prompts import relevance_messages, render

LOG = logging.getLogger(__name__)


@dataclass
class RelevancePrompt:
    """A tokenised relevance prompt and where the text and the item sit in it."""

    input_ids: list[int]
    text_positions: list[int]  # token positions covering the text, in order
    offsets: list[tuple[int, int]]  # char offsets of those tokens inside the text
    item_positions: list[int]  # token positions of the item (assistant content)
    text: str = ""  # the text itself (feature ablation groups its tokens into words or sentences)


class PromptLayoutError(ValueError):
    pass


def build_relevance_prompt(tokenizer, text: str, item: str, lead_in: str) -> RelevancePrompt:
    """Render and tokenise the relevance prompt of ``text`` and ``item``.

    Positions are found through the fast tokenizer's offset mapping, so nothing depends on
    a tokenizer's byte-level conventions.
    """
    turns = render(tokenizer, relevance_messages(text, item, lead_in))
    full = turns.prompt + turns.answer
    t0 = turns.prompt.find(text)
    if t0 < 0:
        raise PromptLayoutError("the chat template does not reproduce the text verbatim")
    t1 = t0 + len(text)
    i0 = len(turns.prompt) + turns.answer.find(item)
    if turns.answer.find(item) < 0:
        raise PromptLayoutError("the chat template does not reproduce the item verbatim")
    i1 = i0 + len(item)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    text_positions, offsets, item_positions = [], [], []
    for pos, (s, e) in enumerate(enc["offset_mapping"]):
        if e <= s:
            continue
        if s < t1 and e > t0:
            text_positions.append(pos)
            offsets.append((max(s, t0) - t0, min(e, t1) - t0))
        elif s < i1 and e > i0:
            item_positions.append(pos)
    if not item_positions:
        raise PromptLayoutError(f"the item {item!r} has no tokens in the prompt")
    if item_positions[0] == 0:
        raise PromptLayoutError("the item cannot be the first token of the prompt")
    return RelevancePrompt(enc["input_ids"], text_positions, offsets, item_positions, text)


def shared_prefix_key(prompt: RelevancePrompt) -> tuple[int, ...]:
    """The tokens before the item: prompts of one text (and lead-in) with different items
    share them, unless the tokenizer merges the item's first token with what precedes it."""
    return tuple(prompt.input_ids[: prompt.item_positions[0]])


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
    A batch that runs out of accelerator memory is split in halves and retried (the halves
    give the same values: prompts are independent).
    """
    results: list[np.ndarray | None] = [None] * len(prompts)
    by_text = bool(getattr(method, "scores_items_together", False))
    for batch in iter_batches(prompts, batch_size, by_text):
        for index, rel in zip(batch, _attribute_with_backoff(method, [prompts[i] for i in batch])):
            results[index] = rel
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]


def _attribute_with_backoff(method, prompts: list[RelevancePrompt]) -> list[np.ndarray]:
    try:
        return method.attribute(prompts)
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(prompts) == 1:
            raise torch.OutOfMemoryError(
                f"decselfmask: one prompt of {len(prompts[0].input_ids)} tokens does not fit in memory for "
                "relevance; lower sequence_len, or set decselfmask.relevance.load_in_4bit: true"
            ) from None
        half = len(prompts) // 2
        LOG.warning("decselfmask: out of memory with %d prompts per batch; retrying with %d",
                    len(prompts), half)
        return _attribute_with_backoff(method, prompts[:half]) + _attribute_with_backoff(method, prompts[half:])


def pick_dtype(name: str, device: str) -> torch.dtype:
    """``relevance.dtype``; ``auto`` is the machine's precision (:func:`.hardware.decide_precision`)."""
    if name != "auto":
        return getattr(torch, name)
    from .hardware import decide_precision

    cuda = device.startswith("cuda")
    return decide_precision(cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported()).torch_dtype()


def pick_device(name: str) -> str:
    """``cpu``, or this process's GPU: ``cuda:<LOCAL_RANK>`` under ``accelerate launch``/torchrun,
    so that the processes of a sharded precompute do not all load onto GPU 0."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("decselfmask.relevance.device is 'cuda' but no CUDA device is available")
    if name == "cpu" or not torch.cuda.is_available():
        return "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def load_relevance_model(path: str, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
                         eager_attention: bool = False, load_in_4bit: bool = False, load_in_8bit: bool = False):
    """Load a causal LM for scoring: eval mode, frozen weights, optionally quantised (bitsandbytes)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dev = pick_device(device)
    kwargs = {"dtype": pick_dtype(dtype, dev), "trust_remote_code": trust_remote_code}
    if eager_attention:
        kwargs["attn_implementation"] = "eager"
    if load_in_4bit or load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=kwargs["dtype"])
        kwargs["device_map"] = {"": dev}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not (load_in_4bit or load_in_8bit):
        model.to(dev)
    model.eval()
    model.requires_grad_(False)
    return model


def items_for_texts(n_texts: int, items: list[str], per_text: int, seed: int) -> list[list[str]]:
    """The task items scored for each text: ``per_text`` distinct items drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    k = min(per_text, len(items))
    if k == len(items):
        return [list(items) for _ in range(n_texts)]
    return [[items[j] for j in sorted(rng.choice(len(items), size=k, replace=False))] for _ in range(n_texts)]
