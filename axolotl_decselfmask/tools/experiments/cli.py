"""``axolotl decselfmask experiments run|report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from axolotl_decselfmask.io.files import read_json
from axolotl_decselfmask.tools.experiments.budget import predictions_folder, write_budget
from axolotl_decselfmask.tools.experiments.grid import Grid, load_grid
from axolotl_decselfmask.tools.experiments.ladder import write_ladder
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.precision import write_precision
from axolotl_decselfmask.tools.experiments.predictions import (
    export_finished,
    load_predictions,
    predictions_path,
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
    parser = argparse.ArgumentParser(prog="axolotl decselfmask experiments")
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
    p_rep.add_argument("--methods", help=("comma-separated subset of the grids' methods: the table, the bootstrap "
                                          "and the plots of those only (say, the runs of one precision)"))
    p_rep.add_argument("--budget", action="store_true",
                       help=("the label-budget curve instead: each grid one labelled_per_task, its predictions in "
                             "<predictions-dir>/<grid file stem> (else <predictions-dir>); writes budget.json, "
                             "budget.md, budget.png"))
    p_rep.add_argument("--precision", action="store_true",
                       help=("the precision effect instead: two grids A B, A's predictions in "
                             "<predictions-dir>/<A's file stem>; A minus B per method both have and pooled; writes "
                             "precision.json, precision.md"))
    p_rep.add_argument("--ladder", action="store_true",
                       help=("the ladder instead (issue 34): each grid one rung, its predictions in "
                             "<predictions-dir>/<grid file stem>; decselfmask minus sft and minus "
                             "continual_pretraining_authors per rung under each scorer, the heads, the off-format "
                             "shares; writes ladder.json, ladder.md, ladder.png. A rung's figures are withheld "
                             "until all of its runs are there"))
    p_rep.add_argument("--include-partial", action="store_true",
                       help=("with --ladder: show the figures of rungs that are not complete too (a cut declared "
                             "at the end); the report names them and their seeds"))
    p_rep.add_argument("--results-md", metavar="PATH",
                       help=("with --ladder: also rewrite the text between the lines <!-- ladder-report:begin --> "
                             "and <!-- ladder-report:end --> of PATH (docs/results.md) with the ladder's section: "
                             "the summary sentence, the table, the plot, the heads"))
    p_rep.add_argument("--arm", metavar="GRID",
                       help=("with --ladder: the arm beyond the paper too (examples/grids/arm_hallmarks.yml, written "
                             "by scripts/arm_grids.py; its predictions in <predictions-dir>/<its file stem>): each "
                             "method's Macro F1 and the registered differences, withheld until every run is there; "
                             "its methods join the defaults rule"))
    p_rep.add_argument("--without-arm", action="store_true",
                       help=("with --ladder: declare that the arm beyond the paper will not run, so that the "
                             "defaults rule is applied over the ladder alone (by the plan it waits for the arm)"))
    p_rep.add_argument("--transfer", metavar="GRID", nargs="+",
                       help=("with --ladder: the transfer of the ladder's moving rungs too (amendment T1; "
                             "examples/grids/transfer_mtsamples.yml, transfer_qwen_hallmarks.yml, written by "
                             "scripts/transfer_grids.py; each one's predictions in <predictions-dir>/<its file "
                             "stem>): DecSelfMask minus sft and minus continual_pretraining_authors under each "
                             "scorer, withheld until every run of the grid is there"))
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


def _split_methods(text: str | None) -> list[str] | None:
    return [m.strip() for m in text.split(",") if m.strip()] if text else None


def _grid_records(grid: Grid, folder: Path, methods: set[str]) -> list[dict]:
    return load_predictions(folder, {c.name for c in grid.corpora}, set(grid.methods) & methods, set(grid.seeds))


def report(grid_path: str | list[str], out: str, data_dir: str | None = None, predictions_dir: str | None = None,
           resamples: int = 10_000, bootstrap_seed: int = 0, methods: list[str] | None = None) -> list[dict]:
    """results.csv, results.md, bootstrap.json and the plots again, from the predictions folder
    (default ``<out>/predictions``), which the finished runs in ``out`` (if any) refresh first.
    Rows of finished runs without predictions come from their metrics.json. Several grids (say one
    per corpus) are reported together: their corpora, methods and seeds. A grid whose predictions
    have a folder of their own, ``<predictions-dir>/<grid file stem>`` (a budget grid, the float32
    check), is read from there, every other grid from ``<predictions-dir>``; the same run found in
    two folders is an error. ``methods``: only these of the grids' methods."""
    paths = [grid_path] if isinstance(grid_path, str) else list(grid_path)
    grids = [(p, _report_grid(p, data_dir)) for p in paths]
    out_dir = Path(out)
    pred_dir = Path(predictions_dir) if predictions_dir else out_dir / "predictions"
    offered = [m for m in METHODS if any(m in g.methods for _, g in grids)]
    if methods is not None:
        unknown = [m for m in methods if m not in offered]
        if unknown or not methods:
            raise SystemExit(f"report --methods: {unknown or methods} not among the grids' methods {offered}")
    wanted = set(methods if methods is not None else offered)
    metric_rows, found = [], {}
    for path, grid in grids:
        folder = predictions_folder(path, pred_dir)
        metric_rows += [r for r in _metric_rows(grid, out_dir, folder) if r.get("method") in wanted]
        for rec in _grid_records(grid, folder, wanted):
            key = (rec["corpus"], rec["method"], rec["seed"])  # one file each
            if key in found and found[key][0] != folder:
                raise SystemExit(f"report: {rec['corpus']}/{rec['method']}-seed{rec['seed']} is in both "
                                 f"{found[key][0]} and {folder} (grid {path}); report one of them, or leave that "
                                 "method out of one grid's report with --methods")
            if key in found:  # the same file through two grids: the seeds either grid stands for
                rec = {**rec, "seeds": sorted(set(found[key][1]["seeds"]) | set(rec["seeds"]))}
            found[key] = (folder, rec)
    # in the order of their paths, as one folder's files load (the bootstrap draws in this order)
    records = [rec for folder, rec in sorted(found.values(), key=lambda fr: str(
        predictions_path(fr[0], fr[1]["corpus"], fr[1]["method"], fr[1]["seed"])))]
    corpora = {c.name for _, g in grids for c in g.corpora}
    if not records and not metric_rows:
        raise SystemExit(f"report: no predictions in {pred_dir} and no finished runs in {out_dir / 'runs'} for "
                         f"the corpora {sorted(corpora)}; run the grid first (or give --predictions-dir)")
    rows = merge_rows(metric_rows, rows_from_predictions(records), set())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(out_dir, rows, grids[0][1], None, records, resamples, bootstrap_seed)
    print(f"{len(rows)} rows ({len(records)} predictions files) -> {out_dir / 'results.csv'}")
    return rows


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "run":
        methods = _split_methods(args.methods)
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()] if args.seeds is not None else None
            if seeds == []:
                raise ValueError
        except ValueError:
            raise SystemExit(f"--seeds: comma-separated integers, got {args.seeds!r}") from None
        run_grid(args.grid, args.out, methods, args.dry_run, args.data_dir, args.predictions_dir, args.resamples,
                 args.bootstrap_seed, seeds)
    elif sum((args.budget, args.precision, args.ladder)) > 1:
        raise SystemExit("report: --budget, --precision and --ladder are separate reports; give one of them")
    elif (args.include_partial or args.results_md or args.arm or args.without_arm or args.transfer) and not args.ladder:
        raise SystemExit("report: --include-partial, --results-md, --arm, --without-arm and --transfer belong to the "
                         "ladder's report; add --ladder")
    elif args.arm and args.without_arm:
        raise SystemExit("report: --arm and --without-arm contradict each other; give one")
    elif args.ladder:
        write_ladder(args.out, [(p, _report_grid(p, args.data_dir)) for p in args.grid],
                     args.predictions_dir or Path(args.out) / "predictions", args.resamples, args.bootstrap_seed,
                     args.include_partial, args.results_md,
                     (args.arm, _report_grid(args.arm, args.data_dir)) if args.arm else None, args.without_arm,
                     [(p, _report_grid(p, args.data_dir)) for p in args.transfer or []])
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
        report(args.grid, args.out, args.data_dir, args.predictions_dir, args.resamples, args.bootstrap_seed,
               _split_methods(args.methods))
