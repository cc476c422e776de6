"""Why a SmolLM2-135M process on a CPU grows to gigabytes (docs/benchmark.md, "Resident memory on a CPU"): training
steps (forward and backward, batch 1, loss on every token) at sequence lengths drawn between 150 and 1,000 tokens,
as stage 1 and stage 2 see them, each variant in its own process with one environment setting changed:

- ``baseline``: as the runs have it;
- ``trim``: ``MALLOC_TRIM_THRESHOLD_=0``, glibc returns freed heap memory at the top to the system at once;
- ``mmap``: ``MALLOC_MMAP_THRESHOLD_=1048576``, allocations over 1 MiB are mapped and unmapped on their own;
- ``no_primitive_cache``: ``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``, oneDNN keeps no kernel per shape.

Printed side by side: the resident memory (MiB) after loading and every 10 steps, the peak, and the seconds
(worth reading only with nothing else on the core; the memory either way). Random token ids: memory and time
depend on the shapes, not the text.

    OMP_NUM_THREADS=1 python benchmarks/cpu_rss_growth.py [--steps 40] [--dtype bfloat16] [--variants a,b]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "smollm2-135m-instruct"
RESULTS = ROOT / "benchmarks" / "results" / "cpu_rss_growth.json"
VARIANTS = {"baseline": {}, "trim": {"MALLOC_TRIM_THRESHOLD_": "0"},
            "mmap": {"MALLOC_MMAP_THRESHOLD_": "1048576"},
            "no_primitive_cache": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}}


def _rss_mib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
    return -1


def _child(steps: int, dtype: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=getattr(torch, dtype))
    model.train()
    rng = random.Random(0)
    out = {"loaded": _rss_mib(), "every_10": []}
    start = time.perf_counter()
    for i in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (1, rng.randint(150, 1000)), generator=torch.Generator().manual_seed(i))
        model(input_ids=ids, labels=ids).loss.backward()
        model.zero_grad(set_to_none=True)
        if i % 10 == 9:
            out["every_10"].append(_rss_mib())
    out["seconds"] = time.perf_counter() - start
    out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.steps, args.dtype)))
        return {}
    import torch

    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; known: {', '.join(VARIANTS)}")
    results = {}
    for name in names:
        env = {**os.environ, **VARIANTS[name]}
        done = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), "--dtype", args.dtype],
                              env=env, capture_output=True, text=True, check=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    summary = {"cpu": torch.backends.cpu.get_cpu_capability(), "dtype": args.dtype, "steps": args.steps,
               "threads": os.environ.get("OMP_NUM_THREADS", "1"), "variants": {n: VARIANTS[n] for n in names},
               "results": results}
    print(f"SmolLM2-135M training steps, batch 1, 150-1,000 tokens, {args.dtype} on {summary['cpu']}: resident MiB")
    print(f"{'':>20}" + "".join(f"{n:>20}" for n in names))
    print(f"{'loaded':>20}" + "".join(f"{results[n]['loaded']:>20}" for n in names))
    for k in range(len(results[names[0]]["every_10"])):
        print(f"{f'after {10 * (k + 1)} steps':>20}" + "".join(f"{results[n]['every_10'][k]:>20}" for n in names))
    print(f"{'peak':>20}" + "".join(f"{results[n]['peak']:>20}" for n in names))
    print(f"{'seconds':>20}" + "".join(f"{results[n]['seconds']:>20.0f}" for n in names))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
