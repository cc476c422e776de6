"""The command line: ``axolotl decselfmask bench {relevance,items,profile,dtype}``."""

from __future__ import annotations

import argparse
import json
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from axolotl_decselfmask.compat import attn_implementation
from axolotl_decselfmask.tools.bench.common import (
    DEFAULT_ITEM,
    DEFAULT_LEAD_IN,
    DEFAULT_METHOD,
    DEFAULT_MODEL,
    load_model,
    load_notes,
    resolve_data,
    resolve_model,
)
from axolotl_decselfmask.tools.bench.items import DEFAULT_ITEMS, format_items, run_items
from axolotl_decselfmask.tools.bench.precision import (
    DtypeSizes,
    format_dtype,
    machine_lines,
    run_dtype,
)
from axolotl_decselfmask.tools.bench.profiling import format_profile, run_profile
from axolotl_decselfmask.tools.bench.relevance import (
    SLOW_METHODS,
    format_relevance_table,
    run_relevance,
)

DESCRIPTION = ("Benchmarks of the plugin on this machine: the relevance methods side by side (relevance), the "
               "items of one text together vs separately (items), where grad x input spends its time (profile), "
               "float32 vs bfloat16 (dtype). See docs/benchmark.md.")


def _io_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help=f"model folder or Hugging Face id (default: ./{DEFAULT_MODEL} if it exists)")
    p.add_argument("--data", default=None, help="csv(.gz) or jsonl of texts (default: the abstracts bundled "
                                                "with the package, abstracts_unlabelled.jsonl)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--seed", type=int, default=0, help="which texts are drawn (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the rows to this JSON file")
    p.add_argument("--no-progress", action="store_true")


def _notes_args(p: argparse.ArgumentParser, notes: int) -> None:
    _io_args(p)
    p.add_argument("--notes", type=int, default=notes, help="notes drawn (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=300, help="notes cut to this many tokens (default: 300)")
    p.add_argument("--min-tokens", type=int, default=None,
                   help="prefer notes with at least this many tokens (default: --max-tokens; 0: any)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--lead-in", default=DEFAULT_LEAD_IN)
    p.add_argument("--target", choices=("sum_logprob", "token_logit"), default="sum_logprob")


def _relevance_parser(sub) -> None:
    p = sub.add_parser("relevance", help="every relevance method on the same notes: cost in forward "
                                         "equivalents, memory, overlap with integrated gradients")
    _notes_args(p, 8)
    p.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    p.add_argument("--item", default=DEFAULT_ITEM)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--ig-steps", type=int, default=32)
    p.add_argument("--ig-notes", type=int, default=None, help="integrated gradients on the first n notes only")
    p.add_argument("--ablation-unit", choices=("word", "sentence"), default="sentence")
    p.add_argument("--repeats", type=int, default=1, help=f"calls per note of methods other than {SLOW_METHODS}")
    p.add_argument("--top", type=float, default=0.1, help="share of tokens in the top-token overlap (default 0.1)")


def _items_profile_parsers(sub) -> None:
    p = sub.add_parser("items", help="K items of one note in one call vs K separate scorings")
    _notes_args(p, 2)
    p.add_argument("--items", default=",".join(DEFAULT_ITEMS), help="comma-separated items (default: 8)")
    p.add_argument("--method", default=DEFAULT_METHOD)
    p.add_argument("--padded-batch", action="store_true",
                   help="also time the K prompts as one padded batch without sharing their prefix")
    p.add_argument("--fast-backward", action="store_true", help="grad_x_input's fast_backward option, in every arm")
    p = sub.add_parser("profile", help="grad_x_input's forward and backward by kind of operation")
    _notes_args(p, 2)
    p.add_argument("--item", default=DEFAULT_ITEM)


def _dtype_parser(sub) -> None:
    d = DtypeSizes()
    p = sub.add_parser(
        "dtype", help="float32 vs bfloat16 on this CPU: relevance, a stage-1 training step, an evaluation batch",
        description="float32 against bfloat16 on this machine: grad x input on a few notes, one stage-1 LoRA "
                    "training step (r16 all-linear, AdamW, the quickstart's batch of 4 x ~192 tokens) and one "
                    "evaluation batch (5 options), seconds and the bf16/fp32 ratio, with the CPU and the precision "
                    "the plugin would choose. Sized to finish in a few minutes even where bfloat16 is emulated "
                    "(AVX2-only CPUs: 10-40x slower than float32): small relevance and evaluation batches, one "
                    f"untimed warm-up on a short input, then {d.repeats} timed run of each part (--repeats 2 for "
                    "more). Where bfloat16 is emulated the bf16 training step takes most of the time (minutes); "
                    "--train-batch 1 makes it about 4x shorter.")
    _io_args(p)
    p.add_argument("--notes", type=int, default=d.notes, help="relevance: notes (default: %(default)s)")
    p.add_argument("--note-tokens", type=int, default=d.note_tokens, help="(default: %(default)s)")
    p.add_argument("--train-batch", type=int, default=d.train_batch, help="stage 1: examples (default: %(default)s)")
    p.add_argument("--train-tokens", type=int, default=d.train_tokens,
                   help="stage 1: about this many tokens an example (default: %(default)s)")
    p.add_argument("--eval-texts", type=int, default=d.eval_texts, help="evaluation: texts (default: %(default)s)")
    p.add_argument("--eval-tokens", type=int, default=d.eval_tokens, help="(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed runs of each part (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="axolotl decselfmask bench", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="bench", required=True)
    _relevance_parser(sub)
    _items_profile_parsers(sub)
    _dtype_parser(sub)
    return parser


def run_dtype_section(args, model_path: str) -> list[dict]:
    from transformers import AutoTokenizer

    sizes = DtypeSizes(args.notes, args.note_tokens, args.train_batch, args.train_tokens, args.eval_texts,
                       args.eval_tokens, args.repeats)
    tok = AutoTokenizer.from_pretrained(model_path)
    longest = max(sizes.note_tokens, sizes.train_tokens, sizes.eval_tokens)
    texts = load_notes(args.data, args.text_column, max(sizes.notes, sizes.train_batch, sizes.eval_texts), args.seed,
                       tok, longest)
    header = machine_lines()
    print("\n".join(header) + f"\ndtype: model {model_path}, texts of {args.data}", flush=True)
    rows = run_dtype(model_path, texts, sizes, progress=not args.no_progress)
    print(format_dtype(rows, header=[]))
    for r in rows:
        r["machine"] = header
    return rows


def run_notes_section(args, model_path: str) -> tuple[list[dict], bool]:
    model, tokenizer = load_model(model_path, args.dtype)
    notes = load_notes(args.data, args.text_column, args.notes, args.seed, tokenizer, args.max_tokens,
                       args.min_tokens)
    n_tok = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in notes]
    print(f"{args.bench}: {len(notes)} notes of {args.data} ({args.text_column}), {min(n_tok)}-{max(n_tok)} tokens "
          f"(cut at {args.max_tokens}); model {model_path} ({args.dtype}, {attn_implementation(model)} attention); "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs", flush=True)
    common = {"lead_in": args.lead_in, "target": args.target, "progress": not args.no_progress}
    if args.bench == "profile":
        rows = run_profile(model, tokenizer, notes, item=args.item, **common)
        print(format_profile(rows))
        return rows, False
    if args.bench == "items":
        rows = run_items(model, tokenizer, notes, [i.strip() for i in args.items.split(",") if i.strip()],
                         method_name=args.method, padded_batch=args.padded_batch, fast_backward=args.fast_backward,
                         **common)
        print(format_items(rows))
        return rows, False
    rows = run_relevance(model, tokenizer, notes, args.methods.split(",") if args.methods else None, item=args.item,
                         batch_size=args.batch_size, ig_steps=args.ig_steps, ig_notes=args.ig_notes,
                         ablation_unit=args.ablation_unit, repeats=args.repeats, top=args.top, **common)
    for r in rows:
        r.update({"dtype": args.dtype, "threads": torch.get_num_threads(), "max_tokens": args.max_tokens})
    print(format_relevance_table(rows))
    fwd = [r["forward_s_per_note"] for r in rows if r.get("forward_s_per_note")]
    if fwd:
        print(f"plain forward (inference, {attn_implementation(model)}): median {statistics.median(fwd):.3f} s/note")
    return rows, any(str(r.get("status", "")).startswith("failed") for r in rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = resolve_model(args.model)
    args.data = resolve_data(args.data)
    if args.bench == "dtype":
        rows, failed = run_dtype_section(args, model_path), False
    else:
        rows, failed = run_notes_section(args, model_path)
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0
