#!/usr/bin/env python
"""GPU check: peak memory and tokens/s of the recipes' steps on random-weight models (issue 14).

docs/recipes.md gives memory and time *estimates* for the recipes (no GPU was used to write them).
This script measures them, on one GPU, with models of the recipes' real shapes and random weights
(no hub, no tokenizer, no data needed), and writes one JSON plus a short table:

1. ``stage1_lora`` / ``stage1_qlora``: one stage-1 optimiser step as the recipes set it: LoRA r 16 /
   alpha 32 / dropout 0.05 on every linear layer (PEFT ``all-linear``), bf16, gradient checkpointing,
   AdamW (fused on CUDA), ``micro_batch_size`` rows of ``sequence_len`` tokens (recipes/*.yml: 1024;
   4 rows for Llama 3.2 1B, 2 for Llama 3.1 8B); forward + backward + step, ``--steps`` timed steps
   after one warm-up. QLoRA loads the same random weights in 4-bit nf4 through transformers'
   ``BitsAndBytesConfig`` (double quantisation, bf16 compute, as Axolotl's ``adapter: qlora``) and
   ``peft.prepare_model_for_kbit_training``; it runs only where ``bitsandbytes`` imports and CUDA is
   there, else its row says why it was skipped.
2. ``stage2_lora`` / ``stage2_qlora``: the joint stage-2 step: a fresh LoRA r 32 / alpha 64 on the bf16
   model (QLoRA: on the 4-bit nf4 base, as QLoRA recipes load stage 2), gradient checkpointing, batch 16
   of 256-token rows, loss on the last 2 tokens (the label).
3. ``relevance_attnlrp`` / ``relevance_grad_x_input``: the package's own methods
   (``axolotl_decselfmask.relevance.methods``: they import without axolotl, trl or datasets) on
   ``relevance.batch_size`` prompts of ``sequence_len`` tokens (random ids laid out like a relevance
   prompt: template, note, lead-in, a 5-token item), target ``sum_logprob`` (the recipes' default),
   one item per note (``items_per_text: 1``), on the bf16 model.
4. ``relevance_attnlrp_4bit``: AttnLRP on a 4-bit nf4 copy loaded by the package's own
   ``load_relevance_model(..., load_in_4bit=True)``, for the recipes that set
   ``relevance.load_in_4bit: true`` (Llama 3.1 8B); skipped for the others and without bitsandbytes.

Each measured row also has ``predicted_gb``: the memory model's peak (``axolotl_decselfmask/memory.py``,
GiB here as the measurement) for that stage, precision, batch, length and rank, printed beside the
measured ``peak_gb`` (docs/recipes.md: predicted, and measured where measured on a GPU).

The rows also give ``minutes_per_1k_notes`` with docs/recipes.md's assumptions (stage 1: 1.5 examples
of ``sequence_len`` tokens per note; relevance: one prompt of ``sequence_len`` tokens per note), on
the GPU measured, not the 24 GB card of the estimates.

Every measurement runs in its own try block (a failure is a row with ``status: failed`` and the
error), memory is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (each part
builds its model afresh, so the peak includes the weights), and the JSON is rewritten after every
part, so a run stopped at its time limit still leaves what it measured. ``--budget-s`` skips the
parts that would start after that many seconds (their rows say so).

The model shapes (``CONFIGS``) are those of the public config.json of
``meta-llama/Llama-3.2-1B-Instruct`` and ``meta-llama/Llama-3.1-8B-Instruct`` on the Hugging Face hub
(hidden size, layers, attention and key/value heads, intermediate size, vocabulary, rope theta and
llama3 rope scaling, tied embeddings, eos ids); ``models`` in the JSON gives their parameter counts
(1.24B, 8.03B). ``--tiny`` keeps their structure (grouped-query attention, llama3 rope, tying) but
shrinks them (2 layers, hidden 64, vocabulary 512, sequences of 64) for a CPU check in seconds
(tests/unit/test_gpu_check.py). The 4-bit parts save the random bf16 weights once to a temporary
folder (2.5 GB, 16 GB for the 8B; ``--tmp-dir``) and load them back quantised.

On the lent GPU machine (one H200; torch 2.11+cu130, transformers 5.17, peft, accelerate there; no
axolotl, trl, datasets or bitsandbytes; no network), from the repository root, with the ``run`` tool:

    command: export PYTHONPATH=$PWD/.whl/bnb; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py
             --out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log
    carry: [".whl/bnb"]     timeout_s: 480     (no part starts after --budget-s, default 360 s)

(expected: a few minutes; the JSON is complete after each part, so even a run cut at timeout_s
returns what it measured; a rerun of only what failed: ``--models ... --parts ...``).

The script imports ``axolotl_decselfmask`` from the checkout (the tool copies the tracked work tree,
about 6.5 MB). bitsandbytes travels as the unpacked wheel stripped to its CUDA 13.0 library (4.5 MB:
``libbitsandbytes_cuda130.so`` is the one bitsandbytes loads under torch's CUDA 13.0; the wheel's
other CUDA/ROCm/XPU builds make it 43 MB zipped, 129 MB unpacked). Make it once, here (pip works
here, not there); ``.whl/`` is git-ignored:

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_24_x86_64 -d /tmp/bnb bitsandbytes==0.50.2
    mkdir -p .whl/bnb && (cd .whl/bnb && unzip -q -o /tmp/bnb/bitsandbytes-0.50.2-*.whl)
    find .whl/bnb/bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*cuda130.so' ! -name '*cpu.so' -delete

(the ``.dist-info`` folder stays: transformers looks bitsandbytes' version up through it). The CUDA
library needs ``libcudart.so.13``, ``libcublas.so.13`` and ``libcublasLt.so.13``, which torch's own
nvidia packages bring there (not yet seen loading on that machine). Without ``.whl/bnb`` the 4-bit
rows are skipped and everything else runs.

    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/gpu_check.json   # the CPU check
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub (and that machine has no network)

import torch  # noqa: E402

#: from the public config.json of each model (Hugging Face hub); rope_scaling is the llama3 type
CONFIGS = {
    "llama-3.2-1b-instruct": dict(
        model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=True,
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
    "llama-3.1-8b-instruct": dict(
        model_type="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
        hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
        bos_token_id=128000, eos_token_id=[128001, 128008, 128009]),
}

#: what the recipes set (recipes/<name>.yml): stage-1 micro_batch_size, relevance.batch_size, sequence_len,
#: relevance.load_in_4bit
RECIPES = {
    "llama-3.2-1b-instruct": dict(micro_batch_size=4, relevance_batch_size=2, sequence_len=1024),
    "llama-3.1-8b-instruct": dict(micro_batch_size=2, relevance_batch_size=1, sequence_len=1024, relevance_4bit=True),
}

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=512, bos_token_id=1, eos_token_id=2)
TINY_SEQ = 64
STAGE2 = dict(batch=16, seq=256, r=32, alpha=64, label_tokens=2)
STAGE1_LORA = dict(r=16, alpha=32, dropout=0.05)
#: docs/recipes.md's assumptions for the per-1k-notes figures: 1.5 stage-1 examples per note, one
#: relevance prompt per note, both of sequence_len tokens
EXAMPLES_PER_NOTE = 1.5
#: in this order for each model: the 4-bit parts last (they need the carried bitsandbytes, and a bf16
#: checkpoint written to and read from disk, the slowest thing here)
PARTS = ("stage1_lora", "stage2_lora", "relevance_attnlrp", "relevance_grad_x_input", "stage1_qlora",
         "stage2_qlora", "relevance_attnlrp_4bit")
#: each part's stage and weight precision in the memory model (axolotl_decselfmask/memory.py)
PART_STAGE = {"stage1_lora": ("stage1", "bf16"), "stage1_qlora": ("stage1", "nf4"), "stage2_lora": ("stage2", "bf16"),
              "stage2_qlora": ("stage2", "nf4"), "relevance_attnlrp": ("relevance", "bf16"),
              "relevance_grad_x_input": ("relevance", "bf16"), "relevance_attnlrp_4bit": ("relevance", "nf4")}


# ----------------------------------------------------------------------------- helpers
def model_config(name: str, tiny: bool):
    from transformers import LlamaConfig

    values = dict(CONFIGS[name])
    values.pop("model_type")
    if tiny:
        values.update(TINY)
    return LlamaConfig(**values)


def build_model(name: str, args):
    """A random-weight bf16 (float32 on CPU) causal LM of the recipe model's shape, on the device."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(model_config(name, args.tiny), dtype=dtype_for(args),
                                                 attn_implementation="sdpa")
    return model


def dtype_for(args):
    return torch.bfloat16 if args.device.startswith("cuda") else torch.float32


def sync(args):
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(args):
    """bf16 autocast on CUDA, as the Trainer's ``bf16: true`` (Axolotl's ``bf16: auto`` on a GPU with bf16)."""
    if args.device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def reset_memory(args):
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory_gb(args, peak: bool) -> float | None:
    if not args.device.startswith("cuda"):
        return None
    value = torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()
    return round(value / 2**30, 3)


def shapes(name: str, args) -> dict:
    recipe = dict(RECIPES[name])
    if args.tiny:
        recipe["sequence_len"] = TINY_SEQ
    return recipe


def random_batch(vocab: int, batch: int, seq: int, device: str, label_tokens: int | None = None):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    labels = ids.clone()
    if label_tokens is not None:  # loss on the label only (stage 2)
        labels[:, : seq - label_tokens] = -100
    return ids.to(device), labels.to(device)


def timed_steps(model, optimizer, ids, labels, args) -> dict:
    """One warm-up step, then ``args.steps`` timed steps (forward, backward, AdamW)."""
    model.train()
    times, loss = [], None
    for step in range(args.steps + 1):
        sync(args)
        t0 = time.perf_counter()
        with autocast(args):
            out = model(input_ids=ids, labels=labels, use_cache=False)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(args)
        if step:
            times.append(time.perf_counter() - t0)
        loss = float(out.loss.detach())
        del out
    step_s = sum(times) / len(times)
    return dict(step_s=round(step_s, 4), tokens_per_s=round(ids.numel() / step_s, 1), loss=round(loss, 4),
                steps=args.steps)


def add_lora(model, r: int, alpha: int, dropout: float, args, kbit: bool = False):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    kwargs = {"use_reentrant": False}
    if kbit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.enable_input_require_grads()
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)  # LoRA weights in float32 (PEFT's default), trained under autocast


def optimizer_for(model, args):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0, fused=args.device.startswith("cuda"))


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------- the parts
def stage1_lora(name: str, args) -> dict:
    shape = shapes(name, args)
    model = build_model(name, args)
    weights = memory_gb(args, peak=False)
    model = add_lora(model, STAGE1_LORA["r"], STAGE1_LORA["alpha"], STAGE1_LORA["dropout"], args)
    ids, labels = random_batch(model.config.vocab_size, shape["micro_batch_size"], shape["sequence_len"],
                               args.device)
    row = timed_steps(model, optimizer_for(model, args), ids, labels, args)
    row.update(batch=shape["micro_batch_size"], seq_len=shape["sequence_len"], weights_gb=weights,
               lora_params=trainable(model), gradient_checkpointing=True, dtype=str(dtype_for(args)))
    row["minutes_per_1k_notes"] = round(1000 * EXAMPLES_PER_NOTE * shape["sequence_len"] / row["tokens_per_s"] / 60, 2)
    return row


def qlora_unavailable(args) -> str | None:
    if not args.device.startswith("cuda") and not args.qlora_cpu:
        return "4-bit parts are measured on CUDA only (--qlora-cpu runs them on bitsandbytes' CPU backend)"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a library that fails to load
        return (f"bitsandbytes does not import ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): "
                "not carried (see this script's docstring: .whl/bnb)")
    return None


def random_checkpoint(name: str, args) -> Path:
    """The random weights of :func:`build_model` (seed 0), saved once per model for the 4-bit loads."""
    folder = Path(args.tmp_dir) / name
    if not (folder / "config.json").exists():
        base = build_model(name, args)
        base.save_pretrained(folder)
        del base
        reset_memory(args)
    return folder


def load_4bit(name: str, args):
    """The random checkpoint loaded in 4-bit nf4 as Axolotl's ``adapter: qlora`` loads a base model."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
    return AutoModelForCausalLM.from_pretrained(random_checkpoint(name, args), quantization_config=quant,
                                                dtype=torch.bfloat16, device_map={"": torch.device(args.device)},
                                                attn_implementation="sdpa")


def n_4bit(model) -> int:
    return sum(type(m).__name__ == "Linear4bit" for m in model.modules())


def stage1_qlora(name: str, args) -> dict:
    reason = qlora_unavailable(args)
    if reason:
        return dict(status="skipped", reason=reason)
    shape = shapes(name, args)
    t0 = time.perf_counter()
    model = load_4bit(name, args)
    load_s = round(time.perf_counter() - t0, 1)
    reset_memory(args)
    weights = memory_gb(args, peak=False)
    linear4bit = n_4bit(model)
    model = add_lora(model, STAGE1_LORA["r"], STAGE1_LORA["alpha"], STAGE1_LORA["dropout"], args, kbit=True)
    ids, labels = random_batch(model.config.vocab_size, shape["micro_batch_size"], shape["sequence_len"],
                               args.device)
    row = timed_steps(model, optimizer_for(model, args), ids, labels, args)
    row.update(batch=shape["micro_batch_size"], seq_len=shape["sequence_len"], weights_gb=weights,
               lora_params=trainable(model), gradient_checkpointing=True, save_and_load_s=load_s, linear4bit=linear4bit,
               quantisation="nf4, double quant, bf16 compute")
    row["minutes_per_1k_notes"] = round(1000 * EXAMPLES_PER_NOTE * shape["sequence_len"] / row["tokens_per_s"] / 60, 2)
    return row


def stage2_lora(name: str, args) -> dict:
    batch, seq = STAGE2["batch"], (TINY_SEQ if args.tiny else STAGE2["seq"])
    model = build_model(name, args)
    weights = memory_gb(args, peak=False)
    model = add_lora(model, STAGE2["r"], STAGE2["alpha"], 0.05, args)
    ids, labels = random_batch(model.config.vocab_size, batch, seq, args.device, STAGE2["label_tokens"])
    row = timed_steps(model, optimizer_for(model, args), ids, labels, args)
    row.update(batch=batch, seq_len=seq, weights_gb=weights, lora_params=trainable(model),
               gradient_checkpointing=True, loss_tokens_per_row=STAGE2["label_tokens"])
    return row


def stage2_qlora(name: str, args) -> dict:
    """The joint stage-2 step on the 4-bit base (QLoRA recipes: stage 2 and the evaluation load 4 bits)."""
    reason = qlora_unavailable(args)
    if reason:
        return dict(status="skipped", reason=reason)
    batch, seq = STAGE2["batch"], (TINY_SEQ if args.tiny else STAGE2["seq"])
    model = load_4bit(name, args)
    reset_memory(args)
    weights, linear4bit = memory_gb(args, peak=False), n_4bit(model)
    model = add_lora(model, STAGE2["r"], STAGE2["alpha"], 0.05, args, kbit=True)
    ids, labels = random_batch(model.config.vocab_size, batch, seq, args.device, STAGE2["label_tokens"])
    row = timed_steps(model, optimizer_for(model, args), ids, labels, args)
    row.update(batch=batch, seq_len=seq, weights_gb=weights, lora_params=trainable(model), linear4bit=linear4bit,
               gradient_checkpointing=True, loss_tokens_per_row=STAGE2["label_tokens"],
               quantisation="nf4, double quant, bf16 compute")
    return row


def predicted_gb(part: str, name: str, args, row: dict) -> float | None:
    """The memory model's peak for the part as run (its stage, precision, batch, length, rank)."""
    from axolotl_decselfmask import memory

    stage, weights = PART_STAGE[part]
    if "batch" not in row:
        return None
    shape = memory.shape_from_config(model_config(name, args.tiny).to_dict())
    cuda = args.device.startswith("cuda")
    rank = STAGE1_LORA["r"] if stage == "stage1" else (STAGE2["r"] if stage == "stage2" else 0)
    run = memory.Run(weights=weights, compute="bf16" if cuda else "fp32", batch=row["batch"], seq=row["seq_len"],
                     rank=rank, device="cuda" if cuda else "cpu")
    return round(memory.peak_bytes(stage, shape, run) / 2**30, 3)


def relevance_prompts(vocab: int, n: int, seq: int):
    """``n`` relevance prompts of ``seq`` tokens of random ids: template head, note, lead-in, item (5)."""
    from axolotl_decselfmask.relevance.prompt import RelevancePrompt

    g = torch.Generator().manual_seed(2)
    head, lead, item = 8, 12, 5
    text_len = seq - head - lead - item - 1
    prompts = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (seq,), generator=g).tolist()
        text = list(range(head, head + text_len))
        prompts.append(RelevancePrompt(ids, text, [(i, i + 1) for i in range(text_len)],
                                       list(range(seq - item - 1, seq - 1))))
    return prompts


def relevance(method_name: str, name: str, args, model=None) -> dict:
    """The package's relevance method on the bf16 model (or ``model``, loaded by the caller)."""
    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS

    shape = shapes(name, args)
    if model is None:
        model = build_model(name, args)
        model.eval()
        model.requires_grad_(False)
    weights = memory_gb(args, peak=False)
    # no tokenizer on that machine: the method reads only its pad and eos ids
    eos = model.config.eos_token_id
    tokenizer = SimpleNamespace(pad_token_id=None, eos_token_id=eos[0] if isinstance(eos, list) else eos)
    method = BUILTIN_METHODS[method_name](model, tokenizer, target="sum_logprob")
    n = shape["relevance_batch_size"]
    prompts = relevance_prompts(model.config.vocab_size, n * (args.steps + 1), shape["sequence_len"])
    times = []
    for k in range(args.steps + 1):
        sync(args)
        t0 = time.perf_counter()
        maps = method.attribute(prompts[k * n : (k + 1) * n])
        sync(args)
        if k:
            times.append(time.perf_counter() - t0)
        if not all(len(m) == len(prompts[0].text_positions) and bool(abs(m).sum() > 0) for m in maps):
            raise RuntimeError(f"{method_name}: maps of the wrong length or all zero")
    batch_s = sum(times) / len(times)
    tokens_per_s = n * shape["sequence_len"] / batch_s
    return dict(batch=n, seq_len=shape["sequence_len"], weights_gb=weights, batch_s=round(batch_s, 4),
                tokens_per_s=round(tokens_per_s, 1), steps=args.steps, target="sum_logprob", dtype=str(dtype_for(args)),
                minutes_per_1k_notes=round(1000 * shape["sequence_len"] / tokens_per_s / 60, 2))


def relevance_4bit(name: str, args) -> dict:
    """AttnLRP on a 4-bit nf4 copy loaded by the package's own loader (``relevance.load_in_4bit: true``)."""
    from axolotl_decselfmask.relevance.loading import load_relevance_model

    if not RECIPES[name].get("relevance_4bit"):
        return dict(status="skipped", reason="the recipe scores relevance in bf16 (relevance.load_in_4bit: false)")
    reason = qlora_unavailable(args)
    if reason:
        return dict(status="skipped", reason=reason)
    folder = random_checkpoint(name, args)
    reset_memory(args)
    model = load_relevance_model(str(folder), dtype="bfloat16", device=args.device, load_in_4bit=True)
    row = relevance("attnlrp", name, args, model=model)
    row.update(linear4bit=n_4bit(model), dtype="4-bit nf4, bf16 compute")
    return row


RUNNERS = {
    "stage1_lora": stage1_lora,
    "stage1_qlora": stage1_qlora,
    "stage2_lora": stage2_lora,
    "stage2_qlora": stage2_qlora,
    "relevance_attnlrp": lambda name, args: relevance("attnlrp", name, args),
    "relevance_grad_x_input": lambda name, args: relevance("grad_x_input", name, args),
    "relevance_attnlrp_4bit": relevance_4bit,
}


# ----------------------------------------------------------------------------- running and reporting
def environment(args) -> dict:
    import peft
    import transformers

    env = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
               peft=peft.__version__, cuda=torch.version.cuda, device=args.device, tiny=args.tiny)
    try:
        import bitsandbytes

        env["bitsandbytes"] = bitsandbytes.__version__
    except Exception as exc:
        env["bitsandbytes"] = f"not importable: {type(exc).__name__}"
    if args.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(args.device))
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count)
    return env


def model_summary(args) -> dict:
    """Each model's config as built (``--tiny``: shrunk) and its parameter count (on the meta device)."""
    from transformers import AutoModelForCausalLM

    out = {}
    for name in args.models:
        config = model_config(name, args.tiny)
        with torch.device("meta"):
            params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
        out[name] = dict(params=params, hidden_size=config.hidden_size, layers=config.num_hidden_layers,
                         heads=config.num_attention_heads, kv_heads=config.num_key_value_heads,
                         intermediate_size=config.intermediate_size, vocab_size=config.vocab_size,
                         tie_word_embeddings=config.tie_word_embeddings)
    return out


def run_part(part: str, name: str, args) -> dict:
    row = dict(part=part, model=name)
    reset_memory(args)
    t0 = time.perf_counter()
    try:
        result = RUNNERS[part](name, args)
        row["status"] = "ok"
        row.update(result)
        if row["status"] == "ok":
            row["peak_gb"] = memory_gb(args, peak=True)
            row["predicted_gb"] = predicted_gb(part, name, args, row)
    except Exception as exc:  # one failure does not stop the others
        row.update(status="failed", error=f"{type(exc).__name__}: {str(exc)[:500]}",
                   traceback=traceback.format_exc(limit=6)[-2000:])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    reset_memory(args)
    return row


def print_table(rows: list[dict]) -> None:
    print(f"{'part':<24}{'model':<24}{'status':<9}{'peak GB':>9}{'pred GB':>9}{'tokens/s':>11}{'min/1k':>8}  note")
    for r in rows:
        peak = "-" if r.get("peak_gb") is None else f"{r['peak_gb']:.2f}"
        pred = "-" if r.get("predicted_gb") is None else f"{r['predicted_gb']:.2f}"
        tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        per_1k = f"{r['minutes_per_1k_notes']:.1f}" if "minutes_per_1k_notes" in r else "-"
        note = r.get("reason") or r.get("error") or f"batch {r.get('batch')} x {r.get('seq_len')}"
        print(f"{r['part']:<24}{r['model']:<24}{r['status']:<9}{peak:>9}{pred:>9}{tps:>11}{per_1k:>8}  {note[:90]}")


def write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="2-layer models of hidden 64, sequences of 64 (CPU check)")
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    p.add_argument("--budget-s", type=float, default=360.0, help="start no part after this many seconds")
    p.add_argument("--qlora-cpu", action="store_true",
                   help="run the 4-bit parts on a CPU too (bitsandbytes' CPU backend: checks the code path only)")
    p.add_argument("--tmp-dir", default=None, help="where QLoRA's random checkpoints are saved (default: a temp dir)")
    args = p.parse_args(argv)
    if args.device == "cuda":
        args.device = "cuda:0"  # one index everywhere (device_map, the relevance loader)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device is available here; use --device cpu (with --tiny)")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.tmp_dir is None:
            args.tmp_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check_"))
        report = dict(environment=environment(args), models=model_summary(args), settings=dict(
            steps=args.steps, budget_s=args.budget_s, stage1_lora=STAGE1_LORA, stage2=STAGE2, recipes=RECIPES,
            examples_per_note=EXAMPLES_PER_NOTE), parts=[])
        print(json.dumps(report["environment"]), flush=True)
        for name in args.models:
            for part in args.parts:
                if time.perf_counter() - start > args.budget_s:
                    row = dict(part=part, model=name, status="skipped", reason=f"time budget ({args.budget_s:.0f} s)")
                else:
                    row = run_part(part, name, args)
                report["parts"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "traceback"}), flush=True)
                write(args.out, report)
        report["total_s"] = round(time.perf_counter() - start, 1)
        write(args.out, report)
    print_table(report["parts"])
    return report


if __name__ == "__main__":
    main()
