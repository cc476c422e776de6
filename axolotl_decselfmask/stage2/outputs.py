"""Stage 2's files in ``output_dir``: every name said once, here, and every write, read and removal
(the split file's are :mod:`..io.labelled`'s, which makes the split; they are imported here).

- ``metrics.json``: one entry per task (the evaluation's scores, its decision, how the task was
  run) and their mean Macro F1, merged and written atomically (:func:`write_metrics`);
- ``predictions-<task>.jsonl``: one row per test note (:func:`write_predictions`);
- with ``classification.scorer: string_match`` or ``both``, the authors' string-match figures
  beside the option ones (:func:`add_string_match`, :func:`write_string_match_pooled`);
- ``split-<task>.json``: the rows of each side of a ``test_fraction`` split (:func:`write_split`,
  from :mod:`..io.labelled`);
- ``stage2/`` (:data:`STAGE2_DIR`): the classifier (the joint LoRA, ``stage2/<task>`` with
  ``joint: false``, ``heads/`` with ``method: head``), and for ``predict``:
  ``stage2/calibration-<task>.json``, each task's fitted decision (:func:`write_calibration`),
  and ``stage2/multilabel-<task>.json``, a multi-label task's record of its labels and of the
  decision of each (:func:`write_label_set_record`).

What the files hold is decided by their writers (:mod:`.evaluation`, :mod:`.calibration`,
:mod:`..io.labelled`); this module only knows where they are and moves them. Before stage 2
runs again, :func:`forget_results` removes what an earlier run wrote of a task.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from axolotl_decselfmask.io.files import (
    atomic_write_json,
    atomic_write_jsonl,
    read_json,
    read_jsonl,
    safe_filename,
)
from axolotl_decselfmask.io.labelled import (  # noqa: F401 - the split file's read, write and path, named here too
    SPLIT_FILE,
    read_split,
    split_path,
    write_split,
)

#: the stage-2 folder of ``output_dir``
STAGE2_DIR = "stage2"
#: the folder of the classification heads, in a classifier folder
HEADS_DIR = "heads"
METRICS_FILE = "metrics.json"
_PREDICTIONS = "predictions-{}.jsonl"
_CALIBRATION = "calibration-{}.json"
_LABEL_SET = "multilabel-{}.json"

#: the run's results, as huggingface_hub's fnmatch patterns relative to ``output_dir``
RESULT_PATTERNS = [f"{STAGE2_DIR}/*", METRICS_FILE, _PREDICTIONS.format("*"), SPLIT_FILE.format("*")]
#: stage-2 checkpoints and training logs (the joint folder's and the per-task folders')
CHECKPOINT_PATTERNS = [f"{STAGE2_DIR}/checkpoint-*", f"{STAGE2_DIR}/*/checkpoint-*", f"{STAGE2_DIR}/*/runs/*",
                       f"{STAGE2_DIR}/runs/*"]

#: keys of a result that every metrics.json task entry has
REQUIRED_KEYS = ("macro_f1", "accuracy", "n_test")
#: keys copied into the entry when the result has them
OPTIONAL_KEYS = ("macro_f1_argmax", "accuracy_argmax", "per_class_f1", "confusion_matrix", "calibration")


# ------------------------------------------------------------------------------------ the paths

def stage2_dir(output_dir) -> Path:
    """``<output_dir>/stage2``."""
    return Path(output_dir) / STAGE2_DIR


def classifier_dir(output_dir, group: str | None = None) -> Path:
    """The folder of a stage-2 classifier: ``stage2`` (one classifier for every task), or
    ``stage2/<group>`` (``joint: false``: a task's own, or a multi-label task's labels')."""
    return stage2_dir(output_dir) if group is None else stage2_dir(output_dir) / safe_filename(group)


def heads_dir(classifier: Path) -> Path:
    """The heads of a classifier folder (``method: head``)."""
    return Path(classifier) / HEADS_DIR


def metrics_path(output_dir) -> Path:
    return Path(output_dir) / METRICS_FILE


def predictions_path(output_dir, task: str) -> Path:
    return Path(output_dir) / _PREDICTIONS.format(safe_filename(task))


def calibration_path(output_dir, task: str) -> Path:
    """``<output_dir>/stage2/calibration-<task>.json``."""
    return stage2_dir(output_dir) / _CALIBRATION.format(safe_filename(task))


def label_set_record_path(output_dir, task: str) -> Path:
    """``<output_dir>/stage2/multilabel-<task>.json``: a multi-label task's labels, their questions
    and the files of their decisions (:func:`calibration_path` of ``<task>/<label>``)."""
    return stage2_dir(output_dir) / _LABEL_SET.format(safe_filename(task))


_CONFUSION_PNG = "confusion-{}.png"
_RELIABILITY_PNG = "reliability-{}.png"


def figure_paths(output_dir, task: str) -> tuple[Path, Path]:
    """``evaluate``'s pictures of a task beside its ``metrics.json``: ``confusion-<task>.png`` (the
    confusion matrix) and ``reliability-<task>.png`` (the reliability diagram)."""
    name = safe_filename(task)
    return Path(output_dir) / _CONFUSION_PNG.format(name), Path(output_dir) / _RELIABILITY_PNG.format(name)


#: the folder ``decselfmask.hub_model_id`` uploads (built by :func:`.hub.build_hub_folder`)
HUB_DIR = "hub"


def hub_dir(output_dir) -> Path:
    """``<output_dir>/hub``: the classifier to share, with its decisions, results and card."""
    return Path(output_dir) / HUB_DIR


def shared_result_files(output_dir) -> list[Path]:
    """The results and decisions the shared folder holds, relative to ``output_dir``, at the same
    places: ``metrics.json``, ``predictions-*``, ``split-*``, and in ``stage2/`` the decisions
    (``calibration-*``, ``multilabel-*``, a per-task folder's too) and the heads."""
    out = Path(output_dir)
    found = [metrics_path(out)] if metrics_path(out).is_file() else []
    found += sorted(out.glob(_PREDICTIONS.format("*"))) + sorted(out.glob(SPLIT_FILE.format("*")))
    stage2 = stage2_dir(out)
    for pattern in (_CALIBRATION.format("*"), _LABEL_SET.format("*"), f"**/{HEADS_DIR}/*"):
        found += sorted(p for p in stage2.glob(pattern) if p.is_file() and "checkpoint-" not in str(p))
    return [p.relative_to(out) for p in found]


# ---------------------------------------------------------------------------------- metrics.json

def read_metrics(output_dir) -> dict | None:
    """``metrics.json`` (None when missing or unreadable)."""
    metrics = read_json(metrics_path(output_dir))
    return metrics if isinstance(metrics, dict) else None


def write_metrics(output_dir, task: str, result: dict, extra: dict | None = None) -> dict:
    """Merge one task's result into ``metrics.json`` (atomic) and return the whole file.

    The entry: ``macro_f1`` (the default decision), ``accuracy``, ``n_test``, and those of
    ``macro_f1_argmax``, ``accuracy_argmax``, ``per_class_f1``, ``confusion_matrix`` and
    ``calibration`` the result has; then ``extra``.
    """
    metrics = read_metrics(output_dir) or {}
    tasks = metrics.get("tasks", {})
    entry = {k: result[k] for k in REQUIRED_KEYS}
    entry.update({k: result[k] for k in OPTIONAL_KEYS if k in result})
    if extra:
        entry.update(extra)
    tasks[task] = entry
    return _store(output_dir, metrics, tasks)


def replace_metrics(output_dir, metrics: dict) -> None:
    """Write a whole ``metrics.json`` made elsewhere (the comparison's baselines), atomically."""
    atomic_write_json(metrics_path(output_dir), metrics)


def forget_metrics(output_dir, task: str | None = None) -> None:
    """Remove one task's entry from ``metrics.json`` (the file goes when none is left), or with
    ``task`` None the whole file."""
    if task is None:
        metrics_path(output_dir).unlink(missing_ok=True)
        return
    metrics = read_metrics(output_dir)
    if metrics is not None and task in (metrics.get("tasks") or {}):
        metrics.pop(STRING_MATCH, None)  # pooled over the tasks: written again when they are scored
        _store(output_dir, metrics, {k: v for k, v in metrics["tasks"].items() if k != task})


# ------------------------------------------------------------- the authors' string-match scorer

#: the key of the string-match figures: in a task's metrics.json entry, at the top of metrics.json
#: (pooled over the tasks), and in each predictions row (that note's answers)
STRING_MATCH = "string_match"


def add_string_match(output_dir, task: str, entry: dict, notes: list[dict]) -> None:
    """Put ``task``'s string-match figures (``entry``) into its ``metrics.json`` entry, beside the
    option figures, and each note's record (``notes[i]``: note i of ``predictions-<task>.jsonl``)
    into its predictions row, under ``string_match``. The task's evaluation must be written already."""
    preds = read_predictions(output_dir, task)
    if preds is None or len(preds) != len(notes):
        raise ValueError(f"string_match: {predictions_path(output_dir, task)} has "
                         f"{'no rows' if preds is None else len(preds)} for {len(notes)} scored notes of task {task}")
    metrics = read_metrics(output_dir) or {}
    tasks = metrics.get("tasks", {})
    if task not in tasks:
        raise ValueError(f"string_match: {metrics_path(output_dir)} has no entry for task {task}")
    write_prediction_rows(output_dir, task, [{**p, STRING_MATCH: n} for p, n in zip(preds, notes)])
    tasks[task][STRING_MATCH] = entry
    _store(output_dir, metrics, tasks)


def string_match_notes(output_dir) -> dict[str, list[dict]]:
    """``{task: [each note's string-match record]}`` of every task of ``metrics.json`` scored so;
    a multi-label task's records (``{"per_label": {label: record}}``) as ``<task>/<label>``."""
    out: dict[str, list[dict]] = {}
    for task, entry in ((read_metrics(output_dir) or {}).get("tasks") or {}).items():
        if STRING_MATCH not in entry:
            continue
        for row in read_predictions(output_dir, task) or []:
            record = row.get(STRING_MATCH) or {}
            if "per_label" in record:
                for label, own in record["per_label"].items():
                    out.setdefault(f"{task}/{label}", []).append(own)
            else:
                out.setdefault(task, []).append(record)
    return out


def write_string_match_pooled(output_dir, pooled: dict) -> dict:
    """The string-match figures pooled over every task, at the top of ``metrics.json``."""
    metrics = read_metrics(output_dir) or {}
    metrics[STRING_MATCH] = pooled
    return _store(output_dir, metrics, metrics.get("tasks", {}))


def _store(output_dir, metrics: dict, tasks: dict) -> dict:
    """``metrics`` with ``tasks`` and their mean Macro F1, written atomically (removed when empty)."""
    path = metrics_path(output_dir)
    if not tasks:
        path.unlink(missing_ok=True)
        return {}
    metrics["tasks"] = tasks
    metrics["macro_f1_mean"] = float(np.mean([t["macro_f1"] for t in tasks.values()]))
    atomic_write_json(path, metrics)
    return metrics


# ------------------------------------------------------------------------------ predictions-<task>

def write_predictions(output_dir, task: str, ids, rows, gold, pred, scores, options) -> Path:
    """``predictions-<task>.jsonl``: one JSON row per test text, ``id`` (the file's id column,
    else the row number), ``row`` (0-based row of the test file), ``gold``, ``pred`` (the default
    decision) and ``scores``: one value per option in the order of ``options`` (metrics.json's
    ``labels``): the summed log-probabilities of the options as the answer (a head's
    log-probabilities with ``method: head``); a non-finite score is written as null."""
    scores = np.asarray(scores, dtype=np.float64)
    n = len(gold)
    if not (len(ids) == len(rows) == len(pred) == n) or scores.shape != (n, len(options)):
        raise ValueError(f"write_predictions: {len(ids)} ids, {len(rows)} rows, {n} gold, {len(pred)} predictions "
                         f"and scores of shape {scores.shape} for {len(options)} options do not match")
    return write_prediction_rows(output_dir, task, [
        {"id": i, "row": r, "gold": g, "pred": p, "scores": [float(v) if math.isfinite(v) else None for v in s]}
        for i, r, g, p, s in zip(ids, rows, gold, pred, scores.tolist())
    ])


def write_prediction_rows(output_dir, task: str, rows: list[dict]) -> Path:
    """``predictions-<task>.jsonl`` from rows made by the caller (a multi-label task's)."""
    path = predictions_path(output_dir, task)
    atomic_write_jsonl(path, rows)
    return path


def read_predictions(output_dir, task: str) -> list[dict] | None:
    """The rows of ``predictions-<task>.jsonl`` (None when the file is missing)."""
    path = predictions_path(output_dir, task)
    return read_jsonl(path) if path.is_file() else None


# --------------------------------------------------------------------------- the saved decisions

def write_calibration(output_dir, task: str, record: dict) -> Path:
    """A task's fitted decision (:func:`.calibration.save_calibration`'s record), atomically."""
    path = calibration_path(output_dir, task)
    atomic_write_json(path, record)
    return path


def read_calibration(output_dir, task: str):
    """The record :func:`write_calibration` wrote (None when missing; as read, for the caller to check)."""
    return read_json(calibration_path(output_dir, task))


LABEL_SET_FORMAT = "decselfmask-multilabel"


def write_label_set_record(output_dir, task: str, record: dict) -> Path:
    """A multi-label task's record of its labels and decisions (``format`` and ``version`` added)."""
    path = label_set_record_path(output_dir, task)
    atomic_write_json(path, {"format": LABEL_SET_FORMAT, "version": 1, **record})
    return path


def read_label_set_record(output_dir, task: str) -> dict | None:
    """The record :func:`write_label_set_record` wrote of ``task``; None when there is none."""
    record = read_json(label_set_record_path(output_dir, task))
    return record if isinstance(record, dict) and record.get("format") == LABEL_SET_FORMAT else None


# ------------------------------------------------------------------------------------ forgetting

def forget_results(output_dir, task: str) -> None:
    """Remove what an earlier stage 2 wrote of ``task`` before stage 2 runs again: its
    ``metrics.json`` entry, its predictions, its decision, and a multi-label task's decision per
    label with their record. ``metrics.json`` is written (atomically) only after stage 2 and the
    evaluation, so an entry for the task always belongs to a finished run."""
    forget_metrics(output_dir, task)
    predictions_path(output_dir, task).unlink(missing_ok=True)
    calibration_path(output_dir, task).unlink(missing_ok=True)
    record = read_json(label_set_record_path(output_dir, task))
    if isinstance(record, dict):
        for name in (record.get("sub_tasks") or {}).values():
            calibration_path(output_dir, name).unlink(missing_ok=True)
    label_set_record_path(output_dir, task).unlink(missing_ok=True)
