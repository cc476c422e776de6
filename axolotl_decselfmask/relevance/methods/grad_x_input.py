"""Gradient x input: embedding x gradient of the target, one forward and one backward pass.

Several items of one text share everything before the item (chat template, text, lead-in).
They are scored together: that prefix runs forward once, recording autograd; the items'
suffixes run as one batch on the prefix's key/value cache, which gives, for every item, the
gradient of its target with respect to the prefix's keys and values; the backward pass of
the prefix then carries that to the input embeddings, for every item at once: the K items'
cotangents go through one vectorised backward (``torch.autograd.grad(..., is_grads_batched=True)``,
a vmap of the backward over the items, on the prefix's one recorded graph). Each item still
needs its own gradient (its own map), so the work is that of K backward passes, but done as
one with K times larger operations: 8 items of a 345-token note cost 0.50 of 8 separate
scorings on 2 CPU cores, against 0.60 with one backward pass per item (docs/benchmark.md,
"Items"). The tokens before the text (system turn, template) run without autograd: nothing of
the text flows through them, so the backward skips them. The maps are those of scoring each
item on its own (tests/unit/test_multi_item.py, tests/unit/test_batched_backward.py).
"""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch

from axolotl_decselfmask.compat import (
    cache_from_tensors,
    cache_tensors,
    forward_keeping,
    plain_dynamic_cache,
)
from axolotl_decselfmask.relevance.methods.base import RelevanceMethod
from axolotl_decselfmask.relevance.prompt import shared_prefix_key

LOG = logging.getLogger(__name__)

#: environment variable that turns on ``fast_backward`` until the recipe has a key for it


@contextlib.contextmanager
def matmul_precision(value: str | None):
    if value is None:
        yield
        return
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class GradientXInput(RelevanceMethod):
    """The default method: the gradient is taken with respect to the input embeddings only
    (frozen weights, no weight gradients), for a whole batch at once (prompts are
    independent, so the gradient of the summed targets is each prompt's own).

    Options: ``fast_backward`` (recipe key ``relevance.fast_backward``, default off) runs the
    backward pass with ``torch.set_float32_matmul_precision("medium")``: on a CPU without AMX float32 matmuls then go to oneDNN's float32 kernels
    (1.3x faster backward here, maps within 1e-4); on a CPU with AMX they may run in
    bfloat16, on a GPU in TF32. No effect on bfloat16 models. ``share_prefix`` scores the
    items of one text together (see the module); default on, except for subclasses that need
    eager attention (their attention weights are read from one forward). AttnLRP, which only
    changes backward rules, shares the prefix too (tests/unit/test_attnlrp.py compares it with
    separate scorings). ``batched_backward`` (default on) vectorises the items' backward passes
    of a shared prefix; off, they run one after the other (same maps)."""

    name = "grad_x_input"

    def __init__(self, model, tokenizer, target="sum_logprob", token_position="middle", **options):
        super().__init__(model, tokenizer, target, token_position, **options)
        self.fast_backward = bool(options.get("fast_backward", False))
        self.share_prefix = bool(options.get("share_prefix", not self.needs_eager_attention))
        self.batched_backward = bool(options.get("batched_backward", True))

    @property
    def scores_items_together(self) -> bool:  # type: ignore[override]
        return self.share_prefix

    def _backward_precision(self):
        return matmul_precision("medium" if self.fast_backward else None)

    def attribute(self, prompts) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(prompts)
        alone: list[int] = []
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(shared_prefix_key(p), []).append(i)
        for members in groups.values():
            rels = None
            if self.share_prefix and len(members) > 1:
                rels = self.attribute_shared_prefix([prompts[i] for i in members])
            if rels is None:
                alone.extend(members)
            else:
                for i, r in zip(members, rels):
                    results[i] = r
        if alone:
            for i, r in zip(alone, self._attribute_batch([prompts[i] for i in alone])):
                results[i] = r
        return results  # type: ignore[return-value]

    def _attribute_batch(self, prompts) -> list[np.ndarray]:
        """Independent prompts as one padded batch: one forward, one backward."""
        batch = self.batch(prompts)
        embeds = self.embedding(batch.ids).detach().requires_grad_(True)
        with torch.enable_grad():
            scores = self.scores(batch, inputs_embeds=embeds)
            with self._backward_precision():
                (grad,) = torch.autograd.grad(scores.sum(), embeds)
        return self.text_values((embeds.detach().float() * grad.float()).sum(-1), prompts)

    def attribute_shared_prefix(self, prompts) -> list[np.ndarray] | None:
        """The maps of prompts that share every token before their item (one text, several
        items), or None where the model's cache cannot be shared this way (sliding-window
        or other non-plain cache layers: the caller then scores them as a plain batch)."""
        model, dev = self.model, self.device
        split = prompts[0].item_positions[0] - 1  # the suffix starts at the token that predicts the item
        if any(shared_prefix_key(p) != shared_prefix_key(prompts[0]) for p in prompts):
            raise ValueError("attribute_shared_prefix: the prompts do not share the tokens before their item")
        if split < 1 or any(not p.text_positions or max(p.text_positions) >= split for p in prompts):
            return None  # the text must lie wholly in the shared prefix
        cache = plain_dynamic_cache(model.config)
        if cache is None:
            return None
        # the tokens before the text (system turn, template) do not depend on the text: no autograd there
        head = min(min(p.text_positions) for p in prompts)
        prefix_ids = torch.tensor([prompts[0].input_ids[:split]], device=dev)
        if head > 0:
            with torch.no_grad():
                forward_keeping(model, 1, inputs_embeds=self.embedding(prefix_ids[:, :head]),
                                attention_mask=torch.ones_like(prefix_ids[:, :head]), use_cache=True,
                                past_key_values=cache)
        embeds = self.embedding(prefix_ids[:, head:]).detach().requires_grad_(True)
        k = len(prompts)
        with torch.enable_grad():
            # the rest of the prefix, once; its logits are not needed (one position, the least logits_to_keep allows)
            forward_keeping(model, 1, inputs_embeds=embeds, attention_mask=torch.ones_like(prefix_ids),
                            use_cache=True, past_key_values=cache)
            prefix_kv = cache_tensors(cache)
            # every item's suffix on its own copy of the prefix's keys and values (leaves), as one batch
            leaves = [t.detach().expand(k, *t.shape[1:]).requires_grad_(True) for t in prefix_kv]
            suffixes = [p.input_ids[split:] for p in prompts]
            width = max(len(s) for s in suffixes)
            ids = torch.full((k, width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((k, split + width), dtype=torch.long)
            mask[:, :split] = 1
            rows, cols, targets = [], [], []
            for row, (p, s) in enumerate(zip(prompts, suffixes)):
                ids[row, : len(s)] = torch.tensor(s)
                mask[row, split : split + len(s)] = 1
                for col, token in self.logit_points(p, shift=split):
                    rows.append(row)
                    cols.append(col)
                    targets.append(token)
            keep = sorted(set(cols))
            where = {c: i for i, c in enumerate(keep)}
            logits = forward_keeping(model, torch.tensor(keep, device=dev), input_ids=ids.to(dev),
                                     attention_mask=mask.to(dev), use_cache=True,
                                     past_key_values=cache_from_tensors(leaves, model.config)).logits
            rows_t = torch.tensor(rows, device=dev)
            sel = logits[rows_t, torch.tensor([where[c] for c in cols], device=dev)]
            scores = self.target_values(sel, torch.tensor(targets, device=dev), rows_t, k)
            with self._backward_precision():
                # item j's target depends only on row j of the leaves: one backward gives every item's
                # gradient with respect to the prefix's keys and values
                kv_grads = torch.autograd.grad(scores.sum(), leaves, allow_unused=True)
                kv_grads = [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, kv_grads)]
                grads = self._prefix_backward(prefix_kv, embeds, kv_grads)
        rels = []
        for j, p in enumerate(prompts):
            values = (embeds.detach().float() * grads[j].float()).sum(-1)[0]
            rels.append(values[[q - head for q in p.text_positions]].cpu().numpy().astype(np.float32))
        return rels

    def _prefix_backward(self, prefix_kv, embeds, kv_grads) -> list[torch.Tensor]:
        """Each item's gradient of the prefix's input embeddings from its gradient of the prefix's keys
        and values (row j of ``kv_grads``): all of them in one vectorised backward pass of the prefix
        (``batched_backward``, the default: ``is_grads_batched``, every operation of the backward on
        the K cotangents at once, K times the memory of one pass), or one backward pass per item. An
        operation whose backward cannot be vectorised makes this method loop from then on (logged
        once); running out of memory goes to the caller, whose back-off then scores fewer items at once."""
        k = kv_grads[0].shape[0]
        if self.batched_backward:
            try:
                (grad,) = torch.autograd.grad(prefix_kv, embeds, grad_outputs=[g.unsqueeze(1) for g in kv_grads],
                                              is_grads_batched=True, retain_graph=True)
                return list(grad)
            except torch.OutOfMemoryError:
                raise  # the runner halves the batch (fewer items at once)
            except RuntimeError as exc:  # e.g. a custom autograd function without a batching rule
                LOG.warning("decselfmask: %s: the items' backward passes cannot be vectorised on this model "
                            "(%s); they run one by one", self.name, str(exc).splitlines()[0][:200])
                self.batched_backward = False
        return [torch.autograd.grad(prefix_kv, embeds, grad_outputs=[g[j : j + 1] for g in kv_grads],
                                    retain_graph=j < k - 1)[0] for j in range(k)]
