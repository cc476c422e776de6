"""Evaluation: constrained scoring of the label options, Macro F1 and accuracy.

No free generation: for each text the model scores every label option as the assistant's
answer (its tokens and the end-of-turn marker, so a label that is a prefix of another is
not favoured) and the option with the highest summed log-probability is the prediction.
The prompt is run once per text and its key/value cache is shared by the options.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .cache import atomic_write_json, read_json
from .prompts import classification_messages, render

LOG = logging.getLogger(__name__)


def _option_ids(tokenizer, text, labels, question, system_prompt):
    """Token ids of the shared prompt and of each option's answer (label + end of turn)."""
    turns = [render(tokenizer, classification_messages(text, question, labels, system_prompt, answer=label))
             for label in labels]
    answers = [tokenizer(t.answer, add_special_tokens=False)["input_ids"] for t in turns]
    return tokenizer(turns[0].prompt, add_special_tokens=False)["input_ids"], answers


@torch.no_grad()
def score_options(model, tokenizer, texts, labels, question, system_prompt, progress=True) -> np.ndarray:
    """Summed log-probability of each label option for each text, shape (texts, labels)."""
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = np.zeros((len(texts), len(labels)), dtype=np.float64)
    for row, text in enumerate(tqdm(texts, desc="scoring labels", unit="text", disable=not progress)):
        prompt_ids, answers = _option_ids(tokenizer, text, labels, question, system_prompt)
        prompt = torch.tensor([prompt_ids], device=device)
        first = model(input_ids=prompt, use_cache=True)
        cache = first.past_key_values
        first_lp = first.logits[0, -1].float().log_softmax(-1)
        n = len(labels)
        width = max(len(a) for a in answers)
        ids = torch.full((n, width), pad, dtype=torch.long, device=device)
        for j, a in enumerate(answers):
            ids[j, : len(a)] = torch.tensor(a, device=device)
        for layer in cache.layers:
            layer.batch_repeat_interleave(n)
        mask = torch.ones((n, len(prompt_ids) + width), dtype=torch.long, device=device)
        logits = model(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True).logits.float()
        lp = logits.log_softmax(-1)
        for j, a in enumerate(answers):
            total = first_lp[a[0]].item()
            for k in range(1, len(a)):
                total += lp[j, k - 1, a[k]].item()
            out[row, j] = total
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


def evaluate(model, tokenizer, texts, gold, labels, question, system_prompt, progress=True) -> dict:
    scores = score_options(model, tokenizer, texts, labels, question, system_prompt, progress)
    pred = [labels[i] for i in scores.argmax(1)]
    return {
        "macro_f1": macro_f1(gold, pred, labels),
        "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])),
        "n_test": len(gold),
        "predictions": pred,
    }


def write_metrics(path: str | Path, task: str, result: dict, extra: dict | None = None) -> dict:
    """Merge one task's result into ``metrics.json`` (atomic) and return the whole file."""
    path = Path(path)
    metrics = read_json(path) or {}
    tasks = metrics.get("tasks", {})
    entry = {k: result[k] for k in ("macro_f1", "accuracy", "n_test")}
    if extra:
        entry.update(extra)
    tasks[task] = entry
    metrics["tasks"] = tasks
    metrics["macro_f1_mean"] = float(np.mean([t["macro_f1"] for t in tasks.values()]))
    atomic_write_json(path, metrics)
    return metrics


def format_table(metrics: dict) -> str:
    rows = [("task", "macro_f1", "accuracy", "n_test")]
    for task, m in metrics["tasks"].items():
        rows.append((task, f"{m['macro_f1']:.4f}", f"{m['accuracy']:.4f}", str(m["n_test"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"macro_f1_mean: {metrics['macro_f1_mean']:.4f}")
    return "\n".join(lines)


def dump_predictions(path: str | Path, texts_rows, gold, pred) -> None:
    from .cache import atomic_write_jsonl

    atomic_write_jsonl(path, [{"row": r, "gold": g, "pred": p} for r, g, p in zip(texts_rows, gold, pred)])

