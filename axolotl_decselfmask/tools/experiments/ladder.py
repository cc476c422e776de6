"""The ladder (issue 34; docs/results.md, "The ladder (issue 34): plan"): one row per rung, each rung
one grid file (``examples/grids/ladder_<n>_hallmarks.yml``) whose predictions are in
``<predictions_dir>/<grid file stem>/`` (never the top folder: a rung without its own folder is missing).

Per rung, under the option scoring (``options``: per-task Macro F1 over the task's labels, the mean over
tasks, over the seeds present) and the authors' string match (``string_match``: per-task Macro F1 over the
classes present, the same mean; and ``pooled``, one Macro F1 over every note of every task of a file, the
authors' pooling, averaged over the files): DecSelfMask minus ``sft`` and minus
``continual_pretraining_authors``, with paired bootstrap 95% intervals (:func:`.bootstrap.bootstrap`:
test notes and tasks resampled jointly). A difference is over the seeds both methods have (paired by
seed; the seeds are recorded beside it). A rung whose grid has no ``sft`` takes the ``sft`` runs of the
nearest earlier rung that has them (the plan: from rung 3 on, rung 2's: same stage 2, labelled notes and
seeds). Each probing head's Macro F1 per method (the files' ``heads``, argmax) and DecSelfMask's head
minus continual pretraining's; the share of off-format answers per method (``sm_off``) with a bootstrap
interval over test notes; zero-shot (the first rung that runs it) as the reference.

The rungs are in the order of their number: the grid file's ``# Rung <n> adds: ...`` line (written
by scripts/ladder_grids.py), else the ``_<n>_`` of its file name, else its place among the grids given.
A rung whose expected runs (the grid's methods x seeds; zero-shot: one file) are not all there is
``partial`` (its figures from the runs that are) or ``missing``, with the runs present and absent. A
file whose recorded precision (``dtype``) is not bfloat16 is not counted (the plan counts bfloat16
runs only) and is listed as such. Two rungs' files of one method with the same ``run_key`` (the same
run, reused) are said so.

Written: ``ladder.json`` (every figure), ``ladder.md`` (the tables) and ``ladder.png`` (the two
differences per rung, one panel per scorer) in the output folder."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from axolotl_decselfmask.io.files import atomic_write_json, atomic_write_text
from axolotl_decselfmask.tools.experiments.bootstrap import BLOCK, REFERENCE, bootstrap
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.plots import save_figure
from axolotl_decselfmask.tools.experiments.predictions import (
    head_records,
    load_predictions,
    string_match_records,
)

SFT, CPT, ZERO = "sft", "continual_pretraining_authors", "zero_shot"
BASELINES = (SFT, CPT)
SCORERS = ("options", "string_match")
HEADS = ("package", "authors")
PRECISION = "bfloat16"
_ADDS = re.compile(r"^#\s*Rung (\d+) adds:\s*(.*)$", re.M)


# --------------------------------------------------------------------------- the runs of each rung

def _rung_label(path: str, position: int) -> tuple[int, str]:
    """The rung's number and what it adds, from its grid file."""
    text = Path(path).read_text() if Path(path).is_file() else ""
    found = _ADDS.search(text)
    if found:
        return int(found[1]), found[2].strip()
    stem = re.search(r"_(\d+)_", Path(path).stem)
    return (int(stem[1]) if stem else position + 1), ""


def _expected(grid: Grid) -> list[tuple]:
    return [(c.name, m, s) for c in grid.corpora for m in grid.methods
            for s in ([grid.seeds[0]] if m == ZERO else grid.seeds)]


def _run_name(key: tuple) -> str:
    return f"{key[0]}/{key[1]}-seed{key[2]}"


def _load_rung(path: str, grid: Grid, predictions_dir: Path, position: int) -> dict:
    """A rung's counted predictions records, and which of its expected runs are there."""
    number, adds = _rung_label(path, position)
    folder = predictions_dir / Path(path).stem
    records = load_predictions(folder, {c.name for c in grid.corpora}, set(grid.methods), set(grid.seeds))
    counted, not_counted = [], []
    for rec in records:
        key = (rec["corpus"], rec["method"], rec["seed"])
        if rec.get("dtype") and rec["dtype"] != PRECISION:
            not_counted.append({"run": _run_name(key), "why": f"recorded precision {rec['dtype']}, not {PRECISION}"})
        else:
            counted.append(rec)
    have = {(r["corpus"], r["method"], r["seed"]) for r in counted}
    expected = _expected(grid)
    present = [_run_name(k) for k in expected if k in have]
    absent = [_run_name(k) for k in expected if k not in have]
    status = "complete" if not absent else "partial" if present else "missing"
    return {"rung": number, "grid": str(path), "adds": adds, "predictions": str(folder), "status": status,
            "methods_run": [m for m in METHODS if m in grid.methods], "seeds": list(grid.seeds),
            "present": present, "absent": absent, "not_counted": not_counted, "records": counted}


def _borrow_sft(rungs: list[dict]) -> None:
    """A rung without ``sft`` in its grid takes the nearest earlier rung's ``sft`` records."""
    for i, rung in enumerate(rungs):
        rung["sft_from_rung"] = rung["rung"] if SFT in rung["methods_run"] else None
        rung["compared"] = list(rung["records"])
        if SFT in rung["methods_run"]:
            continue
        for earlier in reversed(rungs[:i]):
            if SFT in earlier["methods_run"]:
                rung["sft_from_rung"] = earlier["rung"]
                rung["compared"] += [r for r in earlier["records"] if r["method"] == SFT]
                break


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


# --------------------------------------------------------------------------- the figures

def _view(records: list[dict], view: str) -> list[dict]:
    """The records as one scorer or head sees them, each method under its own name (:func:`_named`)."""
    if view == "options":
        return records
    if view == "string_match":
        return string_match_records(records)
    return [r for r in head_records(records) if r["method"].endswith(f":{view}_head")]


def _named(method: str, view: str) -> str:
    return method if view in SCORERS else f"{method}:{view}_head"


def _boot(records: list[dict], names: list[str], reference: str, resamples: int, seed: int, where: str) -> dict:
    try:
        return bootstrap(records, names, resamples, seed, reference=reference)
    except ValueError as err:
        raise SystemExit(f"report --ladder: {where}: {err}") from None


def _method_figures(rung: dict, view: str, resamples: int, seed: int) -> dict:
    """Each method's Macro F1 [95% CI] in ``view`` over the seeds present."""
    records = _view(rung["compared"], view)
    names = [_named(m, view) for m in METHODS if any(r["method"] == _named(m, view) for r in records)]
    if not names:
        return {}
    scope = _boot(records, names, names[0], resamples, seed, f"rung {rung['rung']}, {view}")["scopes"]["all"]
    return {m: scope["methods"][_named(m, view)] for m in METHODS if _named(m, view) in scope["methods"]}


def _pooled(records: list[dict], method: str) -> float | None:
    """The authors' pooling: one Macro F1 over every note of every task of a file (the classes present),
    averaged over the files (seeds)."""
    from sklearn.metrics import f1_score

    values = []
    for rec in records:
        lines = [line for line in rec["tasks"] if "sm_gold" in line] if rec["method"] == method else []
        if lines:
            gold = [y for line in lines for y in line["sm_gold"]]
            pred = [y for line in lines for y in line["sm_pred"]]
            values.append(float(f1_score(gold, pred, average="macro", zero_division=0)))
    return sum(values) / len(values) if values else None


def _paired(rung: dict, other: str, view: str, resamples: int, seed: int) -> dict | None:
    """DecSelfMask minus ``other`` in ``view``, over the seeds both have: {mean, low, high,
    excludes_zero, seeds} (and ``pooled``, the pooled figures' difference, under string match)."""
    ours = [r for r in rung["compared"] if r["method"] == REFERENCE]
    theirs = [r for r in rung["compared"] if r["method"] == other]
    seeds = sorted({r["seed"] for r in ours} & {r["seed"] for r in theirs})
    paired = [r for r in ours + theirs if r["seed"] in seeds]
    records = _view(paired, view)
    a, b = _named(REFERENCE, view), _named(other, view)
    if not seeds or not {a, b} <= {r["method"] for r in records}:
        return None
    boot = _boot(records, [a, b], a, resamples, seed, f"rung {rung['rung']}, {view}, {REFERENCE} minus {other}")
    out = {**boot["scopes"]["all"]["difference"][b], "seeds": seeds}
    if view == "string_match":
        pa, pb = _pooled(paired, REFERENCE), _pooled(paired, other)
        out["pooled"] = None if pa is None or pb is None else pa - pb
    return out


def off_format(records: list[dict], method: str, resamples: int = 10_000, seed: int = 0) -> dict | None:
    """The share of ``method``'s string-match answers that are off format, over every note of every
    task and seed, with a 95% bootstrap interval over test notes (a note, ``(corpus, row)``, drawn
    with all of its answers); None without ``sm_off``."""
    lines = [(r["corpus"], line) for r in records if r["method"] == method for line in r["tasks"] if "sm_off" in line]
    if not lines:
        return None
    notes = sorted({(c, x) for c, line in lines for x in line["row"]})
    where = {n: i for i, n in enumerate(notes)}
    off, count = np.zeros(len(notes)), np.zeros(len(notes))
    for corpus, line in lines:
        idx = np.fromiter((where[corpus, x] for x in line["row"]), int, len(line["row"]))
        np.add.at(off, idx, np.asarray(line["sm_off"], float))
        np.add.at(count, idx, 1.0)
    rng, n, draws = np.random.default_rng(seed), len(notes), []
    for start in range(0, resamples, BLOCK):
        b = min(BLOCK, resamples - start)
        flat = rng.integers(0, n, (b, n)) + np.arange(b)[:, None] * n
        w = np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(float)
        draws.append((w @ off) / (w @ count))
    low, high = np.percentile(np.concatenate(draws), [2.5, 97.5]).tolist()
    return {"mean": float(off.sum() / count.sum()), "low": float(low), "high": float(high)}


def _rung_figures(rung: dict, resamples: int, seed: int) -> dict:
    """The figures of one rung: per method and view, and DecSelfMask's differences."""
    views = [*SCORERS, *HEADS]
    per_view = {v: _method_figures(rung, v, resamples, seed) for v in views}
    methods = {}
    for m in [m for m in METHODS if any(r["method"] == m for r in rung["compared"])]:
        own = [r for r in rung["compared"] if r["method"] == m]
        methods[m] = {"seeds": sorted({s for r in own for s in r["seeds"]}), "options": per_view["options"].get(m),
                      "string_match": per_view["string_match"].get(m), "pooled": _pooled(own, m),
                      "off_format": off_format(own, m, resamples, seed),
                      "heads": {h: per_view[h][m] for h in HEADS if m in per_view[h]}}
    difference = {v: {b: _paired(rung, b, v, resamples, seed) for b in BASELINES} for v in SCORERS}
    difference["heads"] = {h: {CPT: _paired(rung, CPT, h, resamples, seed)} for h in HEADS}
    return {"methods": methods, "difference": difference}


def ladder(grids: list[tuple[str, Grid]], predictions_dir: str | Path, resamples: int = 10_000,
           seed: int = 0) -> dict:
    """Every figure of the ladder over ``grids`` ((path, grid) pairs, one per rung)."""
    if not grids:
        raise SystemExit("report --ladder: no grid given (the rungs' grid files, examples/grids/ladder_*.yml)")
    rungs = sorted((_load_rung(p, g, Path(predictions_dir), i) for i, (p, g) in enumerate(grids)),
                   key=lambda r: r["rung"])
    numbers = [r["rung"] for r in rungs]
    if len(set(numbers)) != len(numbers):
        raise SystemExit(f"report --ladder: two grids are the same rung ({numbers}); give each rung's grid once")
    _borrow_sft(rungs)
    _reused(rungs)
    out = []
    for rung in rungs:
        figures = _rung_figures(rung, resamples, seed) if rung["records"] else {"methods": {}, "difference": {}}
        out.append({k: v for k, v in rung.items() if k not in ("records", "compared")} | figures)
    zero = next(({"rung": r["rung"], **r["methods"][ZERO]} for r in out if ZERO in r["methods"]), None)
    return {"reference": REFERENCE, "baselines": list(BASELINES), "resamples": resamples, "seed": seed,
            "predictions_dir": str(predictions_dir), "zero_shot": zero, "rungs": out}


# --------------------------------------------------------------------------- ladder.md

def _cell(d: dict | None, sign: bool = True, rung_seeds: list | None = None) -> str:
    if not d:
        return "–"
    f = "+.4f" if sign else ".4f"
    text = f"{d['mean']:{f}} [{d['low']:{f}}, {d['high']:{f}}]"
    if d.get("excludes_zero"):
        text += " *"
    if rung_seeds is not None and d.get("seeds") is not None and d["seeds"] != rung_seeds:
        text += f" (seeds {','.join(map(str, d['seeds']))})"
    return text


def _runs_cell(r: dict) -> str:
    seeds = ",".join(map(str, r["seeds"]))
    text = {"complete": f"all, seed{'s' if len(r['seeds']) > 1 else ''} {seeds}",
            "partial": f"partial: {len(r['present'])} of {len(r['present']) + len(r['absent'])}",
            "missing": "missing"}[r["status"]]
    if r["sft_from_rung"] not in (None, r["rung"]):
        text += f"; SFT: rung {r['sft_from_rung']}'s"
    return text


def _main_lines(lad: dict) -> list[str]:
    lines = ["| rung | adds | runs | options: minus SFT | options: minus CPT | string match: minus SFT "
             "| string match: minus CPT | pooled string match: minus SFT, minus CPT |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in lad["rungs"]:
        d = r["difference"]
        dsm = (r["methods"].get(REFERENCE) or {}).get("seeds")
        cells = [_cell((d.get(v) or {}).get(b), True, dsm) for v in SCORERS for b in BASELINES]
        pooled = [((d.get("string_match") or {}).get(b) or {}).get("pooled") for b in BASELINES]
        cells.append(", ".join("–" if p is None else f"{p:+.4f}" for p in pooled))
        lines.append(f"| {r['rung']} | {r['adds']} | {_runs_cell(r)} | " + " | ".join(cells) + " |")
    zero = lad["zero_shot"]
    if zero:
        lines += ["", (f"Zero-shot (rung {zero['rung']}), the reference: options {_cell(zero['options'], False)}, "
                       f"string match {_cell(zero['string_match'], False)}, pooled "
                       f"{'–' if zero['pooled'] is None else format(zero['pooled'], '.4f')}, off-format answers "
                       f"{_cell(zero['off_format'], False)}.")]
    return lines


def _method_lines(lad: dict) -> list[str]:
    lines = ["", "Macro F1 per method (mean over tasks and the seeds present [95% CI]); the string match's pooled "
             "figure; the share of off-format answers [95% CI over test notes]; each head's Macro F1 (argmax, on "
             "the model before stage 2):", "",
             "| rung | method | seeds | options | string match | pooled | off-format | package head | authors head |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in lad["rungs"]:
        if not r["methods"]:
            lines.append(f"| {r['rung']} | (no runs) | | | | | | | |")
        for m, v in r["methods"].items():
            own = "" if m in r["methods_run"] else f" (rung {r['sft_from_rung']}'s)"
            pooled = "–" if v["pooled"] is None else f"{v['pooled']:.4f}"
            heads = [_cell(v["heads"].get(h), False) for h in HEADS]
            lines.append(f"| {r['rung']} | {m}{own} | {','.join(map(str, v['seeds']))} | {_cell(v['options'], False)} "
                         f"| {_cell(v['string_match'], False)} | {pooled} | {_cell(v['off_format'], False)} | "
                         + " | ".join(heads) + " |")
    return lines


def _head_lines(lad: dict) -> list[str]:
    lines = ["", f"Heads: {REFERENCE}'s stage-1 model minus continual pretraining's [95% CI]:", "",
             "| rung | package head | authors head |", "| --- | --- | --- |"]
    for r in lad["rungs"]:
        heads = (r["difference"].get("heads") or {})
        dsm = (r["methods"].get(REFERENCE) or {}).get("seeds")
        lines.append(f"| {r['rung']} | " + " | ".join(_cell((heads.get(h) or {}).get(CPT), True, dsm)
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


def ladder_markdown(lad: dict) -> str:
    lines = ["# The ladder", "",
             (f"{REFERENCE} minus SFT and minus `{CPT}` (CPT) per rung, mean Macro F1 over tasks and the seeds both "
              f"have [95% paired bootstrap interval, {lad['resamples']:,} resamples of test notes and tasks; `*`: "
              "the interval excludes zero; the seeds are named where a pair has fewer than DecSelfMask]. Options: "
              "the option scoring (Macro F1 over the task's labels); string match: the authors' scorer (Macro F1 "
              "over the classes present, an off-format answer a class of its own), and its pooled figure (one "
              "Macro F1 over every note of every task, averaged over seeds; no interval). A rung of one seed has "
              "no seed variance in its intervals."), ""]
    lines += _main_lines(lad) + _method_lines(lad) + _head_lines(lad) + _run_lines(lad)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- ladder.png

def plot_ladder(lad: dict, path: Path) -> None:
    """Two panels (options, string match): DecSelfMask minus SFT and minus CPT per rung, the
    bootstrap 95% intervals as error bars; a rung without a difference has no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = [r["rung"] for r in lad["rungs"]]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), sharey=True)
    for ax, view in zip(axes, SCORERS):
        for k, b in enumerate(BASELINES):
            pts = [(r["rung"], (r["difference"].get(view) or {}).get(b)) for r in lad["rungs"]]
            pts = [(n, d) for n, d in pts if d]
            if pts:
                ys = [d["mean"] for _, d in pts]
                err = [[max(d["mean"] - d["low"], 0) for _, d in pts], [max(d["high"] - d["mean"], 0) for _, d in pts]]
                ax.errorbar([n + (k - 0.5) * 0.18 for n, _ in pts], ys, yerr=err, marker="o", capsize=3,
                            linestyle="none", label=f"{REFERENCE} minus {b}")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_xticks(numbers, [str(n) for n in numbers])
        ax.set_xlabel("rung")
        ax.set_title(f"{view.replace('_', ' ')} (bars: 95% paired bootstrap)", fontsize=9)
    axes[0].set_ylabel("Macro F1 difference (mean over tasks)")
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_ladder(out: str | Path, grids: list[tuple[str, Grid]], predictions_dir: str | Path,
                 resamples: int = 10_000, seed: int = 0) -> dict:
    """:func:`ladder` written as ``ladder.json``, ``ladder.md`` and ``ladder.png`` in ``out``."""
    lad = ladder(grids, predictions_dir, resamples, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ladder.json", lad)
    atomic_write_text(out / "ladder.md", ladder_markdown(lad))
    plot_ladder(lad, out / "ladder.png")
    states = ", ".join(f"{r['rung']}: {r['status']}" for r in lad["rungs"])
    print(f"ladder: rungs {states} -> {out / 'ladder.md'}, ladder.png")
    return lad
