"""What an in-process relevance precompute leaves in the process that goes on to train (docs/benchmark.md,
"Memory left by the relevance model"): the process's anonymous resident memory (``RssAnon``: its tensors and heap,
not the mapped weight files) before the relevance model is loaded and after ``run_precompute`` returns, in two
processes side by side:

- ``kept``: the model is dropped and garbage-collected, and glibc keeps the freed heap (the plugin before
  sitting 21);
- ``released``: as the plugin does now, :func:`axolotl_decselfmask.hardware.release_freed_memory` after the
  model is dropped (``malloc_trim(0)``).

What stays is what a data worker that Axolotl forks for training (``dataloader_num_workers``, 1 by default) can
come to copy, page by page, as the trainer reuses its heap. Memory only: the seconds are printed but are worth
reading only on a quiet machine.

    OMP_NUM_THREADS=1 python benchmarks/relevance_release.py [--model models/qwen2.5-coder-0.5b-instruct] [--notes 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "smollm2-135m-instruct"
NOTES = ROOT / "examples" / "data" / "abstracts_unlabelled.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "relevance_release.json"
ITEMS = ["neoplasms", "digestive system diseases", "nervous system diseases", "cardiovascular diseases"]
VARIANTS = ("kept", "released")


def _anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(variant: str, model: str, notes: int) -> dict:
    import gc

    import torch
    from transformers import AutoTokenizer

    from axolotl_decselfmask import hardware
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1 import precompute

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if variant == "kept":  # the plugin before: the model dropped, the freed heap kept
        precompute.release_freed_memory = gc.collect
    texts = [json.loads(line)["text"] for line in NOTES.read_text().splitlines()][:notes]
    tokenizer = AutoTokenizer.from_pretrained(model)
    config = DecSelfMaskConfig(items=ITEMS, items_per_text=1)
    hardware.release_freed_memory()
    before = _anon_mib()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        result = precompute.run_precompute(texts, config, tokenizer, model, cache, progress=False)
        seconds = time.perf_counter() - start
        after = _anon_mib()
    return {"variant": variant, "before_mib": before, "after_mib": after, "left_mib": after - before,
            "examples": len(result.examples), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(MODEL))
    parser.add_argument("--notes", type=int, default=16)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.notes)))
        return
    from axolotl_decselfmask.hardware import read_cpu_info

    rows = []
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, __file__, "--child", variant, "--model", args.model,
                               "--notes", str(args.notes)], capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    kept, released = rows
    print(f"relevance model {Path(args.model).name}, {args.notes} notes, CPU {read_cpu_info().describe()}")
    print(f"{'':10} {'RssAnon before':>15} {'after':>9} {'left':>9} {'seconds':>8}")
    for row in rows:
        print(f"{row['variant']:10} {row['before_mib']:13.0f} MiB {row['after_mib']:5.0f} MiB "
              f"{row['left_mib']:5.0f} MiB {row['seconds']:8.1f}")
    print(f"left by the relevance model, released / kept: {released['left_mib'] / kept['left_mib']:.2f}")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    data[Path(args.model).name] = {"notes": args.notes, "cpu": read_cpu_info().describe(), "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
