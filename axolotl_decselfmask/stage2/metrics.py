"""The classification metrics (scikit-learn's) of a task's decisions, and their table (the files
they are written to: :mod:`.outputs`)."""

from __future__ import annotations

import numpy as np


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
