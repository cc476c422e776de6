"""The heads' features of many tasks on the same notes, each note's prompt prefix run once.

Probing and the classification head read, for every task, the final-layer hidden state of each test
note's prompt (:func:`.probing.prompt_features`): with ten tasks on the same notes that is ten forwards
of each note, most of each spent on the note itself, which every task's prompt holds before its
question. Here each note's prompt prefix common to its tasks' prompts (the system turn and the note for
the chat prompt; the note for the raw one) is run once, and the tasks' remaining tokens (question,
options, assistant-turn start) run on copies of its key/value cache, as the option scoring of tasks
that share their test notes does (:func:`.scoring.score_questions`). The features go into the same
cache (:func:`.probing.feature_key`) the per-task calls read, which then find them there.

A feature computed this way equals the per-task one up to floating-point rounding (the prefix's
attention is computed once, in another order): within 1e-4 relative in float32 (tests/unit/
test_shared_features.py); in bfloat16 within a few percent (2.6e-2 relative at most, docs/benchmark.md).
"""

from __future__ import annotations

import copy

import torch
from tqdm.auto import tqdm

from axolotl_decselfmask.compat import forward_keeping, repeat_cache_rows
from axolotl_decselfmask.stage2.probing import (
    feature_index,
    feature_key,
    mask_missing_error,
    mask_token_id,
    probe_settings,
    prompt_ids,
    resolve_position,
)
from axolotl_decselfmask.stage2.scoring import continuation_inputs, shared_prefix_length

__all__ = ["FeatureRequest", "prefetch_features", "shared_prompt_features", "task_feature_requests"]


class FeatureRequest(tuple):
    """One task's features wanted: ``(texts, labels, question, system_prompt, position, mask_id, prompt)``,
    the arguments of :func:`.probing.cached_features` (``position`` resolved: ``last`` or ``mask``)."""

    def __new__(cls, texts, labels, question, system_prompt, position, mask_id, prompt):
        return super().__new__(cls, (tuple(texts), tuple(labels), question, system_prompt, position, mask_id, prompt))


@torch.no_grad()
def shared_prompt_features(model, tokenizer, texts: list[str], questions: list[str], labels: list[str],
                           system_prompt: str, position: str = "last", mask_id: int | None = None,
                           prompt: str = "chat", batch_size: int = 8, progress: bool = True,
                           question_chunk: int = 8) -> torch.Tensor:
    """Features of every (text, question) pair, shape (texts, questions, hidden), float32 on the CPU:
    what :func:`.probing.prompt_features` gives for each question, each text's prompt prefix shared by its
    questions run once (``batch_size`` texts at a time, left-padded), then ``question_chunk`` questions at a
    time each get a copy of its cache and run their rest on it (right-padded): memory grows with
    ``batch_size x question_chunk`` copies of a note's cache, not with the number of questions, as
    :func:`.scoring.score_questions` bounds it with ``option_chunk``. The prefix stops before the first
    token any question's feature is read at, so every feature is read in the second pass."""
    if question_chunk < 1:
        raise ValueError(f"question_chunk must be at least 1, got {question_chunk}")
    hidden = model.config.get_text_config().hidden_size
    if not texts or not questions:
        return torch.zeros((len(texts), len(questions), hidden), dtype=torch.float32)
    encoded, where, prefix = [], [], []
    for row, text in enumerate(texts):
        ids = [prompt_ids(tokenizer, text, labels, q, system_prompt, prompt) for q in questions]
        index = [feature_index(x, position, mask_id) for x in ids]
        if any(i is None for i in index):
            raise mask_missing_error(tokenizer, mask_id, row, len(texts))
        encoded.append(ids)
        where.append(index)
        prefix.append(min(shared_prefix_length(ids, keep=0), min(index)))
    out = torch.zeros((len(texts), len(questions), hidden), dtype=torch.float32)
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    chunks = [list(range(j, min(j + question_chunk, len(questions)))) for j in range(0, len(questions), question_chunk)]
    order = sorted(range(len(texts)), key=lambda i: prefix[i])
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="probing features (shared prefixes)", unit="batch",
                          disable=not progress):
            batch = order[start: start + batch_size]
            width = max(prefix[i] for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, width - prefix[i]:] = torch.tensor(encoded[i][0][: prefix[i]], dtype=torch.long)
                mask[row, width - prefix[i]:] = 1
            first = None
            if width:
                first = forward_keeping(model, 1, input_ids=ids.to(device), attention_mask=mask.to(device),
                                        position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
                                        use_cache=True).past_key_values
            for n, chunk in enumerate(chunks):
                # the continuations extend the cache in place: every chunk but the last gets a copy
                cache = None if first is None else first if n == len(chunks) - 1 else copy.deepcopy(first)
                _continue(model, cache, encoded, where, prefix, batch, chunk, mask, pad, device, out)
            del first
    finally:
        if was_training:
            model.train()
    return out


def _continue(model, cache, encoded, where, prefix, batch, chunk, mask, pad, device, out) -> None:
    """The rests of the ``chunk`` questions of every text of ``batch`` after the prefixes' ``cache`` (None: no
    prefix), right-padded, one row per (text, question); each row's feature into ``out``."""
    k = len(chunk)
    if cache is not None:
        repeat_cache_rows(cache, k)
    rests = [encoded[i][q][prefix[i]:] for i in batch for q in chunk]
    c_ids, c_mask, c_pos = continuation_inputs(rests, mask, k, pad)
    result = forward_keeping(model, 1, input_ids=c_ids.to(device), attention_mask=c_mask.to(device),
                             position_ids=c_pos.to(device), past_key_values=cache, use_cache=cache is not None,
                             output_hidden_states=True)
    last = result.hidden_states[-1]
    rows = torch.arange(len(rests), device=last.device)
    cols = torch.tensor([where[i][q] - prefix[i] for i in batch for q in chunk], device=last.device)
    picked = last[rows, cols].float().cpu().view(len(batch), k, -1)
    for row, i in enumerate(batch):
        out[i, chunk] = picked[row]


def prefetch_features(model, tokenizer, requests: list[FeatureRequest], feature_cache: dict, batch_size: int = 8,
                      progress: bool = True, question_chunk: int = 8) -> int:
    """Put into ``feature_cache`` the features of every text that at least two of ``requests`` (of the same
    options, system prompt, position and prompt, with other questions) want and the cache lacks, by
    :func:`shared_prompt_features`; the per-task calls then read them there. Returns how many it computed."""
    groups: dict[tuple, dict[str, dict[str, None]]] = {}
    for texts, labels, question, system_prompt, position, mask_id, prompt in requests:
        group = groups.setdefault((labels, system_prompt, position, mask_id if position == "mask" else None,
                                   prompt), {})
        for text in texts:
            group.setdefault(text, {})[question] = None
    done = 0
    for (labels, system_prompt, position, mask_id, prompt), wanted in groups.items():
        by_questions: dict[tuple, list[str]] = {}
        for text, questions in wanted.items():
            todo = tuple(q for q in questions if feature_key(text, list(labels), q, system_prompt, position, mask_id,
                                                             prompt) not in feature_cache)
            if len(todo) >= 2:
                by_questions.setdefault(todo, []).append(text)
        for questions, texts in by_questions.items():
            requires = [p.requires_grad for p in model.parameters()]
            model.requires_grad_(False)
            try:
                feats = shared_prompt_features(model, tokenizer, texts, list(questions), list(labels), system_prompt,
                                               position, mask_id, prompt, batch_size, progress, question_chunk)
            finally:
                for p, r in zip(model.parameters(), requires):
                    p.requires_grad_(r)
            if not torch.isfinite(feats).all():
                raise ValueError("probing: the model's hidden states are not finite (NaN or inf); check its precision.")
            for i, text in enumerate(texts):
                for j, q in enumerate(questions):
                    feature_cache[feature_key(text, list(labels), q, system_prompt, position, mask_id, prompt)] = \
                        feats[i, j]
                    done += 1
    return done


def task_feature_requests(config, tasks, tokenizer) -> list[FeatureRequest]:
    """The test-note features that probing (each head of ``probing.heads``) and a ``method: head`` classifier
    will read for ``tasks``, as :func:`.probing.probe_tasks` and :func:`.head.train_task_head` and the
    head's scorer ask for them. ``config``: the :class:`.args.DecSelfMaskConfig`."""
    out = []
    for t in tasks:
        if t.test_texts is None:
            continue
        mask_id = mask_token_id(tokenizer, t.prompt.mask_text)
        settings = []
        if config.probing.enabled:
            settings += [probe_settings(config, style) for style in dict.fromkeys(config.probing.heads)]
        if t.settings.train and t.settings.method == "head":
            settings.append(t.settings.head)
        for s in settings:
            prompt = getattr(s, "prompt", "chat")
            position = resolve_position(tokenizer, getattr(s, "position", "last"), mask_id, t.data.labels,
                                        t.prompt.question, t.prompt.system_prompt, prompt)
            out.append(FeatureRequest(t.test_texts, t.data.labels, t.prompt.question, t.prompt.system_prompt, position,
                                      mask_id, prompt))
    return out
