"""The transfer of the ladder's moving rungs to another corpus and another model (docs/results.md, amendment
T1), reported beside the ladder (``report --ladder ... --transfer GRID [GRID]``).

Which rungs moved the result (:func:`moved_rungs`, fixed before any ladder result was read): a rung whose
DecSelfMask minus SFT, under the options scorer or under the string match, is at least :data:`STEP` above the
previous rung's with a figure under that scorer. ``scripts/transfer_grids.py`` writes one grid per target
(``examples/grids/transfer_mtsamples.yml``, ``transfer_qwen_hallmarks.yml``) with those rungs' factors and
names them in its header.

Per transfer grid, as per ladder rung (:func:`.figures.rung_figures`): DecSelfMask minus ``sft`` and minus
``continual_pretraining_authors`` under both scorers with paired bootstrap 95% intervals, the off-format
shares; beside them, for reference, the ladder's own difference at the highest rung whose factor the grid
carries (hallmarks, SmolLM2; another corpus or model, so no paired interval between the two). As in the
ladder, a grid's figures are withheld until all of its runs are there (``include_partial``: shown, for a cut
declared at the end), and only bfloat16 runs count. Once the ladder is finished, the report says which rungs
moved the result, says so when none did (nothing is carried over), and flags a grid written from other
rungs."""

from __future__ import annotations

import re
from pathlib import Path

from axolotl_decselfmask.tools.experiments.bootstrap import REFERENCE
from axolotl_decselfmask.tools.experiments.counted import counted_runs
from axolotl_decselfmask.tools.experiments.figures import CPT, SCORERS, SFT, WITHHELD, cell, expected_runs, pct, rung_figures
from axolotl_decselfmask.tools.experiments.grid import Grid

STEP = 0.02  # two Macro F1 points: a rung moved the result when DecSelfMask minus SFT rose at least this much
_HEADER = re.compile(r"moving\s*(?:#\s*)?rungs ([\d,]+|none) \(factors kept here: ([\d,]+|none)\)")


def moved_rungs(lad: dict) -> list[int]:
    """The rungs whose DecSelfMask minus SFT (options or string match) is at least :data:`STEP` above the
    previous rung's with a figure under that scorer; an error while the ladder is not finished (a rung not
    complete, and no cut declared with ``include_partial``)."""
    if not lad["rungs"] or any(r["status"] != "complete" for r in lad["rungs"]) and not lad.get("include_partial"):
        raise SystemExit("transfer: the ladder is not finished (a rung is not complete, and no cut is declared "
                         "with --include-partial); give --rungs only for a declared choice")
    moved = set()
    for scorer in SCORERS:
        shown = [(r["rung"], ((r["difference"].get(scorer) or {}).get(SFT) or {}).get("mean"))
                 for r in sorted(lad["rungs"], key=lambda r: r["rung"])]
        shown = [(n, d) for n, d in shown if d is not None]
        moved |= {n for (_, a), (n, b) in zip(shown, shown[1:]) if b - a >= STEP - 1e-12}
    return sorted(moved)


def _numbers(text: str) -> list[int]:
    return [] if text == "none" else [int(x) for x in text.split(",") if x]


def transfer_header(path: str | Path) -> tuple[list[int], list[int]]:
    """The moving rungs a transfer grid was written from and the factors it keeps (its header, written by
    scripts/transfer_grids.py)."""
    found = _HEADER.search(Path(path).read_text()) if Path(path).is_file() else None
    if not found:
        raise SystemExit(f"report --transfer: {path} does not say which rungs it carries (the line 'moving rungs N "
                         "(factors kept here: N)' of its header); write it with scripts/transfer_grids.py")
    return _numbers(found[1]), _numbers(found[2])


def _reference(rungs: list[dict], kept: list[int]) -> dict | None:
    """The ladder's DecSelfMask minus SFT at the highest rung among ``kept`` that has a figure."""
    for r in sorted((r for r in rungs if r["rung"] in kept), key=lambda r: -r["rung"]):
        diffs = {v: ((r["difference"].get(v) or {}).get(SFT)) for v in SCORERS}
        if any(diffs.values()):
            return {"rung": r["rung"], **diffs}
    return None


def transfer_report(grids: list[tuple[str, Grid]], predictions_dir: Path, rungs: list[dict], finished: bool,
                    include_partial: bool, resamples: int, seed: int) -> dict:
    """Everything the report says of the transfer: the moving rungs once the ladder is ``finished`` (``rungs``:
    the ladder's, with their figures), and each grid's runs and figures (withheld until complete, unless
    ``include_partial``)."""
    moved = moved_rungs({"rungs": rungs, "include_partial": include_partial}) if finished else None
    out = []
    for path, grid in grids:
        carried, kept = transfer_header(path)
        runs = counted_runs(Path(predictions_dir) / Path(path).stem, grid, expected_runs(grid))
        withheld = runs["status"] != "complete" and not include_partial
        shown = runs["records"] and not withheld
        figures = (rung_figures({"rung": Path(path).stem, "compared": runs["records"]}, resamples, seed)
                   if shown else {"methods": {}, "difference": {}})
        out.append({"grid": str(path), "name": Path(path).stem, "carries": carried, "kept": kept,
                    "model": grid.model, "corpora": [c.name for c in grid.corpora], "seeds": list(grid.seeds),
                    **{k: v for k, v in runs.items() if k != "records"}, "withheld": withheld,
                    "stale": moved is not None and carried != moved, "ladder": _reference(rungs, kept), **figures})
    return {"moved": moved, "grids": out}


# --------------------------------------------------------------------------- markdown

def transfer_lines(tr: dict | None) -> list[str]:
    """The transfer's paragraph and table (for ladder.md and the results section)."""
    if not tr:
        return []
    moved = tr["moved"]
    if moved is None:
        head = ("**The transfer** (amendment T1): which rungs moved the result is read once the ladder is finished")
    elif not moved:
        head = ("**The transfer** (amendment T1): no rung moved the result (DecSelfMask minus SFT rose by less than "
                f"{STEP:.2f} from each rung to the next under both scorers), so nothing is carried over to mtsamples "
                "or to Qwen")
    else:
        head = (f"**The transfer** (amendment T1): rung{'s' if len(moved) > 1 else ''} {', '.join(map(str, moved))} "
                f"moved the result (DecSelfMask minus SFT rose by at least {STEP:.2f} under either scorer)")
    if not tr["grids"]:
        tail = ("; their grids are not written yet (`python scripts/transfer_grids.py`)." if moved else ".")
        return ["", head + tail]
    lines = ["", head + (". Each grid carries the factors of the rungs its header names; the ladder's own figure "
                         "at the highest rung it carries is beside it for reference (hallmarks, SmolLM2-135M: no "
                         "paired interval between the two). Macro F1 differences [95% paired bootstrap interval; "
                         "`*`: it excludes zero].")]
    for g in tr["grids"]:
        if g["stale"]:
            lines += ["", f"**`{g['grid']}` carries rungs {', '.join(map(str, g['carries'])) or 'none'}, but the "
                          f"rungs that moved the result are {', '.join(map(str, moved)) or 'none'}**: write it again "
                          "with `python scripts/transfer_grids.py` before its runs count."]
    lines += ["", "| grid | factors of rungs | runs | options: minus SFT | options: minus CPT | string match: minus "
                  "SFT | string match: minus CPT | off-format answers: SFT; DecSelfMask; CPT | the ladder at that "
                  "rung: options, string match minus SFT |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for g in tr["grids"]:
        n = f"{len(g['present'])} of {len(g['present']) + len(g['absent'])}"
        runs = (f"{g['status']}: {n} runs" + ("; figures withheld until complete" if g["withheld"] and g["present"]
                                              else ""))
        if g["withheld"]:
            cells = [WITHHELD if g["present"] else "–"] * 5
        else:
            cells = [cell((g["difference"].get(v) or {}).get(b)) for v in SCORERS for b in (SFT, CPT)]
            cells.append("; ".join(pct((g["methods"].get(m) or {}).get("off_format")) for m in (SFT, REFERENCE, CPT)))
        ref = g["ladder"]
        ref_cell = "–" if not ref else f"rung {ref['rung']}: " + ", ".join(cell(ref[v]) for v in SCORERS)
        name = f"`{g['name']}` ({', '.join(g['corpora'])}; {Path(g['model']).name})"
        lines.append(f"| {name} | {', '.join(map(str, g['kept'])) or 'none'} | {runs} | " + " | ".join(cells)
                     + f" | {ref_cell} |")
    return lines
