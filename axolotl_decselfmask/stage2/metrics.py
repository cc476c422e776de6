"""metrics.json (one entry per task, written atomically) and the predictions files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from axolotl_decselfmask.io.files import atomic_write_json, read_json


def write_metrics(path: str | Path, task: str, result: dict, extra: dict | None = None) -> dict:
    """Merge one task's result into ``metrics.json`` (atomic) and return the whole file."""
    path = Path(path)
    metrics = read_json(path) or {}
    tasks = metrics.get("tasks", {})
    entry = {k: result[k] for k in ("macro_f1", "accuracy", "n_test")}
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
    rows = [("task", "macro_f1", "accuracy", "n_test")]
    for task, m in metrics["tasks"].items():
        rows.append((task, f"{m['macro_f1']:.4f}", f"{m['accuracy']:.4f}", str(m["n_test"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"macro_f1_mean: {metrics['macro_f1_mean']:.4f}")
    return "\n".join(lines)


def dump_predictions(path: str | Path, texts_rows, gold, pred) -> None:
    from axolotl_decselfmask.io.files import atomic_write_jsonl

    atomic_write_jsonl(path, [{"row": r, "gold": g, "pred": p} for r, g, p in zip(texts_rows, gold, pred)])
