"""``bench profile``: where grad x input spends its time, by kind of operation (torch.profiler)."""

from __future__ import annotations

from axolotl_decselfmask.relevance import build_relevance_prompt
from axolotl_decselfmask.tools.bench.common import (
    DEFAULT_ITEM,
    DEFAULT_LEAD_IN,
    plain_forward,
)

CATEGORIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::_mkldnn", "aten::mkldnn")),
    ("attention", ("aten::_scaled_dot_product", "aten::_flash", "aten::_efficient", "aten::softmax",
                   "aten::_softmax")),
    ("zeros/copies", ("aten::fill_", "aten::copy_", "aten::zero_", "aten::zeros", "aten::cat", "aten::index",
                      "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::slice_backward",
                      "aten::select_backward", "aten::empty")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::neg", "aten::pow", "aten::rsqrt",
                     "aten::mean", "aten::sum", "aten::silu", "aten::sigmoid", "aten::exp", "aten::where",
                     "aten::_log_softmax", "aten::gather", "aten::embedding")),
)
PHASES = ("plain_forward", "gxi_forward", "gxi_backward")


def category(op: str) -> str:
    return next((cat for cat, prefixes in CATEGORIES if op.startswith(prefixes)), "other")


def profiled(fn) -> dict[str, float]:
    """Self-CPU seconds of each operation that ``fn()`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        out[ev.key] = out.get(ev.key, 0.0) + ev.self_cpu_time_total / 1e6
    return out


def phase_calls(model, method, prompt):
    """The three phases of one note as callables: a plain forward, grad x input's forward with
    autograd recording, and its backward (to the input embeddings)."""
    import torch

    batch, state = method.batch([prompt]), {}

    def forward():
        embeds = method.embedding(batch.ids).detach().requires_grad_(True)
        with torch.enable_grad():
            state["embeds"], state["scores"] = embeds, method.scores(batch, inputs_embeds=embeds)

    def backward():
        torch.autograd.grad(state["scores"].sum(), state["embeds"])

    return (lambda: plain_forward(model, batch), forward, backward)


def run_profile(model, tokenizer, notes, *, item=DEFAULT_ITEM, lead_in=DEFAULT_LEAD_IN, target="sum_logprob",
                progress=True) -> list[dict]:
    """Self-CPU seconds by phase and kind of operation, summed over ``notes``, as forward
    equivalents (a plain forward's total = 1); plus the top operations of the backward."""
    from tqdm.auto import tqdm

    from axolotl_decselfmask.relevance.methods import GradientXInput

    method = GradientXInput(model, tokenizer, target, "middle")
    prompts = [build_relevance_prompt(tokenizer, t, item, lead_in) for t in notes]
    totals: dict[str, dict[str, float]] = {ph: {} for ph in PHASES}
    method.attribute(prompts[:1])  # warm-up
    for p in tqdm(prompts, desc="profile", unit="note", disable=not progress):
        for ph, fn in zip(PHASES, phase_calls(model, method, p)):
            for op, sec in profiled(fn).items():
                totals[ph][op] = totals[ph].get(op, 0.0) + sec
    base = sum(totals["plain_forward"].values())
    row = lambda ph, sec, **kw: {"benchmark": "profile", "phase": ph, **kw,
                                 "seconds_per_note": sec / len(prompts), "forward_equivalents": sec / base}
    rows = []
    for ph in PHASES:
        cats: dict[str, float] = {}
        for op, sec in totals[ph].items():
            cats[category(op)] = cats.get(category(op), 0.0) + sec
        for cat in [c for c, _ in CATEGORIES] + ["other"]:
            rows.append(row(ph, cats.get(cat, 0.0), category=cat))
        rows.append(row(ph, sum(cats.values()), category="total"))
    for op, sec in sorted(totals["gxi_backward"].items(), key=lambda kv: -kv[1])[:12]:
        rows.append(row("gxi_backward", sec, op=op, category=category(op)))
    return rows


def format_profile(rows: list[dict]) -> str:
    by = {(r["phase"], r["category"]): r for r in rows if "op" not in r}
    lines = ["self-CPU time as forward equivalents (a plain forward's total = 1.00); torch.profiler",
             "category".ljust(14) + "".join(ph.rjust(15) for ph in PHASES)]
    for c in [c for c, _ in CATEGORIES] + ["other", "total"]:
        lines.append(c.ljust(14) + "".join(f"{by[(ph, c)]['forward_equivalents']:15.2f}" for ph in PHASES))
    lines.append("top operations of the backward:")
    lines += [f"  {r['op']:<60} {r['forward_equivalents']:6.2f}  ({r['category']})" for r in rows if "op" in r]
    return "\n".join(lines)
