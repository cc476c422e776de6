"""Which of a grid's expected runs have counted predictions: one loader for the ladder (:mod:`.ladder`), the arm
beyond the paper (:mod:`.arm`) and the transfer of the ladder's moving rungs (:mod:`.transfer`), each of which
says which runs it expects.

The plan (docs/results.md, "The ladder (issue 34): plan") counts bfloat16 runs only: a predictions file whose
recorded precision (``dtype``) is another is not counted and is listed with the reason; a file that records
none (written before precision was recorded, or ``setfit``) counts. A grid is ``complete`` when every expected
run is there, ``partial`` when some are, ``missing`` when none is."""

from __future__ import annotations

from pathlib import Path

from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.predictions import load_predictions

PRECISION = "bfloat16"


def run_name(corpus: str, method: str, seed: int) -> str:
    """``corpus/method-seed<k>``, as the reports name a run."""
    return f"{corpus}/{method}-seed{seed}"


def counted_runs(folder: Path, grid: Grid, expected: list[tuple[str, str, int]]) -> dict:
    """The counted records in ``folder`` (``<predictions_dir>/<grid file stem>``) and which of ``expected``
    ((corpus, method, seed) each) are there: {predictions, status, present, absent, not_counted, records}."""
    records = load_predictions(folder, {c.name for c in grid.corpora}, set(grid.methods), set(grid.seeds))
    counted, not_counted = [], []
    for rec in records:
        if rec.get("dtype") and rec["dtype"] != PRECISION:
            not_counted.append({"run": run_name(rec["corpus"], rec["method"], rec["seed"]),
                                "why": f"recorded precision {rec['dtype']}, not {PRECISION}"})
        else:
            counted.append(rec)
    have = {(r["corpus"], r["method"], r["seed"]) for r in counted}
    present = [run_name(*k) for k in expected if k in have]
    absent = [run_name(*k) for k in expected if k not in have]
    return {"predictions": str(folder), "status": "complete" if not absent else "partial" if present else "missing",
            "present": present, "absent": absent, "not_counted": not_counted, "records": counted}
