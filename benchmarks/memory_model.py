#!/usr/bin/env python
"""The memory model (axolotl_decselfmask/memory.py) against peaks measured on this CPU.

For each model (SmolLM2-135M, models/smollm2-135m-instruct; Qwen2.5-Coder-0.5B,
models/qwen2.5-coder-0.5b-instruct from `make qwen-model`), each precision (16: bf16 weights and
compute; 4: NF4 weights through bitsandbytes' CPU backend, bf16 compute) and each stage, one child
process loads the model, then runs the stage once through the package's own code where there is one:

- relevance: AttnLRP (``relevance.methods``) on ``batch`` prompts of ``seq`` random tokens;
- stage 1: one LoRA step (r 16, every linear layer, gradient checkpointing, AdamW), the loss over
  every position (masked reconstruction's answer is the whole span list; the logits are whole);
- stage 2: one LoRA step (r 32), the loss on the last 2 tokens (the label), the logits whole as TRL's;
- evaluation: ``stage2.scoring.score_options`` on ``batch`` real abstracts (examples/data) cut to
  ``seq`` tokens, two options.

The child samples its anonymous resident memory (``RssAnon`` of /proc/self/status, every 2 ms) from before the model is loaded to the
end of the stage; the measured peak is the highest sample minus the RSS before loading (the Python,
torch and transformers imports are not the model's). The prediction is
``memory.stage_terms(stage, shape, Run(..., device="cpu"))`` (no CUDA overhead). The error is
(predicted - measured) / measured. The children run one at a time (a Qwen run holds a few GB).

    .venv/bin/python benchmarks/memory_model.py              # writes benchmarks/results/memory_model.json
    .venv/bin/python benchmarks/memory_model.py --models smollm2-135m-instruct --stages stage2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = {"smollm2-135m-instruct": ROOT / "models" / "smollm2-135m-instruct",
          "qwen2.5-coder-0.5b-instruct": ROOT / "models" / "qwen2.5-coder-0.5b-instruct"}
#: batch, sequence length, LoRA rank of each stage's measurement (small enough for a shared CPU)
SETTINGS = {"relevance": dict(batch=2, seq=256, rank=0), "stage1": dict(batch=4, seq=256, rank=16),
            "stage2": dict(batch=8, seq=256, rank=32), "evaluation": dict(batch=8, seq=256, rank=0)}
PRECISIONS = ("16", "4")
OUT = ROOT / "benchmarks" / "results" / "memory_model.json"


def trimmed() -> None:
    """Collect garbage and hand the C allocator's free pages back (glibc ``malloc_trim``), so that a
    reading after it counts live tensors, not buffers freed and kept (a float32 file cast to bf16)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def anon_rss() -> int:
    """The process's anonymous resident memory (``RssAnon``, /proc/self/status): its tensors and heap,
    not the safetensors files that the loader maps (file pages, which the kernel may drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """The highest anonymous resident memory seen by a sampling thread (every 2 ms)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self.peak = anon_rss()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, anon_rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, anon_rss())


def _load(folder: Path, precision: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = dict(dtype=torch.bfloat16, attn_implementation="sdpa")
    if precision == "4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
        kwargs["device_map"] = {"": "cpu"}
    return AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)


def _train_step(model, batch: int, seq: int, rank: int, label_tokens: int | None, precision: str):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    grad = {"use_reentrant": False}
    if precision == "4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=grad)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=grad)
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    ids = torch.randint(3, model.config.vocab_size - 1, (batch, seq), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    if label_tokens:
        labels[:, : seq - label_tokens] = -100
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
    loss.backward()
    optimiser.step()
    return float(loss)


def _relevance(model, batch: int, seq: int):
    import torch
    from types import SimpleNamespace

    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS
    from axolotl_decselfmask.relevance.prompt import RelevancePrompt

    model.eval()
    model.requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    head, lead, item = 8, 12, 5
    text_len = seq - head - lead - item - 1
    prompts = [RelevancePrompt(torch.randint(3, model.config.vocab_size - 1, (seq,), generator=g).tolist(),
                               list(range(head, head + text_len)), [(i, i + 1) for i in range(text_len)],
                               list(range(seq - item - 1, seq - 1))) for _ in range(batch)]
    eos = model.config.eos_token_id
    tokenizer = SimpleNamespace(pad_token_id=None, eos_token_id=eos[0] if isinstance(eos, list) else eos)
    maps = BUILTIN_METHODS["attnlrp"](model, tokenizer, target="sum_logprob").attribute(prompts)
    return float(sum(abs(m).sum() for m in maps))


def _evaluation(model, folder: Path, batch: int, seq: int):
    from transformers import AutoTokenizer

    from axolotl_decselfmask.stage2.scoring import score_options

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "abstracts_test.jsonl").read_text().splitlines()]
    texts = []
    for row in rows[:batch]:  # each abstract repeated to fill seq tokens, then cut there
        ids = tok(row["text"] * 8, add_special_tokens=False).input_ids[: seq - 60]
        texts.append(tok.decode(ids))
    model.eval()
    scores = score_options(model, tok, texts, ["yes", "no"], "Is this abstract about a trial?", "You are a clinician.",
                           progress=False, batch_size=batch)
    return float(scores.sum())


def child(model_name: str, precision: str, stage: str) -> dict:
    import torch

    torch.manual_seed(0)
    folder, s = MODELS[model_name], SETTINGS[stage]
    trimmed()
    before = anon_rss()
    model = _load(folder, precision)
    trimmed()
    loaded = anon_rss()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        if stage == "relevance":
            value = _relevance(model, s["batch"], s["seq"])
        elif stage == "evaluation":
            value = _evaluation(model, folder, s["batch"], s["seq"])
        else:
            value = _train_step(model, s["batch"], s["seq"], s["rank"], 2 if stage == "stage2" else None, precision)
        seconds = time.perf_counter() - t0
    return dict(model=model_name, precision=precision, stage=stage, **s, measured_gb=round((peak.peak - before) / 1e9, 3),
                weights_measured_gb=round((loaded - before) / 1e9, 3), seconds=round(seconds, 1), value=value)


def predicted(model_name: str, precision: str, stage: str) -> dict:
    from axolotl_decselfmask import memory

    shape = memory.shape_from_config(json.loads((MODELS[model_name] / "config.json").read_text()))
    s = SETTINGS[stage]
    run = memory.Run(weights="nf4" if precision == "4" else "bf16", compute="bf16", batch=s["batch"], seq=s["seq"],
                     rank=s["rank"], device="cpu")
    terms = memory.stage_terms(stage, shape, run)
    return dict(predicted_gb=round(sum(terms.values()) / 1e9, 3), terms_gb={k: round(v / 1e9, 3) for k, v in terms.items()})


def run_child(model_name: str, precision: str, stage: str) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, __file__, "--child", model_name, precision, stage], capture_output=True,
                          text=True, env=env, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return dict(model=model_name, precision=precision, stage=stage, status="failed", error=proc.stderr[-1500:])
    return dict(json.loads(lines[-1]), status="ok")


RECIPE_NOTE = "# Predicted GPU peak per stage (axolotl_decselfmask/memory.py, bf16 compute; not yet measured on a GPU):"


def recipe_predictions(write: bool = False) -> str:
    """Each recipe's predicted peaks: the comment line in the recipe (``write``) and a markdown table."""
    import yaml

    from axolotl_decselfmask import memory

    table = ["| recipe | stage | batch x length | predicted peak | largest terms | measured on a GPU |",
             "| --- | --- | --- | --- | --- | --- |"]
    for path in sorted((ROOT / "recipes").glob("*.yml")) + sorted((ROOT / "recipes" / "16gb").glob("*.yml")):
        text = path.read_text()
        predictions = memory.predict_recipe(yaml.safe_load(text))
        line = "#   " + ", ".join(f"{p.stage} {p.peak / memory.GB:.1f} GB" for p in predictions)
        for p in predictions:
            terms = ", ".join(f"{k} {v / memory.GB:.1f}" for k, v in sorted(p.terms.items(), key=lambda kv: -kv[1])[:2])
            table.append(f"| {path.relative_to(ROOT / 'recipes')} | {p.stage} | {p.run.batch} x {p.run.seq} | "
                         f"{p.peak / memory.GB:.1f} GB | {terms} | - |")
        if write:
            lines = [x for x in text.splitlines() if x != RECIPE_NOTE and not (x.startswith("#   relevance ") and " GB, stage1 " in x)]
            at = next(i for i, x in enumerate(lines) if x.startswith("base_model:"))
            path.write_text("\n".join(lines[:at] + [RECIPE_NOTE, line] + lines[at:]) + "\n")
    return "\n".join(table)


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if r.get("status") == "ok"]
    errors = [r["error"] for r in ok]
    return dict(n=len(ok), max_abs_error=round(max(map(abs, errors)), 3) if errors else None,
                mean_abs_error=round(sum(map(abs, errors)) / len(errors), 3) if errors else None)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=3, metavar=("MODEL", "PRECISION", "STAGE"), help=argparse.SUPPRESS)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--stages", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--repredict", action="store_true", help="recompute the predictions of the stored measurements")
    p.add_argument("--recipes", action="store_true", help="write each recipe's predicted peaks and print the table")
    args = p.parse_args(argv)
    if args.recipes:
        print(recipe_predictions(write=True))
        return {}
    if args.repredict:  # the stored measurements against the memory model as it is now
        report = json.loads(args.out.read_text())
        for row in report["rows"]:
            if row.get("status") == "ok":
                row.update(predicted(row["model"], row["precision"], row["stage"]))
                row["error"] = round((row["predicted_gb"] - row["measured_gb"]) / row["measured_gb"], 3)
        report["summary"] = summary(report["rows"])
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        return report
    if args.child:
        print(json.dumps(child(*args.child)), flush=True)
        return {}
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows = {(r["model"], r["precision"], r["stage"]): r for r in old.get("rows", [])}
    for model_name in args.models:
        if not (MODELS[model_name] / "config.json").is_file():
            print(f"{model_name}: {MODELS[model_name]} is missing (make model / make qwen-model); skipped")
            continue
        for precision in args.precisions:
            for stage in args.stages:
                row = run_child(model_name, precision, stage)
                if row["status"] == "ok":
                    row.update(predicted(model_name, precision, stage))
                    row["error"] = round((row["predicted_gb"] - row["measured_gb"]) / row["measured_gb"], 3)
                rows[(model_name, precision, stage)] = row
                print(json.dumps({k: v for k, v in row.items() if k != "value"}), flush=True)
                report = dict(machine="CPU (RssAnon above the process's RssAnon before loading)",
                              rows=list(rows.values()))
                report["summary"] = summary(report["rows"])
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(report, indent=2) + "\n")
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for r in report.get("rows", []):
        if r.get("status") == "ok":
            print(f"{r['model']:<28}{r['precision']:>3}  {r['stage']:<11} measured {r['measured_gb']:6.2f} GB  "
                  f"predicted {r['predicted_gb']:6.2f} GB  error {100 * r['error']:+5.0f}%")
    return report


if __name__ == "__main__":
    main()
