"""``python -m axolotl_decselfmask.experiments run|report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from axolotl_decselfmask.io.files import read_json
from axolotl_decselfmask.tools.experiments.budget import write_budget
from axolotl_decselfmask.tools.experiments.grid import Grid, load_grid
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.precision import write_precision
from axolotl_decselfmask.tools.experiments.predictions import (
    export_finished,
    load_predictions,
    rows_from_predictions,
)
from axolotl_decselfmask.tools.experiments.report import write_results
from axolotl_decselfmask.tools.experiments.results import collect, merge_rows
from axolotl_decselfmask.tools.experiments.runner import plan, run_grid

DATA_DIR_HELP = ("folder holding the grid's corpus files, each looked up by its file name (default: the paths the "
                 "grid names, from the current folder, else from the grid file's folder)")
PREDICTIONS_HELP = ("folder of the per-note predictions, one gzip'd JSONL per corpus, method and seed (default: "
                    "<out>/predictions); docs/results/predictions for the committed ones")


def _bootstrap_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions-dir", help=PREDICTIONS_HELP)
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap's draws (default 0)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m axolotl_decselfmask.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a grid (finished runs are skipped)")
    p_run.add_argument("grid")
    p_run.add_argument("--out", required=True)
    p_run.add_argument("--methods", help="comma-separated subset of the grid's methods")
    p_run.add_argument("--seeds", help="comma-separated subset of the grid's seeds (with --methods: two lanes "
                       "or machines can split a grid without running the same run)")
    p_run.add_argument("--dry-run", action="store_true", help="write data and recipes, run nothing")
    p_run.add_argument("--data-dir", help=DATA_DIR_HELP)
    _bootstrap_args(p_run)
    p_rep = sub.add_parser("report", help=("rebuild results.csv, results.md, the bootstrap and the plots from the "
                                           "predictions folder (refreshed first from the finished runs in --out)"))
    p_rep.add_argument("grid", nargs="+", help="grid file(s): several are reported together (e.g. one per corpus)")
    p_rep.add_argument("--out", required=True)
    p_rep.add_argument("--data-dir", help=DATA_DIR_HELP)
    p_rep.add_argument("--budget", action="store_true",
                       help=("the label-budget curve instead: each grid one labelled_per_task, its predictions in "
                             "<predictions-dir>/<grid file stem> (else <predictions-dir>); writes budget.json, "
                             "budget.md, budget.png"))
    p_rep.add_argument("--precision", action="store_true",
                       help=("the precision effect instead: two grids A B, A's predictions in "
                             "<predictions-dir>/<A's file stem>; A minus B per method both have and pooled; writes "
                             "precision.json, precision.md"))
    _bootstrap_args(p_rep)
    return parser


def _intkeys(corpus: dict) -> dict:
    for t in corpus["tasks"].values():
        t["train"] = {int(k): v for k, v in t["train"].items()}
    return corpus


def _report_grid(path: str, data_dir: str | None) -> Grid:
    """The grid; when its corpus files are not here (a report from committed predictions needs
    none), the grid as written, paths unresolved."""
    import yaml

    try:
        return load_grid(path, data_dir)
    except SystemExit as err:
        if not Path(path).is_file() or "invalid grid" in str(err):
            raise
        print(f"report: {err}; reading the grid without its corpus files (finished runs are not collected)")
        return Grid(**(yaml.safe_load(Path(path).read_text()) or {}))


def _metric_rows(grid: Grid, out_dir: Path, pred_dir: Path) -> list[dict]:
    """The rows of the finished runs in ``out_dir`` (their predictions copied into ``pred_dir``
    first), or [] when ``out_dir`` has no data of this grid's corpora."""
    data = read_json(out_dir / "data" / "splits.json") or {}
    if not all(c.name in data for c in grid.corpora):
        return []
    try:
        runs = plan(grid, out_dir, {k: _intkeys(v) for k, v in data.items() if k in {c.name for c in grid.corpora}})
    except (SystemExit, OSError, KeyError, ValueError) as err:
        print(f"report: the runs of {out_dir} are not read ({err})")
        return []
    export_finished(runs, pred_dir, grid.seeds)
    return collect(grid, runs)


def report(grid_path: str | list[str], out: str, data_dir: str | None = None, predictions_dir: str | None = None,
           resamples: int = 10_000, bootstrap_seed: int = 0) -> list[dict]:
    """results.csv, results.md, bootstrap.json and the plots again, from the predictions folder
    (default ``<out>/predictions``), which the finished runs in ``out`` (if any) refresh first.
    Rows of finished runs without predictions come from their metrics.json. Several grids (say one
    per corpus) are reported together: their corpora, methods and seeds."""
    grids = [_report_grid(p, data_dir) for p in ([grid_path] if isinstance(grid_path, str) else grid_path)]
    out_dir = Path(out)
    pred_dir = Path(predictions_dir) if predictions_dir else out_dir / "predictions"
    metric_rows = [r for g in grids for r in _metric_rows(g, out_dir, pred_dir)]
    corpora = {c.name for g in grids for c in g.corpora}
    methods = [m for m in METHODS if any(m in g.methods for g in grids)]
    seeds = {s for g in grids for s in g.seeds}
    records = load_predictions(pred_dir, corpora, set(methods), seeds)
    if not records and not metric_rows:
        raise SystemExit(f"report: no predictions in {pred_dir} and no finished runs in {out_dir / 'runs'} for "
                         f"the corpora {sorted(corpora)}; run the grid first (or give --predictions-dir)")
    rows = merge_rows(metric_rows, rows_from_predictions(records), set())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(out_dir, rows, grids[0], None, records, resamples, bootstrap_seed)
    print(f"{len(rows)} rows ({len(records)} predictions files) -> {out_dir / 'results.csv'}")
    return rows


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "run":
        methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds is not None else None
            if seeds == []:
                raise ValueError
        except ValueError:
            raise SystemExit(f"--seeds: comma-separated integers, got {args.seeds!r}") from None
        run_grid(args.grid, args.out, methods, args.dry_run, args.data_dir, args.predictions_dir, args.resamples,
                 args.bootstrap_seed, seeds)
    elif args.precision:
        if len(args.grid) != 2 or args.budget:
            raise SystemExit(f"report --precision: two grids, A (its own predictions folder) then B; got "
                             f"{len(args.grid)}{' and --budget' if args.budget else ''}")
        write_precision(args.out, *[(p, _report_grid(p, args.data_dir)) for p in args.grid],
                        args.predictions_dir or Path(args.out) / "predictions", args.resamples, args.bootstrap_seed)
    elif args.budget:
        write_budget(args.out, [(p, _report_grid(p, args.data_dir)) for p in args.grid],
                     args.predictions_dir or Path(args.out) / "predictions", args.resamples, args.bootstrap_seed)
    else:
        report(args.grid, args.out, args.data_dir, args.predictions_dir, args.resamples, args.bootstrap_seed)
