"""The figures of one group of runs (a ladder rung, a transfer grid): each method's Macro F1 under each scorer
and head, and DecSelfMask's paired differences to SFT and continual pretraining, with the off-format shares;
and how the reports write a figure. Shared by :mod:`.ladder` and :mod:`.transfer` (docs/results.md, the ladder's
plan: "Statistics").

Under the option scoring (``options``: per-task Macro F1 over the task's labels, the mean over tasks, over the
seeds present) and the authors' string match (``string_match``: per-task Macro F1 over the classes present, the
same mean; and ``pooled``, one Macro F1 over every note of every task of a file, the authors' pooling, averaged
over the files): DecSelfMask minus ``sft`` and minus ``continual_pretraining_authors``, with paired bootstrap 95%
intervals (:func:`.bootstrap.bootstrap`: test notes and tasks resampled jointly), over the seeds both methods
have; each probing head's Macro F1 per method and DecSelfMask's head minus continual pretraining's; the share of
off-format answers per method with a bootstrap interval over test notes."""

from __future__ import annotations

import numpy as np

from axolotl_decselfmask.tools.experiments.bootstrap import BLOCK, REFERENCE, bootstrap
from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.predictions import head_records, string_match_records

SFT, CPT, ZERO = "sft", "continual_pretraining_authors", "zero_shot"
BASELINES = (SFT, CPT)
SCORERS = ("options", "string_match")
HEADS = ("package", "authors")


def expected_runs(grid: Grid) -> list[tuple]:
    """A grid's runs, (corpus, method, seed) each; ``zero_shot`` one, at its first seed."""
    return [(c.name, m, s) for c in grid.corpora for m in grid.methods
            for s in ([grid.seeds[0]] if m == ZERO else grid.seeds)]


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


def rung_figures(rung: dict, resamples: int, seed: int) -> dict:
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


# --------------------------------------------------------------------------- how the reports write a figure

WITHHELD = "withheld"


def cell(d: dict | None, sign: bool = True, rung_seeds: list | None = None) -> str:
    if not d:
        return "–"
    f = "+.4f" if sign else ".4f"
    text = f"{d['mean']:{f}} [{d['low']:{f}}, {d['high']:{f}}]"
    if d.get("excludes_zero"):
        text += " *"
    if rung_seeds is not None and d.get("seeds") is not None and d["seeds"] != rung_seeds:
        text += f" (seeds {','.join(map(str, d['seeds']))})"
    return text


def pct(d: dict | None) -> str:
    """A share [95% CI] as percentages."""
    return "–" if not d else f"{100 * d['mean']:.1f}% [{100 * d['low']:.1f}, {100 * d['high']:.1f}]"
