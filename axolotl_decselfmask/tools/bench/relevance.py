"""``bench relevance``: the relevance methods side by side on the same notes and model.

Every measurement is paired: a plain inference forward of the same batch runs before and after
each method call (the methods rotate their order from note to note), and a method's cost is
the median over its calls of its time over the mean of the two forwards around it ("forward
equivalents"). notes/s is the raw throughput of the same calls and moves with the load.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from axolotl_decselfmask.relevance import build_relevance_prompt
from axolotl_decselfmask.relevance.methods.base import MethodNotSupported
from axolotl_decselfmask.stage1.spans import SpanSettings
from axolotl_decselfmask.tools.bench.common import (
    DEFAULT_ITEM,
    DEFAULT_LEAD_IN,
    DEFAULT_METHOD,
    PeakRSS,
    fmt,
    jaccard,
    keep_attn_implementation,
    max_rel_diff,
    plain_forward,
    product_fast_backward,
    span_chars,
    table,
    timed,
    top_fraction,
    truncate_to_tokens,
)

REFERENCE = "integrated_gradients"
#: methods run once per note whatever ``--repeats`` says (they take seconds to minutes a note)
SLOW_METHODS = ("integrated_gradients", "feature_ablation")
#: the keys every JSON row of ``relevance`` has (others are extras)
ROW_KEYS = ("method", "notes_per_s", "forward_equivalents", "peak_rss_mib", "overlap_with_ig")


@dataclass
class MethodStats:
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    fwd: list[float] = field(default_factory=list)
    call_notes: list[int] = field(default_factory=list)
    parts: dict = field(default_factory=dict)  # part name -> forward equivalents of each call
    peak: float = 0.0
    delta: float = 0.0
    notes: int = 0
    rss_how: str = ""
    rel: dict = field(default_factory=dict)  # note index -> relevance (first call)
    note_time: dict = field(default_factory=dict)  # note index -> seconds (first call; a batch's time shared)
    status: str = "ok"


def make_methods(names, model, tokenizer, target="sum_logprob", steps=32, unit="sentence"):
    """The registered methods ``names`` built for ``model``; those that cannot run get a status."""
    from axolotl_decselfmask.registry import relevance_methods

    registered = relevance_methods()
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"unknown relevance method(s) {unknown}; registered: {sorted(registered)}")
    made, status = {}, {}
    fast = product_fast_backward(model)
    for name in names:
        try:
            registered[name].check_model_config(model.config)
            made[name] = registered[name](model, tokenizer, target, "middle", steps=steps, unit=unit,
                                          fast_backward=fast)
        except (MethodNotSupported, ImportError) as exc:
            status[name] = f"unavailable: {exc}"
    return made, status


def call_method(model, method, prompts, st: MethodStats):
    """``method.attribute(prompts)`` timed under :class:`PeakRSS`; a failure goes to ``st.status``."""
    with keep_attn_implementation(model), PeakRSS() as mem:
        try:
            seconds, rels = timed(method.attribute, prompts)
        except (MethodNotSupported, ImportError) as exc:
            st.status = f"unavailable: {exc}"
            return None, None
        except Exception as exc:  # noqa: BLE001 - the run goes on; the row says why
            st.status = f"failed: {type(exc).__name__}: {exc}"
            return None, None
    st.peak, st.delta, st.rss_how = max(st.peak, mem.peak_mib), max(st.delta, mem.delta_mib), mem.how
    return seconds, rels


def record(st: MethodStats, method, batch_idx, seconds, rels, fwd, first: bool) -> None:
    st.times.append(seconds)
    st.fwd.append(fwd)
    st.call_notes.append(len(batch_idx))
    st.ratios.append(seconds / fwd)
    for part, sec in (getattr(method, "last_parts", None) or {}).items():  # methods that time their own parts
        st.parts.setdefault(part, []).append(sec / fwd)
    if first:
        st.notes += len(batch_idx)
        for i, r in zip(batch_idx, rels):
            st.note_time[i] = seconds / len(batch_idx)
            st.rel[i] = np.asarray(r, dtype=np.float64)


def measure(model, prompts, live: dict, stats: dict, batch_size: int, ig_limit: int, repeats: int,
            progress: bool) -> None:
    """Every live method on every batch of prompts, paired with plain forwards, order rotating."""
    from tqdm.auto import tqdm

    batches = [list(range(s, min(s + batch_size, len(prompts)))) for s in range(0, len(prompts), batch_size)]
    runs_on = lambda name, b: not (name == REFERENCE and b[0] >= ig_limit)
    reps = lambda name: 1 if name in SLOW_METHODS else repeats
    bar = tqdm(total=sum(reps(n) for b in batches for n in live if runs_on(n, b)), desc="relevance bench",
               unit="call", disable=not progress, dynamic_ncols=True)
    order = list(live)
    for bi, batch_idx in enumerate(batches):
        if not live:
            break
        batch_prompts = [prompts[i] for i in batch_idx]
        fbatch = next(iter(live.values())).batch(batch_prompts)
        t_prev, _ = timed(plain_forward, model, fbatch)
        for name in order[bi % len(order):] + order[: bi % len(order)]:
            for rep in range(reps(name) if name in live and runs_on(name, batch_idx) else 0):
                bar.set_postfix_str(f"{name} note {batch_idx[0] + 1}/{len(prompts)}")
                seconds, rels = call_method(model, live[name], batch_prompts, stats[name])
                if seconds is None:
                    live.pop(name)
                    break
                t_next, _ = timed(plain_forward, model, fbatch)
                record(stats[name], live[name], batch_idx, seconds, rels, (t_prev + t_next) / 2, rep == 0)
                t_prev = t_next
                bar.update(1)
    bar.close()


def run_relevance(model, tokenizer, notes: Sequence[str], methods: Sequence[str] | None = None, *,
                  item: str = DEFAULT_ITEM, lead_in: str = DEFAULT_LEAD_IN, target: str = "sum_logprob",
                  batch_size: int = 1, ig_steps: int = 32, ig_notes: int | None = None,
                  ablation_unit: str = "sentence", repeats: int = 1, top: float = 0.1, extra: dict | None = None,
                  progress: bool = True, warmup: bool = True) -> list[dict]:
    """The methods on ``notes`` (interleaved, paired with plain forwards); one row each.

    ``methods``: names from :func:`axolotl_decselfmask.registry.relevance_methods` (default: all).
    ``ig_notes``: integrated gradients on the first n notes only (its overlaps are measured on
    those). ``extra``: more method-like objects by name (``attribute(prompts)``, ``batch(prompts)``),
    timed alike and compared with the default method (``overlap_with_default``); one whose
    ``last_parts`` is a dict of seconds (forward, backward, ...) gets ``<part>_part_fe`` in its row.
    """
    from axolotl_decselfmask.registry import relevance_methods

    names = list(methods) if methods else list(relevance_methods())
    made, status = make_methods(names, model, tokenizer, target, ig_steps, ablation_unit)
    made.update(extra or {})
    stats = {name: MethodStats(status=status.get(name, "ok")) for name in [*names, *(extra or {})]}
    prompts = [build_relevance_prompt(tokenizer, t, item, lead_in) for t in notes]
    if warmup and made:  # first calls pay for lazy imports, allocator growth, kernel selection
        short = build_relevance_prompt(tokenizer, truncate_to_tokens(tokenizer, notes[0], 24), item, lead_in)
        plain_forward(model, next(iter(made.values())).batch([short]))
        for name, method in made.items():
            probe = MethodStats()  # its time and memory are not the method's figures
            call_method(model, method, [short], probe)
            stats[name].status = probe.status
    live = {n: m for n, m in made.items() if stats[n].status == "ok"}
    ig_limit = len(prompts) if ig_notes is None else max(1, min(ig_notes, len(prompts)))
    measure(model, prompts, live, stats, batch_size, ig_limit, repeats, progress)
    return [method_row(name, st, stats, prompts, top, compare_default=name in (extra or {}))
            for name, st in stats.items()]


def method_row(name: str, st: MethodStats, stats: dict, prompts, top: float, compare_default: bool) -> dict:
    row: dict = {"method": name, "notes_per_s": None, "forward_equivalents": None, "peak_rss_mib": None,
                 "overlap_with_ig": None, "status": st.status}
    if st.status != "ok" or not st.times:
        return row
    per_note = sum(st.times) / sum(st.call_notes)
    row.update({
        "notes_per_s": 1.0 / per_note, "forward_equivalents": statistics.median(st.ratios),
        "peak_rss_mib": st.peak, "seconds_per_note": per_note,
        "forward_s_per_note": sum(st.fwd) / sum(st.call_notes),
        "forward_equivalents_of_sums": sum(st.times) / sum(st.fwd),
        "forward_equivalents_min": min(st.ratios), "forward_equivalents_max": max(st.ratios),
        "calls": len(st.times), "notes": st.notes, "peak_rss_delta_mib": st.delta, "rss_measure": st.rss_how,
        "seconds_by_note": [st.note_time.get(i) for i in range(len(prompts))],
    })
    row.update({f"{part}_part_fe": statistics.median(v) for part, v in st.parts.items()})
    default = stats.get(DEFAULT_METHOD)
    if compare_default and default is not None and default.rel:
        both = sorted(set(st.rel) & set(default.rel))
        row["overlap_with_default"] = float(np.mean(
            [jaccard(top_fraction(st.rel[i], top), top_fraction(default.rel[i], top)) for i in both]))
        row["max_rel_diff_vs_default"] = max(max_rel_diff(st.rel[i], default.rel[i]) for i in both)
    ref = stats.get(REFERENCE)
    if ref is not None and ref.status == "ok" and ref.rel:
        row.update(overlap_with_reference(name, st.rel, ref.rel, prompts, top))
    return row


def overlap_with_reference(name: str, rel: dict, ref_rel: dict, prompts, top: float) -> dict:
    """Top-token Jaccard and span Jaccard (each method's span selector against IG's hysteresis)."""
    from axolotl_decselfmask.registry import get_selector, relevance_methods

    common = sorted(set(rel) & set(ref_rel))
    if not common:
        return {}
    cls = relevance_methods().get(name.split(":")[0])
    select = get_selector(getattr(cls, "span_selector", None) or "hysteresis")
    ref_select, settings = get_selector("hysteresis"), SpanSettings()
    spans = []
    for i in common:
        p = prompts[i]
        a = span_chars(select(rel[i], p.offsets, p.text, settings, np.random.default_rng(0)))
        b = span_chars(ref_select(ref_rel[i], p.offsets, p.text, settings, np.random.default_rng(0)))
        spans.append(jaccard(a, b))
    tops = [jaccard(top_fraction(rel[i], top), top_fraction(ref_rel[i], top)) for i in common]
    return {"overlap_with_ig": float(np.mean(tops)), "span_overlap_with_ig": float(np.mean(spans)),
            "overlap_notes": len(common)}


COLUMNS = [("notes/s", "notes_per_s", ".3f"), ("fwd-equiv/note", "forward_equivalents", ".2f"),
           ("peak RSS MiB", "peak_rss_mib", ".0f"), ("(+ over start)", "peak_rss_delta_mib", ".0f"),
           ("top10% J(IG)", "overlap_with_ig", ".2f"), ("span J(IG)", "span_overlap_with_ig", ".2f"),
           ("notes", "notes", "d")]


def format_relevance_table(rows: list[dict]) -> str:
    """One line a method; a method that did not run says why on its line."""
    cols = COLUMNS + ([("top10% J(default)", "overlap_with_default", ".2f")]
                      if any("overlap_with_default" in r for r in rows) else [])
    ok = [r for r in rows if r.get("status", "ok") == "ok"]
    width = max([len("method")] + [len(r["method"]) for r in rows])
    out = table(["method".ljust(width)] + [c[0] for c in cols],
                [[r["method"]] + [fmt(r.get(key), spec) for _, key, spec in cols] for r in ok]).splitlines()
    out += [f"{r['method'].ljust(width)}  {r['status']}" for r in rows if r.get("status", "ok") != "ok"]
    return "\n".join(out)
