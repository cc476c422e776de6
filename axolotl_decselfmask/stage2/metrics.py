"""metrics.json (one entry per task, written atomically), the predictions files, and the
classification metrics (scikit-learn's)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from axolotl_decselfmask.io.files import atomic_write_json, read_json

#: keys of a result that every metrics.json task entry has
REQUIRED_KEYS = ("macro_f1", "accuracy", "n_test")
#: keys copied into the entry when the result has them
OPTIONAL_KEYS = ("macro_f1_argmax", "accuracy_argmax", "per_class_f1", "confusion_matrix", "calibration")


def macro_f1(gold: list[str], pred: list[str], options: list[str]) -> float:
    """Unweighted mean F1 over ``options`` (scikit-learn; a class never gold and never predicted counts 0)."""
    from sklearn.metrics import f1_score

    return float(f1_score(gold, pred, labels=list(options), average="macro", zero_division=0))


def classification_report_dict(gold: list[str], pred: list[str], options: list[str]) -> dict:
    """Macro F1, accuracy, the F1 of each option and the confusion matrix (scikit-learn).

    ``confusion_matrix.matrix[i][j]``: the number of texts of gold ``labels[i]`` predicted
    ``labels[j]`` (rows gold, columns predicted, in the order of ``options``).
    """
    from sklearn.metrics import confusion_matrix, f1_score

    options = list(options)
    if len(gold) != len(pred):
        raise ValueError(f"metrics: {len(gold)} gold labels for {len(pred)} predictions")
    if not gold:
        per_class, matrix = np.zeros(len(options)), np.zeros((len(options), len(options)), dtype=int)
    else:
        per_class = f1_score(gold, pred, labels=options, average=None, zero_division=0)
        matrix = confusion_matrix(gold, pred, labels=options)
    return {
        "macro_f1": float(np.mean(per_class)),
        "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])) if gold else 0.0,
        "per_class_f1": {o: float(f) for o, f in zip(options, per_class)},
        "confusion_matrix": {"labels": options, "matrix": matrix.astype(int).tolist()},
    }


def result_from_scores(scores, gold: list[str], options: list[str], calibration=None) -> dict:
    """A task's result from its test scores: the decision of ``calibration`` (a fitted
    :class:`.calibration.Calibration`; None: the argmax) and the argmax's, scored against ``gold``.

    Keys: ``macro_f1``, ``accuracy``, ``per_class_f1``, ``confusion_matrix`` (the decision),
    ``macro_f1_argmax``, ``accuracy_argmax``, ``n_test``, ``predictions``, ``predictions_argmax``,
    ``scores`` (as given, (n, k)), ``calibration`` (its ``to_dict()``, or ``{"mode": "none"}``).
    The predictions depend on the scores and the calibration only, never on ``gold``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    options = list(options)
    if scores.shape != (len(gold), len(options)):
        raise ValueError(f"metrics: scores of shape {scores.shape} for {len(gold)} texts and {len(options)} options")
    argmax = [options[i] for i in scores.argmax(1)] if len(scores) else []
    pred = argmax if calibration is None or not len(scores) else [options[i] for i in calibration.decide(scores)[0]]
    report = classification_report_dict(gold, pred, options)
    plain = classification_report_dict(gold, argmax, options)
    return {
        **report, "macro_f1_argmax": plain["macro_f1"], "accuracy_argmax": plain["accuracy"], "n_test": len(gold),
        "predictions": pred, "predictions_argmax": argmax, "scores": scores,
        "calibration": calibration.to_dict() if calibration is not None else {"mode": "none"},
    }


def write_metrics(path: str | Path, task: str, result: dict, extra: dict | None = None) -> dict:
    """Merge one task's result into ``metrics.json`` (atomic) and return the whole file.

    The entry: ``macro_f1`` (the default decision), ``accuracy``, ``n_test``, and those of
    ``macro_f1_argmax``, ``accuracy_argmax``, ``per_class_f1``, ``confusion_matrix`` and
    ``calibration`` the result has; then ``extra``.
    """
    path = Path(path)
    metrics = read_json(path) or {}
    tasks = metrics.get("tasks", {})
    entry = {k: result[k] for k in REQUIRED_KEYS}
    entry.update({k: result[k] for k in OPTIONAL_KEYS if k in result})
    if extra:
        entry.update(extra)
    tasks[task] = entry
    return _store(path, metrics, tasks)


def forget_task(path: str | Path, task: str) -> None:
    """Remove one task's entry from ``metrics.json`` (atomic; the file goes when none is left)."""
    path = Path(path)
    metrics = read_json(path)
    if isinstance(metrics, dict) and task in (metrics.get("tasks") or {}):
        _store(path, metrics, {k: v for k, v in metrics["tasks"].items() if k != task})


def _store(path: Path, metrics: dict, tasks: dict) -> dict:
    """``metrics`` with ``tasks`` and their mean Macro F1, written atomically (removed when empty)."""
    if not tasks:
        path.unlink(missing_ok=True)
        return {}
    metrics["tasks"] = tasks
    metrics["macro_f1_mean"] = float(np.mean([t["macro_f1"] for t in tasks.values()]))
    atomic_write_json(path, metrics)
    return metrics


def format_table(metrics: dict) -> str:
    """The tasks' Macro F1 (and the argmax's, where recorded), accuracy and test size, as a table."""
    argmax = any("macro_f1_argmax" in m for m in metrics["tasks"].values())
    rows = [("task", "macro_f1", *(("macro_f1_argmax",) if argmax else ()), "accuracy", "n_test")]
    for task, m in metrics["tasks"].items():
        plain = (f"{m['macro_f1_argmax']:.4f}" if "macro_f1_argmax" in m else "-",) if argmax else ()
        rows.append((task, f"{m['macro_f1']:.4f}", *plain, f"{m['accuracy']:.4f}", str(m["n_test"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"macro_f1_mean: {metrics['macro_f1_mean']:.4f}")
    return "\n".join(lines)


def dump_predictions(path: str | Path, ids, rows, gold, pred, scores, options) -> None:
    """``predictions-<task>.jsonl``: one JSON row per test text, ``id`` (the file's id column,
    else the row number), ``row`` (0-based row of the test file), ``gold``, ``pred`` (the default
    decision) and ``scores``: one value per option in the order of ``options`` (metrics.json's
    ``labels``): the summed log-probabilities of the options as the answer (a head's
    log-probabilities with ``method: head``); a non-finite score is written as null."""
    from axolotl_decselfmask.io.files import atomic_write_jsonl

    scores = np.asarray(scores, dtype=np.float64)
    n = len(gold)
    if not (len(ids) == len(rows) == len(pred) == n) or scores.shape != (n, len(options)):
        raise ValueError(f"dump_predictions: {len(ids)} ids, {len(rows)} rows, {n} gold, {len(pred)} predictions "
                         f"and scores of shape {scores.shape} for {len(options)} options do not match")
    atomic_write_jsonl(path, [
        {"id": i, "row": r, "gold": g, "pred": p, "scores": [float(v) if math.isfinite(v) else None for v in s]}
        for i, r, g, p, s in zip(ids, rows, gold, pred, scores.tolist())
    ])
