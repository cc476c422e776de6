#!/usr/bin/env python
"""Prototypes of a faster grad x input, and one-off measurements, beside the shipped benchmark.

Not part of the package (the wheel ships ``axolotl decselfmask bench``); this script
reuses its relevance section (``axolotl_decselfmask.tools.bench.run_relevance``, paired with
plain forwards) and adds

- ``--variants``: prototypes of grad x input with one change each (see ``VARIANTS``), timed in
  the same run and compared with the product's ``grad_x_input`` (``top10% J(default)``);
- ``--lxt-shim``: stand-ins so that lxt 2.1's Llama patch can be *timed* on transformers 5
  (``attnlrp``); this patches ``transformers.pytorch_utils`` and lxt's patch map for the rest
  of the process, which is why it lives here and not in the package;
- ``--goals``: the goals of the issue "Relevance engine" against the measured rows.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/relevance_prototypes.py --notes 4 --repeats 2 \\
        --methods grad_x_input --variants split,trim,eager,matmul_medium,backward_medium,autocast_bf16

Results are in docs/benchmark.md, "Prototypes (benchmarks/)".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from axolotl_decselfmask.relevance.methods.grad_x_input import matmul_precision
from axolotl_decselfmask.tools.bench import (
    DEFAULT_ITEM,
    DEFAULT_LEAD_IN,
    DEFAULT_METHOD,
    REFERENCE,
    attn_implementation,
    format_relevance_table,
    load_model,
    load_notes,
    make_methods,
    plain_forward,
    product_fast_backward,
    resolve_data,
    resolve_model,
    run_relevance,
)

# Goals of the issue "Relevance engine"
GOAL_DEFAULT_FE = 2.2
GOAL_IG_SPEEDUP = 40.0
GOAL_ATTNLRP_VS_DEFAULT = 1.2
# (and: 8 items of one note <= 0.6x the cost of 8 separate scorings; `bench items` prints the ratio)


# --------------------------------------------------------------------------------- variants
class Variant:
    """grad x input with one change: ``attribute(prompts)`` and ``batch(prompts)`` like a method.
    ``last_parts`` (seconds by part of the last call) is reported as ``<part>_part_fe``."""

    def __init__(self, name: str, base, fn):
        self.name, self.base, self.fn = name, base, fn
        self.model = base.model
        self.last_parts: dict | None = None
        self.cache: dict = {}

    def batch(self, prompts):
        return self.base.batch(prompts)

    def attribute(self, prompts):
        return self.fn(self, prompts)


def _gxi_values(method, batch, embeds, prompts):
    with torch.enable_grad():
        scores = method.scores(batch, inputs_embeds=embeds)
        (grad,) = torch.autograd.grad(scores.sum(), embeds)
    return method.text_values((embeds.detach().float() * grad.float()).sum(-1), prompts)


def variant_split(v, prompts):
    """Plain grad x input, with its forward and backward timed apart."""
    m = v.base
    batch = m.batch(prompts)
    embeds = m.embedding(batch.ids).detach().requires_grad_(True)
    with torch.enable_grad():
        t0 = time.perf_counter()
        scores = m.scores(batch, inputs_embeds=embeds)
        t1 = time.perf_counter()
        (grad,) = torch.autograd.grad(scores.sum(), embeds)
        t2 = time.perf_counter()
    v.last_parts = {"forward": t1 - t0, "backward": t2 - t1}
    return m.text_values((embeds.detach().float() * grad.float()).sum(-1), prompts)


def variant_trim(v, prompts):
    """The batch cut after the last position whose logits are read (the item's last token and
    the end of turn cannot change the target of a causal model)."""
    batch = v.base.batch(prompts)
    end = int(batch.cols.max()) + 1
    batch.ids, batch.mask = batch.ids[:, :end], batch.mask[:, :end]
    return _gxi_values(v.base, batch, v.base.embedding(batch.ids).detach().requires_grad_(True), prompts)


def variant_eager(v, prompts):
    before = attn_implementation(v.model)
    v.model.set_attn_implementation("eager")
    try:
        return v.base.attribute(prompts)
    finally:
        v.model.set_attn_implementation(before)


def variant_matmul_medium(v, prompts):
    """float32 matmul precision "medium" for the call (oneDNN; bf16 fpmath allowed)."""
    with matmul_precision("medium"):
        return v.base.attribute(prompts)


def _rebuilt(v, key: str, model=None, **options):
    """The base method built again (once) on ``model`` and/or with other options."""
    if key not in v.cache:
        m = v.base
        v.cache[key] = type(m)(model if model is not None else m.model, m.tokenizer, m.target, m.token_position,
                               **{**m.options, **options})
    return v.cache[key]


def variant_backward_medium(v, prompts):
    """The product's ``fast_backward`` on (forward as is, the backward with "medium")."""
    return _rebuilt(v, "fast", fast_backward=True).attribute(prompts)


def variant_exact_backward(v, prompts):
    """The product's ``fast_backward`` off."""
    return _rebuilt(v, "exact", fast_backward=False).attribute(prompts)


def variant_compile(v, prompts):
    """``torch.compile(model, dynamic=True)``; the first call compiles (in the warm-up)."""
    return _rebuilt(v, "compiled", model=torch.compile(v.model, dynamic=True)).attribute(prompts)


def variant_forward_medium(v, prompts):
    """Not a relevance method: a plain forward with "medium", for comparison (relevance zeros)."""
    with matmul_precision("medium"):
        plain_forward(v.model, v.base.batch(prompts))
    return [np.zeros(len(p.text_positions), dtype=np.float32) for p in prompts]


def variant_autocast_bf16(v, prompts):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return v.base.attribute(prompts)


VARIANTS = {
    "split": variant_split,
    "trim": variant_trim,
    "eager": variant_eager,
    "matmul_medium": variant_matmul_medium,
    "backward_medium": variant_backward_medium,
    "exact_backward": variant_exact_backward,
    "autocast_bf16": variant_autocast_bf16,
    "compile": variant_compile,
    "forward_medium": variant_forward_medium,
}
#: variants that compute no relevance (no overlap is reported for them)
NOT_RELEVANCE = ("forward_medium",)


def make_variants(names, model, tokenizer, target="sum_logprob", steps=32, unit="sentence") -> dict:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    out = {}
    for n in names:
        base = make_methods([DEFAULT_METHOD], model, tokenizer, target, steps, unit)[0][DEFAULT_METHOD]
        out[f"{DEFAULT_METHOD}:{n}"] = Variant(f"{DEFAULT_METHOD}:{n}", base, VARIANTS[n])
    return out


def drop_overlaps_of_non_relevance(rows: list[dict]) -> None:
    for r in rows:
        if r["method"].split(":")[-1] in NOT_RELEVANCE:
            r["overlap_with_ig"] = None
            for key in ("span_overlap_with_ig", "overlap_with_default", "max_rel_diff_vs_default"):
                r.pop(key, None)


# --------------------------------------------------------------------------------- lxt shim
class AttentionInterface(dict):
    """lxt replaces a modeling module's ``ALL_ATTENTION_FUNCTIONS`` by a plain dict; transformers 5
    calls ``.get_interface()`` on it."""

    def get_interface(self, attn_implementation, default):
        return self.get(attn_implementation, default)


def apply_lxt_shim() -> str | None:
    """Stand-ins so that lxt 2.1's Llama patch can be *timed* on transformers 5 (not a fix; its
    relevance is not checked): lxt imports ``find_pruneable_heads_and_indices`` and
    ``prune_linear_layer`` (BERT patch only) that transformers 5 removed -> stand-ins that raise
    if called; lxt's ``patch_attention`` stores a plain dict where transformers 5 wants an
    ``AttentionInterface`` -> the dict gets ``get_interface``. Never undone (this process only).
    Returns why it could not be applied (attnlrp then stays unavailable), or None."""
    import transformers.pytorch_utils as pu

    def missing(*_a, **_k):
        raise NotImplementedError("removed from transformers 5 (relevance_prototypes --lxt-shim stand-in)")

    for name in ("find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(pu, name):
            setattr(pu, name, missing)
    try:
        from axolotl_decselfmask.relevance.methods.attnlrp import _import_lxt

        _import_lxt()
        from lxt.efficient.models import DEFAULT_MAP
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    for patch_map in DEFAULT_MAP.values():
        for key, patch in list(patch_map.items()):
            if isinstance(key, types.ModuleType) and not getattr(patch, "bench_shim", False):
                def wrapped(module, _patch=patch):
                    done = _patch(module)
                    fns = getattr(module, "ALL_ATTENTION_FUNCTIONS", None)
                    if isinstance(fns, dict) and not hasattr(fns, "get_interface"):
                        module.ALL_ATTENTION_FUNCTIONS = AttentionInterface(fns)
                    return done

                wrapped.bench_shim = True
                patch_map[key] = wrapped
    return None


# --------------------------------------------------------------------------------- goals
def relevance_goals(rows: list[dict], ig_steps: int = 32) -> list[str]:
    """The goals of the issue "Relevance engine" against the rows of a relevance run."""
    by = {r["method"]: r for r in rows if r.get("status", "ok") == "ok"}
    d = by.get(DEFAULT_METHOD)
    if d is None:
        return [f"goals: {DEFAULT_METHOD} did not run"]
    fe = d["forward_equivalents"]
    out = [(f"goal {DEFAULT_METHOD} <= {GOAL_DEFAULT_FE} forward equivalents per note: {fe:.2f} -> "
            f"{'met' if fe <= GOAL_DEFAULT_FE else 'NOT met'}")]
    ig = by.get(REFERENCE)
    if ig is not None:
        speed = ig["forward_equivalents"] / fe
        common = [i for i, (a, b) in enumerate(zip(d["seconds_by_note"], ig["seconds_by_note"]))
                  if a is not None and b is not None]
        raw = sum(ig["seconds_by_note"][i] for i in common) / sum(d["seconds_by_note"][i] for i in common)
        steps_note = "" if ig_steps == 32 else f" (IG ran with {ig_steps} steps, the goal is for 32)"
        out.append(f"goal {DEFAULT_METHOD} >= {GOAL_IG_SPEEDUP:.0f}x the throughput of IG: {speed:.1f}x by paired "
                   f"forward equivalents ({raw:.1f}x by raw seconds on the same {len(common)} notes) -> "
                   f"{'met' if speed >= GOAL_IG_SPEEDUP else 'NOT met'}" + steps_note)
    else:
        out.append(f"goal >= {GOAL_IG_SPEEDUP:.0f}x IG: not measured ({REFERENCE} did not run)")
    lrp = next((r for r in rows if r["method"] == "attnlrp"), None)
    if lrp is not None and lrp.get("status") == "ok":
        ratio = lrp["forward_equivalents"] / fe
        out.append(f"goal attnlrp <= {GOAL_ATTNLRP_VS_DEFAULT}x the cost of {DEFAULT_METHOD}: {ratio:.2f}x -> "
                   f"{'met' if ratio <= GOAL_ATTNLRP_VS_DEFAULT else 'NOT met'}")
    else:
        out.append(f"goal attnlrp <= {GOAL_ATTNLRP_VS_DEFAULT}x: not measured "
                   f"({lrp['status'] if lrp else 'attnlrp not in the run'})")
    return out


# --------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/relevance_prototypes.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: ./models/smollm2-135m-instruct)")
    p.add_argument("--data", default=None, help="csv(.gz) or jsonl of notes (default: the bundled abstracts)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--notes", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=300)
    p.add_argument("--min-tokens", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--methods", default=DEFAULT_METHOD, help="registered methods timed beside the variants "
                                                            "(comma-separated; default: %(default)s)")
    p.add_argument("--variants", default="", help=f"comma-separated, of: {','.join(VARIANTS)}")
    p.add_argument("--lxt-shim", action="store_true", help="stand-ins so lxt 2.1 imports on transformers 5 "
                                                           "(patches this process; attnlrp timing only)")
    p.add_argument("--goals", action="store_true", help="print the goals of the issue \"Relevance engine\"")
    p.add_argument("--item", default=DEFAULT_ITEM)
    p.add_argument("--lead-in", default=DEFAULT_LEAD_IN)
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--ig-notes", type=int, default=None)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", dest="json_path", default=None)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.lxt_shim:
        why = apply_lxt_shim()
        print(f"lxt shim: {'not applied: ' + why if why else 'applied'}")
    model, tok = load_model(resolve_model(args.model), args.dtype)
    notes = load_notes(resolve_data(args.data), args.text_column, args.notes, args.seed, tok, args.max_tokens,
                       args.min_tokens)
    variants = make_variants([v for v in args.variants.split(",") if v], model, tok, steps=args.ig_steps)
    print(f"prototypes: {len(notes)} notes, {args.dtype}, fast_backward auto -> {product_fast_backward(model)}, "
          f"{torch.get_num_threads()} threads", flush=True)
    rows = run_relevance(model, tok, notes, [m for m in args.methods.split(",") if m], item=args.item,
                         lead_in=args.lead_in, ig_steps=args.ig_steps, ig_notes=args.ig_notes, repeats=args.repeats,
                         extra=variants, progress=not args.no_progress)
    drop_overlaps_of_non_relevance(rows)
    print(format_relevance_table(rows))
    fwd = [r["forward_s_per_note"] for r in rows if r.get("forward_s_per_note")]
    if fwd:
        print(f"plain forward (inference, {attn_implementation(model)}): median {statistics.median(fwd):.3f} s/note")
    for r in rows:
        if "forward_part_fe" in r:
            print(f"{r['method']}: forward {r['forward_part_fe']:.2f} + backward {r['backward_part_fe']:.2f} "
                  "forward equivalents")
    for line in relevance_goals(rows, args.ig_steps) if args.goals else []:
        print(line)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
