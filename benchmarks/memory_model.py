#!/usr/bin/env python
"""The memory model (axolotl_decselfmask/memory.py) against peaks measured on this CPU.

For each model (SmolLM2-135M, models/smollm2-135m-instruct; Qwen2.5-Coder-0.5B,
models/qwen2.5-coder-0.5b-instruct from `make qwen-model`), each precision (16: bf16 weights and
compute; 4: NF4 weights through bitsandbytes' CPU backend, bf16 compute, everything else bf16) and
each stage, one child process loads the model, then runs the stage once through the package's own
code where there is one:

- relevance: AttnLRP (``relevance.methods``) on ``batch`` prompts of ``seq`` random tokens;
- stage 1: one LoRA step (r 16, every linear layer, gradient checkpointing, AdamW whose two states
  exist before the step, as at every step after the first), the loss over every position (masked
  reconstruction's answer is the whole span list; the logits are whole);
- stage 2: one LoRA step (r 32), the loss on the last 2 tokens (the label), the logits whole as TRL's;
- evaluation: ``stage2.scoring.score_options`` on ``batch`` real abstracts (examples/data) cut to
  ``seq`` tokens, two options (each with its copy of the prompts' key/value cache).

The child samples its anonymous resident memory (``RssAnon`` of /proc/self/status, every 2 ms).
Its baseline is read after every import, the tokenizer and the stage's inputs (transformers' import
alone is 0.20 GB of Python heap, which an earlier version of this script counted as the model's);
then the model is loaded (``weights_measured_gb``, beside ``weights_tensors_gb``, the bytes of its
tensors) and the stage runs. The measured peak is the stage's highest sample above the baseline, its
weights included, with phases (``phases_gb``: the peak of each part of the stage). Each stage runs
twice: ``measured_gb`` with glibc's mmap threshold fixed at 64 KiB, so that every tensor is its own
mapping, unmapped when freed, and the resident memory follows the live tensors (what a GPU's
``max_memory_allocated`` counts, what the memory model predicts); ``default_malloc`` with glibc as it
is, whose arenas keep freed blocks under 32 MB mapped: what a CPU process holds (up to 1.8 times
more). The prediction is ``memory.stage_terms(stage, shape, Run(..., device="cpu"))`` (no CUDA
overhead). The error is (predicted - measured) / measured. The children run one at a time (a Qwen
stage 2 holds 7 GB); each row replaces the stored row of its model, precision and stage.

    .venv/bin/python benchmarks/memory_model.py              # writes benchmarks/results/memory_model.json
    .venv/bin/python benchmarks/memory_model.py --models smollm2-135m-instruct --stages stage2
    .venv/bin/python benchmarks/memory_model.py --repredict  # the stored rows against memory.py as it is now
    .venv/bin/python benchmarks/memory_model.py --recipes    # each recipe's predicted peaks: its comments, a table
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
            "stage2": dict(batch=8, seq=256, rank=32), "evaluation": dict(batch=8, seq=256, rank=0, options=2)}
#: the evaluation's label options (``options`` of its settings: both scored on each prompt's cache)
OPTIONS = ["yes", "no"]
PRECISIONS = ("16", "4")
OUT = ROOT / "benchmarks" / "results" / "memory_model.json"


def anon_rss() -> int:
    """The process's anonymous resident memory (``RssAnon``, /proc/self/status): its tensors and heap,
    not the safetensors files that the loader maps (file pages, which the kernel may drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    import psutil

    return psutil.Process().memory_info().rss


class PeakRSS:
    """The highest anonymous resident memory seen by a sampling thread (every 2 ms), overall and per
    phase: :meth:`mark` closes the phase running since the last mark (or the start) under a name."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.phase_peak, self.phases = 0, {}

    def __enter__(self):
        self.peak = self.phase_peak = anon_rss()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            now = anon_rss()
            self.peak, self.phase_peak = max(self.peak, now), max(self.phase_peak, now)
            time.sleep(self.interval)

    def mark(self, name: str) -> int:
        """The phase's peak (bytes), recorded as ``name``; the next phase starts from now."""
        now = anon_rss()
        self.phases[name] = max(self.phase_peak, now)
        self.peak, self.phase_peak = max(self.peak, now), now
        return self.phases[name]

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, anon_rss())


def _imports(precision: str) -> None:
    """Every module a stage uses, imported before the baseline reading: imported inside the
    measurement, transformers alone adds 0.20 GB of resident Python heap and PEFT, bitsandbytes and
    this package 0.08 GB more (SmolLM2, measured), which is the process's, not the model's."""
    import peft  # noqa: F401
    import transformers  # noqa: F401
    from peft import LoraConfig, get_peft_model  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig  # noqa: F401

    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS  # noqa: F401
    from axolotl_decselfmask.stage2.scoring import score_options  # noqa: F401

    if precision == "4":
        import bitsandbytes  # noqa: F401


def _load(folder: Path, precision: str):
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = dict(dtype=torch.bfloat16, attn_implementation="sdpa")
    if precision == "4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
        kwargs["device_map"] = {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    if precision == "4":  # load the modules bitsandbytes' 4-bit layers import on their first call
        import bitsandbytes.functional  # noqa: F401
    return model


def _tensor_bytes(model) -> int:
    """Bytes of the model's parameters and buffers, each storage once (tied matrices once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def _train_inputs(vocab: int, batch: int, seq: int, label_tokens: int | None):
    import torch

    ids = torch.randint(3, vocab - 1, (batch, seq), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    if label_tokens:
        labels[:, : seq - label_tokens] = -100
    return ids, labels


def _train_step(model, ids, labels, rank: int, peak: PeakRSS):
    """One LoRA step as the package's stages leave the model: the weights at the load precision
    (4-bit linear layers; everything else bf16: Axolotl converts the embeddings and norms back to
    bf16 after PEFT's ``prepare_model_for_kbit_training``, and stage 2's QLoRA does not call it),
    gradient checkpointing, the LoRA in float32, bf16 autocast, AdamW. Phases: ``lora`` (the adapter
    added, with AdamW's states), ``forward`` (to the loss; the outputs then dropped, as the trainer
    keeps the loss only), ``backward``, ``step``."""
    import torch
    from peft import LoraConfig, get_peft_model

    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    trained = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=1e-4)
    # AdamW makes its two states at its first step: a step of zero gradients at learning rate 0 makes
    # them here, so that the measured step holds them as every step after the first does
    for group in optimiser.param_groups:
        group["lr"] = 0.0
    for p in trained:
        p.grad = torch.zeros_like(p)
    optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    for group in optimiser.param_groups:
        group["lr"] = 1e-4
    model.train()
    peak.mark("lora")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids, labels=labels, use_cache=False)
    loss = out.loss
    del out  # the trainer keeps the loss only
    peak.mark("forward")
    loss.backward()
    peak.mark("backward")
    optimiser.step()
    peak.mark("step")
    return float(loss)


def _relevance_prompts(vocab: int, eos, batch: int, seq: int):
    import torch
    from types import SimpleNamespace

    from axolotl_decselfmask.relevance.prompt import RelevancePrompt

    g = torch.Generator().manual_seed(2)
    head, lead, item = 8, 12, 5
    text_len = seq - head - lead - item - 1
    prompts = [RelevancePrompt(torch.randint(3, vocab - 1, (seq,), generator=g).tolist(),
                               list(range(head, head + text_len)), [(i, i + 1) for i in range(text_len)],
                               list(range(seq - item - 1, seq - 1))) for _ in range(batch)]
    tokenizer = SimpleNamespace(pad_token_id=None, eos_token_id=eos[0] if isinstance(eos, list) else eos)
    return prompts, tokenizer


def _relevance(model, prompts, tokenizer, peak: PeakRSS):
    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS

    model.eval()
    model.requires_grad_(False)
    maps = BUILTIN_METHODS["attnlrp"](model, tokenizer, target="sum_logprob").attribute(prompts)
    peak.mark("attribute")
    return float(sum(abs(m).sum() for m in maps))


def _evaluation_texts(folder: Path, batch: int, seq: int):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "abstracts_test.jsonl").read_text().splitlines()]
    texts = []
    for row in rows[:batch]:  # each abstract repeated to fill seq tokens, then cut there
        ids = tok(row["text"] * 8, add_special_tokens=False).input_ids[: seq - 60]
        texts.append(tok.decode(ids))
    return tok, texts


def _evaluation(model, tok, texts, batch: int, peak: PeakRSS):
    from axolotl_decselfmask.stage2.scoring import score_options

    model.eval()
    scores = score_options(model, tok, texts, OPTIONS, "Is this abstract about a trial?", "You are a clinician.",
                           progress=False, batch_size=batch)
    peak.mark("score")
    return float(scores.sum())


def child(model_name: str, precision: str, stage: str) -> dict:
    """One stage on a fresh process. Before the baseline reading: every import, the tokenizer and
    the stage's inputs (the process's, not the model's). Then the model is loaded (its peak and
    resident size recorded apart: a GPU run loads its weights through the CPU) and the stage runs;
    the measured peak is the stage's highest reading above the baseline, the loaded weights included."""
    from axolotl_decselfmask.hardware import release_freed_memory  # before each reading: live tensors, not freed buffers

    import torch

    torch.manual_seed(0)
    folder, s = MODELS[model_name], SETTINGS[stage]
    config = json.loads((folder / "config.json").read_text())
    vocab = int(config["vocab_size"])
    _imports(precision)
    if stage == "relevance":
        inputs = _relevance_prompts(vocab, config.get("eos_token_id"), s["batch"], s["seq"])
    elif stage == "evaluation":
        inputs = _evaluation_texts(folder, s["batch"], s["seq"])
    else:
        inputs = _train_inputs(vocab, s["batch"], s["seq"], 2 if stage == "stage2" else None)
    release_freed_memory()
    before = anon_rss()
    with PeakRSS() as load:
        model = _load(folder, precision)
    release_freed_memory()
    loaded = anon_rss()
    with PeakRSS() as peak:
        t0 = time.perf_counter()
        if stage == "relevance":
            value = _relevance(model, *inputs, peak)
        elif stage == "evaluation":
            value = _evaluation(model, *inputs, s["batch"], peak)
        else:
            value = _train_step(model, *inputs, s["rank"], peak)
        seconds = time.perf_counter() - t0
    phases = {k: round((v - before) / 1e9, 3) for k, v in peak.phases.items()}
    return dict(model=model_name, precision=precision, stage=stage, **s,
                measured_gb=round((peak.peak - before) / 1e9, 3), weights_measured_gb=round((loaded - before) / 1e9, 3),
                weights_tensors_gb=round(_tensor_bytes(model) / 1e9, 3),
                load_peak_gb=round((load.peak - before) / 1e9, 3), phases_gb=phases, seconds=round(seconds, 1),
                value=value, torch_threads=torch.get_num_threads())


def model_shape(model_name: str, recorded: dict | None = None):
    """The model's :class:`memory.Shape`: from its folder's config.json (``make model``, ``make
    qwen-model``), else the shape recorded with its rows (``recorded``: a row's ``shape``), so the
    predictions can be recomputed on a machine without the model."""
    from axolotl_decselfmask import memory

    config = MODELS[model_name] / "config.json"
    if config.is_file():
        return memory.shape_from_config(json.loads(config.read_text()))
    if recorded:
        return memory.Shape(**recorded)
    raise FileNotFoundError(f"{config}: no config.json for {model_name} and no shape recorded with its rows; "
                            f"run `make model` / `make qwen-model`")


def predicted(model_name: str, precision: str, stage: str, recorded_shape: dict | None = None) -> dict:
    import dataclasses

    from axolotl_decselfmask import memory

    shape = model_shape(model_name, recorded_shape)
    s = SETTINGS[stage]
    run = memory.Run(weights="nf4" if precision == "4" else "bf16", compute="bf16", batch=s["batch"], seq=s["seq"],
                     rank=s["rank"], device="cpu", options=s.get("options", 1))
    terms = memory.stage_terms(stage, shape, run)
    return dict(predicted_gb=round(sum(terms.values()) / 1e9, 3), terms_gb={k: round(v / 1e9, 3) for k, v in terms.items()},
                shape=dataclasses.asdict(shape))


#: glibc's allocator settings of each measurement: ``tensors``: every allocation of 64 KiB or more its
#: own mapping, returned to the system when freed (the threshold fixed, so glibc does not raise it),
#: so that the resident memory follows the live tensors, as a GPU's ``max_memory_allocated`` does;
#: ``default``: glibc as it is, whose arenas keep freed blocks under its (raised) 32 MB threshold
#: mapped: what a CPU process holds
ALLOCATORS = {"tensors": {"MALLOC_MMAP_THRESHOLD_": "65536"}, "default": {}}


def run_child(model_name: str, precision: str, stage: str, allocator: str = "tensors") -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    env.update(ALLOCATORS[allocator])
    proc = subprocess.run([sys.executable, __file__, "--child", model_name, precision, stage], capture_output=True,
                          text=True, env=env, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return dict(model=model_name, precision=precision, stage=stage, status="failed", error=proc.stderr[-1500:])
    return dict(json.loads(lines[-1]), status="ok")


def measured_row(model_name: str, precision: str, stage: str, allocators: list[str]) -> dict:
    """The row of one stage: measured with live tensors (``tensors``), then, where asked, with glibc's
    default allocator (``default_malloc``: its peak, weights and phases), then predicted."""
    row = run_child(model_name, precision, stage, "tensors")
    if row["status"] == "ok" and "default" in allocators:
        other = run_child(model_name, precision, stage, "default")
        row["default_malloc"] = {k: other.get(k) for k in ("status", "measured_gb", "weights_measured_gb", "phases_gb",
                                                            "seconds")}
    if row["status"] == "ok":
        row.update(predicted(model_name, precision, stage))
        row["error"] = round((row["predicted_gb"] - row["measured_gb"]) / row["measured_gb"], 3)
    return row


def machine() -> dict:
    """The CPU (model name, and whether it has AMX-BF16 and AVX512-BF16), torch's version and threads."""
    import platform

    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return dict(cpu=name, amx_bf16="amx_bf16" in flags, avx512_bf16="avx512_bf16" in flags, torch=torch.__version__,
                threads=int(os.environ.get("OMP_NUM_THREADS", "2")),
                measured="RssAnon above the process's RssAnon after its imports and inputs, before loading the model; "
                         "measured_gb with glibc's mmap threshold fixed at 64 KiB (live tensors), default_malloc "
                         "with glibc's default")


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


ORDER = {name: i for i, name in enumerate([*MODELS, *PRECISIONS, *SETTINGS])}


def write_report(out: Path, rows: list[dict]) -> dict:
    """The rows (in model, precision, stage order), the machine and the summary, written atomically."""
    rows = sorted(rows, key=lambda r: tuple(ORDER.get(r[k], 99) for k in ("model", "precision", "stage")))
    report = dict(machine=machine(), rows=rows, summary=summary(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
    return report


def measured_table(report: dict) -> str:
    """docs/recipes.md's table of the CPU rows: measured (live tensors, and with glibc's default
    allocator), predicted, error; then the largest and the mean absolute error."""
    names = {"smollm2-135m-instruct": "SmolLM2-135M", "qwen2.5-coder-0.5b-instruct": "Qwen2.5-Coder-0.5B"}
    lines = ["| model | precision | stage | batch x length | measured | predicted | error "
             "| measured, glibc's default allocator |", "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in report["rows"]:
        if r.get("status") != "ok":
            continue
        default = (r.get("default_malloc") or {}).get("measured_gb")
        lines.append(f"| {names.get(r['model'], r['model'])} | {r['precision']} bits | {r['stage']} | "
                     f"{r['batch']} x {r['seq']} | {r['measured_gb']:.2f} GB | {r['predicted_gb']:.2f} GB | "
                     f"{100 * r['error']:+.1f}% | {f'{default:.2f} GB' if default else '-'} |")
    s = report["summary"]
    lines.append(f"\nLargest absolute error {100 * s['max_abs_error']:.1f}%, mean {100 * s['mean_abs_error']:.1f}% "
                 f"({s['n']} rows).")
    return "\n".join(lines)


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
    p.add_argument("--allocators", nargs="+", default=["tensors", "default"], choices=list(ALLOCATORS),
                   help="tensors: live tensors (measured_gb, always); default: also glibc's default allocator")
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
                row.update(SETTINGS[row["stage"]])  # the settings it ran with (``options``: always OPTIONS)
                row.update(predicted(row["model"], row["precision"], row["stage"], row.get("shape")))
                row["error"] = round((row["predicted_gb"] - row["measured_gb"]) / row["measured_gb"], 3)
        report = write_report(args.out, report["rows"])
        print(measured_table(report))
        return report
    if args.child:
        print(json.dumps(child(*args.child)), flush=True)
        return {}
    for model_name in args.models:
        if not (MODELS[model_name] / "config.json").is_file():
            print(f"{model_name}: {MODELS[model_name]} is missing (make model / make qwen-model); skipped")
            continue
        for precision in args.precisions:
            for stage in args.stages:
                row = measured_row(model_name, precision, stage, args.allocators)
                # merge: this row replaces the stored one of the same model, precision and stage; the
                # file is read again first, so that runs of other rows meanwhile are kept
                old = json.loads(args.out.read_text()) if args.out.is_file() else {}
                rows = {(r["model"], r["precision"], r["stage"]): r for r in old.get("rows", [])}
                rows[(model_name, precision, stage)] = row
                print(json.dumps({k: v for k, v in row.items() if k != "value"}), flush=True)
                write_report(args.out, list(rows.values()))
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for r in report.get("rows", []):
        if r.get("status") == "ok":
            print(f"{r['model']:<28}{r['precision']:>3}  {r['stage']:<11} measured {r['measured_gb']:6.2f} GB  "
                  f"predicted {r['predicted_gb']:6.2f} GB  error {100 * r['error']:+5.0f}%")
    return report


if __name__ == "__main__":
    main()
