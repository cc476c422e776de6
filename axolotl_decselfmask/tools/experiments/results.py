"""The results of finished runs: their done records, the rows of ``results.csv``, and the
statistics over seeds that the report and the plots show."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np

from axolotl_decselfmask.io.files import atomic_write_text, fingerprint, read_json
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import METHODS

DONE_FILE = "done.json"
COLUMNS = ["corpus", "task", "method", "seed", "macro_f1", "accuracy", "probe_macro_f1", "n_train", "n_pseudo",
           "n_test", "n_labels", "stage1_tokens", "run_seconds", "multi_label_task"]


def _neutral(value, out: str, here: str, files: dict):
    """``value`` (a recipe) with paths made independent of where the grid is: strings that are the
    output folder or under it start ``<out>``, other absolute paths under the working folder
    ``here`` (the model, the SetFit packages) are made relative to it; each data file under
    ``<out>/data/`` that exists is recorded in ``files`` with the sha256 of its bytes."""
    if isinstance(value, dict):
        return {k: _neutral(v, out, here, files) for k, v in value.items()}
    if isinstance(value, list):
        return [_neutral(v, out, here, files) for v in value]
    if not isinstance(value, str):
        return value
    for root, name in ((out, "<out>"), (here, ".")):
        if value == root or value.startswith(root + "/"):
            rest = value[len(root):]
            if name == "<out>" and rest.startswith("/data/") and Path(value).is_file():
                files[rest] = hashlib.sha256(Path(value).read_bytes()).hexdigest()
            return name + rest
    return value


def run_key(run: dict) -> str:
    """What a finished run is matched on: its recipe, with its paths made independent of the
    output folder and of the checkout's place (:func:`_neutral`: a grid moved to another
    ``--out`` or another checkout keeps its runs), and the content of the data files it names (the
    recipes name the pool, labelled and test files by path only, so a new ``labelled_per_task`` or
    ``split_seed`` is a new key; another seed's files are not part of it)."""
    out = str(Path(run["dir"]).parent.parent.parent)  # <out>/runs/<corpus>/<run>
    files: dict = {}
    recipe = _neutral(run["recipe"], out, str(Path.cwd()), files)
    if run.get("stage1_model"):  # a reused stage 1 (grid stage1_models): the model's key, not its folder
        recipe["base_model"] = f"<stage1 {run['stage1_model']['key']}>"
    return fingerprint({"recipe": recipe, "data": files})


def done_record(run: dict) -> dict | None:
    """The done record of a run that finished with its present recipe and data, else None."""
    record = read_json(run["dir"] / DONE_FILE)
    if isinstance(record, dict) and record.get("run_key") == run_key(run):
        return record
    return None


def rows_of_entry(task: str, m: dict) -> list[dict]:
    """The results of one ``metrics.json`` entry: one row, or for a multi-label task one row per
    label (task ``<task>/<label>``, the label's yes/no Macro F1 and accuracy, ``multi_label_task``
    the task's name; the task's Macro F1 over labels and micro F1 stay in its metrics.json)."""
    if not m.get("multi_label"):
        return [_values(task, m, m, len(m.get("labels") or []), "")]
    return [_values(f"{task}/{label}", m, own, 2, task) for label, own in (m.get("per_label") or {}).items()]


def _values(task: str, m: dict, own: dict, n_labels: int, parent: str) -> dict:
    return {
        "task": task, "macro_f1": round(own["macro_f1"], 4), "accuracy": round(own["accuracy"], 4),
        "probe_macro_f1": round(own["probe_macro_f1"], 4) if "probe_macro_f1" in own else "",
        "n_train": m.get("n_train", ""), "n_pseudo": own.get("n_pseudo", m.get("n_pseudo", "")),
        "n_test": own.get("n_test", m["n_test"]), "n_labels": n_labels, "multi_label_task": parent,
    }


def _rows_of(grid: Grid, run: dict, record: dict) -> list[dict]:
    rows = []
    for task_seed, m in sorted(record["metrics"].get("tasks", {}).items()):
        task, _, seed = task_seed.rpartition("@seed")
        seeds = grid.seeds if run["method"] == "zero_shot" else [int(seed)]
        rows += [{
            "corpus": run["corpus"], "method": run["method"], "seed": str(seed), **values,
            "stage1_tokens": record.get("stage1_tokens") or "",
            "run_seconds": record["seconds"],
        } for seed in seeds for values in rows_of_entry(task, m)]
    return rows


def collect(grid: Grid, runs: list[dict]) -> list[dict]:
    """One row per corpus x task x method x seed of the finished runs."""
    rows = []
    for run in runs:
        record = done_record(run)
        if record:
            rows += _rows_of(grid, run, record)
    return rows


def write_csv(out: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())


NUMBERS = {"macro_f1": float, "accuracy": float, "probe_macro_f1": float, "n_train": int, "n_pseudo": int,
           "n_test": int, "n_labels": int, "stage1_tokens": int, "run_seconds": float}


def _typed(row: dict) -> dict:
    """A row read back from ``results.csv`` with the types :func:`collect` gives (empty cells stay "")."""
    out = {k: row.get(k, "") for k in COLUMNS}
    for key, kind in NUMBERS.items():
        if out[key] not in ("", None):
            out[key] = kind(float(out[key])) if kind is int else kind(out[key])
    out["seed"] = str(out["seed"])
    return out


def read_csv(out: Path) -> list[dict]:
    """The rows of ``out/results.csv`` as :func:`collect` gives them, or [] when there is none."""
    path = Path(out) / "results.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [_typed(r) for r in csv.DictReader(f)]


def row_key(row: dict) -> tuple:
    return row["corpus"], row["task"], row["method"], str(row["seed"])


def merge_rows(kept: list[dict], fresh: list[dict], rerun: set[str]) -> list[dict]:
    """The rows of a ``--methods`` run: every ``fresh`` row (collected from the finished runs of all
    methods), and each ``kept`` row (``results.csv`` as it was) of a method outside ``rerun`` that no
    fresh row replaces, so a subset run never drops or changes another method's results. Sorted by
    corpus, method (as in METHODS), task and seed."""
    have = {row_key(r) for r in fresh}
    rows = list(fresh) + [r for r in kept if r["method"] not in rerun and row_key(r) not in have]
    order = {m: i for i, m in enumerate(METHODS)}

    def sort_key(r: dict) -> tuple:
        seed = str(r["seed"])
        return r["corpus"], order.get(r["method"], len(order)), r["method"], r["task"], \
            (0, int(seed)) if seed.lstrip("-").isdigit() else (1, seed)

    return sorted(rows, key=sort_key)


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(rows: list[dict]) -> dict:
    """Per method: mean and std over seeds of the mean Macro F1 over tasks; per task means."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    per_seed: dict[str, dict[int, list[float]]] = {}
    per_task: dict[tuple, list[float]] = {}
    probe: dict[str, list[float]] = {}
    for r in rows:
        per_seed.setdefault(r["method"], {}).setdefault(r["seed"], []).append(r["macro_f1"])
        per_task.setdefault((r["corpus"], r["task"], r["method"]), []).append(r["macro_f1"])
        if r["probe_macro_f1"] != "":
            probe.setdefault(r["method"], []).append(r["probe_macro_f1"])
    summary = {}
    for m in methods:
        seed_means = [float(np.mean(v)) for _, v in sorted(per_seed[m].items())]
        mean, std = _mean_std(seed_means)
        summary[m] = {"mean": mean, "std": std, "n_seeds": len(seed_means),
                      "probe": float(np.mean(probe[m])) if m in probe else None}
    tasks = sorted({(c, t) for c, t, _ in per_task})
    return {"methods": methods, "summary": summary, "tasks": tasks,
            "per_task": {k: float(np.mean(v)) for k, v in per_task.items()}}
