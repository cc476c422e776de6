"""The ladder's arm beyond the paper (docs/results.md, amendment A1): one grid
(``examples/grids/arm_hallmarks.yml``, written by ``scripts/arm_grids.py --rung N`` from the ladder's best
rung), its predictions in ``<predictions_dir>/<grid file stem>/``, reported beside the ladder
(``report --ladder ... --arm GRID``).

Every figure is Macro F1 as a user's own predictions score it: the option scoring's calibrated decision of a
LoRA, or a head's decision (fitted on out-of-fold scores); never the string match. Per method: the mean over
tasks and the seeds present [95% bootstrap interval]. The registered differences, paired over test notes and
tasks and the seeds both have: each ``decselfmask_*`` method minus its counterpart on the untouched model
(:data:`PAIRS`), minus ``setfit``, and minus the rung's own ``decselfmask`` (the registered stage 2, the
ladder's predictions of rung N).

Expected runs: every method at every grid seed, except the methods whose stage 1 is reused (the grid's
``stage1_models``), which have the seeds the ladder's rung N ran. As in the ladder, a file whose recorded
precision is not bfloat16 is not counted, and the figures are withheld until every expected run is there
(``include_partial`` shows them, for a cut declared at the end)."""

from __future__ import annotations

import re
from pathlib import Path

from axolotl_decselfmask.tools.experiments.bootstrap import REFERENCE, bootstrap, paired_difference
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.counted import counted_runs

#: each DecSelfMask method of the arm and its counterpart without stage 1
PAIRS = (("decselfmask_early_stop", "sft_early_stop"), ("decselfmask_head", "head"),
         ("decselfmask_head_authors", "head_authors"))
OURS = tuple(a for a, _ in PAIRS)
WITHOUT = tuple(b for _, b in PAIRS)
SETFIT = "setfit"
_RUNG = re.compile(r"--rung (\d+)")


def arm_rung(path: str | Path) -> int:
    """The ladder rung an arm grid was written from (its header's ``--rung N``, scripts/arm_grids.py)."""
    found = _RUNG.search(Path(path).read_text()) if Path(path).is_file() else None
    if not found:
        raise SystemExit(f"report --arm: {path} does not say which rung it was written from (the line "
                         "'scripts/arm_grids.py --rung N' of its header); write it with scripts/arm_grids.py")
    return int(found[1])


def load_arm(path: str, grid: Grid, predictions_dir: Path, rung_seeds: list[int]) -> dict:
    """The arm's counted records and which of its expected runs are there (``rung_seeds``: the seeds of the
    ladder rung whose stage-1 models the reused methods start from)."""
    expected = [(c.name, m, s) for c in grid.corpora for m in grid.methods
                for s in grid.seeds if m not in grid.stage1_models or s in rung_seeds]
    return {"grid": str(path), "methods_run": list(grid.methods),
            **counted_runs(predictions_dir / Path(path).stem, grid, expected)}


def _boot(records: list[dict], names: list[str], resamples: int, seed: int, where: str) -> dict:
    try:
        return bootstrap(records, names, resamples, seed, reference=names[0])
    except ValueError as err:
        raise SystemExit(f"report --arm: {where}: {err}") from None


def paired(ours: list[dict], a: str, theirs: list[dict], b: str, resamples: int, seed: int) -> dict | None:
    """``a`` (in ``ours``) minus ``b`` (in ``theirs``), over the seeds both have: {mean, low, high,
    excludes_zero, seeds}; None where they share no seed."""
    seeds = sorted({r["seed"] for r in ours if r["method"] == a} & {r["seed"] for r in theirs if r["method"] == b})
    if not seeds:
        return None
    try:
        diff = paired_difference([r for r in ours if r["method"] == a and r["seed"] in seeds],
                                 [r for r in theirs if r["method"] == b and r["seed"] in seeds], resamples, seed)
    except ValueError as err:
        raise SystemExit(f"report --arm: {a} minus {b}: {err}") from None
    return None if diff is None else {**diff, "seeds": seeds}


def arm_figures(arm: dict, rung: int, rung_records: list[dict] | None, resamples: int, seed: int,
                stage1_seconds: float | None = None, reused: tuple[str, ...] = OURS) -> dict:
    """Each method's figure and the registered differences (``rung_records``: the ladder rung's counted
    records, for minus its ``decselfmask``; None while that rung's figures are withheld). ``cost_seconds``:
    the run's seconds plus, for the ``reused`` methods (stage 1 taken from the ladder), ``stage1_seconds``,
    the estimated cost of that stage 1 (:func:`stage1_cost`); None where it is not known."""
    records = arm["records"]
    names = [m for m in arm["methods_run"] if any(r["method"] == m for r in records)]
    methods = {}
    if names:
        scope = _boot(records, names, resamples, seed, "each method's figure")["scopes"]["all"]["methods"]
        for m in names:
            seconds = [float(r["seconds"]) for r in records if r["method"] == m and r.get("seconds") is not None]
            mean = sum(seconds) / len(seconds) if seconds else None
            extra = (stage1_seconds if m in reused else 0.0)
            methods[m] = {**scope[m], "seeds": sorted({r["seed"] for r in records if r["method"] == m}),
                          "seconds": mean, "cost_seconds": None if mean is None or extra is None else mean + extra}
    differences = []
    for ours, theirs in PAIRS:
        for other, where, pool in ((theirs, "arm", records), (SETFIT, "arm", records),
                                   (REFERENCE, f"rung {rung}", rung_records or [])):
            differences.append({"method": ours, "minus": other, "of": where,
                                "difference": paired(records, ours, pool, other, resamples, seed)})
    return {"methods": methods, "differences": differences}


def stage1_cost(compared: list[dict]) -> float | None:
    """The estimated seconds of a rung's stage 1: its ``decselfmask`` runs' mean seconds minus its ``sft``
    runs' (the same stage 2 and evaluation without a stage 1; a rung without ``sft`` compares the one it
    borrows), at least 0; None without both."""
    def mean(method: str) -> float | None:
        values = [float(r["seconds"]) for r in compared if r["method"] == method and r.get("seconds") is not None]
        return sum(values) / len(values) if values else None

    ours, sft = mean(REFERENCE), mean("sft")
    return None if ours is None or sft is None else max(ours - sft, 0.0)


def best_rung(rungs: list[dict]) -> int | None:
    """A1's rung: the highest mean ``decselfmask`` Macro F1 under the options scorer among the rungs with a
    figure (the first on a tie)."""
    means = [(r["rung"], ((r["methods"].get(REFERENCE) or {}).get("options") or {}).get("mean")) for r in rungs]
    means = [(n, m) for n, m in means if m is not None]
    return max(means, key=lambda x: x[1])[0] if means else None


def arm_report(path: str, grid: Grid, predictions_dir: Path, rung_seeds: list[int], rung_records: list[dict] | None,
               resamples: int, seed: int, include_partial: bool, stage1_seconds: float | None = None,
               best: int | None = None) -> dict:
    """Everything the report says of the arm; figures only when it is complete (or ``include_partial``).
    ``best``: A1's best rung when the ladder is finished (:func:`best_rung`), to check the arm's."""
    rung = arm_rung(path)
    arm = load_arm(path, grid, predictions_dir, rung_seeds)
    withheld = arm["status"] != "complete" and not include_partial
    figures = ({"methods": {}, "differences": []} if withheld or not arm["records"] else
               arm_figures(arm, rung, rung_records, resamples, seed, stage1_seconds, tuple(grid.stage1_models)))
    out = {k: v for k, v in arm.items() if k != "records"}
    return {**out, "rung": rung, "best_rung": best, "stage1_seconds": stage1_seconds, "withheld": withheld,
            **figures, "_records": [] if withheld else arm["records"]}


# --------------------------------------------------------------------------- markdown

def _cell(d: dict | None, sign: bool = False) -> str:
    if not d:
        return "–"
    f = "+.4f" if sign else ".4f"
    return f"{d['mean']:{f}} [{d['low']:{f}}, {d['high']:{f}}]" + (" *" if d.get("excludes_zero") else "")


def arm_lines(arm: dict | None) -> list[str]:
    """The arm's tables (for ladder.md and the results section)."""
    if not arm:
        return []
    count = f"{len(arm['present'])} of {len(arm['present']) + len(arm['absent'])} runs"
    lines = ["", f"**The arm beyond the paper** (amendment A1; the stage-1 models of rung {arm['rung']}; "
                 f"`{arm['grid']}`): {arm['status']}, {count}"]
    if arm.get("best_rung") is not None and arm["best_rung"] != arm["rung"]:
        lines += ["", f"**The arm was written from rung {arm['rung']}, but A1's rung (the highest mean "
                      f"{REFERENCE} Macro F1 under the options scorer) is {arm['best_rung']}**: write it again with "
                      f"`python scripts/arm_grids.py --rung {arm['best_rung']}` before its runs count."]
    if arm["withheld"]:
        return lines[:-1] + [lines[-1] + "; figures withheld until every run is there."]
    lines[-1] += (". Macro F1 of each method's own decision (the option scoring's calibrated decision, or the "
                  "head's, fitted on out-of-fold scores), mean over tasks and seeds [95% interval]; then the "
                  "registered differences, paired over the seeds both have (`*`: the interval excludes zero).")
    s1 = arm.get("stage1_seconds")
    lines += ["", f"| method | seeds | Macro F1 | run seconds (+ the reused stage 1's, estimated: "
                  f"{'–' if s1 is None else f'{s1:.0f}'}) |", "| --- | --- | --- | --- |"]
    for m, v in arm["methods"].items():
        secs = "–" if v["seconds"] is None else f"{v['seconds']:.0f}"
        if v["cost_seconds"] is not None and v["cost_seconds"] != v["seconds"]:
            secs += f" ({v['cost_seconds']:.0f} with stage 1)"
        lines.append(f"| {m} | {','.join(map(str, v['seeds']))} | {_cell(v)} | {secs} |")
    lines += ["", "| difference | seeds | Macro F1 |", "| --- | --- | --- |"]
    for d in arm["differences"]:
        other = d["minus"] if d["of"] == "arm" else f"{d['minus']} ({d['of']}, its registered stage 2)"
        seeds = ",".join(map(str, d["difference"]["seeds"])) if d["difference"] else "–"
        lines.append(f"| {d['method']} minus {other} | {seeds} | {_cell(d['difference'], True)} |")
    return lines
