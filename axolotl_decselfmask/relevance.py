"""Self-relevance: which tokens of a text make the model answer with a task item.

The model reads the text, then a lead-in question, and the assistant turn holds the task
item (no label is used). The relevance of a text token is embedding x gradient of a
scalar target:

- ``sum_logprob`` (default): the summed log-probability of the item's tokens under teacher
  forcing. Every token of the item counts, so "Presence of pacemaker" and "Presence of
  diabetes" give different maps.
- ``token_logit``: the logit of one item token (first, middle or last), as in the paper.
  For items that share a prefix ("Presence of ...") the middle token is the same word
  for every item, so every item gives the same map; kept for comparison.

:class:`GradientXInput` is batched (right padding, attention mask) and differentiates with
respect to the input embeddings only: one forward and one backward pass that computes no
weight gradients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Literal

import numpy as np
import torch

from .prompts import relevance_messages, render


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


Target = Literal["sum_logprob", "token_logit"]


class GradientXInput:
    """Embedding x gradient of the item's score, for a batch of relevance prompts."""

    name = "grad_x_input"

    def __init__(
        self,
        model,
        tokenizer,
        target: Target = "sum_logprob",
        token_position: Literal["first", "middle", "last"] = "middle",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.target = target
        self.token_position = token_position
        self.embedding = model.get_input_embeddings()
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)

    def _scored_positions(self, prompt: RelevancePrompt) -> list[int]:
        positions = prompt.item_positions
        if self.target == "sum_logprob":
            return positions
        index = {"first": 0, "middle": (len(positions) - 1) // 2, "last": len(positions) - 1}
        return [positions[index[self.token_position]]]

    def attribute(self, prompts: list[RelevancePrompt]) -> list[np.ndarray]:
        """Relevance of each prompt's text tokens (float32, one value per text token)."""
        device = self.embedding.weight.device
        length = max(len(p.input_ids) for p in prompts)
        ids = torch.full((len(prompts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, : len(p.input_ids)] = torch.tensor(p.input_ids)
            mask[row, : len(p.input_ids)] = 1
        ids, mask = ids.to(device), mask.to(device)

        # Logits are needed only at the positions that predict the scored tokens.
        rows, cols, targets = [], [], []
        for row, p in enumerate(prompts):
            for pos in self._scored_positions(p):
                rows.append(row)
                cols.append(pos - 1)
                targets.append(p.input_ids[pos])
        keep = torch.tensor(sorted(set(cols)), device=device)
        col_index = {c: i for i, c in enumerate(keep.tolist())}

        embeds = self.embedding(ids).detach().requires_grad_(True)
        with torch.enable_grad():
            out = self.model(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=keep, use_cache=False)
            logits = out.logits
            if logits.shape[1] != len(keep):  # model ignored logits_to_keep
                logits = logits[:, keep]
            sel = logits[torch.tensor(rows, device=device), torch.tensor([col_index[c] for c in cols], device=device)]
            sel = sel.float()
            tgt = torch.tensor(targets, device=device)
            if self.target == "sum_logprob":
                scores = sel.log_softmax(-1).gather(-1, tgt[:, None]).squeeze(-1)
            else:
                scores = sel.gather(-1, tgt[:, None]).squeeze(-1)
            # Prompts are independent, so the gradient of the sum is each prompt's own.
            (grad,) = torch.autograd.grad(scores.sum(), embeds)
        relevance = (embeds.detach().float() * grad.float()).sum(-1).cpu().numpy()
        return [relevance[row, p.text_positions].astype(np.float32) for row, p in enumerate(prompts)]

    def score(self, prompts: list[RelevancePrompt]) -> torch.Tensor:
        """The scalar target of each prompt (no gradient); used by tests and checks."""
        out = []
        with torch.no_grad():
            for p in prompts:
                ids = torch.tensor([p.input_ids], device=self.embedding.weight.device)
                logits = self.model(input_ids=ids, use_cache=False).logits[0].float()
                positions = self._scored_positions(p)
                if self.target == "sum_logprob":
                    lp = logits.log_softmax(-1)
                    out.append(sum(lp[q - 1, p.input_ids[q]] for q in positions))
                else:
                    out.append(logits[positions[0] - 1, p.input_ids[positions[0]]])
        return torch.stack(out)


def iter_batches(prompts: list[RelevancePrompt], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``prompts`` in batches of similar length (less padding), in a fixed order."""
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i].input_ids), i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def compute_relevance(
    method: GradientXInput, prompts: list[RelevancePrompt], batch_size: int, progress=None
) -> list[np.ndarray]:
    """Relevance of every prompt, batched by length; results in the input order."""
    results: list[np.ndarray | None] = [None] * len(prompts)
    for batch in iter_batches(prompts, batch_size):
        for index, rel in zip(batch, method.attribute([prompts[i] for i in batch])):
            results[index] = rel
        if progress is not None:
            progress.update(len(batch))
    return results  # type: ignore[return-value]


def pick_dtype(name: str, device: str) -> torch.dtype:
    if name != "auto":
        return getattr(torch, name)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("decselfmask.relevance.device is 'cuda' but no CUDA device is available")
    return name


def load_relevance_model(path: str, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False):
    """Load a causal LM for scoring: eval mode, frozen weights."""
    from transformers import AutoModelForCausalLM

    dev = pick_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=pick_dtype(dtype, dev), trust_remote_code=trust_remote_code
    )
    model.to(dev).eval()
    model.requires_grad_(False)
    return model


def items_for_texts(n_texts: int, items: list[str], per_text: int, seed: int) -> list[list[str]]:
    """The task items scored for each text: ``per_text`` distinct items drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    k = min(per_text, len(items))
    if k == len(items):
        return [list(items) for _ in range(n_texts)]
    return [[items[j] for j in sorted(rng.choice(len(items), size=k, replace=False))] for _ in range(n_texts)]


def flatten(pairs: Iterable[tuple[int, list[str]]]) -> list[tuple[int, str]]:
    return [(i, item) for i, items in pairs for item in items]
