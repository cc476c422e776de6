"""Many items per note: the K items of one note scored together (shared prefix) against K separate
scorings, with the per-item backward passes of the prefix looped (the path before) or vectorised into
one (``batched_backward``, the default: ``torch.autograd.grad(..., is_grads_batched=True)``), for grad x
input and AttnLRP, with exact float32 backward matmuls (``--fast-backward``: also with matmul precision
"medium" in the backward).

For each note the arms run interleaved (order alternating from note to note), after a warm-up; a row
gives the median over notes of the arm's time over the separate scorings' time (the separate scorings
with the same fast_backward setting), and the largest relative difference of its maps from those of
the exact separate scorings (max |a - b| / max |b| over the items).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/items_backward.py [--notes 3] [--methods grad_x_input,attnlrp] [--fast-backward]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ITEMS = ("neoplasms", "digestive system diseases", "nervous system diseases", "cardiovascular diseases",
         "general pathological conditions", "diabetes", "hypertension", "infection")


def arms(model, tok, name: str, fast: bool) -> dict:
    from axolotl_decselfmask.relevance import compute_relevance
    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS

    cls = BUILTIN_METHODS[name]
    looped = cls(model, tok, fast_backward=fast, batched_backward=False)
    batched = cls(model, tok, fast_backward=fast, batched_backward=True)
    return {"separate": lambda ps: [looped.attribute([p])[0] for p in ps],
            "together:looped_backward": lambda ps: compute_relevance(looped, ps, 1),
            "together:batched_backward": lambda ps: compute_relevance(batched, ps, 1)}


def rel_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-30))


def main(argv=None) -> None:
    from transformers import AutoTokenizer

    from axolotl_decselfmask.relevance import build_relevance_prompt
    from axolotl_decselfmask.relevance.loading import load_relevance_model
    from axolotl_decselfmask.tools.bench.common import DEFAULT_LEAD_IN, load_notes

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "smollm2-135m-instruct"))
    parser.add_argument("--data", default=str(ROOT / "examples" / "data" / "medical_abstracts.csv.gz"))
    parser.add_argument("--notes", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=300)
    parser.add_argument("--methods", default="grad_x_input,attnlrp")
    parser.add_argument("--fast-backward", action="store_true", help="also every arm with fast_backward")
    args = parser.parse_args(argv)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = load_relevance_model(args.model, "float32", "cpu")
    notes = load_notes(args.data, "text", args.notes, 0, tok, args.max_tokens)
    prompts = [[build_relevance_prompt(tok, t, it, DEFAULT_LEAD_IN) for it in ITEMS] for t in notes]
    import torch

    print(f"{len(notes)} notes of {args.max_tokens} tokens, {len(ITEMS)} items; torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads", flush=True)
    for name in args.methods.split(","):
        exact_ref, exact_times = None, {}
        for fast in ((False, True) if args.fast_backward else (False,)):
            fns = arms(model, tok, name, fast)
            for fn in fns.values():
                fn(prompts[0][:2])  # warm-up
            times = {a: [] for a in fns}
            diffs = {a: [] for a in fns}
            for n, ps in enumerate(prompts):
                outs = {}
                for arm in (list(fns) if n % 2 == 0 else list(reversed(fns))):
                    start = time.perf_counter()
                    outs[arm] = fns[arm](ps)
                    times[arm].append(time.perf_counter() - start)
                if not fast:
                    exact_ref = exact_ref or {}
                    exact_ref[n] = outs["separate"]
                    exact_times[n] = times["separate"][-1]
                for arm, rels in outs.items():
                    diffs[arm].append(max(rel_diff(a, b) for a, b in zip(rels, exact_ref[n])))
            for arm in fns:
                ratios = [a / b for a, b in zip(times[arm], times["separate"])]
                print(f"{name}{':fast_backward' if fast else ''} {arm}: {statistics.median(times[arm]):.2f} s a note, "
                      f"ratio to separate {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
                      f"max relative difference of the maps from the exact separate scorings {max(diffs[arm]):.1e}"
                      + (f"; ratio to the exact separate scorings {statistics.median(a / exact_times[n] for n, a in enumerate(times[arm])):.2f}"
                         if fast else ""), flush=True)


if __name__ == "__main__":
    main()
