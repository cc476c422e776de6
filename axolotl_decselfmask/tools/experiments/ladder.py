"""The ladder (issue 34; docs/results.md, "The ladder (issue 34): plan"): one row per rung, each rung
one grid file (``examples/grids/ladder_<n>_hallmarks.yml``) whose predictions are in
``<predictions_dir>/<grid file stem>/`` (never the top folder: a rung without its own folder is missing).

Per rung, under the option scoring (``options``: per-task Macro F1 over the task's labels, the mean over
tasks, over the seeds present) and the authors' string match (``string_match``: per-task Macro F1 over the
classes present, the same mean; and ``pooled``, one Macro F1 over every note of every task of a file, the
authors' pooling, averaged over the files): DecSelfMask minus ``sft`` and minus
``continual_pretraining_authors``, with paired bootstrap 95% intervals (:func:`.bootstrap.bootstrap`:
test notes and tasks resampled jointly). A difference is over the seeds both methods have (paired by
seed; the seeds are recorded beside it). A rung whose grid has no ``sft`` takes the ``sft`` runs of its seeds
from the nearest earlier rung that has them (the plan: from rung 3 on, rung 2's: same stage 2, labelled
notes and seeds). Each probing head's Macro F1 per method (the files' ``heads``, argmax) and DecSelfMask's head
minus continual pretraining's; the share of off-format answers per method (``sm_off``) with a bootstrap
interval over test notes; zero-shot (the first rung that runs it) as the reference. The figures of a rung are
:func:`.figures.rung_figures`, which the transfer's grids use too.

The rungs are in the order of their number: the grid file's ``# Rung <n> adds: ...`` line (written
by scripts/ladder_grids.py), else the ``_<n>_`` of its file name, else its place among the grids given.
A rung whose expected runs (the grid's methods x seeds; zero-shot: one file) are not all there is
``partial`` or ``missing``, with the runs present and absent. A file whose recorded precision
(``dtype``) is not bfloat16 is not counted (the plan counts bfloat16 runs only) and is listed as such.
Two rungs' files of one method with the same ``run_key`` (the same run, reused) are said so.

**Withheld until complete** (the plan: a rung's figures are not read until the rung is complete): the
figures of a rung that is not complete are not computed, so neither ``ladder.json``, ``ladder.md``,
``ladder.png`` nor the results section holds them (its row: "partial: k of n runs; figures withheld
until complete"); a complete rung that borrows ``sft`` has its minus-SFT figures (and the borrowed
``sft``'s own) withheld until the lending rung's ``sft`` runs of its seeds are all there. With
``include_partial`` (a cut declared at the end) every rung's figures are computed from the runs there
are, and the section names the partial rungs and their seeds.

Written: ``ladder.json`` (every figure shown), ``ladder.md`` (the tables and the summary sentence) and
``ladder.png`` (the two differences per rung, one panel per scorer) in the output folder; with a
results file (``--results-md``), the text between its :data:`BEGIN` and :data:`END` lines is replaced
by :func:`ladder_section` (the sentence, the table, the plot, the heads).

The pre-registered rule that sets the plugin's defaults (:mod:`.defaults_rule`) is computed over the rungs
whose figures are computed: ``ladder.json``'s ``defaults_rule`` and a paragraph after the sentence, which says
"not applied yet" while a rung is incomplete (without ``include_partial``). With the arm beyond the paper
(``arm``, :mod:`.arm`), its tables follow the heads', and its methods join the rule."""

from __future__ import annotations

import os
import re
from pathlib import Path

from axolotl_decselfmask.io.files import atomic_write_text
from axolotl_decselfmask.tools.experiments.arm import arm_lines
from axolotl_decselfmask.tools.experiments.bootstrap import REFERENCE
from axolotl_decselfmask.tools.experiments.budget import write_report_files
from axolotl_decselfmask.tools.experiments.counted import PRECISION, counted_runs, run_name
from axolotl_decselfmask.tools.experiments.figures import (
    BASELINES,
    CPT,
    HEADS,
    SCORERS,
    SFT,
    WITHHELD,
    ZERO,
    cell,
    expected_runs,
    off_format,
    pct,
    rung_figures,
)
from axolotl_decselfmask.tools.experiments.defaults_rule import defaults_rule, rule_paragraph
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.plots import save_figure
from axolotl_decselfmask.tools.experiments.transfer import transfer_lines, transfer_report

_ADDS = re.compile(r"^#\s*Rung (\d+) adds:\s*(.*)$", re.M)
BEGIN, END = "<!-- ladder-report:begin -->", "<!-- ladder-report:end -->"  # the generated part of a results file


# --------------------------------------------------------------------------- the runs of each rung

def _rung_label(path: str, position: int) -> tuple[int, str]:
    """The rung's number and what it adds, from its grid file."""
    text = Path(path).read_text() if Path(path).is_file() else ""
    found = _ADDS.search(text)
    if found:
        return int(found[1]), found[2].strip()
    stem = re.search(r"_(\d+)_", Path(path).stem)
    return (int(stem[1]) if stem else position + 1), ""


def _run_name(key: tuple) -> str:
    return run_name(*key)


def _load_rung(path: str, grid: Grid, predictions_dir: Path, position: int) -> dict:
    """A rung's counted predictions records, and which of its expected runs are there."""
    number, adds = _rung_label(path, position)
    runs = counted_runs(predictions_dir / Path(path).stem, grid, expected_runs(grid))
    return {"rung": number, "grid": str(path), "adds": adds, "predictions": runs["predictions"],
            "status": runs["status"], "methods_run": [m for m in METHODS if m in grid.methods],
            "seeds": list(grid.seeds), "present": runs["present"], "absent": runs["absent"],
            "not_counted": runs["not_counted"], "records": runs["records"], "_corpora": [c.name for c in grid.corpora]}


def _borrow_sft(rungs: list[dict]) -> None:
    """A rung without ``sft`` in its grid takes the nearest earlier rung's ``sft`` records of its own
    seeds (the plan: same stage 2, labelled notes and seeds); ``sft_runs``: which of those are there."""
    for i, rung in enumerate(rungs):
        rung["sft_from_rung"] = rung["rung"] if SFT in rung["methods_run"] else None
        rung["sft_runs"] = None
        rung["compared"] = list(rung["records"])
        if SFT in rung["methods_run"]:
            continue
        for earlier in reversed(rungs[:i]):
            if SFT in earlier["methods_run"]:
                borrowed = [r for r in earlier["records"] if r["method"] == SFT and r["seed"] in rung["seeds"]]
                have = {(r["corpus"], r["seed"]) for r in borrowed}
                wanted = [(c, SFT, s) for c in rung["_corpora"] for s in rung["seeds"]]
                rung["sft_from_rung"] = earlier["rung"]
                rung["sft_runs"] = {"present": [_run_name(k) for k in wanted if (k[0], k[2]) in have],
                                    "absent": [_run_name(k) for k in wanted if (k[0], k[2]) not in have]}
                rung["compared"] += borrowed
                break


def _withhold(rung: dict, include_partial: bool) -> None:
    """``withheld``: ``"rung"`` (not complete: no figure of it is computed), ``"sft"`` (complete, but the
    borrowed ``sft`` runs of its seeds are not all there: none of them is compared) or None."""
    rung["withheld"] = None
    if include_partial:
        return
    if rung["status"] != "complete":
        rung["withheld"], rung["compared"] = "rung", []
    elif rung["sft_runs"] and rung["sft_runs"]["absent"]:
        rung["withheld"] = "sft"
        rung["compared"] = [r for r in rung["compared"] if r["method"] != SFT]


def _reused(rungs: list[dict]) -> None:
    """Files of a rung whose ``run_key`` an earlier rung's file of the same method has."""
    seen: dict[tuple, int] = {}
    for rung in rungs:
        rung["same_run_as"] = {}
        for rec in rung["records"]:
            key = (rec["method"], rec.get("run_key"))
            if rec.get("run_key") and key in seen and seen[key] != rung["rung"]:
                rung["same_run_as"][_run_name((rec["corpus"], rec["method"], rec["seed"]))] = seen[key]
            seen.setdefault(key, rung["rung"])


def ladder(grids: list[tuple[str, Grid]], predictions_dir: str | Path, resamples: int = 10_000,
           seed: int = 0, include_partial: bool = False, arm: tuple[str, Grid] | None = None,
           without_arm: bool = False, transfer: list[tuple[str, Grid]] | None = None) -> dict:
    """Every figure of the ladder over ``grids`` ((path, grid) pairs, one per rung); those of a rung
    that is not complete only with ``include_partial`` (:func:`_withhold`); with ``arm`` ((path, grid) of
    the arm beyond the paper), its figures (:func:`.arm.arm_report`), also candidates of the defaults rule, which
    waits for the arm unless ``without_arm`` declares that it will not run; with ``transfer`` ((path, grid) of each
    transfer grid) or once the ladder is finished, the transfer of its moving rungs (:func:`.transfer.transfer_report`)."""
    if not grids:
        raise SystemExit("report --ladder: no grid given (the rungs' grid files, examples/grids/ladder_*.yml)")
    rungs = sorted((_load_rung(p, g, Path(predictions_dir), i) for i, (p, g) in enumerate(grids)),
                   key=lambda r: r["rung"])
    numbers = [r["rung"] for r in rungs]
    if len(set(numbers)) != len(numbers):
        raise SystemExit(f"report --ladder: two grids are the same rung ({numbers}); give each rung's grid once")
    _borrow_sft(rungs)
    _reused(rungs)
    out, shown_records = [], {}
    for rung in rungs:
        _withhold(rung, include_partial)
        shown = rung["records"] and rung["withheld"] != "rung"
        figures = rung_figures(rung, resamples, seed) if shown else {"methods": {}, "difference": {}}
        if shown:
            shown_records[rung["rung"]] = rung["records"]
        out.append({k: v for k, v in rung.items() if k not in ("records", "compared", "_corpora")} | figures)
    zero = next(({"rung": r["rung"], **r["methods"][ZERO]} for r in out if ZERO in r["methods"]), None)
    finished = all(r["status"] == "complete" for r in out) or include_partial
    transfer_out = None
    if transfer or finished:
        transfer_out = transfer_report(transfer or [], Path(predictions_dir), out, finished, include_partial,
                                       resamples, seed)
    arm_out = None
    if arm is not None:
        from axolotl_decselfmask.tools.experiments.arm import arm_report, arm_rung, best_rung, stage1_cost

        number = arm_rung(arm[0])
        source = next((r for r in rungs if r["rung"] == number), None)
        if source is None:
            raise SystemExit(f"report --arm: {arm[0]} was written from rung {number}, which is not among the "
                             f"ladder's grids ({', '.join(str(r['rung']) for r in out)}); give that rung's grid too")
        arm_out = arm_report(arm[0], arm[1], Path(predictions_dir), source["seeds"], shown_records.get(number),
                             resamples, seed, include_partial, stage1_cost(source["compared"]),
                             best_rung(out) if finished else None)
    rule = defaults_rule(out, shown_records, resamples, seed, include_partial, arm_out, without_arm)
    if arm_out is not None:
        arm_out = {k: v for k, v in arm_out.items() if k != "_records"}
    return {"reference": REFERENCE, "baselines": list(BASELINES), "resamples": resamples, "seed": seed,
            "include_partial": include_partial, "predictions_dir": str(predictions_dir), "zero_shot": zero,
            "rungs": out, "arm": arm_out, "transfer": transfer_out, "defaults_rule": rule}


# --------------------------------------------------------------------------- ladder.md

def _hidden(r: dict, baseline: str | None = None) -> bool:
    """Whether the figures of rung ``r`` (against ``baseline``) exist but are withheld."""
    if r["withheld"] == "rung":
        return r["status"] == "partial"
    return r["withheld"] == "sft" and baseline == SFT


def _difference(r: dict, view: str, baseline: str) -> dict | None:
    return ((r["difference"].get(view) or {}).get(baseline)) or None


def _diff_cell(r: dict, view: str, baseline: str) -> str:
    if _hidden(r, baseline):
        return WITHHELD
    return cell(_difference(r, view, baseline), True, (r["methods"].get(REFERENCE) or {}).get("seeds"))


def _seeds_text(names: list[str]) -> str:
    """``corpus/sft-seed0, corpus/sft-seed1, corpus/decselfmask-seed0`` as ``sft seeds 0,1; decselfmask seed 0``
    (the corpus kept when there are several)."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        run, _, seed = name.rpartition("-seed")
        grouped.setdefault(run, []).append(seed)
    one = len({run.partition("/")[0] for run in grouped}) == 1
    return "; ".join(f"{run.partition('/')[2] if one else run} seed{'s' if len(s) > 1 else ''} {','.join(s)}"
                     for run, s in grouped.items()) or "no run"


def _count(names: dict) -> str:
    return f"{len(names['present'])} of {len(names['present']) + len(names['absent'])}"


def _runs_cell(r: dict) -> str:
    seeds = ",".join(map(str, r["seeds"]))
    text = {"complete": f"complete: {_count(r)} runs, seed{'s' if len(r['seeds']) > 1 else ''} {seeds}",
            "missing": f"missing: {_count(r)} runs"}.get(r["status"])
    if text is None:
        text = (f"partial: {_count(r)} runs; figures withheld until complete" if r["withheld"] else
                f"partial: {_count(r)} runs ({_seeds_text(r['present'])}), shown (--include-partial)")
    if r["sft_from_rung"] not in (None, r["rung"]):
        text += f"; SFT: rung {r['sft_from_rung']}'s"
        if r["sft_runs"]["absent"]:
            text += f" ({_count(r['sft_runs'])} of its runs of seed{'s' if len(r['seeds']) > 1 else ''} {seeds}"
            text += "; minus SFT withheld until they are all there)" if r["withheld"] == "sft" else ")"
    return text


def _main_lines(lad: dict) -> list[str]:
    lines = ["| rung | adds | runs | options: minus SFT | options: minus CPT | string match: minus SFT "
             "| string match: minus CPT | pooled string match: minus SFT, minus CPT |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in lad["rungs"]:
        cells = [_diff_cell(r, v, b) for v in SCORERS for b in BASELINES]
        pooled = [WITHHELD if _hidden(r, b) else (_difference(r, "string_match", b) or {}).get("pooled")
                  for b in BASELINES]
        cells.append(", ".join(p if isinstance(p, str) else "–" if p is None else f"{p:+.4f}" for p in pooled))
        lines.append(f"| {r['rung']} | {r['adds']} | {_runs_cell(r)} | " + " | ".join(cells) + " |")
    lines += _zero_lines(lad)
    return lines


def _zero_lines(lad: dict) -> list[str]:
    zero = lad["zero_shot"]
    if zero:
        return ["", (f"Zero-shot (rung {zero['rung']}), the reference: options {cell(zero['options'], False)}, "
                     f"string match {cell(zero['string_match'], False)}, pooled "
                     f"{'–' if zero['pooled'] is None else format(zero['pooled'], '.4f')}, off-format answers "
                     f"{cell(zero['off_format'], False)}.")]
    hidden = [r["rung"] for r in lad["rungs"] if ZERO in r["methods_run"] and _hidden(r)]
    return ["", f"Zero-shot (rung {hidden[0]}): withheld until rung {hidden[0]} is complete."] if hidden else []


def _method_lines(lad: dict) -> list[str]:
    lines = ["", "Macro F1 per method (mean over tasks and the seeds present [95% CI]); the string match's pooled "
             "figure; the share of off-format answers [95% CI over test notes]; each head's Macro F1 (argmax, on "
             "the model before stage 2):", "",
             "| rung | method | seeds | options | string match | pooled | off-format | package head | authors head |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in lad["rungs"]:
        if _hidden(r):
            lines.append(f"| {r['rung']} | (figures withheld until the rung is complete) | | | | | | | |")
        elif not r["methods"]:
            lines.append(f"| {r['rung']} | (no runs) | | | | | | | |")
        for m, v in r["methods"].items():
            own = "" if m in r["methods_run"] else f" (rung {r['sft_from_rung']}'s)"
            pooled = "–" if v["pooled"] is None else f"{v['pooled']:.4f}"
            heads = [cell(v["heads"].get(h), False) for h in HEADS]
            lines.append(f"| {r['rung']} | {m}{own} | {','.join(map(str, v['seeds']))} | {cell(v['options'], False)} "
                         f"| {cell(v['string_match'], False)} | {pooled} | {cell(v['off_format'], False)} | "
                         + " | ".join(heads) + " |")
        if r["withheld"] == "sft":
            lines.append(f"| {r['rung']} | {SFT} (rung {r['sft_from_rung']}'s): withheld until its runs of this "
                         f"rung's seeds are all there ({_count(r['sft_runs'])}) | | | | | | | |")
    return lines


def _head_lines(lad: dict) -> list[str]:
    lines = ["", f"Heads: {REFERENCE}'s stage-1 model minus continual pretraining's [95% CI]:", "",
             "| rung | package head | authors head |", "| --- | --- | --- |"]
    for r in lad["rungs"]:
        heads = (r["difference"].get("heads") or {})
        dsm = (r["methods"].get(REFERENCE) or {}).get("seeds")
        lines.append(f"| {r['rung']} | " + " | ".join(WITHHELD if _hidden(r) else cell((heads.get(h) or {}).get(CPT),
                                                                                        True, dsm)
                                                   for h in HEADS) + " |")
    return lines


def _runs_text(names: list[str]) -> str:
    """``corpus/method-seed0, corpus/method-seed1`` as ``corpus/method-seed0,1``."""
    grouped: dict[str, list[str]] = {}
    for name in names:
        run, _, seed = name.rpartition("-seed")
        grouped.setdefault(run, []).append(seed)
    return ", ".join(f"{run}-seed{','.join(seeds)}" for run, seeds in grouped.items()) or "–"


def _run_lines(lad: dict) -> list[str]:
    lines = ["", "Runs of each rung (its predictions folder; `not counted`: a run whose recorded precision is "
             f"not {PRECISION}):", "", "| rung | status | present | absent | not counted | same run as |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in lad["rungs"]:
        nc = "; ".join(f"{x['run']} ({x['why']})" for x in r["not_counted"])
        same = ", ".join(f"{k}: rung {v}" for k, v in r["same_run_as"].items())
        lines.append(f"| {r['rung']} | {r['status']} (`{r['predictions']}`) | {_runs_text(r['present'])} "
                     f"| {_runs_text(r['absent'])} | {nc or '–'} | {same or '–'} |")
    return lines


# --------------------------------------------------------------------------- the sentence a user needs

#: an off-format share at or above this, for both SFT and DecSelfMask, makes the sentence say that the string match
#: barely reads their classification (wording only; every share is in the table)
MOSTLY_OFF = 0.9


def format_clause(r: dict) -> str:
    """Whether rung ``r``'s string-match difference to SFT exceeds its options difference (a string-match gain the
    options do not show: a format effect), with the off-format shares of SFT and DecSelfMask. A string-match
    difference that is not above zero is no gain, whatever the options difference; and where both methods answer
    off format at least :data:`MOSTLY_OFF` of the time, the sentence says that the string match barely reads their
    classification."""
    opt, sm = _difference(r, "options", SFT), _difference(r, "string_match", SFT)
    offs = [(r["methods"].get(m) or {}).get("off_format") for m in (SFT, REFERENCE)]
    shares = f"off-format answers: {SFT} {pct(offs[0])}, {REFERENCE} {pct(offs[1])}"
    if sm is None:
        return f"Under the authors' string match rung {r['rung']} has no figure ({shares})."
    gap = sm["mean"] - opt["mean"]
    if gap > 0 and sm["mean"] > 0:
        text = (f"Under the authors' string match it is {cell(sm)}, {gap:+.4f} above the options difference: "
                f"that much of the string-match gain can be a format effect ({shares}).")
    elif gap > 0:
        text = (f"Under the authors' string match it is {cell(sm)}, {gap:+.4f} above the options difference but "
                f"no gain: no format effect ({shares}).")
    else:
        text = (f"Under the authors' string match it is {cell(sm)}, not above the options difference ({gap:+.4f}): "
                f"no format effect ({shares}).")
    if all(o and o["mean"] >= MOSTLY_OFF for o in offs):
        text += (f" Nearly every answer of both is off format, so the string match barely reads their "
                 "classification at this rung.")
    return text


def _adds(r: dict) -> str:
    return r["adds"].rstrip(". ") or "its grid says not"


def _states(rungs: list[dict]) -> str:
    return ", ".join(f"rung {r['rung']} {r['status']} ({_count(r)} runs)" for r in rungs)


def largest_gap_clause(shown: list[dict], described: dict) -> str:
    """The rung shown whose string-match difference to SFT is furthest above its options difference, where that
    difference is a gain, said with its options figure and :func:`format_clause`; empty where that rung is
    ``described`` already or no rung shown has such a gain. A string-match gain may sit at a rung whose options
    step is not the largest; the sentence names both."""
    gains = [(sm["mean"] - _difference(r, "options", SFT)["mean"], r)
             for r in shown if (sm := _difference(r, "string_match", SFT)) and sm["mean"] > 0]
    gaps = [(g, r) for g, r in gains if g > 0]
    r = max(gaps, key=lambda x: x[0])[1] if gaps else None
    if r is None or r is described:
        return ""
    return (f" The string-match gain departs most from the options at rung {r['rung']} ({_adds(r)}): there the options "
            f"give {cell(_difference(r, 'options', SFT))}. " + format_clause(r))


def ladder_sentence(lad: dict) -> str:
    """Which rung's factor changes DecSelfMask minus SFT (options scorer) the most from the previous
    rung shown, by how much, whether that rung's interval excludes zero, and whether the string-match
    difference exceeds the options difference (a format effect); then, where another rung shown has a
    larger string-match gain over its options difference, that rung too (:func:`largest_gap_clause`); from
    the rungs shown only."""
    rungs = lad["rungs"]
    shown = [r for r in rungs if _difference(r, "options", SFT)]
    partial = [r for r in rungs if r["status"] != "complete"]
    lead = ""
    if lad.get("include_partial") and any(r["status"] == "partial" for r in rungs):
        lead = ("Partial rungs are shown (`--include-partial`, a declared cut): " + "; ".join(
            f"rung {r['rung']} {_count(r)} runs ({_seeds_text(r['present'])})"
            for r in rungs if r["status"] == "partial") + ". ")
    if not shown:
        if not any(r["status"] == "complete" for r in rungs) and not lad.get("include_partial"):
            return f"No rung is complete yet: {_states(rungs)}; no figure is read until its rung is complete."
        why = "; ".join(f"rung {r['rung']}: " + ("minus SFT withheld until rung "
                                                 f"{r['sft_from_rung']}'s {SFT} runs of its seeds are all there"
                                                 if r["withheld"] == "sft" else f"{r['status']}, no figure")
                        for r in rungs)
        return lead + f"No rung shown has a {REFERENCE} minus {SFT} figure under the options scorer yet ({why})."
    which = "rungs shown" if lad.get("include_partial") else "complete rungs"
    if len(shown) == 1:
        r = shown[0]
        d = _difference(r, "options", SFT)
        return lead + (f"Only rung {r['rung']} ({_adds(r)}) has a {REFERENCE} minus {SFT} figure yet "
                       f"({_states(partial) or 'the other rungs have none'}): under the "
                       f"options scorer it is {cell(d)}, whose 95% interval "
                       f"{'excludes' if d['excludes_zero'] else 'includes'} zero; no step between rungs can be read "
                       f"yet. " + format_clause(r) + largest_gap_clause(shown, r))
    steps = [(a, b, _difference(b, "options", SFT)["mean"] - _difference(a, "options", SFT)["mean"])
             for a, b in zip(shown, shown[1:])]
    prev, r, step = max(steps, key=lambda s: abs(s[2]))
    d = _difference(r, "options", SFT)
    skipped = ("" if r["rung"] - prev["rung"] == 1 else
               f" (rungs between {prev['rung']} and {r['rung']} are not shown, so the step holds their factors too)")
    return lead + (f"Of the {which} ({', '.join(str(x['rung']) for x in shown)}), rung {r['rung']}'s factor "
                   f"({_adds(r)}) changes {REFERENCE} minus {SFT} under the options scorer the most: "
                   f"from {_difference(prev, 'options', SFT)['mean']:+.4f} at rung {prev['rung']} to {cell(d)}, "
                   f"a step of {step:+.4f}{skipped}; rung {r['rung']}'s 95% interval "
                   f"{'excludes' if d['excludes_zero'] else 'includes'} zero (the step itself has no interval). "
                   + format_clause(r) + largest_gap_clause(shown, r))


def ladder_markdown(lad: dict) -> str:
    lines = ["# The ladder", "", ladder_sentence(lad), "", rule_paragraph(lad["defaults_rule"]), "",
             (f"{REFERENCE} minus SFT and minus `{CPT}` (CPT) per rung, mean Macro F1 over tasks and the seeds both "
              f"have [95% paired bootstrap interval, {lad['resamples']:,} resamples of test notes and tasks; `*`: "
              "the interval excludes zero; the seeds are named where a pair has fewer than DecSelfMask]. Options: "
              "the option scoring (Macro F1 over the task's labels); string match: the authors' scorer (Macro F1 "
              "over the classes present, an off-format answer a class of its own), and its pooled figure (one "
              "Macro F1 over every note of every task, averaged over seeds; no interval). A rung of one seed has "
              "no seed variance in its intervals. The figures of a rung that is not complete are withheld (not "
              "computed) until it is, unless the report is run with `--include-partial`."), ""]
    lines += (_main_lines(lad) + _method_lines(lad) + _head_lines(lad) + arm_lines(lad.get("arm"))
              + transfer_lines(lad.get("transfer")) + _run_lines(lad))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the results section

def ladder_section(lad: dict, png: str = "results/ladder/ladder.png") -> str:
    """The generated part of docs/results.md's "Which part of the paper's protocol carries its gain":
    the sentence, one row per rung (both differences under both scorers, the off-format shares), the
    plot (``png``, relative to the results file) and the heads."""
    lines = [f"**In one sentence.** {ladder_sentence(lad)}", "", rule_paragraph(lad["defaults_rule"]), "",
             (f"{REFERENCE} minus `{SFT}` and minus `{CPT}` (CPT), mean Macro F1 over tasks and the seeds both have "
              f"[95% paired bootstrap interval, {lad['resamples']:,} resamples of test notes and tasks; `*`: it "
              "excludes zero]; off-format answers: the share of each method's string-match answers that are off "
              f"format [95% interval over test notes]. From the predictions in `{lad['predictions_dir']}`; a rung's "
              "figures are withheld until all of its runs are there"
              + (" (here shown anyway: `--include-partial`)." if lad.get("include_partial") else ".")), "",
             "| rung | adds | runs | options: minus SFT | options: minus CPT | string match: minus SFT "
             "| string match: minus CPT | off-format answers: SFT; DecSelfMask; CPT |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in lad["rungs"]:
        cells = [_diff_cell(r, v, b) for v in SCORERS for b in BASELINES]
        if _hidden(r) or not r["methods"]:
            off = WITHHELD if _hidden(r) else "–"
        else:
            off = "; ".join(WITHHELD if _hidden(r, m) else pct((r["methods"].get(m) or {}).get("off_format"))
                            for m in (SFT, REFERENCE, CPT))
        lines.append(f"| {r['rung']} | {r['adds']} | {_runs_cell(r)} | " + " | ".join(cells) + f" | {off} |")
    lines += _zero_lines(lad)
    lines += ["", f"![{REFERENCE} minus SFT and minus CPT per rung, options and string match, with 95% intervals]"
                  f"({png})"]
    lines += _head_lines(lad) + arm_lines(lad.get("arm")) + transfer_lines(lad.get("transfer"))
    return "\n".join(lines) + "\n"


def _marker_span(text: str, path: Path) -> tuple[int, int]:
    """Where the generated part of ``path`` starts and ends (between its :data:`BEGIN` and :data:`END`)."""
    begins, ends = text.count(BEGIN), text.count(END)
    if begins != 1 or ends != 1 or text.index(BEGIN) > text.index(END):
        found = f"{begins} {BEGIN} and {ends} {END}" + (", the end first" if begins == ends == 1 else "")
        raise SystemExit(f"report --ladder --results-md: {path} must hold the line {BEGIN} once and, after it, the "
                         f"line {END} once (found {found}); put them where the generated ladder section goes "
                         "(docs/results.md: under \"Which part of the paper's protocol carries its gain\")")
    return text.index(BEGIN) + len(BEGIN), text.index(END)


def _read_results_md(path: Path) -> str:
    if not path.is_file():
        raise SystemExit(f"report --ladder --results-md: {path} is not a file; give the results file that holds "
                         f"the lines {BEGIN} and {END}")
    return path.read_text()


def write_results_section(path: str | Path, section: str) -> None:
    """Replace the text between ``path``'s markers with ``section`` (the rest of the file as it is now),
    through a temporary file and a rename."""
    path = Path(path)
    text = _read_results_md(path)
    start, end = _marker_span(text, path)
    atomic_write_text(path, text[:start] + "\n" + section.rstrip("\n") + "\n" + text[end:])


# --------------------------------------------------------------------------- ladder.png

def plot_ladder(lad: dict, path: Path) -> None:
    """Two panels (options, string match): DecSelfMask minus SFT and minus CPT per rung, the
    bootstrap 95% intervals as error bars; a rung without a difference has no point, a withheld
    rung is labelled so under its number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [r["rung"] for r in lad["rungs"]]
    labels = [f"{r['rung']}\n{WITHHELD}" if _hidden(r) else f"{r['rung']}\nSFT withheld" if r["withheld"] == "sft"
              else str(r["rung"]) for r in lad["rungs"]]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), sharey=True)
    for ax, view in zip(axes, SCORERS):
        for k, b in enumerate(BASELINES):
            pts = [(r["rung"], _difference(r, view, b)) for r in lad["rungs"]]
            pts = [(n, d) for n, d in pts if d]
            if pts:
                ys = [d["mean"] for _, d in pts]
                err = [[max(d["mean"] - d["low"], 0) for _, d in pts], [max(d["high"] - d["mean"], 0) for _, d in pts]]
                ax.errorbar([n + (k - 0.5) * 0.18 for n, _ in pts], ys, yerr=err, marker="o", capsize=3,
                            linestyle="none", label=f"{REFERENCE} minus {b}")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(numbers, labels)
        if numbers:
            ax.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        ax.set_xlabel("rung")
        ax.set_title(f"{view.replace('_', ' ')} (bars: 95% paired bootstrap)", fontsize=9)
    axes[0].set_ylabel("Macro F1 difference (mean over tasks)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    else:
        axes[0].text(0.5, 0.5, "no difference shown yet", transform=axes[0].transAxes, ha="center", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_ladder(out: str | Path, grids: list[tuple[str, Grid]], predictions_dir: str | Path,
                 resamples: int = 10_000, seed: int = 0, include_partial: bool = False,
                 results_md: str | Path | None = None, arm: tuple[str, Grid] | None = None,
                 without_arm: bool = False, transfer: list[tuple[str, Grid]] | None = None) -> dict:
    """:func:`ladder` written as ``ladder.json``, ``ladder.md`` and ``ladder.png`` in ``out``; with
    ``results_md``, its generated section (:func:`ladder_section`) too, the file's markers checked
    before anything is computed."""
    if results_md is not None:
        _marker_span(_read_results_md(Path(results_md)), Path(results_md))
    lad = ladder(grids, predictions_dir, resamples, seed, include_partial, arm, without_arm, transfer)
    out = write_report_files(out, "ladder", lad, ladder_markdown(lad), plot_ladder)
    states = ", ".join(f"{r['rung']}: {r['status']}" for r in lad["rungs"])
    print(f"ladder: rungs {states} -> {out / 'ladder.md'}, ladder.png")
    if results_md is not None:
        png = Path(os.path.relpath(out.resolve() / "ladder.png", Path(results_md).resolve().parent)).as_posix()
        write_results_section(results_md, ladder_section(lad, png))
        print(f"ladder: the section between {BEGIN} and {END} of {results_md} rewritten")
    return lad
