"""Multi-label tasks: several labels per note, one yes/no question per label. Only what is
multi-label: expanding a task into its label questions, and gathering their decisions.

A task whose label column holds a set of labels per note (read by :func:`.data.load_multilabel_data`)
is expanded, after its files are read and its texts cut, into one binary sub-task per label
(:func:`expand_tasks`): the options are ``classification.label_answers`` (``yes``, ``no``), the
question ``classification.label_question`` with the label in it (with ``prompt: mask_fill`` it is
followed by the mask, as :func:`.task_prompt.task_prompt` does for any question), the training
labels ``yes`` where the note has the label; each sub-task's ``parent`` is the task. Stage 2 trains
the sub-tasks as it trains any tasks (in the joint LoRA with the others; with ``joint: false`` the
sub-tasks of one multi-label task share one LoRA, in ``stage2/<task>``), each sub-task's decision
is calibrated on its own (:mod:`.calibration`, exactly as a binary task's), and the label
questions of a note are scored on its shared prompt prefix (:class:`.scoring.SharedPrefixScorer`).

The decisions gathered (:func:`multilabel_result`, used by :func:`.evaluation.evaluate_label_set`):
one ``metrics.json`` entry under the task's own name: ``macro_f1`` (the mean over labels of each
label's F1, scikit-learn's ``average="macro"`` on the note x label indicator matrix), ``micro_f1``
(F1 over all note x label decisions), ``accuracy`` (notes whose predicted label set equals the gold
set), and ``per_label`` (each label's own yes/no ``macro_f1``, F1, precision, recall, calibration
and confusion matrix); and the rows of ``predictions-<task>.jsonl`` (:func:`prediction_rows`) with,
per note, ``gold`` and ``pred`` (label sets, in the order of ``labels``) and ``scores`` (per label,
one score per answer). :func:`label_set_decisions` gathers them for ``predict``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.files import safe_filename
from axolotl_decselfmask.io.labelled import LabelledData
from axolotl_decselfmask.stage2.task_prompt import label_question, task_prompt
from axolotl_decselfmask.stage2.tasks import Task, TaskData


# ---------------------------------------------------------------------------- the sub-tasks

def _binary(label_sets: list[list[str]] | None, label: str, answers: list[str]) -> list[str] | None:
    return None if label_sets is None else [answers[0] if label in s else answers[1] for s in label_sets]


def _sub_data(d: TaskData, label: str) -> TaskData:
    def side(x: LabelledData | None) -> LabelledData | None:
        return None if x is None else LabelledData(x.texts, _binary(x.labels, label, d.labels), x.rows, x.report,
                                                   x.ids)

    return TaskData(side(d.train), side(d.test), list(d.labels))


def expand_tasks(config: DecSelfMaskConfig, tasks: list[Task], tokenizer) -> list[Task]:
    """``tasks`` (in the order of ``config.task_configs()``) with every multi-label task replaced by
    its label questions, one yes/no task per label (``parent``: the task), which share its (cut) texts."""
    out = []
    for n, t in enumerate(tasks):
        if not t.data.multi_label:
            out.append(t)
            continue
        d = t.data
        names: dict[str, str] = {}
        for label in d.label_set:
            name = f"{t.name}/{label}"
            other = names.setdefault(safe_filename(name).casefold(), label)
            if other != label:
                raise InputError(f"decselfmask [{t.name}]: the labels {other!r} and {label!r} give the same file "
                                 "name (letters, digits, '-' and '_' are kept); rename one of them.")
            question = label_question(t.settings, label)
            c = t.settings.model_copy(update={"task": name, "labels": list(d.labels), "question": question})
            out.append(replace(
                t, settings=c, data=_sub_data(d, label), prompt=task_prompt(config, n, tokenizer, question),
                train_labels=_binary(t.train_labels, label, d.labels), gold=_binary(t.gold, label, d.labels),
                run_info=dict(t.run_info), parent=t, label=label))
        print(f"decselfmask stage 2 [{t.name}]: multi-label, {len(d.label_set)} labels, one yes/no question "
              f"each ({len(d.label_set) * len(t.train_texts)} training rows)")
    return out


# ------------------------------------------------------------------- gathering the decisions

def _per_label_entry(t: Task, result: dict, f1: float, precision: float, recall: float) -> dict:
    entry = {k: result[k] for k in ("macro_f1", "accuracy", "macro_f1_argmax", "accuracy_argmax", "per_class_f1",
                                    "confusion_matrix", "calibration", "n_test")}
    entry.update(f1=f1, precision=precision, recall=recall, question=t.prompt.question,
                 n_gold=sum(g == t.data.labels[0] for g in t.gold),
                 n_predicted=sum(p == t.data.labels[0] for p in result["predictions"]))
    entry.update({k: t.run_info[k] for k in ("probe_macro_f1", "probe_accuracy", "stage2_head", "n_pseudo")
                  if k in t.run_info})
    return entry


def multilabel_result(parts: list[Task], results: list[dict]) -> dict:
    """The task's ``metrics.json`` entry from its sub-tasks' results (:func:`.metrics.result_from_scores`)."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_recall_fscore_support,
    )

    group = parts[0].parent
    yes = group.data.labels[0]
    gold = np.array([[g == yes for g in t.gold] for t in parts], dtype=int).T  # (notes, labels)
    pred = np.array([[p == yes for p in r["predictions"]] for r in results], dtype=int).T
    argmax = np.array([[p == yes for p in r["predictions_argmax"]] for r in results], dtype=int).T
    precision, recall, f1, _ = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    entry = {
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        "accuracy": float(accuracy_score(gold, pred)),
        "label_accuracy": float((gold == pred).mean()),
        "macro_f1_argmax": float(f1_score(gold, argmax, average="macro", zero_division=0)),
        "micro_f1_argmax": float(f1_score(gold, argmax, average="micro", zero_division=0)),
        "accuracy_argmax": float(accuracy_score(gold, argmax)),
        "n_test": int(gold.shape[0]),
        "per_class_f1": {y: float(v) for y, v in zip(group.data.label_set, f1)},
        "calibration": {"mode": group.settings.calibration, "per_label": True},
    }
    extra = {k: v for k, v in parts[0].run_info.items() if k not in ("probe_macro_f1", "probe_accuracy",
                                                                      "stage2_head", "n_pseudo", "labels")}
    entry.update(extra, multi_label=True, labels=list(group.data.label_set), label_answers=list(group.data.labels),
                 label_question=group.settings.label_question)
    if all("probe_macro_f1" in t.run_info for t in parts):
        entry["probe_macro_f1"] = float(np.mean([t.run_info["probe_macro_f1"] for t in parts]))
    entry["per_label"] = {t.label: _per_label_entry(t, r, float(f1[i]), float(precision[i]), float(recall[i]))
                          for i, (t, r) in enumerate(zip(parts, results))}
    return entry


def prediction_rows(parts: list[Task], results: list[dict]) -> list[dict]:
    """The rows of a multi-label task's ``predictions-<task>.jsonl``: per test note its ``gold``
    and ``pred`` label sets (in the order of the labels) and ``scores`` per label."""
    group = parts[0].parent
    yes, n = group.data.labels[0], len(parts[0].gold)
    rows = []
    for j in range(n):
        rows.append({
            "id": group.data.test.ids[j], "row": group.data.test.rows[j],
            "gold": [t.label for t in parts if t.gold[j] == yes],
            "pred": [t.label for t, r in zip(parts, results) if r["predictions"][j] == yes],
            "scores": {t.label: [float(v) if math.isfinite(v) else None for v in r["scores"][j]]
                       for t, r in zip(parts, results)},
        })
    return rows


def label_table(entry: dict) -> str:
    """A multi-label task's labels: F1, the yes/no question's Macro F1, gold and predicted counts."""
    rows = [("label", "f1", "macro_f1 (yes/no)", "gold", "predicted")]
    rows += [(y, f"{m['f1']:.4f}", f"{m['macro_f1']:.4f}", str(m["n_gold"]), str(m["n_predicted"]))
             for y, m in entry["per_label"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def label_set_decisions(calibrations: list, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each label's decision (``calibrations``, one :class:`.calibration.Calibration` per label) on a
    multi-label task's scores ``s`` (notes, labels, answers): ``(has, post)``, whether each note has
    each label (notes, labels) and the labels' calibrated posteriors (notes, labels, answers)."""
    has = np.zeros((len(s), len(calibrations)), dtype=bool)
    post = np.zeros((len(s), len(calibrations), len(calibrations[0].options) if calibrations else 0))
    for j, calibration in enumerate(calibrations):
        if len(s):
            pred, post[:, j] = calibration.decide(s[:, j])
            has[:, j] = pred == 0  # the first answer: the note has the label
    return has, post
