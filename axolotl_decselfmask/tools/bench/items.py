"""``bench items``: the K items of one text scored together against K separate scorings."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from axolotl_decselfmask.relevance import build_relevance_prompt, compute_relevance
from axolotl_decselfmask.tools.bench.common import (
    DEFAULT_LEAD_IN,
    DEFAULT_METHOD,
    max_rel_diff,
    timed,
)

DEFAULT_ITEMS = (
    "neoplasms", "digestive system diseases", "nervous system diseases", "cardiovascular diseases",
    "general pathological conditions", "diabetes", "hypertension", "infection",
)


def item_arms(model, tokenizer, method_name: str, target: str, batch_size: int, padded_batch: bool,
              fast_backward: bool) -> dict[str, Callable]:
    """``together``: one ``compute_relevance`` call (as the precompute does); ``separate``: one
    ``attribute`` call an item; ``padded_batch``: the K prompts as one batch, nothing shared."""
    from axolotl_decselfmask.registry import get_method

    cls = get_method(method_name)
    method = cls(model, tokenizer, target, "middle", steps=32, unit="sentence", fast_backward=fast_backward)
    arms: dict[str, Callable] = {
        "together": lambda ps: compute_relevance(method, ps, batch_size),
        "separate": lambda ps: [method.attribute([p])[0] for p in ps],
    }
    if padded_batch:
        unshared = cls(model, tokenizer, target, "middle", steps=32, unit="sentence", fast_backward=fast_backward,
                       share_prefix=False)
        arms["padded_batch"] = unshared.attribute
    return arms


def run_items(model, tokenizer, notes: Sequence[str], items: Sequence[str] = DEFAULT_ITEMS, *,
              method_name: str = DEFAULT_METHOD, lead_in: str = DEFAULT_LEAD_IN, target: str = "sum_logprob",
              batch_size: int | None = None, padded_batch: bool = False, fast_backward: bool = False,
              progress: bool = True) -> list[dict]:
    """For each note, every arm of :func:`item_arms` on its K items, interleaved (the order
    alternates from note to note); one row an arm other than ``separate``: the median over notes
    of its time over the separate scorings' (``ratio``), and how far its maps are from theirs
    (``max_rel_diff_vs_separate``, float rounding only when all is well)."""
    from tqdm.auto import tqdm

    arms = item_arms(model, tokenizer, method_name, target, batch_size or 1, padded_batch, fast_backward)
    times: dict[str, list[float]] = {a: [] for a in arms}
    diffs: dict[str, list[float]] = {a: [] for a in arms}
    all_prompts = [[build_relevance_prompt(tokenizer, t, it, lead_in) for it in items] for t in notes]
    for arm in arms.values():  # warm-up
        arm(all_prompts[0][:2])
    bar = tqdm(total=len(notes) * len(arms), desc="items bench", unit="arm", disable=not progress,
               dynamic_ncols=True)
    for n, ps in enumerate(all_prompts):
        results = {}
        for arm in (list(arms) if n % 2 == 0 else list(reversed(arms))):
            bar.set_postfix_str(f"{arm} note {n + 1}/{len(notes)}")
            seconds, results[arm] = timed(arms[arm], ps)
            times[arm].append(seconds)
            bar.update(1)
        for arm, rels in results.items():
            diffs[arm].append(max(max_rel_diff(a, b) for a, b in zip(rels, results["separate"])))
    bar.close()
    suffix = ":fast_backward" if fast_backward else ""
    rows = []
    for arm in [a for a in arms if a != "separate"]:
        ratios = [a / b for a, b in zip(times[arm], times["separate"])]
        rows.append({
            "benchmark": "items", "method": (method_name if arm == "together" else f"{method_name}:{arm}") + suffix,
            "items": len(items), "notes": len(notes), "fast_backward": fast_backward,
            "seconds_per_note": statistics.median(times[arm]),
            "separate_seconds_per_note": statistics.median(times["separate"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "max_rel_diff_vs_separate": max(diffs[arm]),
        })
    return rows


def format_items(rows: list[dict]) -> str:
    return "\n".join(
        f"{r['method']}: {r['items']} items of one note {r['seconds_per_note']:.2f} s vs {r['items']} separate "
        f"scorings {r['separate_seconds_per_note']:.2f} s -> ratio {r['ratio']:.2f} (min {r['ratio_min']:.2f}, "
        f"max {r['ratio_max']:.2f}, {r['notes']} notes; max relative difference of the maps "
        f"{r['max_rel_diff_vs_separate']:.1e})" for r in rows)
