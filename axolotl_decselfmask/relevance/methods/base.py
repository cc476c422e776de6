"""What every relevance method shares: the target and the batch layout.

A method takes tokenised relevance prompts (:class:`..relevance.RelevancePrompt`) and returns
one relevance value per text token of each prompt, like captum's ``attribute()``. The target
is the same for every method: the summed log-probability of the item's tokens
(``sum_logprob``), the logit of one item token at the position that predicts it
(``token_logit``), or the largest vocabulary logit at the position of one item token
(``max_logit``, the authors' target).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from axolotl_decselfmask.compat import forward_keeping

Target = Literal["sum_logprob", "token_logit", "max_logit"]
Position = Literal["first", "middle", "last"]
TARGETS = ("sum_logprob", "token_logit", "max_logit")


class MethodNotSupported(ValueError):
    """The method cannot run on this model (family, attention implementation, missing extra)."""


@dataclass
class Batch:
    """Right-padded ids and the positions whose logits the target reads."""

    ids: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor  # batch row of each scored token
    cols: torch.Tensor  # position whose logits the target reads (the one predicting it; max_logit: its own)
    targets: torch.Tensor  # the scored token ids (max_logit reads no token id)
    keep: torch.Tensor  # distinct positions to compute logits at
    col_index: torch.Tensor  # index of each col inside keep


class RelevanceMethod(ABC):
    """One attribution method. Subclasses set ``name`` and implement :meth:`attribute`."""

    name: ClassVar[str]
    #: the method needs the model loaded with eager attention (attention weights)
    needs_eager_attention: ClassVar[bool] = False
    #: the method shares work between the items of one text: :func:`..relevance.compute_relevance`
    #: then hands it every item of a text in the same :meth:`attribute` call
    scores_items_together: ClassVar[bool] = False

    def __init__(self, model, tokenizer, target: Target = "sum_logprob", token_position: Position = "middle",
                 **options):
        if target not in TARGETS:
            raise ValueError(f"relevance target {target!r}: one of {list(TARGETS)}")
        self.model = model
        self.tokenizer = tokenizer
        self.target = target
        self.token_position = token_position
        self.options = options
        self.embedding = model.get_input_embeddings()
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    @classmethod
    def check_model_config(cls, config) -> None:
        """Raise :class:`MethodNotSupported` before any weights load if the model (its
        ``transformers`` config) cannot be used with this method."""

    @abstractmethod
    def attribute(self, prompts) -> list[np.ndarray]:
        """Relevance of each prompt's text tokens (float32, one value per text token)."""

    # -- shared pieces ------------------------------------------------------------------
    @property
    def device(self):
        return self.embedding.weight.device

    def scored_positions(self, prompt) -> list[int]:
        positions = prompt.item_positions
        if self.target == "sum_logprob":
            return positions
        index = {"first": 0, "middle": (len(positions) - 1) // 2, "last": len(positions) - 1}
        return [positions[index[self.token_position]]]

    def logit_points(self, prompt, shift: int = 0) -> list[tuple[int, int]]:
        """``(column, token id)`` of each scored item token: the column whose logits the target
        reads, ``shift`` positions earlier. ``sum_logprob`` and ``token_logit`` read the logits
        that predict the token (one position before it); ``max_logit`` reads the logits at the
        token's own position (the authors' scripts: the middle item token's output logits)."""
        before = 0 if self.target == "max_logit" else 1
        return [(pos - before - shift, prompt.input_ids[pos]) for pos in self.scored_positions(prompt)]

    def batch(self, prompts) -> Batch:
        length = max(len(p.input_ids) for p in prompts)
        ids = torch.full((len(prompts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        rows, cols, targets = [], [], []
        for row, p in enumerate(prompts):
            ids[row, : len(p.input_ids)] = torch.tensor(p.input_ids)
            mask[row, : len(p.input_ids)] = 1
            for col, token in self.logit_points(p):
                rows.append(row)
                cols.append(col)
                targets.append(token)
        keep = sorted(set(cols))
        where = {c: i for i, c in enumerate(keep)}
        dev = self.device
        return Batch(ids.to(dev), mask.to(dev), torch.tensor(rows, device=dev), torch.tensor(cols, device=dev),
                     torch.tensor(targets, device=dev), torch.tensor(keep, device=dev),
                     torch.tensor([where[c] for c in cols], device=dev))

    def scores(self, batch: Batch, expand: int = 1, **model_inputs) -> torch.Tensor:
        """The target of each prompt (shape ``[B * expand]``) from one forward pass.

        ``model_inputs`` are passed to the model (``input_ids`` or ``inputs_embeds`` of
        ``B * expand`` rows, for methods such as integrated gradients that stack copies).
        """
        mask = batch.mask.repeat(expand, 1) if expand > 1 else batch.mask
        logits = forward_keeping(self.model, batch.keep, attention_mask=mask, use_cache=False, **model_inputs).logits
        n = batch.mask.shape[0]
        offsets = torch.arange(expand, device=self.device).repeat_interleave(len(batch.rows)) * n
        rows = batch.rows.repeat(expand) + offsets
        sel = logits[rows, batch.col_index.repeat(expand)]
        return self.target_values(sel, batch.targets.repeat(expand), rows, n * expand)

    def target_values(self, logits: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        """The target of each of ``n`` prompts from the logits read for its scored tokens
        (``logits[j]`` belongs to ``targets[j]`` of prompt ``rows[j]``, see :meth:`logit_points`)."""
        logits = logits.float()
        if self.target == "sum_logprob":
            per_token = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
        elif self.target == "max_logit":
            per_token = logits.max(-1).values
        else:
            per_token = logits.gather(-1, targets[:, None]).squeeze(-1)
        total = torch.zeros(n, dtype=per_token.dtype, device=logits.device)
        return total.index_add(0, rows, per_token)

    @staticmethod
    def text_values(values: torch.Tensor, prompts) -> list[np.ndarray]:
        values = values.detach().float().cpu().numpy()
        return [values[row, p.text_positions].astype(np.float32) for row, p in enumerate(prompts)]
