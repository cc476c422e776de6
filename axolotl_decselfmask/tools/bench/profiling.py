"""``bench profile``: where grad x input and AttnLRP (the default method) spend their time, by
kind of operation (torch.profiler), against a plain forward of the same prompt."""

from __future__ import annotations

import contextlib

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
#: AttnLRP's phases, where the model is one that AttnLRP supports
LRP_PHASES = ("lrp_forward", "lrp_backward")
#: phases whose top operations are listed
TOP_PHASES = ("gxi_backward", "lrp_forward", "lrp_backward")


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


def phase_calls(model, method, prompt, rules=contextlib.nullcontext):
    """The three phases of one note as callables: a plain forward, the method's forward with
    autograd recording, and its backward (to the input embeddings); ``rules``: a context the
    forward and backward run in (AttnLRP's :func:`lrp_rules`)."""
    import torch

    batch, state = method.batch([prompt]), {}

    def forward():
        embeds = method.embedding(batch.ids).detach().requires_grad_(True)
        with rules(), torch.enable_grad():
            state["embeds"], state["scores"] = embeds, method.scores(batch, inputs_embeds=embeds)

    def backward():  # the rules' backward functions were recorded by the forward
        torch.autograd.grad(state["scores"].sum(), state["embeds"])

    return (lambda: plain_forward(model, batch), forward, backward)


def _lrp_method(model, tokenizer, target):
    """AttnLRP and its rules' context for ``model``, or None where AttnLRP does not support it
    (for timing only: a final logit soft-cap, Gemma 2's, is left out of the target here)."""
    from axolotl_decselfmask.relevance.methods.attnlrp import AttnLRP, lrp_rules
    from axolotl_decselfmask.relevance.methods.base import MethodNotSupported

    try:
        AttnLRP.check_model_config(model.config)
        method = AttnLRP(model, tokenizer, target, "middle")
    except MethodNotSupported:
        return None
    return method, lambda: lrp_rules(model, method.attention_rule, method.attention_path)


def run_profile(model, tokenizer, notes, *, item=DEFAULT_ITEM, lead_in=DEFAULT_LEAD_IN, target="sum_logprob",
                progress=True) -> list[dict]:
    """Self-CPU seconds by phase and kind of operation, summed over ``notes``, as forward
    equivalents (a plain forward's total = 1): grad x input's forward and backward and, on a
    model it supports, AttnLRP's; plus the top operations of :data:`TOP_PHASES`."""
    from tqdm.auto import tqdm

    from axolotl_decselfmask.relevance.methods import GradientXInput

    method = GradientXInput(model, tokenizer, target, "middle")
    lrp = _lrp_method(model, tokenizer, target)
    phases = PHASES + (LRP_PHASES if lrp else ())
    prompts = [build_relevance_prompt(tokenizer, t, item, lead_in) for t in notes]
    totals: dict[str, dict[str, float]] = {ph: {} for ph in phases}
    method.attribute(prompts[:1])  # warm-up
    if lrp:
        lrp[0].attribute(prompts[:1])
    for p in tqdm(prompts, desc="profile", unit="note", disable=not progress):
        calls = list(zip(PHASES, phase_calls(model, method, p)))
        if lrp:
            calls += list(zip(LRP_PHASES, phase_calls(model, lrp[0], p, lrp[1])[1:]))
        for ph, fn in calls:
            for op, sec in profiled(fn).items():
                totals[ph][op] = totals[ph].get(op, 0.0) + sec
    base = sum(totals["plain_forward"].values())
    row = lambda ph, sec, **kw: {"benchmark": "profile", "phase": ph, **kw,
                                 "seconds_per_note": sec / len(prompts), "forward_equivalents": sec / base}
    rows = []
    for ph in phases:
        cats: dict[str, float] = {}
        for op, sec in totals[ph].items():
            cats[category(op)] = cats.get(category(op), 0.0) + sec
        for cat in [c for c, _ in CATEGORIES] + ["other"]:
            rows.append(row(ph, cats.get(cat, 0.0), category=cat))
        rows.append(row(ph, sum(cats.values()), category="total"))
    for ph in [ph for ph in TOP_PHASES if ph in phases]:
        for op, sec in sorted(totals[ph].items(), key=lambda kv: -kv[1])[:12]:
            rows.append(row(ph, sec, op=op, category=category(op)))
    return rows


def format_profile(rows: list[dict]) -> str:
    by = {(r["phase"], r["category"]): r for r in rows if "op" not in r}
    phases = [ph for ph in PHASES + LRP_PHASES if (ph, "total") in by]
    lines = ["self-CPU time as forward equivalents (a plain forward's total = 1.00); torch.profiler",
             "category".ljust(14) + "".join(ph.rjust(15) for ph in phases)]
    for c in [c for c, _ in CATEGORIES] + ["other", "total"]:
        lines.append(c.ljust(14) + "".join(f"{by[(ph, c)]['forward_equivalents']:15.2f}" for ph in phases))
    for ph in TOP_PHASES:
        ops = [r for r in rows if "op" in r and r["phase"] == ph]
        if ops:
            what = "the backward" if ph == "gxi_backward" else ph
            lines.append(f"top operations of {what}:")
            lines += [f"  {r['op']:<60} {r['forward_equivalents']:6.2f}  ({r['category']})" for r in ops]
    return "\n".join(lines)
