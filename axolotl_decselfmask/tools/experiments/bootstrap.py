"""The paired bootstrap of the comparison: DecSelfMask minus each other method, from the per-note
predictions (:mod:`.predictions`).

A resample draws, per corpus, its test notes with replacement (jointly for all tasks that share
the same test notes, identified by ``row``: one weight vector of note counts for all of them;
tasks with other test notes are resampled within their own) and its tasks with replacement (as
many as it has). On the drawn notes each drawn task's Macro F1 is computed per method and seed,
averaged over the seeds (``zero_shot``: its one evaluation), then over the drawn tasks; across
corpora every drawn task counts once (the corpora weighted by their number of tasks: the mean over
all drawn task slots). A difference is taken on the same draw, over the tasks both methods have.
The interval: the 2.5th and 97.5th percentiles. A task line with ``"classes": "present"`` (the
string-match scorer's, :func:`.report.string_match_records`) averages F1 over the classes present
among the drawn notes' gold and predicted answers, as scikit-learn does with ``labels`` unset.

Vectorised: per group of tasks sharing notes, the per-note indicators of (gold k and pred k),
(gold k), (pred k) of every task x method x seed x class are one (notes x columns) matrix; a
block of resamples is a (resamples x notes) matrix of note counts, whose product with it gives
the weighted confusion counts, hence F1 = 2 TP / (gold + predicted) per class (0 where both are
0, scikit-learn's ``zero_division=0``), then Macro F1 and the seed means by one more product.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

REFERENCE = "decselfmask"
BLOCK = 1000  # resamples drawn and computed at once (fixed: the draws depend on it)


@dataclass
class _Group:
    """Tasks of one corpus that share their test notes."""

    tasks: list[str]  # its tasks' names
    rows: np.ndarray  # (N,) note ids
    tp: np.ndarray  # (N, J) float32: gold == k and pred == k, one column per (evaluation, class)
    gold: np.ndarray  # (N, J)
    pred: np.ndarray  # (N, J)
    to_slots: np.ndarray  # (J, T*M): class F1 -> seed-mean Macro F1 of each (task, method) slot
    # lines whose classes are those present (the string-match scorer's, scikit-learn with ``labels``
    # unset): (J, L) class -> its line, and (L, T*M) line Macro F1 -> slot; None: the task's labels
    to_lines: np.ndarray | None = None
    line_slots: np.ndarray | None = None


@dataclass
class _Corpus:
    name: str
    tasks: list[str]
    groups: list[_Group]
    have: np.ndarray  # (T, M) bool: the method has the task


def _evaluations(records: list[dict], methods: list[str]) -> dict:
    """corpus -> task -> method -> list of task lines (one per seed; zero_shot: its one)."""
    out: dict = {}
    for rec in records:
        if rec["method"] not in methods:
            continue
        for line in rec["tasks"]:
            out.setdefault(rec["corpus"], {}).setdefault(line["task"], {}).setdefault(rec["method"], []).append(line)
    return out


def _group(tasks: list[str], members: list[int], evals: dict, methods: list[str]) -> _Group:
    first = evals[tasks[members[0]]]
    rows = np.asarray(sorted(next(iter(first.values()))[0]["row"]))
    where = {r: i for i, r in enumerate(rows.tolist())}
    cols_tp, cols_g, cols_p, mapping, owner, line_slots = [], [], [], [], [], []
    present = any(line.get("classes") == "present" for t in members for ls in evals[tasks[t]].values() for line in ls)
    n_slots = len(tasks) * len(methods)
    for t in members:
        for m, lines in evals[tasks[t]].items():
            for line in lines:
                if sorted(line["row"]) != rows.tolist():
                    raise ValueError(f"bootstrap: task {tasks[t]}: method {m} has other test notes (row) than the "
                                     "task's other evaluations; the predictions files of one task must share them "
                                     "(rerun the method, or remove its predictions files)")
                order = np.fromiter((where[r] for r in line["row"]), int, len(line["row"]))
                gold, pred = np.empty(len(rows), int), np.empty(len(rows), int)
                gold[order], pred[order] = line["gold"], line["pred"]
                k = len(line["labels"])
                slot = np.zeros(n_slots)
                slot[t * len(methods) + methods.index(m)] = 1.0 / len(lines)
                line_slots.append(slot)
                for c in range(k):
                    cols_tp.append((gold == c) & (pred == c))
                    cols_g.append(gold == c)
                    cols_p.append(pred == c)
                    col = np.zeros(n_slots)
                    col[t * len(methods) + methods.index(m)] = 1.0 / (k * len(lines))
                    mapping.append(col)
                    owner.append(len(line_slots) - 1)
    as_f32 = lambda cols: np.stack(cols, 1).astype(np.float32)  # noqa: E731
    group = _Group([tasks[t] for t in members], rows, as_f32(cols_tp), as_f32(cols_g), as_f32(cols_p), np.stack(mapping))
    if present:
        group.to_lines = np.eye(len(line_slots))[owner]
        group.line_slots = np.stack(line_slots)
    return group


def prepare(records: list[dict], methods: list[str]) -> list[_Corpus]:
    """The bootstrap's data from predictions records (:func:`.predictions.load_predictions`)."""
    corpora = []
    for name, evals in sorted(_evaluations(records, methods).items()):
        tasks = sorted(evals)
        have = np.array([[m in evals[t] for m in methods] for t in tasks])
        by_rows: dict[tuple, list[int]] = {}
        for i, t in enumerate(tasks):
            rows = tuple(sorted(next(iter(evals[t].values()))[0]["row"]))
            by_rows.setdefault(rows, []).append(i)
        groups = [_group(tasks, members, evals, methods) for _, members in sorted(by_rows.items())]
        corpora.append(_Corpus(name, tasks, groups, have))
    return corpora


def _f1(tp: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    den = gold + pred
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def slot_f1(corpus: _Corpus, note_weights: list[np.ndarray]) -> np.ndarray:
    """(B, T, M) seed-mean Macro F1 of every (task, method) on the notes weighted by
    ``note_weights`` (one (B, N_g) array per group of the corpus); NaN where a method lacks a task."""
    b = len(note_weights[0])
    out = np.zeros((b, corpus.have.size))
    for g, w in zip(corpus.groups, note_weights):
        w = np.asarray(w, np.float32)  # counts: the products are exact in float32
        tp, gold, pred = ((w @ x).astype(np.float64) for x in (g.tp, g.gold, g.pred))
        if g.to_lines is None:
            out += _f1(tp, gold, pred) @ g.to_slots
        else:  # Macro F1 over the classes present in the drawn notes (gold or predicted)
            n_present = ((gold + pred) > 0) @ g.to_lines
            line_f1 = np.divide(_f1(tp, gold, pred) @ g.to_lines, n_present, out=np.zeros_like(n_present),
                                where=n_present > 0)
            out += line_f1 @ g.line_slots
    out = np.round(out.reshape(b, *corpus.have.shape), 12)  # equal predictions give equal F1, bit for bit
    out[:, ~corpus.have] = np.nan
    return out


def _counts(rng: np.random.Generator, b: int, n: int) -> np.ndarray:
    """(b, n): how often each of n items is drawn in each of b draws of n with replacement."""
    flat = rng.integers(0, n, (b, n)) + np.arange(b)[:, None] * n
    return np.bincount(flat.ravel(), minlength=b * n).reshape(b, n).astype(np.float32)


def _sums(f1: np.ndarray, task_counts: np.ndarray, have: np.ndarray, ref: int | None) -> tuple:
    """Numerators and denominators over drawn tasks: per method, and of the reference minus each."""
    c = task_counts[:, :, None] * have[None]  # (B, T, M)
    f = np.nan_to_num(f1)
    num, den = (c * f).sum(1), c.sum(1)
    if ref is None:
        return num, den, None, None
    both = task_counts[:, :, None] * (have & have[:, [ref]])[None]
    diff = f[:, :, [ref]] - f
    return num, den, (both * diff).sum(1), both.sum(1)


def draw(corpora: list[_Corpus], rng: np.random.Generator, b: int) -> tuple[list, list]:
    """``b`` resamples: per corpus, one (b, N_g) note-count matrix per group of tasks that share
    their notes, and one (b, T) task-count matrix."""
    weights = [[_counts(rng, b, len(g.rows)) for g in c.groups] for c in corpora]
    return weights, [_counts(rng, b, len(c.tasks)) for c in corpora]


def statistics(corpora: list[_Corpus], weights: list, task_counts: list, ref: int | None) -> dict:
    """Per scope (``all`` and each corpus): (B, M) method means over the drawn tasks and (B, M)
    differences reference minus method (None without a reference), on the resamples ``weights``
    and ``task_counts`` (:func:`draw`)."""
    totals, out = None, {}
    for corpus, w, tc in zip(corpora, weights, task_counts):
        sums = _sums(slot_f1(corpus, w), tc, corpus.have, ref)
        out[corpus.name] = sums
        totals = sums if totals is None else tuple(None if a is None else a + s for a, s in zip(totals, sums))
    out["all"] = totals
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: (s[0] / s[1], None if s[2] is None else s[2] / s[3]) for k, s in out.items()}


def _interval(point: float, draws: np.ndarray) -> dict:
    low, high = (np.nanpercentile(draws, [2.5, 97.5]).tolist() if np.isfinite(draws).any() else (np.nan, np.nan))
    return {"mean": float(point), "low": float(low), "high": float(high)}


def bootstrap(records: list[dict], methods: list[str], resamples: int = 10_000, seed: int = 0,
              reference: str = REFERENCE) -> dict:
    """Intervals of each method's mean Macro F1 and of ``reference`` minus each other method.

    Returns ``{"resamples", "seed", "seconds", "reference", "methods", "scopes"}``; ``scopes``:
    ``all`` and each corpus -> ``{"n_tasks", "methods": {m: {mean, low, high}}, "difference":
    {m: {mean, low, high, excludes_zero}}}`` (``mean``: the statistic on the notes and tasks as
    they are; no ``difference`` without the reference)."""
    if resamples < 1:
        raise ValueError(f"bootstrap: resamples must be at least 1, got {resamples}")
    start = time.time()
    methods = [m for m in methods if any(r["method"] == m for r in records)]
    corpora = prepare(records, methods)
    if not corpora:
        return {"resamples": resamples, "seed": seed, "seconds": 0.0, "reference": reference, "methods": [],
                "scopes": {}}
    ref = methods.index(reference) if reference in methods else None
    ones_w = [[np.ones((1, len(g.rows)), np.float32) for g in c.groups] for c in corpora]
    point = statistics(corpora, ones_w, [np.ones((1, len(c.tasks)), np.float32) for c in corpora], ref)
    rng = np.random.default_rng(seed)
    blocks: dict = {k: ([], []) for k in point}
    for start_b in range(0, resamples, BLOCK):
        b = min(BLOCK, resamples - start_b)
        for k, (means, diffs) in statistics(corpora, *draw(corpora, rng, b), ref).items():
            blocks[k][0].append(means)
            blocks[k][1].append(diffs)
    scopes = {}
    for k, (means, diffs) in blocks.items():
        means = np.concatenate(means) if means else np.zeros((0, len(methods)))
        scope = {"n_tasks": sum(len(c.tasks) for c in corpora if k in ("all", c.name)),
                 "methods": {m: _interval(point[k][0][0, i], means[:, i]) for i, m in enumerate(methods)}}
        if ref is not None:
            diffs = np.concatenate(diffs)
            scope["difference"] = {}
            for i, m in enumerate(methods):
                if i != ref:
                    d = _interval(point[k][1][0, i], diffs[:, i])
                    scope["difference"][m] = {**d, "excludes_zero": bool(d["low"] > 0 or d["high"] < 0)}
        scopes[k] = scope
    return {"resamples": resamples, "seed": seed, "seconds": round(time.time() - start, 2), "reference": reference,
            "methods": methods, "scopes": scopes}


def paired_difference(first: list[dict], second: list[dict], resamples: int, seed: int) -> dict | None:
    """``first``'s records minus ``second``'s (each one method's, whatever they are named), on the same draws:
    {mean, low, high, excludes_zero}; None where the two share no task. Both are renamed, so a method can be
    compared with itself under another view or from another grid; pair their seeds before (a ValueError from
    :func:`bootstrap` as it raises it)."""
    records = [{**r, "method": "a"} for r in first] + [{**r, "method": "b"} for r in second]
    boot = bootstrap(records, ["a", "b"], resamples, seed, reference="a")
    return ((boot["scopes"].get("all") or {}).get("difference") or {}).get("b")
