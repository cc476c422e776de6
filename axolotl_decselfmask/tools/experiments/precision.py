"""``report --precision A B``: the effect of running grid A's methods in another precision than
grid B ran them (docs/results.md, notes 2 and 3): A minus B per method both have, and pooled over
them, by the comparison's paired bootstrap (:func:`.bootstrap.bootstrap`).

A's predictions are ``<predictions_dir>/<A's file stem>/`` (its own folder: its files have B's
names), B's those :func:`.budget.predictions_folder` gives for B. Per method, A's and B's files of
that method become two methods of one bootstrap, A the reference, so the difference is A minus B on
the same resampled notes and tasks. Pooled, every (task, method) is one task slot of that bootstrap
(its notes still drawn jointly with the corpus' other tasks that share them). A side's precision is
the ``dtype`` its files record (:mod:`.predictions`), else the grid's ``recipe.bf16`` as written.
"""

from __future__ import annotations

from pathlib import Path

from axolotl_decselfmask.io.files import atomic_write_json, atomic_write_text
from axolotl_decselfmask.tools.experiments.bootstrap import bootstrap
from axolotl_decselfmask.tools.experiments.budget import predictions_folder
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.predictions import load_predictions

POOLED = "pooled"


def _side(path: str, grid: Grid, predictions_dir: str | Path, methods: set[str]) -> tuple[list[dict], str, Path]:
    folder = predictions_folder(path, predictions_dir)
    records = load_predictions(folder, {c.name for c in grid.corpora}, methods, set(grid.seeds))
    recorded = sorted({r["dtype"] for r in records if r.get("dtype")})
    if len(recorded) > 1:
        raise SystemExit(f"report --precision: the predictions of {path} in {folder} mix precisions {recorded}; "
                         "a side must be one precision (rerun the odd runs, or give them their own folder)")
    bf16 = (grid.recipe or {}).get("bf16", "auto")
    return records, recorded[0] if recorded else f"bf16: {bf16}".lower(), folder


def _as(records: list[dict], method: str, pooled: bool) -> list[dict]:
    """``records`` as one method ``method``; pooled: each task renamed ``<task> [<its method>]``."""
    out = []
    for r in records:
        tasks = [{**t, "task": f"{t['task']} [{r['method']}]"} for t in r["tasks"]] if pooled else r["tasks"]
        out.append({**r, "method": method, "tasks": tasks})
    return out


def precision_effect(a: tuple[str, Grid], b: tuple[str, Grid], predictions_dir: str | Path,
                     resamples: int = 10_000, seed: int = 0) -> dict:
    """``{"a", "b", "resamples", "seed", "effects": {method or "pooled": {"n_tasks", "files": [A's, B's],
    "a": {mean, low, high}, "b": {...}, "difference": {mean, low, high, excludes_zero}}}}`` for
    the methods both grids have (A minus B)."""
    (path_a, grid_a), (path_b, grid_b) = a, b
    methods = [m for m in grid_a.methods if m in grid_b.methods]
    if not methods:
        raise SystemExit(f"report --precision: {path_a} and {path_b} have no method in common")
    rec_a, label_a, folder_a = _side(path_a, grid_a, predictions_dir, set(methods))
    rec_b, label_b, folder_b = _side(path_b, grid_b, predictions_dir, set(methods))
    if folder_a == folder_b:
        raise SystemExit(f"report --precision: {path_a} and {path_b} read the same predictions folder {folder_a}; "
                         f"give {path_a} its own, <predictions-dir>/{Path(path_a).stem}")
    have = [m for m in methods if any(r["method"] == m for r in rec_a) and any(r["method"] == m for r in rec_b)]
    if not have:
        raise SystemExit(f"report --precision: no method has predictions in both {folder_a} and {folder_b}")
    effects = {}
    for name in [*have, POOLED] if len(have) > 1 else have:
        pooled = name == POOLED
        pick = (lambda r: r["method"] in have) if pooled else (lambda r, n=name: r["method"] == n)  # noqa: E731
        side_a = _as([r for r in rec_a if pick(r)], "a", pooled)
        side_b = _as([r for r in rec_b if pick(r)], "b", pooled)
        scope = bootstrap(side_a + side_b, ["a", "b"], resamples, seed, reference="a")["scopes"]["all"]
        effects[name] = {"n_tasks": scope["n_tasks"], "files": [len(side_a), len(side_b)], "a": scope["methods"]["a"],
                         "b": scope["methods"]["b"], "difference": scope["difference"]["b"]}
    return {"a": {"grid": str(path_a), "predictions": str(folder_a), "precision": label_a},
            "b": {"grid": str(path_b), "predictions": str(folder_b), "precision": label_b},
            "resamples": resamples, "seed": seed, "effects": effects}


def precision_markdown(result: dict) -> str:
    a, b = result["a"], result["b"]
    ci = lambda v, f=".4f": f"{v['mean']:{f}} [{v['low']:{f}}, {v['high']:{f}}]"  # noqa: E731
    lines = ["# Precision effect", "",
             (f"A = `{a['grid']}` ({a['precision']}), B = `{b['grid']}` ({b['precision']}): mean Macro F1 over "
              f"tasks and seeds [95% paired bootstrap interval, {result['resamples']:,} resamples], and A minus B "
              "(`*`: the interval excludes zero). `pooled`: every (task, method) one task."), "",
             "| method | tasks | files A / B | A | B | A minus B |", "| --- | --- | --- | --- | --- | --- |"]
    for m, e in result["effects"].items():
        d = e["difference"]
        lines.append(f"| {m} | {e['n_tasks']} | {e['files'][0]} / {e['files'][1]} | {ci(e['a'])} | {ci(e['b'])} "
                     f"| {ci(d, '+.4f')}{' *' if d['excludes_zero'] else ''} |")
    return "\n".join(lines) + "\n"


def write_precision(out: str | Path, a: tuple[str, Grid], b: tuple[str, Grid], predictions_dir: str | Path,
                    resamples: int = 10_000, seed: int = 0) -> dict:
    """:func:`precision_effect` written as ``precision.json`` and ``precision.md`` in ``out``."""
    result = precision_effect(a, b, predictions_dir, resamples, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "precision.json", result)
    atomic_write_text(out / "precision.md", precision_markdown(result))
    print(f"precision effect: {list(result['effects'])} -> {out / 'precision.md'}")
    return result
