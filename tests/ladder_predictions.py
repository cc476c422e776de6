"""The ladder's hand-made predictions, shared by the ladder, arm and transfer report tests: a rung's grid file and
one run's predictions written through the experiment runner's own writer, with figures worked out by hand."""

from __future__ import annotations

from pathlib import Path

import yaml

from axolotl_decselfmask.io.files import atomic_write_jsonl
from axolotl_decselfmask.stage2 import outputs
from axolotl_decselfmask.tools.experiments.predictions import export_run

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "docs" / "results"
CORPUS = "hallmarks_of_cancer"
YES, NO, OFF = "8505", "2152", "99 13"  # answers as the string-match scorer reads them: joined token ids
GOLD = ["yes", "no", "yes", "no", "yes", "no", "yes", "no"]  # 4 + 4 test notes, shared by both tasks
TASKS = ("t1", "t2")
RESAMPLES = 400

# the hand-made predictions (per note): options answer, string-match answer
PERFECT = ([*GOLD], [YES if g == "yes" else NO for g in GOLD])
ALWAYS_NO = (["no"] * 8, [NO] * 8)  # options: Macro F1 (0 + 2*4/(4+8)) / 2 = 1/3
OFF_ON_YES = (["no"] * 8, [OFF if g == "yes" else NO for g in GOLD])  # string match: (0 + 1 + 0) / 3 = 1/3
ALWAYS_YES = (["yes"] * 8, [YES] * 8)  # 1/3 under both
# options: the first 4 notes right, then "no": F1 yes 2*2/(2*2+2) = 2/3, no 2*4/(2*4+2) = 4/5, mean 11/15
HALF = (["yes", "no", "yes", "no", "no", "no", "no", "no"], [YES, NO, YES, NO, NO, NO, NO, NO])
ALL_OFF = (["no"] * 8, [OFF] * 8)  # options 1/3; string match: no answer on format, 0


def grid_file(folder: Path, rung: int, methods: list[str], seeds: list[int]) -> str:
    """A rung's grid file, as scripts/ladder_grids.py writes them (its "Rung <n> adds" line), two tasks."""
    grid = yaml.safe_load((ROOT / "examples" / "grids" / "ladder_1_hallmarks.yml").read_text())
    grid["corpora"][0]["file"] = str(folder / "absent.csv.gz")  # a report from predictions needs no corpus file
    grid["corpora"][0]["tasks"] = [{**grid["corpora"][0]["tasks"][0], "name": t} for t in TASKS]
    grid.update(methods=methods, seeds=seeds)
    path = folder / f"ladder_{rung}_test.yml"
    path.write_text(f"# Rung {rung} adds: factor {rung}.\n" + yaml.safe_dump(grid, sort_keys=False))
    return str(path)


def write_run(pred_dir: Path, grid_path: str, method: str, seed: int, answers: tuple, heads: dict | None = None,
           dtype: str = "bfloat16", seeds: list[int] | None = None, seconds: float = 1.0) -> None:
    """One run's predictions file, through the runner's writer (a run folder, its metrics entries)."""
    run_dir = pred_dir.parent / "runs" / f"{Path(grid_path).stem}-{method}-{seed}"
    test_file = run_dir / "test.jsonl"
    atomic_write_jsonl(test_file, [{"text": "x", "label": g, "row": 100 + i} for i, g in enumerate(GOLD)])
    run = {"corpus": CORPUS, "method": method, "dir": run_dir,
           "recipe": {"decselfmask": {"tasks": [{"task": f"{t}@seed{seed}", "test_file": str(test_file)}
                                                for t in TASKS]}}}
    entries = {}
    for t in TASKS:
        outputs.write_prediction_rows(run_dir / "output", f"{t}@seed{seed}", [
            {"id": i, "row": i, "gold": g, "pred": p, "scores": [0.0, 0.0],
             "string_match": {"gold": YES if g == "yes" else NO, "pred": sm, "off_format": sm not in (YES, NO)}}
            for i, (g, p, sm) in enumerate(zip(GOLD, *answers))])
        entries[f"{t}@seed{seed}"] = {
            "labels": ["yes", "no"], "n_train": 16, "environment": {"dtype": dtype, "cpu_capability": "AMX"},
            "probe_heads": {style: {"predictions": list(pred)} for style, pred in (heads or {}).items()}}
    record = {"seconds": seconds, "run_key": f"{grid_path}-{method}-{seed}", "metrics": {"tasks": entries}}
    export_run(run, record, pred_dir / Path(grid_path).stem, seeds or [seed])
