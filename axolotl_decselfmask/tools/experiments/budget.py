"""The label-budget curve (the comparison plan's second tier, item 5): mean Macro F1 of each method
against ``labelled_per_task``, one point per grid, each with its paired bootstrap 95% interval
(:func:`.bootstrap.bootstrap` over that grid's predictions alone).

A grid's predictions are ``<predictions_dir>/<grid file stem>/`` when that folder exists (the
budget grids', kept apart since their files have the core grid's names), else ``<predictions_dir>``
itself (the core grid's 16-label point), of which only the files trained on the grid's
``labelled_per_task`` labelled notes (their tasks' ``n_train``) are its: a budget grid not run yet
is left out, not given the core grid's files. A file of another ``n_train`` in a grid's own folder
is an error (the wrong folder).
Written: ``budget.json``, ``budget.md`` and ``budget.png`` in the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from axolotl_decselfmask.io.files import atomic_write_json, atomic_write_text
from axolotl_decselfmask.tools.experiments.bootstrap import REFERENCE, bootstrap
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.plots import save_figure
from axolotl_decselfmask.tools.experiments.predictions import load_predictions


def predictions_folder(grid_path: str | Path, predictions_dir: str | Path) -> Path:
    """``<predictions_dir>/<grid file stem>`` if it is a folder, else ``predictions_dir``."""
    own = Path(predictions_dir) / Path(grid_path).stem
    return own if own.is_dir() else Path(predictions_dir)


def _trained(rec: dict) -> set:
    return {t.get("n_train") for t in rec["tasks"]} - {"", None}


def _check_budget(records: list[dict], n: int, folder: Path) -> None:
    for rec in records:
        trained = _trained(rec)
        if trained and n not in trained:
            raise SystemExit(f"report --budget: {folder}/{rec['corpus']}/{rec['method']}-seed{rec['seed']}: trained "
                             f"on {sorted(trained)} labelled notes per task, not its grid's labelled_per_task {n}; "
                             "give each budget grid its own predictions folder, <predictions-dir>/<grid file stem>")


def budget_curve(grids: list[tuple[str, Grid]], predictions_dir: str | Path, resamples: int = 10_000,
                 seed: int = 0) -> dict:
    """The curve over ``grids`` ((path, grid) pairs, one per ``labelled_per_task``), for the methods
    every grid has: ``{"methods", "reference", "resamples", "points": [{"labelled_per_task", "grid",
    "predictions", "files", "methods": {m: {mean, low, high}}, "difference": {m: {mean, low, high,
    excludes_zero}}}]}`` (``difference``: :data:`.bootstrap.REFERENCE` minus the method), sorted by
    ``labelled_per_task``; a grid without predictions files is left out (said so)."""
    budgets = [g.labelled_per_task for _, g in grids]
    if len(set(budgets)) != len(budgets):
        raise SystemExit(f"report --budget: each grid is one labelled_per_task, got {budgets}")
    methods = [m for m in METHODS if all(m in g.methods for _, g in grids)]
    if not methods:
        raise SystemExit("report --budget: the grids have no method in common")
    points = []
    for path, grid in sorted(grids, key=lambda pg: pg[1].labelled_per_task):
        folder = predictions_folder(path, predictions_dir)
        records = load_predictions(folder, {c.name for c in grid.corpora}, set(methods), set(grid.seeds))
        if folder == Path(predictions_dir):  # the top folder: only the files of this budget are this grid's
            records = [r for r in records if not _trained(r) or grid.labelled_per_task in _trained(r)]
        if not records:
            print(f"report --budget: no predictions of {path} ({grid.labelled_per_task} labelled notes per task) in "
                  f"{folder}; its point is left out")
            continue
        _check_budget(records, grid.labelled_per_task, folder)
        scope = bootstrap(records, methods, resamples, seed)["scopes"]["all"]
        points.append({"labelled_per_task": grid.labelled_per_task, "grid": str(path), "predictions": str(folder),
                       "files": len(records), "methods": scope["methods"], "difference": scope.get("difference", {})})
    if not points:
        raise SystemExit(f"report --budget: no predictions in {predictions_dir} for any of the grids")
    return {"methods": methods, "reference": REFERENCE, "resamples": resamples, "seed": seed, "points": points}


def budget_markdown(curve: dict) -> str:
    ns = [p["labelled_per_task"] for p in curve["points"]]
    lines = ["# Label budget", "", (f"Mean Macro F1 over tasks and seeds [95% paired bootstrap interval, "
                                    f"{curve['resamples']:,} resamples] per labelled notes per task; the last "
                                    f"rows: {curve['reference']} minus each method (`*`: the interval excludes "
                                    "zero)."), "",
             "| method | " + " | ".join(str(n) for n in ns) + " |", "| --- |" + " --- |" * len(ns)]
    for m in curve["methods"]:
        cells = [p["methods"].get(m) for p in curve["points"]]
        lines.append(f"| {m} | " + " | ".join(f"{v['mean']:.4f} [{v['low']:.4f}, {v['high']:.4f}]" if v else ""
                                              for v in cells) + " |")
    for m in curve["methods"]:
        if m == curve["reference"]:
            continue
        cells = [p["difference"].get(m) for p in curve["points"]]
        lines.append(f"| {curve['reference']} minus {m} | " + " | ".join(
            f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]{' *' if d['excludes_zero'] else ''}" if d else ""
            for d in cells) + " |")
    return "\n".join(lines) + "\n"


def plot_budget(curve: dict, path: Path) -> None:
    """Mean Macro F1 of each method against the labelled notes per task (log scale), the bootstrap
    95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for k, m in enumerate(curve["methods"]):
        pts = [(p["labelled_per_task"], p["methods"][m]) for p in curve["points"] if m in p["methods"]]
        xs = [n * (1 + 0.03 * (k - (len(curve["methods"]) - 1) / 2)) for n, _ in pts]  # apart, not hidden
        ys = [v["mean"] for _, v in pts]
        err = [[max(v["mean"] - v["low"], 0) for _, v in pts], [max(v["high"] - v["mean"], 0) for _, v in pts]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=m)
    ns = [p["labelled_per_task"] for p in curve["points"]]
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("labelled notes per task")
    ax.set_ylabel("Macro F1 (mean over tasks and seeds)")
    ax.set_title("Label budget: bars = 95% bootstrap interval", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_report_files(out: str | Path, stem: str, value: Any, markdown: str,
                       plot: Callable[[Any, Path], None]) -> Path:
    """``<stem>.json`` (``value``), ``<stem>.md`` (``markdown``) and ``<stem>.png`` (``plot(value, path)``)
    in the folder ``out`` (made if need be), each written whole; the budget's and the ladder's reports."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{stem}.json", value)
    atomic_write_text(out / f"{stem}.md", markdown)
    plot(value, out / f"{stem}.png")
    return out


def write_budget(out: str | Path, grids: list[tuple[str, Grid]], predictions_dir: str | Path,
                 resamples: int = 10_000, seed: int = 0) -> dict:
    """:func:`budget_curve` written as ``budget.json``, ``budget.md`` and ``budget.png`` in ``out``."""
    curve = budget_curve(grids, predictions_dir, resamples, seed)
    out = write_report_files(out, "budget", curve, budget_markdown(curve), plot_budget)
    print(f"label budget: {len(curve['points'])} points, {curve['methods']} -> {out / 'budget.md'}, budget.png")
    return curve
