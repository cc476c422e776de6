#!/usr/bin/env python
"""Where an Axolotl stage-1 step spends its time, beside a bare PEFT step, in ONE process.

Companion of ``stage1_vs_plain_axolotl.py`` (run that first: it leaves the recipes and the
prepared datasets under ``outputs/bench_stage1_vs_plain/``). This script

1. builds Axolotl's trainer in-process from a recipe (``plain.yml`` by default; ``--recipe``
   for ``plugin.yml``) exactly as ``axolotl train`` does (``load_cfg``, ``load_datasets``,
   ``setup_model_and_trainer``), and prints what Axolotl set up: the TrainingArguments that
   matter for speed, the collator and its padding, the model's dtype / attention / LoRA layers;
2. times, alternately in the same process (so a shared machine's load hits them alike):
   ``axolotl``: ``trainer.train()`` (its steps timed by a callback: ``on_step_begin`` to
   ``on_step_end``, data loading excluded; and end-to-end, data loading included);
   ``bare@axolotl-batches``: a bare loop (forward, backward, AdamW) on a freshly made PEFT
   model over the batches as Axolotl's collator padded them;
   ``bare@longest``: the same over the same rows padded to their longest; ``bare@longest,dropout0``:
   with ``lora_dropout: 0``; ``bare@longest,1thread``: on one thread (``torch.set_num_threads(1)``);
3. profiles one step of each with ``torch.profiler`` and prints the top operators.

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 \\
        TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/profile_stage1_step.py

(``python`` directly, not ``accelerate launch``: set ``OMP_NUM_THREADS`` yourself.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def training_args_summary(args) -> dict:
    keys = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "logging_steps",
            "gradient_checkpointing", "dataloader_num_workers", "dataloader_pin_memory", "dataloader_drop_last",
            "dataloader_prefetch_factor", "torch_compile", "use_cpu", "bf16", "fp16", "tf32", "optim",
            "max_grad_norm", "weight_decay", "include_num_input_tokens_seen", "include_tkps", "sample_packing",
            "curriculum_sampling", "eval_strategy", "save_strategy", "report_to", "average_tokens_across_devices",
            "torch_empty_cache_steps", "group_by_length", "remove_unused_columns", "neftune_noise_alpha",
            "embedding_lr", "loraplus_lr_ratio", "label_smoothing_factor", "disable_tqdm")
    out = {}
    for k in keys:
        if hasattr(args, k):
            v = getattr(args, k)
            out[k] = v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v)
    return out


def model_summary(model) -> dict:
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    lora = [n for n, m in model.named_modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")]
    dropouts = sorted({type(m.lora_dropout["default"]).__name__ for _, m in model.named_modules()
                       if hasattr(m, "lora_dropout") and "default" in getattr(m, "lora_dropout", {})})
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dtypes = sorted({str(p.dtype) for p in model.parameters()})
    return {"class": type(model).__name__, "base_class": type(base).__name__,
            "attn_implementation": getattr(base.config, "_attn_implementation", None),
            "use_cache": getattr(base.config, "use_cache", None), "param_dtypes": dtypes,
            "lora_layers": len(lora), "lora_target_suffixes": sorted({n.rsplit(".", 1)[-1] for n in lora}),
            "lora_dropout": dropouts, "trainable_params": trainable,
            "gradient_checkpointing": getattr(base, "is_gradient_checkpointing", None),
            "input_requires_grad_hook": getattr(base, "_require_grads_hook", None) is not None,
            "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", default="outputs/bench_stage1_vs_plain")
    p.add_argument("--recipe", default="plain.yml", help="recipe in the workdir (plain.yml or plugin.yml)")
    p.add_argument("--steps", type=int, default=6, help="steps per arm and round (the first is not timed)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-profile", action="store_true")
    p.add_argument("--json", help="write the numbers here")
    p.add_argument("--out", default="benchmarks/results/profile_stage1_step.txt", help="the printed report ('' = none)")
    a = p.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.chdir(ROOT)
    import torch
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.common.datasets import load_datasets
    from axolotl.train import setup_model_and_trainer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerCallback

    report: list[str] = []

    def say(*parts):
        line = " ".join(str(x) for x in parts)
        print(line, flush=True)
        report.append(line)

    work = ROOT / a.workdir
    recipe = work / a.recipe
    cfg = load_cfg(str(recipe), max_steps=a.steps, output_dir=str(work / "out_profile"))
    if cfg.get("plugins"):
        from axolotl.integrations.base import PluginManager

        meta = PluginManager.get_instance().load_datasets(cfg, preprocess=False)
    else:
        meta = None
    meta = meta or load_datasets(cfg=cfg, cli_args=TrainerCliArgs())
    trainer, model, tokenizer, _, _ = setup_model_and_trainer(cfg, meta)
    say("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"), "torch threads", torch.get_num_threads())
    say("TrainingArguments (speed-relevant):", json.dumps(training_args_summary(trainer.args), default=str))
    coll = trainer.data_collator
    say("collator:", type(coll).__name__, {k: getattr(coll, k, None) for k in ("padding", "pad_to_multiple_of",
                                                                                 "label_pad_token_id")})
    say("model:", json.dumps(model_summary(model), default=str))
    say("trainer class:", type(trainer).__name__, "loss:", getattr(model.get_base_model().loss_function, "__name__", "?"))
    say("callbacks:", [type(c).__name__ for c in trainer.callback_handler.callbacks])

    # the batches Axolotl trains on (collated by its collator) and the same rows padded to longest
    dl = trainer.get_train_dataloader()
    axo_batches = []
    for b in dl:
        axo_batches.append({k: v.clone() for k, v in b.items() if k in ("input_ids", "attention_mask", "labels")})
        if len(axo_batches) == a.steps:
            break

    def unpad(b):
        n = int(b["attention_mask"].sum(1).max())
        return {k: v[:, :n].contiguous() for k, v in b.items()}

    assert tokenizer.padding_side == "right" or all(bool(b["attention_mask"][:, 0].all()) for b in axo_batches)
    long_batches = [unpad(b) for b in axo_batches]
    real = [int(b["attention_mask"].sum()) for b in axo_batches]
    say("padded widths (axolotl):", [tuple(b["input_ids"].shape) for b in axo_batches],
          "longest:", [b["input_ids"].shape[1] for b in long_batches], "real tokens:", real)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin, self.compute, self.ends, self.cpu = None, [], [], []

        def on_train_begin(self, args, state, control, **kw):
            self.ends = [time.perf_counter()]

        def on_step_begin(self, args, state, control, **kw):
            self.begin, self.cpu_begin = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            self.compute.append(now - self.begin)
            self.cpu.append(time.process_time() - self.cpu_begin)

        def on_log(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())  # after the step's log: the end of a trainer step

    timer = StepTimer()
    trainer.add_callback(timer)

    def bare_model(dropout):
        m = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=torch.float32)
        m.config.use_cache = False
        m = get_peft_model(m, LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))
        m.train()
        return m, torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=3e-4)

    bare, opt = bare_model(0.05)
    nodrop = bare_model(0.0)
    say("bare model:", json.dumps(model_summary(bare), default=str))

    def bare_step(b, m_opt=None):
        m, o = m_opt or (bare, opt)
        loss = m(**b).loss
        loss.backward()
        o.step()
        o.zero_grad(set_to_none=True)
        return float(loss.detach())

    def run_bare(batches, m_opt=None):
        times, cpu = [], []
        for b in batches:
            t, c = time.perf_counter(), time.process_time()
            bare_step(b, m_opt)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return times, cpu

    arms = ["axolotl", "bare@axolotl-batches", "bare@longest", "bare@longest,dropout0", "bare@longest,1thread"]
    res = {"axolotl_compute": [], "axolotl_step": [], **{arm: [] for arm in arms[1:]}}
    cpu_res = {"axolotl_compute": [], **{arm: [] for arm in arms[1:]}}  # process CPU seconds (all threads)
    tok = {arm: real for arm in res}
    for rnd in range(a.rounds):
        for arm in (arms if rnd % 2 == 0 else arms[::-1]):
            if arm == "axolotl":
                timer.compute, timer.ends, timer.cpu = [], [], []
                trainer.train()
                cpu_res["axolotl_compute"].append(timer.cpu[1:])
                ends = timer.ends[1:1 + a.steps]  # the log of each step (the last on_log is the summary)
                res["axolotl_compute"].append(timer.compute[1:])
                res["axolotl_step"].append([b - a_ for a_, b in itertools.pairwise(ends)])  # steps 2..N
            else:
                threads = torch.get_num_threads()
                if arm.endswith("1thread"):
                    torch.set_num_threads(1)  # what accelerate's OMP_NUM_THREADS=1 gives a plain run
                times, cpu = run_bare(axo_batches if arm == "bare@axolotl-batches" else long_batches,
                                      nodrop if arm.endswith("dropout0") else None)
                torch.set_num_threads(threads)
                res[arm].append(times[1:])
                cpu_res[arm].append(cpu[1:])
            print(f"round {rnd} {arm}: done", flush=True)

    lines = [f"{'arm':22s} {'median s/step':>13s} {'tokens/s':>9s} {'CPU s/step':>10s}  per-round medians (wall s)"]
    med, cpu_med = {}, {}
    for arm, rounds in res.items():
        flat = [s for r in rounds for s in r]
        med[arm] = statistics.median(flat)
        # tokens of steps 2..N over their time
        tps = statistics.median(sum(tok[arm][1:len(r) + 1]) / sum(r) for r in rounds)
        cpu_med[arm] = statistics.median(c for r in cpu_res.get(arm, []) for c in r) if arm in cpu_res else None
        cpu_txt = f"{cpu_med[arm]:10.2f}" if cpu_med[arm] is not None else f"{'-':>10s}"
        lines.append(f"{arm:22s} {med[arm]:13.2f} {tps:9.1f} {cpu_txt}  "
                     f"{[round(statistics.median(r), 2) for r in rounds]}")
    lines.append("CPU s/step: process CPU time (all threads of this process) per step: the work done, which "
                 "a shared machine's load moves less than the wall time")
    lines.append(f"by CPU time: axolotl / bare same batches {cpu_med['axolotl_compute'] / cpu_med['bare@axolotl-batches']:.3f}, "
                 f"axolotl / bare longest {cpu_med['axolotl_compute'] / cpu_med['bare@longest']:.3f}, "
                 f"dropout 0 / 0.05 {cpu_med['bare@longest,dropout0'] / cpu_med['bare@longest']:.3f}")
    lines.append(f"axolotl step / bare step on the same padded batches: {med['axolotl_step'] / med['bare@axolotl-batches']:.3f}")
    lines.append(f"axolotl step / bare step padded to longest:          {med['axolotl_step'] / med['bare@longest']:.3f}")
    lines.append(f"bare padded to longest, lora_dropout 0 / 0.05:       {med['bare@longest,dropout0'] / med['bare@longest']:.3f}")
    lines.append(f"bare padded to longest, 1 thread / {torch.get_num_threads()} threads:         "
                 f"{med['bare@longest,1thread'] / med['bare@longest']:.3f}")
    lines.append(f"axolotl trainer work outside the step callbacks (data, log): "
                 f"{med['axolotl_step'] - med['axolotl_compute']:.3f} s/step")
    say("\n".join(lines))

    if not a.no_profile:
        # one whole step of each (forward, backward, optimizer; Axolotl's: on_step_begin to on_step_end
        # of its second step, so clipping, the scheduler and zero_grad are in), by self CPU time
        from torch.profiler import ProfilerActivity, profile

        def top(prof, n=14):
            events = prof.key_averages()
            rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:n]
            return sum(e.self_cpu_time_total for e in events) / 1e6, [
                (e.key, round(e.self_cpu_time_total / 1e6, 3), e.count) for e in rows]

        class Profiled(TrainerCallback):
            def __init__(self):
                self.prof, self.wall = None, None

            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == 1:
                    self.prof = profile(activities=[ProfilerActivity.CPU])
                    self.prof.__enter__()
                    self.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if self.prof is not None and self.wall is None:
                    self.prof.__exit__(None, None, None)
                    self.wall = time.perf_counter() - self.t

        prof_cb = Profiled()
        trainer.add_callback(prof_cb)
        trainer.train()
        profs = [("axolotl trainer step 2", prof_cb.prof, prof_cb.wall)]
        for name, b in (("bare step, same padded batch", axo_batches[1]), ("bare step, padded to longest",
                                                                           long_batches[1])):
            bare_step(axo_batches[0])
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                t = time.perf_counter()
                bare_step(b)
                wall = time.perf_counter() - t
            profs.append((name, prof, wall))
        for name, prof, wall in profs:
            total, rows = top(prof)
            say(f"\n== {name}: wall {wall:.2f} s, self CPU total {total:.2f} s (operators timed on the calling thread)")
            for key, s_, count in rows:
                say(f"  {key:60s} {s_:8.3f} s  x{count}")
    if a.out:
        import torch as _t

        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        head = [(f"# {time.strftime('%Y-%m-%d %H:%M')}; recipe {recipe.relative_to(ROOT)}; {a.steps} steps x "
                 f"{a.rounds} interleaved rounds; the machine was SHARED (load average {load} at the end); "
                 f"cpu capability {_t.backends.cpu.get_cpu_capability()}")]
        (ROOT / a.out).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / a.out).write_text("\n".join(head + report) + "\n")
    if a.json:
        Path(a.json).write_text(json.dumps({"seconds": res, "cpu_seconds": cpu_res, "real_tokens": real}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
