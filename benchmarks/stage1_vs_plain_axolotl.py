#!/usr/bin/env python
"""Stage-1 speed of the plugin against plain Axolotl and a bare PEFT loop, on the same examples.

One set of tokenised stage-1 examples is built with the plugin's own dataset type
(``axolotl preprocess`` of a small recipe derived from ``examples/quickstart.yml``), then the
same examples are trained, in the same order and batches (``curriculum_sampling: true``:
batch k is rows 4k-4..4k-1), by

- ``plugin``: ``axolotl train`` through ``type: axolotl_decselfmask.masked_reconstruction``
  with the plugin loaded;
- ``plain``: ``axolotl train`` of the same rows written as a pre-tokenised jsonl
  (``input_ids``/``attention_mask``/``labels``, no ``type``: Axolotl 0.19 then uses the rows as
  they are, ``utils/data/wrappers.py:_is_dataset_already_tokenized``), without the plugin;
- ``peft``: a bare transformers + peft loop (LoRA r16 all-linear, AdamW, same batches padded
  to their longest row), in a subprocess with the same environment.

Both ``axolotl train`` arms get ``OMP_NUM_THREADS`` = all cores (``accelerate launch`` sets 1
when it is unset); ``plain_1thread`` is the plain run with ``OMP_NUM_THREADS`` unset, i.e. what
``axolotl train`` gives a plain recipe by default. Every arm runs with ``OMP_WAIT_POLICY=PASSIVE``
(as the Makefile; kept if set). The arms run interleaved (A B C D, then D C B A, ...) so that a
shared machine's load hits them alike; the table reports medians over the rounds and "best": each
batch at its fastest round (the load on a shared machine comes in bursts).

Timing: Axolotl's trainer logs, at every step (``logging_steps: 1``), the cumulative trainable
tokens and ``tokens/train_per_sec_per_gpu`` = new trainable tokens / seconds since the previous
log (``include_tkps``, on by default). Their quotient is the wall time of each step from the
second on; the bare loop times its steps the same way (end of one step to the end of the next).
The first step is warm-up and left out. tokens/s counts the non-padding tokens of the timed
batches (from the dataset) over the summed step times. ``train_runtime`` (HF's, all steps, the
first included) is shown too.

    HF_HUB_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false \\
        .venv/bin/python benchmarks/stage1_vs_plain_axolotl.py

Writes the table to ``benchmarks/results/stage1_vs_plain_axolotl.txt`` and the recipes, logs
and per-step JSON under ``outputs/bench_stage1_vs_plain/``. About 10 minutes on 2 quiet cores
(``--arms`` adds ``plugin_1thread``, ``peft_pad64``, ``plain_nopad``, ``plugin_nopad``, ``plugin_tuned``;
``--rounds`` more rounds).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "models/smollm2-135m-instruct"
DEFAULT_WORKDIR = "outputs/bench_stage1_vs_plain"
DEFAULT_RESULT = "benchmarks/results/stage1_vs_plain_axolotl.txt"
POOL = "examples/data/abstracts_unlabelled.jsonl"

#: the arms: label, OMP_NUM_THREADS ("cores" or None = unset), recipe (plugin / plain / bare peft loop),
#: recipe changes (the bare loop: its padding multiple)
NOPAD = {"pad_to_sequence_len": False}  # Axolotl's collator then pads to the longest row, no multiple of 64
TUNED = {"pad_to_sequence_len": False, "lora_dropout": 0.0}
ARMS = {
    "plugin": ("axolotl train, plugin dataset type", "cores", "plugin", {}),
    "plain": ("axolotl train, pre-tokenised jsonl, no plugin", "cores", "plain", {}),
    "plain_1thread": ("same as plain, OMP_NUM_THREADS unset (accelerate: 1)", None, "plain", {}),
    "plugin_1thread": ("same as plugin, OMP_NUM_THREADS unset (plugin: all cores)", None, "plugin", {}),
    "peft": ("bare transformers+peft loop, pad to longest", "cores", "peft", {"pad_multiple": 1}),
    "peft_pad64": ("bare loop, pad to a multiple of 64 (Axolotl's collator default)", "cores", "peft",
                   {"pad_multiple": 64}),
    "plain_nopad": ("plain + pad_to_sequence_len: false", "cores", "plain", NOPAD),
    "plugin_nopad": ("plugin + pad_to_sequence_len: false", "cores", "plugin", NOPAD),
    "plugin_tuned": ("plugin + pad_to_sequence_len: false, lora_dropout: 0", "cores", "plugin", TUNED),
}
DEFAULT_ARMS = "plugin,plain,plain_1thread,peft"


# --------------------------------------------------------------------------------- recipes
def common_recipe(args) -> dict:
    """What both ``axolotl train`` recipes share (examples/quickstart.yml, cut down)."""
    return {
        "base_model": args.model,
        "val_set_size": 0,
        "sequence_len": 256,
        "sample_packing": False,
        # the sampler keeps the dataset's order, so both runs (and the bare loop) see the same batches
        "curriculum_sampling": True,
        "shuffle_merged_datasets": False,
        "adapter": "lora",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.05,
        "lora_target_linear": True,
        "lora_mlp_kernel": False,
        "lora_qkv_kernel": False,
        "lora_o_kernel": False,
        "lora_embedding_kernel": False,
        "micro_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "num_epochs": 1,
        "max_steps": args.steps,
        "learning_rate": 0.0003,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.1,
        "optimizer": "adamw_torch",
        "bf16": False,
        "fp16": False,
        "tf32": False,
        "gradient_checkpointing": False,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
    }


def plugin_recipe(args, work: Path) -> dict:
    recipe = {
        **common_recipe(args),
        "plugins": ["axolotl_decselfmask.DecSelfMaskPlugin"],
        "datasets": [{"path": POOL, "ds_type": "json", "type": "axolotl_decselfmask.masked_reconstruction",
                      "text_column": "text"}],
        "dataset_prepared_path": str(work / "prepared_plugin"),
        "output_dir": str(work / "out_plugin"),
        "decselfmask": {
            "seed": 0,
            "max_texts": args.max_texts,
            "items": ["neoplasms", "digestive system diseases", "nervous system diseases",
                      "cardiovascular diseases", "general pathological conditions"],
            "items_per_text": 1,
            "relevance": {"lead_in": "Which disease category is the abstract above about?", "batch_size": 4},
            "masking": {"mask_token": "<mask>", "spans_per_example": 3},
            "classification": {"enabled": False},
        },
    }
    return recipe


def plain_recipe(args, work: Path, jsonl: Path, **extra) -> dict:
    return {
        **common_recipe(args),
        "datasets": [{"path": str(jsonl), "ds_type": "json"}],  # no type: pre-tokenised rows
        "dataset_prepared_path": str(work / "prepared_plain"),
        "output_dir": str(work / "out_plain"),
        **extra,
    }


def write_yaml(path: Path, recipe: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ environment
def base_env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1",
               TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the Makefile: spin-waiting threads on a shared machine
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # accelerate, axolotl
    env.pop("OMP_NUM_THREADS", None)
    return env


def arm_env(threads: str | None, cores: int) -> dict:
    env = base_env()
    if threads == "cores":
        env["OMP_NUM_THREADS"] = str(cores)
    return env


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_logged(cmd: list[str], env: dict, log: Path, timeout: int) -> tuple[int, float, str]:
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False)
    wall = time.perf_counter() - start
    return proc.returncode, wall, log.read_text(errors="replace")


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------- data
def prepared_dir(root: Path, log_text: str = "") -> Path:
    """The dataset ``axolotl preprocess`` saved under ``root``: the folder its log names (the plugin keys
    its folder by its version and settings, ``<root>/decselfmask-<key>/<hash>``), else the newest."""
    found = [p.parent for p in root.glob("**/dataset_info.json") if (p.parent / "state.json").exists()]
    m = re.search(r"Preprocessed data path: `dataset_prepared_path: ([^`]+)`", log_text)
    if m:
        named = [p for p in found if Path(m.group(1)).resolve() in (p.resolve(), p.parent.resolve())]
        found = named or found
    if not found:
        raise SystemExit(f"no prepared dataset under {root}")
    return max(found, key=lambda p: (p / "state.json").stat().st_mtime)


def read_prepared(root: Path, log_text: str = "") -> list[dict]:
    from datasets import load_from_disk

    ds = load_from_disk(str(prepared_dir(root, log_text)))
    return [{"input_ids": list(map(int, r["input_ids"])), "attention_mask": list(map(int, r["attention_mask"])),
             "labels": list(map(int, r["labels"]))} for r in ds]


def batches_of(rows: list[dict], batch_size: int, steps: int) -> list[list[dict]]:
    # Axolotl drops the last incomplete batch (dataloader_drop_last)
    out = [rows[i:i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
    return out[:steps]


# ------------------------------------------------------------------------- Axolotl's output
LOG_DICT = re.compile(r"\{'(?:loss|train_runtime)'.*?\}")


def parse_axolotl(text: str) -> dict:
    """Per-step seconds (from the second step on), trainable/total tokens per step, train_runtime."""
    steps, final = [], None
    for m in LOG_DICT.finditer(text):
        try:
            d = ast.literal_eval(m.group(0))
        except (ValueError, SyntaxError):
            continue
        if "train_runtime" in d:
            final = d
        else:
            steps.append(d)
    # tqdm redraws can print a dict twice; keep one per cumulative token count
    seen, uniq = set(), []
    for d in steps:
        key = (d.get("tokens/trainable"), d.get("tokens/total"), d.get("loss"))
        if key not in seen:
            seen.add(key)
            uniq.append(d)
    trainable = [int(d["tokens/trainable"]) for d in uniq]
    total = [int(d["tokens/total"]) for d in uniq]
    d_trainable = [trainable[0]] + [b - a for a, b in itertools.pairwise(trainable)]
    d_total = [total[0]] + [b - a for a, b in itertools.pairwise(total)]
    seconds = [None]
    for d, dt in zip(uniq[1:], d_trainable[1:]):
        rate = float(d.get("tokens/train_per_sec_per_gpu", "nan"))
        seconds.append(dt / rate if rate > 0 else None)
    return {"step_seconds": seconds, "trainable_per_step": d_trainable, "padded_per_step": d_total,
            "loss": [float(d["loss"]) for d in uniq],
            "train_runtime": float(final["train_runtime"]) if final else None}


def threads_line(text: str) -> str:
    m = re.search(r"decselfmask: precision .*", text)
    return m.group(0).strip() if m else ""


# ------------------------------------------------------------------------------- bare PEFT
def bare_peft_worker(argv: list[str]) -> None:
    """Subprocess: the bare loop; prints one JSON line ``BARE_PEFT {...}``."""
    p = argparse.ArgumentParser()
    p.add_argument("--model")
    p.add_argument("--data")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--pad-multiple", type=int, default=1)
    a = p.parse_args(argv)

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    rows = [json.loads(line) for line in Path(a.data).read_text().splitlines() if line.strip()]
    tok = AutoTokenizer.from_pretrained(a.model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)

    def collate(batch):
        longest = max(len(r["input_ids"]) for r in batch)
        width = -(-longest // a.pad_multiple) * a.pad_multiple
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for i, r in enumerate(batch):  # right padding, as Axolotl's collator with this tokenizer
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            mask[i, :n] = torch.tensor(r["attention_mask"])
            labels[i, :n] = torch.tensor(r["labels"])
        return ids, mask, labels

    seconds, losses, padded = [], [], []
    t0 = time.perf_counter()
    for batch in batches_of(rows, a.batch_size, a.steps):
        ids, mask, labels = collate(batch)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        t = time.perf_counter()
        seconds.append(t - t0)
        padded.append(int(ids.numel()))
        t0 = t
    print("BARE_PEFT " + json.dumps({"step_seconds": seconds, "loss": losses, "padded_per_step": padded,
                                     "threads": torch.get_num_threads()}), flush=True)


# ---------------------------------------------------------------------------------- driver
def summarise(step_seconds: list, batches: list[list[dict]]) -> dict:
    """tokens/s over the timed steps (the second on: the first is warm-up), median step time."""
    timed = [(s, b) for s, b in list(zip(step_seconds, batches))[1:] if s is not None]
    secs = [s for s, _ in timed]
    toks = sum(sum(sum(r["attention_mask"]) for r in b) for _, b in timed)
    return {"tokens_per_s": toks / sum(secs) if secs else float("nan"),
            "median_step_s": statistics.median(secs) if secs else float("nan"), "timed_steps": len(secs),
            "timed_tokens": toks}


def cpu_header(threads_note: str) -> list[str]:
    import torch

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import axolotl
    import peft
    import transformers

    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return [
        f"model name      : {model}",
        f"cpu flags       : {' '.join(shown) or '-'} (of avx2 avx512f avx512_bf16 amx_bf16)",
        f"cpu capability  : {torch.backends.cpu.get_cpu_capability()} (torch.backends.cpu.get_cpu_capability())",
        f"cores           : {cores()} ({threads_note})",
        (f"versions        : torch {torch.__version__}, transformers {transformers.__version__}, "
         f"peft {peft.__version__}, axolotl {axolotl.__version__}"),
        f"OMP_WAIT_POLICY : {base_env().get('OMP_WAIT_POLICY')}",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--workdir", default=DEFAULT_WORKDIR)
    p.add_argument("--result", default=DEFAULT_RESULT)
    p.add_argument("--max-texts", type=int, default=24, help="decselfmask.max_texts (one example a text here)")
    p.add_argument("--steps", type=int, default=6, help="max_steps; the first is warm-up and not timed")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all arms")
    p.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated, of {', '.join(ARMS)}")
    p.add_argument("--reuse", action="store_true", help="keep the prepared datasets of an earlier run")
    p.add_argument("--timeout", type=int, default=600, help="seconds for one run")
    a = p.parse_args(argv)

    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; choose from {list(ARMS)}")
    work = (ROOT / a.workdir).resolve()
    if work.exists() and not a.reuse:
        shutil.rmtree(work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    n = cores()
    started = time.perf_counter()
    py = sys.executable
    axolotl = [str(Path(py).parent / "axolotl")]

    # 1. the stage-1 examples, by the plugin's dataset type
    plugin_yml = write_yaml(work / "plugin.yml", plugin_recipe(a, work))
    # always run: with --reuse the plugin's relevance cache makes it quick, and it finds the folder of
    # the plugin as it is now (its key changes with the plugin's version and settings)
    rc, wall, text = run_logged(axolotl + ["preprocess", str(plugin_yml)], arm_env("cores", n),
                                work / "logs" / "preprocess_plugin.log", a.timeout)
    if rc:
        raise SystemExit(f"axolotl preprocess failed ({rc}); see {work / 'logs' / 'preprocess_plugin.log'}")
    print(f"preprocess (plugin dataset type): {wall:.0f} s", flush=True)
    rows = read_prepared(work / "prepared_plugin", text)
    jsonl = work / "stage1_tokenised.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    batches = batches_of(rows, a.batch_size, a.steps)
    if len(batches) < a.steps:
        raise SystemExit(f"{len(rows)} examples give {len(batches)} batches of {a.batch_size}; raise --max-texts")

    # 2. the same rows as a plain Axolotl dataset: preprocess it too, so both train runs load prepared data
    plain_yml = write_yaml(work / "plain.yml", plain_recipe(a, work, jsonl))
    recipes = {}
    for arm in arms:
        _, _, kind, changes = ARMS[arm]
        if kind == "peft":
            continue
        base = plugin_yml if kind == "plugin" else plain_yml
        if changes:  # a variant recipe: the same prepared data, its own output_dir
            import yaml

            recipe = {**yaml.safe_load(base.read_text()), **changes, "output_dir": str(work / f"out_{arm}")}
            recipes[arm] = write_yaml(work / f"{arm}.yml", recipe)
        else:
            recipes[arm] = base
    # Axolotl's hash of a dataset does not see the file's content: prepare the jsonl afresh every time
    shutil.rmtree(work / "prepared_plain", ignore_errors=True)
    rc, wall, text = run_logged(axolotl + ["preprocess", str(plain_yml)], arm_env("cores", n),
                                work / "logs" / "preprocess_plain.log", a.timeout)
    if rc:
        raise SystemExit(f"axolotl preprocess (plain) failed ({rc}); see {work / 'logs' / 'preprocess_plain.log'}")
    plain_rows = read_prepared(work / "prepared_plain", text)
    same = plain_rows == rows
    print(f"{len(rows)} examples, {sum(len(r['input_ids']) for r in rows)} tokens; plain prepared dataset "
          f"identical to the plugin's: {same}", flush=True)
    if not same:
        raise SystemExit("the plain prepared dataset differs from the plugin's; the comparison would be unfair")

    # 3. interleaved runs
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for rnd in range(a.rounds):
        order = arms if rnd % 2 == 0 else arms[::-1]  # A B C D, then D C B A: no arm always runs after another
        for arm in order:
            _, threads, kind, changes = ARMS[arm]
            env = arm_env(threads, n)
            log = work / "logs" / f"{arm}_r{rnd}.log"
            before = load_avg()
            if kind == "peft":
                cmd = [py, str(Path(__file__).resolve()), "_bare_peft", "--model", a.model, "--data", str(jsonl),
                       "--steps", str(a.steps), "--batch-size", str(a.batch_size),
                       "--pad-multiple", str(changes["pad_multiple"])]
                rc, wall, text = run_logged(cmd, env, log, a.timeout)
                m = re.search(r"^BARE_PEFT (.*)$", text, re.MULTILINE)
                if rc or not m:
                    raise SystemExit(f"{arm} failed ({rc}); see {log}")
                parsed = json.loads(m.group(1))
                parsed["train_runtime"] = sum(parsed["step_seconds"])
                parsed["threads_line"] = f"{parsed['threads']} thread(s)"
            else:
                rc, wall, text = run_logged(axolotl + ["train", str(recipes[arm])], env, log, a.timeout)
                if rc:
                    raise SystemExit(f"{arm} failed ({rc}); see {log}")
                parsed = parse_axolotl(text)
                parsed["threads_line"] = threads_line(text)
                # Axolotl counts labels != -100 of each batch: check that it trained the batches we count
                expect = [sum(sum(1 for t in r["labels"] if t != -100) for r in b) for b in batches]
                if parsed["trainable_per_step"] != expect:
                    raise SystemExit(f"{arm}: the trained batches are not the expected ones "
                                     f"({parsed['trainable_per_step']} vs {expect}); see {log}")
            parsed.update(summarise(parsed["step_seconds"], batches), wall_s=wall, load_before=before,
                          load_after=load_avg(), round=rnd)
            results[arm].append(parsed)
            print(f"round {rnd} {arm:15s} {parsed['tokens_per_s']:8.1f} tokens/s  median step "
                  f"{parsed['median_step_s']:.2f} s  train_runtime {parsed['train_runtime']:.1f} s  "
                  f"wall {wall:.0f} s  load {before} -> {parsed['load_after']}", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))

    # 4. the table
    command = " ".join([Path(sys.executable).name, *map(str, [Path(__file__).relative_to(ROOT)]), *sys.argv[1:]]
                       if argv is None else [Path(__file__).name, *argv])
    lines = table(a, arms, results, rows, batches, n, time.perf_counter() - started, command)
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out = ROOT / a.result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out.relative_to(ROOT)}")
    return 0


def best_of_rounds(runs: list[dict], batches: list[list[dict]]) -> float:
    """tokens/s with each timed batch at its fastest over the rounds: on a machine whose load comes in
    bursts (step times here were bimodal, ~4.6 s free and ~7.3 s contended) this is the speed of the
    uncontended step."""
    n = min(len(r["step_seconds"]) for r in runs)
    best = [min(r["step_seconds"][k] for r in runs if r["step_seconds"][k] is not None) for k in range(1, n)]
    toks = sum(sum(sum(r["attention_mask"]) for r in b) for b in batches[1:n])
    return toks / sum(best)


def table(a, arms, results, rows, batches, n, elapsed, command="") -> list[str]:
    med = {arm: statistics.median(r["tokens_per_s"] for r in results[arm]) for arm in arms}
    best = {arm: best_of_rounds(results[arm], batches) for arm in arms}
    step = {arm: statistics.median(s for r in results[arm] for s in r["step_seconds"][1:] if s is not None)
            for arm in arms}
    runtime = {arm: statistics.median(r["train_runtime"] for r in results[arm]) for arm in arms}
    real = [sum(sum(r["attention_mask"]) for r in b) for b in batches]
    lines = ["# Stage-1 speed: plugin dataset type vs plain Axolotl vs bare PEFT loop",
             (f"# date: {time.strftime('%Y-%m-%d %H:%M')}; the machine was SHARED with other work "
              "(another engineer's timing runs and tests)"),
             f"# command: {command}",
             *("# " + x for x in cpu_header("OMP_NUM_THREADS=cores means " + str(n))),
             (f"# model {a.model}, float32, LoRA r16 all-linear (dropout 0.05), AdamW lr 3e-4, micro_batch_size "
              f"{a.batch_size}, sequence_len 256, {a.steps} steps (first = warm-up, not timed), "
              f"{a.rounds} interleaved round(s)"),
             (f"# {len(rows)} stage-1 examples from {a.max_texts} texts (decselfmask.max_texts); batches in dataset "
              f"order; real tokens per batch {real}"),
             (f"# tokens/s = non-padding tokens of steps 2..{a.steps} / their summed wall time, median over rounds; "
              "best = the same with each batch at its fastest round; step s = median over all timed steps of all "
              "rounds; runtime s = HF train_runtime (all steps, median)"), ""]
    head = (f"{'arm':15s} {'tokens/s':>8s} {'best':>6s} {'vs plain':>8s} {'(best)':>6s} {'vs peft':>7s} {'(best)':>6s} "
            f"{'step s':>6s} {'runtime s':>9s} {'padded':>7s}  {'runs (tokens/s)':22s} what")
    lines.append(head)

    def ratio(d, key, width):
        return f"{d[arm] / d[key]:{width}.3f}" if key in d else f"{'-':>{width}s}"

    for arm in arms:
        padded = results[arm][0]["padded_per_step"][: len(batches)]
        widths = sorted({p // a.batch_size for p in padded})
        width = str(widths[0]) if len(widths) == 1 else f"{widths[0]}-{widths[-1]}"
        runs = ", ".join(f"{r['tokens_per_s']:.0f}" for r in results[arm])
        lines.append(f"{arm:15s} {med[arm]:8.1f} {best[arm]:6.1f} {ratio(med, 'plain', 8)} {ratio(best, 'plain', 6)} "
                     f"{ratio(med, 'peft', 7)} {ratio(best, 'peft', 6)} {step[arm]:6.2f} {runtime[arm]:9.1f} "
                     f"{width:>7s}  {runs:22s} {ARMS[arm][0]}")
    lines.append("")
    lines.append("padded: padded sequence length of the batches, min-max (Axolotl: its logged tokens/total / batch)")
    if "plugin" in arms and "plain" in arms:
        paired = [p["tokens_per_s"] / q["tokens_per_s"] for p, q in zip(results["plugin"], results["plain"])]
        verdict = "met" if med["plugin"] / med["plain"] >= 0.95 else "NOT met"
        verdict_best = "met" if best["plugin"] / best["plain"] >= 0.95 else "NOT met"
        lines.append(f"plugin / plain tokens/s: {med['plugin'] / med['plain']:.3f} (medians; goal >= 0.95: {verdict}), "
                     f"{best['plugin'] / best['plain']:.3f} (best; {verdict_best}); per round "
                     f"{', '.join(f'{x:.3f}' for x in paired)}")
    for arm in arms:
        tl = results[arm][0].get("threads_line")
        if tl:
            lines.append(f"{arm}: {tl}")
    loads = [f"{r['load_before']}" for arm in arms for r in results[arm]]
    lines.append(f"load averages (1/5/15 min) before each run, by arm then round: {'; '.join(loads)}")
    lines.append(f"whole benchmark: {elapsed / 60:.1f} min")
    return lines


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_bare_peft":
        bare_peft_worker(sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
