"""Running a grid: the plan of runs, each run through an ``axolotl train`` subprocess (its output
in ``run.log``), and ``done.json`` written last so that a finished run is not run again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from axolotl_decselfmask.io.files import (
    atomic_write_json,
    atomic_write_text,
    read_json,
)
from axolotl_decselfmask.stage1.budget import STATS_FILE
from axolotl_decselfmask.stage1.checkpoints import STAGE1_MARKER, stage1_weights_key
from axolotl_decselfmask.stage2.model import MERGED_RECORD
from axolotl_decselfmask.stage2.outputs import forget_metrics, read_metrics
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import Grid, load_grid
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.predictions import (
    committed_records,
    export_finished,
    load_predictions,
    rows_from_predictions,
)
from axolotl_decselfmask.tools.experiments.recipes import run_recipe, run_tasks, yaml_dump
from axolotl_decselfmask.tools.experiments.report import write_results
from axolotl_decselfmask.tools.experiments.results import (
    DONE_FILE,
    collect,
    done_record,
    merge_rows,
    read_csv,
    run_key,
)
from axolotl_decselfmask.tools.experiments.setfit_run import runspec

SETFIT_SPEC = "runspec.json"


def plan(grid: Grid, out: Path, data: dict) -> list[dict]:
    runs = []
    seed_groups = [list(grid.seeds)] if grid.share_stage1_across_seeds else [[s] for s in grid.seeds]
    for c in grid.corpora:
        for method in grid.methods:
            # zero-shot trains nothing and its test split is fixed: one evaluation serves every seed
            for seeds in ([[grid.seeds[0]]] if method == "zero_shot" else seed_groups):
                name = method if grid.share_stage1_across_seeds else f"{method}-seed{seeds[0]}"
                run_dir = out / "runs" / c.name / name
                if METHODS[method].kind != "recipe":  # setfit, logreg: no Axolotl recipe; the run spec is one
                    recipe = runspec(grid, run_tasks(c, data[c.name], seeds), run_dir / "output", method)
                else:
                    recipe = run_recipe(grid, c, data[c.name], method, seeds, run_dir)
                run = {"corpus": c.name, "method": method, "seeds": seeds, "dir": run_dir, "recipe": recipe,
                       "packages": grid.setfit_packages}
                if method in grid.stage1_models:
                    reuse_stage1(run, grid.stage1_models[method].format(corpus=c.name, seed=seeds[0]))
                runs.append(run)
    return runs


def reuse_stage1(run: dict, folder: str) -> None:
    """Make ``run`` start from the saved stage-1 model in ``folder`` (``stage1_models``): its recipe's
    base model, no stage 1 of its own. ``run["stage1_model"]`` records the folder and the key of the
    finished stage 1 it holds (:func:`stage1_model_key`), which is part of the run key
    (:func:`.results.run_key`) in place of the folder's path."""
    path = Path(folder).resolve()
    run["recipe"]["base_model"] = str(path)
    run["recipe"]["decselfmask"]["stage1"] = False
    run["stage1_model"] = {"folder": str(path), "key": stage1_model_key(path)}


def stage1_model_key(path: Path) -> str:
    """The key of the finished stage 1 a folder holds: a merged stage-1 LoRA's (the key in its
    ``decselfmask_merged.json``), or a full fine-tune's (the run's ``output/`` with the completion
    record stage 1 writes after its weights are saved, ``decselfmask_stage1_complete.json``: the
    fingerprint of their names, sizes and sha256). ``missing`` for anything else: a folder that is not
    there, a merge or a stage 1 that did not finish (Axolotl writes ``config.json`` before training, so
    a config alone is no model)."""
    record = read_json(path / MERGED_RECORD)
    if isinstance(record, dict) and record.get("key"):
        return str(record["key"])
    marker = read_json(path / STAGE1_MARKER)
    if isinstance(marker, dict) and marker.get("kind") == "full":
        return stage1_weights_key(path) or "missing"
    return "missing"


def missing_stage1_models(runs: list[dict]) -> list[str]:
    """One line per run in ``runs`` whose reused stage-1 model is not there."""
    return [f"{r['corpus']}/{r['dir'].name}: {r['stage1_model']['folder']}" for r in runs
            if r.get("stage1_model", {}).get("key") == "missing"]


def _environment() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               AXOLOTL_DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _command(run: dict) -> tuple[list[str], dict]:
    """The subprocess of one run and its environment: ``axolotl train recipe.yml``, or for setfit
    ``python -m ...setfit_run runspec.json`` with setfit's packages first on PYTHONPATH (logreg too:
    sentence-transformers is there)."""
    run_dir: Path = run["dir"]
    env = _environment()
    if METHODS[run["method"]].kind != "recipe":
        atomic_write_json(run_dir / SETFIT_SPEC, run["recipe"])
        packages = Path(run["packages"])
        if packages.is_dir():
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(packages), env.get("PYTHONPATH", "")) if p)
        return [sys.executable, "-m", "axolotl_decselfmask.tools.experiments.setfit_run",
                str(run_dir / SETFIT_SPEC)], env
    recipe_path = run_dir / "recipe.yml"
    atomic_write_text(recipe_path, yaml_dump(run["recipe"]))
    axolotl = Path(sys.executable).parent / "axolotl"
    return [str(axolotl) if axolotl.exists() else "axolotl", "train", str(recipe_path)], env


def execute(run: dict, log_progress=print) -> dict:
    """``axolotl train`` of one run (its output in ``run.log``; setfit: :mod:`.setfit_run`);
    returns the done record."""
    run_dir: Path = run["dir"]
    run_dir.mkdir(parents=True, exist_ok=True)
    forget_metrics(run_dir / "output")  # a finished run writes it anew
    command, env = _command(run)
    start = time.time()
    with open(run_dir / "run.log", "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - start
    metrics = read_metrics(run_dir / "output")
    if proc.returncode != 0 or not isinstance(metrics, dict):
        tail = (run_dir / "run.log").read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"run {run_dir} failed (exit {proc.returncode}); last lines of {run_dir / 'run.log'}:\n"
                           + "\n".join(tail))
    stage1 = read_json(run_dir / "output" / STATS_FILE) or {}
    record = {"run_key": run_key(run), "seconds": round(seconds, 1), "command": command,
              "stage1_tokens": stage1.get("tokens"), "stage1_examples": stage1.get("examples"),
              "stage1_supervised_tokens": stage1.get("supervised_tokens"), "metrics": metrics}
    atomic_write_json(run_dir / DONE_FILE, record)
    return record


def _write_recipes(todo: list[dict]) -> None:
    """A dry run: every recipe written, nothing run."""
    for r in todo:
        r["dir"].mkdir(parents=True, exist_ok=True)
        if METHODS[r["method"]].kind != "recipe":
            atomic_write_json(r["dir"] / SETFIT_SPEC, r["recipe"])
            print(f"  would run: python -m axolotl_decselfmask.tools.experiments.setfit_run {r['dir'] / SETFIT_SPEC}")
            continue
        atomic_write_text(r["dir"] / "recipe.yml", yaml_dump(r["recipe"]))
        print(f"  would run: axolotl train {r['dir'] / 'recipe.yml'}")


def _execute_all(todo: list[dict], publish) -> list[str]:
    """Run ``todo`` in order, the predictions and results written after each (``publish()``); returns
    the failures."""
    from tqdm.auto import tqdm

    failed = []
    bar = tqdm(todo, desc="experiments", unit="run")
    for run in bar:
        bar.set_postfix_str(f"{run['corpus']}/{run['method']}")
        try:
            record = execute(run)
            tqdm.write(f"  {run['corpus']}/{run['dir'].name}: {record['seconds'] / 60:.1f} min, "
                       f"mean Macro F1 {record['metrics'].get('macro_f1_mean', float('nan')):.4f}")
        except RuntimeError as err:
            failed.append(str(err))
            tqdm.write(str(err))
        publish()
    return failed


def _subset(grid: Grid, methods: list[str] | None) -> list[str] | None:
    unknown = [m for m in methods or () if m not in grid.methods]
    if unknown:
        raise SystemExit(f"--methods: {unknown} not among the grid's methods {list(grid.methods)}")
    return methods or None


def run_grid(grid_path: str, out: str, methods: list[str] | None = None, dry_run: bool = False,
             data_dir: str | None = None, predictions_dir: str | None = None, resamples: int = 10_000,
             bootstrap_seed: int = 0, seeds: list[int] | None = None) -> list[dict]:
    """Run the grid's unfinished runs (of ``methods`` only, if given) and write the results.

    ``results.csv``, ``results.md`` and the plots hold every method's rows: those of finished runs,
    and with ``methods`` the rows ``results.csv`` already had for the other methods (kept as they
    were when their runs are gone, :func:`.results.merge_rows`). Every finished run of ``methods``
    has its predictions copied into ``predictions_dir`` (default ``<out>/predictions``,
    :mod:`.predictions`; other methods' files are left as they are), from which the bootstrap
    intervals of ``results.md`` come (``resamples``, ``bootstrap_seed``). ``seeds``: only the runs
    of these seeds (zero-shot's one run belongs to the grid's first seed)."""
    grid = load_grid(grid_path, data_dir)
    methods = _subset(grid, methods)
    unknown_seeds = sorted(set(seeds or ()) - set(grid.seeds))
    if unknown_seeds:
        raise SystemExit(f"--seeds: {unknown_seeds} not among the grid's seeds {list(grid.seeds)}")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    kept = read_csv(out_dir) if methods else []  # read before anything is rewritten
    data = build_data(grid, out_dir)
    atomic_write_json(out_dir / "data" / "splits.json", data)
    all_runs = plan(grid, out_dir, data)
    runs = [r for r in all_runs if r["method"] in methods] if methods else all_runs
    if seeds is not None:
        partly = [r for r in runs if set(r["seeds"]) & set(seeds) and not set(r["seeds"]) <= set(seeds)]
        if partly:
            raise SystemExit(f"--seeds {seeds}: the grid shares stage 1 across seeds, so its runs "
                             f"{[r['dir'].name for r in partly]} each hold seeds {partly[0]['seeds']}; give all of "
                             "a run's seeds or none")
        runs = [r for r in runs if set(r["seeds"]) <= set(seeds)]

    pred_dir = Path(predictions_dir) if predictions_dir else out_dir / "predictions"
    # runs whose run folder is gone (a fresh checkout) but whose committed predictions came from
    # the same recipe: finished; their rows come from the predictions
    committed = {id(r): recs for r in all_runs if not done_record(r) and (recs := committed_records(r, pred_dir))}

    def rows_now() -> list[dict]:
        fresh = collect(grid, all_runs)
        fresh += rows_from_predictions([  # zero-shot's one file stands for every seed, as in collect()
            {**rec, "seeds": list(grid.seeds) if rec["method"] == "zero_shot" else rec["seeds"]}
            for recs in committed.values() for rec in recs])
        return merge_rows(kept, fresh, set(methods)) if methods else fresh

    def publish() -> list[dict]:
        export_finished(runs, pred_dir, grid.seeds)  # only this invocation's methods
        rows = rows_now()
        records = load_predictions(pred_dir, {c.name for c in grid.corpora}, set(grid.methods), set(grid.seeds))
        write_results(out_dir, rows, grid, time.time() - start, records, resamples, bootstrap_seed)
        return rows

    todo = [r for r in runs if not done_record(r) and id(r) not in committed]
    missing = missing_stage1_models(todo)
    if missing:  # before any run: a stage 1 to reuse that is not there
        raise SystemExit(f"{grid_path}: stage1_models names stage-1 models that are not there or did not finish "
                         f"(neither a merged stage 1's {MERGED_RECORD} nor a full fine-tune's {STAGE1_MARKER}):\n  "
                         + "\n  ".join(missing)
                         + "\nRun the grid that trains them first (its runs keep output/stage1_merged), fix the "
                         "path, or leave those seeds out with --seeds.")
    print(f"experiments: {len(runs)} runs ({len(runs) - len(todo)} already done), "
          f"{sum(len(c.tasks) for c in grid.corpora)} tasks, seeds {grid.seeds}, into {out_dir}")
    if dry_run:
        _write_recipes(todo)
        return []
    failed = _execute_all(todo, publish)
    rows = publish()
    print(f"experiments: {len(rows)} result rows in {out_dir / 'results.csv'}, summary in {out_dir / 'results.md'}")
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed; see their run.log. The others are kept; run again to retry.")
    return rows
