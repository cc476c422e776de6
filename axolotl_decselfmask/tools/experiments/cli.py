"""``python -m axolotl_decselfmask.experiments run|report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from axolotl_decselfmask.io.files import read_json
from axolotl_decselfmask.tools.experiments.grid import load_grid
from axolotl_decselfmask.tools.experiments.report import write_results
from axolotl_decselfmask.tools.experiments.results import collect
from axolotl_decselfmask.tools.experiments.runner import plan, run_grid

DATA_DIR_HELP = ("folder holding the grid's corpus files, each looked up by its file name (default: the paths the "
                 "grid names, from the current folder, else from the grid file's folder)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m axolotl_decselfmask.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a grid (finished runs are skipped)")
    p_run.add_argument("grid")
    p_run.add_argument("--out", required=True)
    p_run.add_argument("--methods", help="comma-separated subset of the grid's methods")
    p_run.add_argument("--dry-run", action="store_true", help="write data and recipes, run nothing")
    p_run.add_argument("--data-dir", help=DATA_DIR_HELP)
    p_rep = sub.add_parser("report", help="rebuild results.csv, results.md and plots from finished runs")
    p_rep.add_argument("grid")
    p_rep.add_argument("--out", required=True)
    p_rep.add_argument("--data-dir", help=DATA_DIR_HELP)
    return parser


def _intkeys(corpus: dict) -> dict:
    for t in corpus["tasks"].values():
        t["train"] = {int(k): v for k, v in t["train"].items()}
    return corpus


def report(grid_path: str, out: str, data_dir: str | None = None) -> None:
    """results.csv, results.md and plots again from the finished runs of a grid."""
    grid = load_grid(grid_path, data_dir)
    out_dir = Path(out)
    data = read_json(out_dir / "data" / "splits.json")
    if not data:
        raise SystemExit(f"{out_dir}: no data/splits.json; run the grid first")
    rows = collect(grid, plan(grid, out_dir, {k: _intkeys(v) for k, v in data.items()}))
    write_results(out_dir, rows, grid)
    print(f"{len(rows)} rows -> {out_dir / 'results.csv'}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "run":
        methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
        run_grid(args.grid, args.out, methods, args.dry_run, args.data_dir)
    else:
        report(args.grid, args.out, args.data_dir)
