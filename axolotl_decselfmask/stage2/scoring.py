"""Evaluation: constrained scoring of the label options, Macro F1 and accuracy.

No free generation: for each text the model scores every label option as the assistant's
answer (its tokens and the end-of-turn marker, so a label that is a prefix of another is
not favoured) and the option with the highest summed log-probability is the prediction.
The prompt is run once per text and its key/value cache is shared by the options.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from axolotl_decselfmask.compat import repeat_cache_rows
from axolotl_decselfmask.prompts import classification_messages, render

LOG = logging.getLogger(__name__)


def _option_ids(tokenizer, text, labels, question, system_prompt):
    """Token ids of the shared prompt and of each option's answer (label + end of turn)."""
    turns = [render(tokenizer, classification_messages(text, question, labels, system_prompt, answer=label))
             for label in labels]
    answers = [tokenizer(t.answer, add_special_tokens=False)["input_ids"] for t in turns]
    return tokenizer(turns[0].prompt, add_special_tokens=False)["input_ids"], answers


@torch.no_grad()
def score_options(model, tokenizer, texts, labels, question, system_prompt, progress=True,
                  batch_size: int = 8) -> np.ndarray:
    """Summed log-probability of each label option for each text, shape (texts, labels).

    Texts go in batches of similar prompt length, left-padded, with position ids that start at
    0 at each prompt's first real token; the prompts' key/value cache is repeated for the
    options, which are run together after it. A text's scores do not depend on its batch.
    """
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n = len(labels)
    encoded = [_option_ids(tokenizer, text, labels, question, system_prompt) for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
    out = np.zeros((len(texts), n), dtype=np.float64)
    bar = tqdm(total=len(texts), desc="scoring labels", unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        batch = order[start: start + batch_size]
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            prompt_ids = encoded[i][0]
            ids[row, width - len(prompt_ids):] = torch.tensor(prompt_ids)
            mask[row, width - len(prompt_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        first = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                      use_cache=True, logits_to_keep=1)
        first_lp = first.logits[:, -1].float().log_softmax(-1).cpu()
        cache = first.past_key_values
        repeat_cache_rows(cache, n)
        answers = [a for i in batch for a in encoded[i][1]]
        a_width = max(len(a) for a in answers)
        a_ids = torch.full((len(answers), a_width), pad, dtype=torch.long)
        for j, a in enumerate(answers):
            a_ids[j, : len(a)] = torch.tensor(a)
        a_mask = torch.cat([mask.repeat_interleave(n, 0), torch.ones((len(answers), a_width), dtype=torch.long)], 1)
        a_pos = mask.sum(1).repeat_interleave(n)[:, None] + torch.arange(a_width)[None, :]
        lp = model(input_ids=a_ids.to(device), attention_mask=a_mask.to(device), position_ids=a_pos.to(device),
                   past_key_values=cache, use_cache=True).logits.float().log_softmax(-1).cpu()
        for row, i in enumerate(batch):
            for j, a in enumerate(encoded[i][1]):
                k = row * n + j
                total = first_lp[row, a[0]].item()
                if len(a) > 1:
                    total += lp[k, torch.arange(len(a) - 1), torch.tensor(a[1:])].sum().item()
                out[i, j] = total
        bar.update(len(batch))
    bar.close()
    if was_training:
        model.train()
    return out


def macro_f1(gold: list[str], pred: list[str], labels: list[str]) -> float:
    """Unweighted mean F1 over ``labels`` (a class absent from both counts as F1 0)."""
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, pred))
        fp = sum(g != label and p == label for g, p in zip(gold, pred))
        fn = sum(g == label and p != label for g, p in zip(gold, pred))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def evaluate(model, tokenizer, texts, gold, labels, question, system_prompt, progress=True,
             batch_size: int = 8) -> dict:
    scores = score_options(model, tokenizer, texts, labels, question, system_prompt, progress, batch_size)
    pred = [labels[i] for i in scores.argmax(1)]
    return {
        "macro_f1": macro_f1(gold, pred, labels),
        "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])),
        "n_test": len(gold),
        "predictions": pred,
    }











