"""Stage 2 until it stops improving: its number of epochs chosen on a validation split of the
labelled notes (``classification.early_stopping``), never on the test notes.

1. :func:`validation_split`: each task's labelled notes split into a training part and a
   validation part, stratified by label and seeded (``validation_fraction`` of each label, rounded,
   every label keeping at least one note to train on). A note is one side for every task: a note
   two tasks share (a joint stage 2 over one corpus, the label questions of a multi-label task) is
   held out for all of them or for none, and a labelled note whose text is also a test note (up to
   whitespace and case) is never held out.
2. :func:`search_epochs`: a fresh LoRA trained on the training parts with TRL's ``SFTTrainer``
   (:func:`.training.train_classifier`) for up to ``max_epochs``; after each epoch
   :class:`EpochValidation` scores the validation notes with the package's own scorer
   (:class:`.scoring.Scorer`), decides them as the run would (``metric: macro_f1``: the task's
   calibration fitted on the training part's scores, :func:`.calibration.calibrate`; the pool modes
   use ``balanced``, the pool is not scored each epoch; ``macro_f1_argmax``: the options' argmax)
   and takes their Macro F1 (:func:`.metrics.result_from_scores`), averaged over the tasks of the
   stage 2. Training stops once ``patience`` epochs pass without a gain of more than ``threshold``
   over the best (:func:`stop_now`); the chosen epoch count is the best one (:func:`best_epoch`).
3. ``final: retrain`` (the default): the caller trains a fresh LoRA on every labelled note for the
   chosen epochs (with 16 labels a task, the held-out quarter is a quarter of the labels);
   ``best_epoch``: the search's LoRA with its best epoch's weights put back is the classifier.

The record (chosen epochs, the curve, the split's sizes, the held-out rows: indices into each task's
labelled examples) goes to each task's ``run_info`` as
``stage2_epochs``, which :func:`.outputs.write_metrics` writes into ``metrics.json``.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from axolotl_decselfmask.args import ClassificationConfig, EarlyStoppingConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.labelled import overlapping_rows
from axolotl_decselfmask.stage2.calibration import POOL_MODES, calibrate
from axolotl_decselfmask.stage2.metrics import result_from_scores
from axolotl_decselfmask.stage2.scoring import Scorer
from axolotl_decselfmask.stage2.tasks import Task
from axolotl_decselfmask.stage2.training import task_rows, train_classifier

LOG = logging.getLogger(__name__)

SEARCH_FOLDER = "epoch_search"


# ------------------------------------------------------------------------------ the split

def _note_key(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def _notes(task: Task) -> list[str]:
    """The labelled notes of ``task`` before truncation (what identifies a note across tasks)."""
    full = task.data.train.texts
    return list(full[: len(task.train_texts)]) if len(full) >= len(task.train_texts) else list(task.train_texts)


def validation_split(tasks: list[Task], fraction: float, seed: int,
                     test_texts: list[str] | None = None) -> list[tuple[list[int], list[int]]]:
    """Per task, ``(training rows, validation rows)``: indices into its labelled examples.

    Per task (in order) and label (in the order of its options), the label's notes not yet placed
    go, in a seeded random order, to the validation part until it holds ``round(fraction x n)`` of
    the label's ``n`` notes, at most ``n - 1``; a note already placed by an earlier task keeps its
    side, and a note that is also one of ``test_texts`` is always trained on."""
    rng = np.random.default_rng(seed)
    side: dict[str, bool] = {}  # note key -> held out
    notes = [_notes(t) for t in tasks]
    every = [n for ns in notes for n in ns]
    for i, _ in overlapping_rows(every, list(test_texts or [])):
        side[_note_key(every[i])] = False
    out = []
    for task, texts in zip(tasks, notes):
        keys = [_note_key(x) for x in texts]
        for label in task.data.labels:
            rows = [i for i, y in enumerate(task.train_labels) if y == label]
            wanted = min(math.floor(fraction * len(rows) + 0.5), len(rows) - 1)
            held = sum(side.get(keys[i], False) for i in rows)
            for i in rng.permutation(rows).tolist() if rows else []:
                if keys[i] not in side:
                    side[keys[i]] = held < wanted
                    held += side[keys[i]]
        for k in keys:  # a label outside the options (none after the checks) is trained on
            side.setdefault(k, False)
        out.append(([i for i, k in enumerate(keys) if not side[k]], [i for i, k in enumerate(keys) if side[k]]))
    return out


# ------------------------------------------------------------------------------ the curve

def best_epoch(curve: list[float], threshold: float = 0.0) -> int:
    """The epoch (1-based) of the best value of ``curve`` (one value per epoch): a later epoch is
    better only when it gains more than ``threshold`` over the best so far (the earlier of a tie)."""
    if not curve:
        raise ValueError("best_epoch: an empty curve")
    at = 1
    for epoch, value in enumerate(curve[1:], start=2):
        if value > curve[at - 1] + threshold:
            at = epoch
    return at


def stop_now(curve: list[float], patience: int, threshold: float = 0.0) -> bool:
    """``patience`` epochs have passed since the best epoch of ``curve``."""
    return bool(curve) and len(curve) - best_epoch(curve, threshold) >= patience


def _decision_settings(c: ClassificationConfig) -> ClassificationConfig:
    return c.model_copy(update={"calibration": "balanced"}) if c.calibration in POOL_MODES else c


def validation_macro_f1(model, tokenizer, parts: list[tuple[Task, list[str], list]], metric: str) -> dict[str, float]:
    """``{task: Macro F1 on its validation notes}``: ``parts`` holds each task restricted to its
    training part with its validation notes and labels; ``metric`` one of
    :class:`.args.EarlyStoppingConfig`'s. Tasks without validation notes are left out."""
    out = {}
    for task, texts, gold in parts:
        if not texts:
            continue
        scorer = Scorer.of(model, tokenizer, task, progress=False)
        decision = calibrate(task, scorer, None) if metric == "macro_f1" else None
        result = result_from_scores(scorer(texts), list(gold), task.data.labels, decision)
        out[task.name] = result["macro_f1"]
    return out


class EpochValidation(TrainerCallback):
    """After each epoch: the validation Macro F1 (:func:`validation_macro_f1`) into ``curve``, the
    trainable weights of the best epoch kept (``keep_best``), training stopped by :func:`stop_now`;
    at the end of training the best epoch's weights put back (``keep_best``)."""

    def __init__(self, tokenizer, parts, settings: EarlyStoppingConfig, keep_best: bool = False):
        self.tokenizer, self.parts, self.settings, self.keep_best = tokenizer, parts, settings, keep_best
        self.curve: list[dict] = []
        self.best_state: dict | None = None

    def values(self) -> list[float]:
        return [e["macro_f1"] for e in self.curve]

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        per_task = validation_macro_f1(model, self.tokenizer, self.parts, self.settings.metric)
        since = self.curve[-1]["step"] if self.curve else 0
        losses = [h["loss"] for h in state.log_history if "loss" in h and h.get("step", 0) > since]
        self.curve.append({"epoch": len(self.curve) + 1, "step": state.global_step,
                           "macro_f1": float(np.mean(list(per_task.values()))), "per_task": per_task,
                           "train_loss": float(np.mean(losses)) if losses else None})  # of the steps logged
        values = self.values()
        print(f"decselfmask stage 2 epoch search: epoch {len(values)}, validation {self.settings.metric} "
              f"{values[-1]:.4f} (best {max(values):.4f} at epoch {best_epoch(values, self.settings.threshold)})")
        if self.keep_best and best_epoch(values, self.settings.threshold) == len(values):
            self.best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        if stop_now(values, self.settings.patience, self.settings.threshold):
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self.keep_best and self.best_state:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in self.best_state:
                        p.copy_(self.best_state[n])


# ------------------------------------------------------------------------------ the search

def search_epochs(cfg, settings: ClassificationConfig, seed: int, start: str | None, tasks: list[Task], model,
                  tokenizer, max_length: int, out_dir: Path, name: str, progress: bool):
    """Train on the training parts of ``tasks``' labelled notes epoch by epoch, the validation notes
    scored after each; returns ``(chosen epochs, trainer, record)``. With ``final: best_epoch`` the
    trainer's model holds the best epoch's weights and is saved in ``out_dir``; with ``retrain`` the
    search's folder is removed and the caller trains again on every labelled note. The record is
    put in each task's ``run_info`` (``stage2_epochs``)."""
    es = settings.early_stopping
    test_texts = [x for t in tasks if t.data.test is not None for x in t.data.test.texts]
    split = validation_split(tasks, es.validation_fraction, seed, test_texts)
    parts = []
    for t, (train, held) in zip(tasks, split):
        part = replace(t, train_texts=[t.train_texts[i] for i in train], train_labels=[t.train_labels[i] for i in train],
                       settings=_decision_settings(t.settings))
        parts.append((part, [t.train_texts[i] for i in held], [t.train_labels[i] for i in held]))
    if not any(texts for _, texts, _ in parts):
        raise InputError(
            f"decselfmask.classification.early_stopping: no labelled note of {[t.name for t in tasks]} could be held "
            f"out for validation (validation_fraction {es.validation_fraction}, at least one note of each label kept "
            "to train on): add labelled notes, raise validation_fraction, or set early_stopping.enabled: false")
    rows = [r for part, _, _ in parts for r in task_rows(tokenizer, part)]
    search = settings.model_copy(update={"num_epochs": float(es.max_epochs), "max_steps": None, "save_steps": None})
    callback = EpochValidation(tokenizer, parts, es, keep_best=es.final == "best_epoch")
    folder = Path(out_dir) if es.final == "best_epoch" else Path(out_dir) / SEARCH_FOLDER
    print(f"decselfmask stage 2 [{name}]: choosing the epochs on {sum(len(x) for _, x, _ in parts)} held-out labelled "
          f"notes, training on {len(rows)} (up to {es.max_epochs} epochs, patience {es.patience}, {es.metric})")
    trainer = train_classifier(cfg, search, seed, model, tokenizer, rows, max_length, folder, progress,
                               f"{name} epoch search", start, callbacks=[callback])
    chosen = best_epoch(callback.values(), es.threshold)
    record = {"chosen_epochs": chosen, "metric": es.metric, "final": es.final, "epochs_run": len(callback.curve),
              "max_epochs": es.max_epochs, "patience": es.patience, "threshold": es.threshold,
              "validation_fraction": es.validation_fraction, "seed": seed,
              "n_train": {p.name: len(p.train_texts) for p, _, _ in parts},
              "n_validation": {p.name: len(x) for p, x, _ in parts},
              "validation_rows": {t.name: held for t, (_, held) in zip(tasks, split)}, "curve": callback.curve}
    for t in tasks:
        t.run_info["stage2_epochs"] = record
    print(f"decselfmask stage 2 [{name}]: {chosen} epoch(s) chosen (validation {es.metric} "
          f"{callback.values()[chosen - 1]:.4f}); " + ("the best epoch's LoRA kept" if es.final == "best_epoch"
                                                      else "a fresh LoRA trained on every labelled note"))
    if es.final == "retrain":
        shutil.rmtree(folder, ignore_errors=True)
    return chosen, trainer, record
