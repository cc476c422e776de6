"""Evaluation: constrained scoring of the label options (the metrics are in :mod:`.metrics`).

No free generation: for each text the model scores every label option as the assistant's
answer (its tokens and the end-of-turn marker, so a label that is a prefix of another is
not favoured) and the option with the highest summed log-probability is the prediction.
The prompt is run once per text and its key/value cache is shared by the options, scored
``classification.option_chunk`` at a time.
"""

from __future__ import annotations

import copy
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


#: label options scored together per text by default (``classification.option_chunk``)
OPTION_CHUNK = 8


@torch.no_grad()
def score_options(model, tokenizer, texts, labels, question, system_prompt, progress=True,
                  batch_size: int = 8, option_chunk: int = OPTION_CHUNK) -> np.ndarray:
    """Summed log-probability of each label option for each text, shape (texts, labels).

    Texts go in batches of similar prompt length, left-padded, with position ids that start at
    0 at each prompt's first real token. The prompts' key/value cache is computed once; the
    options follow it ``option_chunk`` at a time, each chunk on its own copy of the cache
    repeated for its options, so memory grows with ``batch_size x option_chunk``, not with the
    number of options. A text's scores do not depend on its batch or on the chunk size.
    """
    if option_chunk < 1:
        raise ValueError(f"option_chunk must be at least 1, got {option_chunk}")
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [_option_ids(tokenizer, text, labels, question, system_prompt) for text in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
    out = np.zeros((len(texts), len(labels)), dtype=np.float64)
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
        chunks = [range(j, min(j + option_chunk, len(labels))) for j in range(0, len(labels), option_chunk)]
        for n, chunk in enumerate(chunks):
            # the answers extend the cache in place: every chunk but the last gets a copy
            cache = first.past_key_values if n == len(chunks) - 1 else copy.deepcopy(first.past_key_values)
            _score_chunk(model, cache, encoded, batch, list(chunk), mask, first_lp, pad, device, out)
        del first
        bar.update(len(batch))
    bar.close()
    if was_training:
        model.train()
    return out


def _score_chunk(model, cache, encoded, batch, chunk, mask, first_lp, pad, device, out) -> None:
    """Score the options ``chunk`` of every text of ``batch`` after the prompts' ``cache``, into ``out``."""
    k = len(chunk)
    repeat_cache_rows(cache, k)
    answers = [encoded[i][1][j] for i in batch for j in chunk]
    a_width = max(len(a) for a in answers)
    a_ids = torch.full((len(answers), a_width), pad, dtype=torch.long)
    for row, a in enumerate(answers):
        a_ids[row, : len(a)] = torch.tensor(a)
    a_mask = torch.cat([mask.repeat_interleave(k, 0), torch.ones((len(answers), a_width), dtype=torch.long)], 1)
    a_pos = mask.sum(1).repeat_interleave(k)[:, None] + torch.arange(a_width)[None, :]
    lp = model(input_ids=a_ids.to(device), attention_mask=a_mask.to(device), position_ids=a_pos.to(device),
               past_key_values=cache, use_cache=True).logits.float().log_softmax(-1).cpu()
    for row, i in enumerate(batch):
        for c, j in enumerate(chunk):
            a = encoded[i][1][j]
            total = first_lp[row, a[0]].item()
            if len(a) > 1:
                total += lp[row * k + c, torch.arange(len(a) - 1), torch.tensor(a[1:])].sum().item()
            out[i, j] = total
