"""The heads' feature pass with and without the vocabulary-wide logits (stage2/probing.py ``prompt_features``):
the features are final-layer hidden states, yet a plain forward also computes every position's logits
(batch x tokens x vocabulary: for SmolLM2's 49,152 tokens about 0.1 MB a token in bfloat16). The package now
asks for the last position's logits only (``logits_to_keep=1``). Each variant runs in its own process on the
same notes and batches, so its peak RSS is its own; both print side by side with their ratio, and the largest
difference of the features.

``--notes`` mtsamples notes (../shared/data, the first ones over 2,000 characters; else medical_abstracts), cut to
``--tokens`` tokens, in the head's chat prompt, batch 8, SmolLM2-135M-Instruct in ``--dtype``. Seconds are
only worth reading with nothing else on the cores; the peak RSS is worth reading either way.

    python benchmarks/feature_logits.py [--notes 48] [--tokens 900] [--dtype bfloat16] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL = ROOT / "models" / "smollm2-135m-instruct"
RESULTS = ROOT / "benchmarks" / "results" / "feature_logits.json"
LABELS = ["yes", "no"]
QUESTION = "Does the note describe a surgical procedure?"
SYSTEM = "Answer with one of the options."


def _texts(n: int) -> list[str]:
    import pandas as pd

    shared = ROOT.parent / "shared" / "data" / "mtsamples.csv.gz"
    frame = pd.read_csv(shared if shared.is_file() else ROOT / "examples" / "data" / "medical_abstracts.csv.gz")
    column = "text"  # both files name their notes so
    texts = [t for t in frame[column].dropna().astype(str) if len(t) > 2000]
    return texts[:n]


def _child(variant: str, notes: int, tokens: int, dtype: str, out: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage1.pool import truncate_texts
    from axolotl_decselfmask.stage2 import probing

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=getattr(torch, dtype))
    texts, _ = truncate_texts(tok, _texts(notes), tokens)
    if variant == "all_logits":  # the forward as it was: every position's logits
        forward = type(model).forward

        def every_logit(self, *args, **kwargs):
            kwargs.pop("logits_to_keep", None)
            return forward(self, *args, **kwargs)

        type(model).forward = every_logit
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu = time.perf_counter(), time.process_time()
    with torch.no_grad():
        feats = probing.prompt_features(model, tok, texts, LABELS, QUESTION, SYSTEM, batch_size=8, progress=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    torch.save(feats, out + ".pt")
    Path(out).write_text(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mib": before / 1024, "notes": len(texts)}))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=48)
    parser.add_argument("--tokens", type=int, default=900)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0], args.notes, args.tokens, args.dtype, args.child[1])
        return {}
    import torch

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("last_logit", "all_logits"):
            out = os.path.join(tmp, variant + ".json")
            subprocess.run([sys.executable, __file__, "--notes", str(args.notes), "--tokens", str(args.tokens),
                            "--dtype", args.dtype, "--child", variant, out], check=True)
            results[variant] = json.loads(Path(out).read_text())
            results[variant]["features"] = torch.load(out + ".pt")
    diff = (results["last_logit"].pop("features") - results["all_logits"].pop("features")).abs().max().item()
    a, b = results["last_logit"], results["all_logits"]
    summary = {"cpu": torch.backends.cpu.get_cpu_capability(), "dtype": args.dtype, "threads": os.environ.get("OMP_NUM_THREADS", "1"),
               "notes": a["notes"], "tokens": args.tokens, "last_logit": a, "all_logits": b,
               "seconds_ratio": b["seconds"] / a["seconds"], "peak_rss_ratio": b["peak_rss_mib"] / a["peak_rss_mib"],
               "max_abs_feature_difference": diff}
    print(f"{a['notes']} notes cut to {args.tokens} tokens, batch 8, {args.dtype} on {summary['cpu']}")
    print(f"{'':>24} {'last position':>14} {'every position':>15} {'ratio':>7}")
    print(f"{'seconds':>24} {a['seconds']:>14.1f} {b['seconds']:>15.1f} {summary['seconds_ratio']:>7.2f}")
    print(f"{'peak RSS (MiB)':>24} {a['peak_rss_mib']:>14.0f} {b['peak_rss_mib']:>15.0f} {summary['peak_rss_ratio']:>7.2f}")
    print(f"largest feature difference: {diff:.2e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
