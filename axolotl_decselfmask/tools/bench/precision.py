"""``bench dtype``: float32 against bfloat16 on this machine, for the three kinds of work a run does.

- relevance: grad x input (the default method) on a few notes, one call a note;
- a stage-1 training step: LoRA r16 on every linear layer, one batch of 4 masked-reconstruction
  examples of about 192 tokens, forward, backward and AdamW step (the quickstart's shape);
- an evaluation batch: constrained scoring of the 5 quickstart labels
  (:func:`axolotl_decselfmask.stage2.scoring.score_options`) for one batch of texts.

Each part runs once untimed on a short input (first-call costs), then ``repeats`` times
timed, float32 and bfloat16 interleaved (their order alternates), so a shared machine's load
hits both alike; the ratio is the median of the paired bf16/fp32 ratios. bfloat16 training
runs as the Hugging Face trainer runs it with ``bf16: true``: weights in bfloat16, the LoRA
weights in float32 (peft's default), the forward under ``torch.autocast("cpu", bfloat16)``.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

import torch

from axolotl_decselfmask.tools.bench.common import (
    DEFAULT_METHOD,
    load_model,
    product_fast_backward,
    table,
    timed,
    truncate_to_tokens,
)

DTYPES = ("float32", "bfloat16")
QUICKSTART_LABELS = ["neoplasms", "digestive system diseases", "nervous system diseases", "cardiovascular diseases",
                     "general pathological conditions"]
QUICKSTART_QUESTION = "Which disease category is the abstract above about?"


@dataclass(frozen=True)
class DtypeSizes:
    """How much work each part does (small: bfloat16 may be 20-40x slower where it is emulated)."""

    notes: int = 2  # relevance: notes, one grad x input call each
    note_tokens: int = 96
    train_batch: int = 4  # stage 1: examples in the one training batch
    train_tokens: int = 192  # about this many tokens an example (template and answer included)
    eval_texts: int = 4  # evaluation: texts in the one scoring batch (5 options each)
    eval_tokens: int = 96
    repeats: int = 1


def machine_lines() -> list[str]:
    """The header: what the numbers were measured on and what the plugin would choose here."""
    import os

    from axolotl_decselfmask.hardware import decide_precision, read_cpu_info

    info, precision = read_cpu_info(), decide_precision()
    env = [f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                                            "OMP_NUM_THREADS") if os.environ.get(k)]
    return [(f"cpu: {info.model_name}; torch.backends.cpu.get_cpu_capability(): "
             f"{torch.backends.cpu.get_cpu_capability()} ({info.describe()})"),
            f"threads: {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs; torch {torch.__version__}"
            + (f"; environment: {' '.join(env)}" if env else ""),
            f"plugin's precision (hardware.decide_precision()): {precision.dtype} ({precision.reason})"]


def training_rows(tokenizer, texts: list[str], n: int, tokens: int) -> dict[str, torch.Tensor]:
    """A right-padded batch of ``n`` masked-reconstruction examples of about ``tokens`` tokens:
    each text cut to fit, three of its words masked, the answer supervised (as stage 1 trains)."""
    from axolotl_decselfmask.args import DEFAULT_MASK_SYSTEM
    from axolotl_decselfmask.prompts import (
        reconstruction_messages,
        tokenize_for_training,
    )
    from axolotl_decselfmask.stage1.examples import build_examples

    rows = []
    for text in (texts * n)[:n]:
        text = truncate_to_tokens(tokenizer, text, max(tokens - 40, 8))
        words = [(m.start(), m.end()) for m in re.finditer(r"\w{4,}", text)]
        spans = [words[int(f * (len(words) - 1))] for f in (0.2, 0.5, 0.8)] if len(words) >= 3 else words[:1]
        ex = build_examples(text, sorted(set(spans)), "<mask>", spans_per_example=3)[0]
        rows.append(tokenize_for_training(tokenizer, reconstruction_messages(ex.masked_text, ex.answer,
                                                                             DEFAULT_MASK_SYSTEM)))
    width = max(len(r["input_ids"]) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = {k: torch.full((n, width), v, dtype=torch.long) for k, v in
           (("input_ids", pad), ("attention_mask", 0), ("labels", -100))}
    for i, r in enumerate(rows):
        for key, tensor in out.items():
            tensor[i, : len(r[key])] = torch.tensor(r[key])
    return out


def lora_trainer(model_path, dtype: str):
    """A fresh LoRA r16 (alpha 32, dropout 0.05) on every linear layer, and its AdamW (lr 3e-4)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=getattr(torch, dtype))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)


def train_step(model, optimizer, batch: dict, dtype: str) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def build_parts(model_path, texts: list[str], sizes: DtypeSizes, dtype: str) -> dict[str, tuple[str, object]]:
    """part -> (what it does, a callable doing it once), for ``dtype``; each callable warmed up."""
    from axolotl_decselfmask.args import DEFAULT_CLASSIFY_SYSTEM
    from axolotl_decselfmask.registry import get_method
    from axolotl_decselfmask.relevance import build_relevance_prompt
    from axolotl_decselfmask.stage2.scoring import score_options

    model, tok = load_model(model_path, dtype)
    method = get_method(DEFAULT_METHOD)(model, tok, "sum_logprob", "middle",
                                        fast_backward=product_fast_backward(model))
    notes = [truncate_to_tokens(tok, t, sizes.note_tokens) for t in texts[: sizes.notes]]
    prompts = [build_relevance_prompt(tok, t, QUICKSTART_LABELS[0], QUICKSTART_QUESTION) for t in notes]
    method.attribute([build_relevance_prompt(tok, truncate_to_tokens(tok, notes[0], 16), QUICKSTART_LABELS[0],
                                             QUICKSTART_QUESTION)])
    lora, optimizer = lora_trainer(model_path, dtype)
    batch = training_rows(tok, texts, sizes.train_batch, sizes.train_tokens)
    train_step(lora, optimizer, {k: v[:1, :32] for k, v in batch.items()}, dtype)
    evals = [truncate_to_tokens(tok, t, sizes.eval_tokens) for t in (texts * sizes.eval_texts)[: sizes.eval_texts]]
    score = lambda ts: score_options(model, tok, ts, QUICKSTART_LABELS, QUICKSTART_QUESTION,
                                     DEFAULT_CLASSIFY_SYSTEM, progress=False, batch_size=len(ts))
    score([truncate_to_tokens(tok, evals[0], 16)])
    width = batch["input_ids"].shape[1]
    return {
        "relevance": (f"{DEFAULT_METHOD}, {len(prompts)} notes x {sizes.note_tokens} tokens, one call a note",
                      lambda: [method.attribute([p]) for p in prompts]),
        "stage1_step": (f"stage-1 LoRA r16 all-linear step, {sizes.train_batch} x {width} tokens, AdamW",
                        lambda: train_step(lora, optimizer, batch, dtype)),
        "evaluation": ((f"evaluation batch, {len(evals)} texts x {sizes.eval_tokens} tokens x "
                        f"{len(QUICKSTART_LABELS)} options"), lambda: score(evals)),
    }


def run_dtype(model_path, texts: list[str], sizes: DtypeSizes = DtypeSizes(), progress: bool = True) -> list[dict]:
    """One row a part: seconds in float32 and in bfloat16 (medians over the repeats) and the
    median of the paired bf16/fp32 ratios."""
    from tqdm.auto import tqdm

    parts = {dtype: build_parts(model_path, texts, sizes, dtype) for dtype in DTYPES}
    names = list(parts[DTYPES[0]])
    times: dict[tuple[str, str], list[float]] = {(p, d): [] for p in names for d in DTYPES}
    bar = tqdm(total=sizes.repeats * len(names) * len(DTYPES), desc="dtype bench", unit="run",
               disable=not progress, dynamic_ncols=True)
    for rep in range(sizes.repeats):
        for i, part in enumerate(names):
            for dtype in (DTYPES if (rep + i) % 2 == 0 else DTYPES[::-1]):
                bar.set_postfix_str(f"{part} {dtype}")
                times[(part, dtype)].append(timed(parts[dtype][part][1])[0])
                bar.update(1)
    bar.close()
    rows = []
    for part in names:
        fp32, bf16 = times[(part, "float32")], times[(part, "bfloat16")]
        rows.append({"benchmark": "dtype", "part": part, "what": parts["float32"][part][0], "repeats": sizes.repeats,
                     "float32_s": statistics.median(fp32), "bfloat16_s": statistics.median(bf16),
                     "bf16_over_fp32": statistics.median(b / f for b, f in zip(bf16, fp32))})
    return rows


def format_dtype(rows: list[dict], header: list[str] | None = None) -> str:
    lines = [*(header if header is not None else machine_lines())]
    lines.append(table(["part", "float32 s", "bfloat16 s", "bf16/fp32"],
                       [[r["what"], f"{r['float32_s']:.2f}", f"{r['bfloat16_s']:.2f}", f"{r['bf16_over_fp32']:.2f}"]
                        for r in rows]))
    return "\n".join(lines)
