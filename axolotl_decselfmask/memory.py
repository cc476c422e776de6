"""The memory model: the peak memory of each stage, predicted from the recipe before any model is loaded.

Four stages, each its own peak (one process runs them one after the other, each freeing the last):

- ``relevance``: a forward pass that keeps every layer's activations, and the backward pass to the
  input embeddings (AttnLRP, gradient x input), on ``relevance.batch_size`` prompts of ``sequence_len``;
  only the item tokens' logits are computed (``logits_to_keep``).
- ``stage1``: one training step of masked reconstruction: LoRA on every linear layer, gradient
  checkpointing, ``micro_batch_size`` rows of ``sequence_len``, the loss over the whole vocabulary.
- ``stage2``: one training step of the classifier (TRL): a fresh LoRA of ``classification.lora_r``,
  ``classification.batch_size`` rows of ``classification.max_length`` (default ``sequence_len``),
  the logits of every position computed (the loss keeps only the answer's).
- ``evaluation``: the scorer's two forward passes without gradients (``stage2.scoring``), the larger
  of the two: the prompts' pass, each note's prompt once, ``eval_batch_size`` notes at a time, making
  their key/value cache (one layer's working set, the last position's logits); then the answers' pass,
  that cache repeated for each of the ``options`` (question, option) pairs scored together
  (``classification.option_chunk`` at most), the answers run on it, the logits of the
  :data:`ANSWER_TOKENS` answer positions only.

Each peak is a sum of named terms (bytes), so a user can see what to change:

- ``weights``: the linear layers at the load precision (fp32 4 bytes a parameter, bf16 2, 4-bit NF4
  with double quantisation :data:`NF4_BYTES`); the embedding and an untied output matrix stay at the
  compute precision (bitsandbytes quantises linear layers only, and never the output layer). Measured:
  a loaded model's resident size is its tensors' bytes, within 0.01 GB, in 16 and in 4 bits;
- ``lora``: the adapter's parameters (float32, PEFT's default), their gradients and the optimiser's
  states (AdamW: two float32 states; 8-bit AdamW, paged or not: two 1-byte states);
- ``activations``: with gradient checkpointing, every layer's input (``batch x seq x hidden``) plus the
  recomputed layer's working set; without it (relevance), every layer's working set;
- ``logits``: ``batch x seq x vocab x 4`` bytes (the loss upcasts to float32) times the copies alive at
  the peak of a training step (:data:`LOGITS_COPIES`). With a 151,936-token vocabulary this is the
  largest term: 8 rows of 1,024 tokens are 5 GB a copy.
- ``kv_cache``: the evaluation's key/value cache (``2 x layers x batch x seq x kv_heads x head_dim``),
  in the answers' pass times ``options``, the continuations that each get their own copy of it;
- ``overhead``: the CUDA context and allocator (:data:`CUDA_OVERHEAD`; 0 on a CPU).

What a stage holds at its peak was read from the code the stages run and checked against peaks
measured on a CPU, stage by stage and phase by phase (``benchmarks/memory_model.py`` writes measured
and predicted side by side, with the error, to ``benchmarks/results/memory_model.json``;
docs/recipes.md has the table); only the two activation terms' tensor counts are rules of thumb
(:data:`LAYER_HIDDEN_TENSORS` and the others). No GPU measured them yet. A CPU process holds more than
its live tensors: glibc keeps freed blocks under its mmap threshold mapped (the benchmark's
``default_malloc`` rows), which this model does not count, as it does not count a GPU allocator's
cache beyond :data:`CUDA_OVERHEAD`.
This module imports nothing heavy: the plugin's start check (:func:`start_check`) reads only the
model's ``config.json``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

GB = 1e9
STAGES = ("relevance", "stage1", "stage2", "evaluation")
#: bytes a weight of a quantised linear layer: 4 bits, plus an 8-bit absmax per 64 weights and a
#: float32 constant per 256 blocks (bitsandbytes' double quantisation)
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
PRECISION_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "nf4": NF4_BYTES}
#: optimiser bytes per trainable parameter (its states)
OPTIMISER_BYTES = {"adamw": 8.0, "adamw_8bit": 2.0, "paged_adamw_8bit": 2.0, "sgd": 0.0}
#: float32 copies of the logits alive at the peak of a training step. The loss (transformers'
#: ``ForCausalLMLoss``) upcasts the logits to float32 and takes their log-softmax, which autograd
#: keeps; the trainer keeps the loss only, so the compute-precision logits and their float32 copy are
#: freed before the backward pass, whose peak holds three copies: the kept log-softmax, its gradient
#: and the gradient of the upcast logits (12 bytes a logit; the forward pass peaks at 10 with bf16
#: logits: 2 + 4 + 4). Measured: 12.0 bytes a logit at SmolLM2's backward peak on a CPU.
LOGITS_COPIES = 3.0
#: the largest absolute error (predicted - measured) / measured of benchmarks/results/memory_model.json's
#: 16 CPU rows (SmolLM2-135M and Qwen2.5-Coder-0.5B, 16 and 4 bits, every stage; live tensors); a GPU's
#: allocator cache and CUDA context are not in it
STATED_ERROR = 0.05
#: the recomputed layer's working set in hidden-sized and intermediate-sized tensors (per token)
LAYER_HIDDEN_TENSORS = 12.0
LAYER_INTERMEDIATE_TENSORS = 4.0
#: relevance keeps every layer's working set (no checkpointing), and its backward a second one
RELEVANCE_HIDDEN_TENSORS = 10.0
RELEVANCE_INTERMEDIATE_TENSORS = 3.0
#: the answer positions whose logits the evaluation keeps per continuation: the label's tokens and
#: the end-of-turn marker (a label of up to three tokens; "yes" and "no" are one)
ANSWER_TOKENS = 4
#: bytes a logit the evaluation holds: the compute-precision logits, their float32 copy and its log-softmax
EVAL_LOGIT_BYTES = 2.0 + 4.0 + 4.0
#: the CUDA context, cuBLAS workspaces and the caching allocator's fragmentation (a measured rule of thumb)
CUDA_OVERHEAD = 1.0 * GB


@dataclass(frozen=True)
class Shape:
    """A decoder's shape (the keys of its ``config.json``); ``extra_params``: parameters outside the
    decoder (a vision tower) loaded with it."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    extra_params: int = 0

    @property
    def linear_params(self) -> int:
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return self.layers * (attn + 3 * self.hidden * self.intermediate)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.layers * 2 * self.hidden + self.extra_params

    def lora_params(self, rank: int) -> int:
        """LoRA of ``rank`` on every linear layer (q, k, v, o, gate, up, down)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        per_layer = (self.hidden + q) * 2 + (self.hidden + kv) * 2 + (self.hidden + self.intermediate) * 3
        return self.layers * rank * per_layer


def shape_from_config(config: dict) -> Shape:
    """A :class:`Shape` from a ``config.json`` (a multimodal one: its ``text_config``)."""
    text = config.get("text_config") or config
    hidden = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    return Shape(hidden=hidden, layers=int(text["num_hidden_layers"]), intermediate=int(text["intermediate_size"]),
                 heads=heads, kv_heads=int(text.get("num_key_value_heads") or heads),
                 head_dim=int(text.get("head_dim") or hidden // heads), vocab=int(text["vocab_size"]),
                 tied=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", True))))


#: the recipes' models, from their public config.json on the Hugging Face hub (Gemma 3 4B: the text
#: decoder, and its SigLIP vision tower as extra parameters)
KNOWN_SHAPES = {
    "meta-llama/Llama-3.2-1B-Instruct": Shape(2048, 16, 8192, 32, 8, 64, 128256, True),
    "meta-llama/Llama-3.2-3B-Instruct": Shape(3072, 28, 8192, 24, 8, 128, 128256, True),
    "meta-llama/Llama-3.1-8B-Instruct": Shape(4096, 32, 14336, 32, 8, 128, 128256, False),
    "mistralai/Mistral-7B-Instruct-v0.3": Shape(4096, 32, 14336, 32, 8, 128, 32768, False),
    "Qwen/Qwen3-1.7B": Shape(2048, 28, 6144, 16, 8, 128, 151936, True),
    "Qwen/Qwen3-8B": Shape(4096, 36, 12288, 32, 8, 128, 151936, False),
    "google/gemma-3-1b-it": Shape(1152, 26, 6912, 4, 1, 256, 262144, True),
    "google/gemma-3-4b-it": Shape(2560, 34, 10240, 8, 4, 256, 262208, True, extra_params=417_000_000),
    "microsoft/Phi-3.5-mini-instruct": Shape(3072, 32, 8192, 32, 32, 96, 32064, False),
}


@dataclass(frozen=True)
class Run:
    """What one stage runs: precision of the weights (``fp32``, ``bf16``, ``nf4``) and of the compute
    (``fp32`` or ``bf16``), batch and sequence length, LoRA rank (0: none), optimiser, gradient
    checkpointing, ``device`` (``cuda``: the CUDA overhead counted) and, for the evaluation,
    ``options``: the (question, option) pairs scored together on each prompt's cache."""

    weights: str = "bf16"
    compute: str = "bf16"
    batch: int = 1
    seq: int = 1024
    rank: int = 16
    optimiser: str = "adamw"
    checkpointing: bool = True
    device: str = "cuda"
    options: int = 1


def weight_bytes(shape: Shape, run: Run) -> float:
    embed = PRECISION_BYTES[run.compute if run.weights == "nf4" else run.weights]
    return shape.linear_params * PRECISION_BYTES[run.weights] + (shape.embedding_params + shape.extra_params) * embed


def lora_bytes(shape: Shape, run: Run) -> float:
    if run.rank <= 0:
        return 0.0
    return shape.lora_params(run.rank) * (4.0 + 4.0 + OPTIMISER_BYTES[run.optimiser])


def logits_bytes(shape: Shape, batch: int, seq: int) -> float:
    """One float32 copy of the logits: ``batch x seq x vocab x 4`` bytes."""
    return float(batch) * seq * shape.vocab * 4


def _layer_bytes(shape: Shape, run: Run, hidden_tensors: float, intermediate_tensors: float) -> float:
    act = PRECISION_BYTES[run.compute]
    return run.batch * run.seq * (hidden_tensors * shape.hidden + intermediate_tensors * shape.intermediate) * act


def training_activation_bytes(shape: Shape, run: Run) -> float:
    act = PRECISION_BYTES[run.compute]
    working = _layer_bytes(shape, run, LAYER_HIDDEN_TENSORS, LAYER_INTERMEDIATE_TENSORS)
    if not run.checkpointing:
        return shape.layers * working
    return shape.layers * run.batch * run.seq * shape.hidden * act + working


def kv_cache_bytes(shape: Shape, run: Run) -> float:
    """The evaluation's key/value cache: each prompt's, repeated for its ``options`` continuations
    (``scoring.score_questions`` repeats every row of the prompts' cache in place, one layer at a time)."""
    per_row = 2.0 * shape.layers * run.seq * shape.kv_heads * shape.head_dim * PRECISION_BYTES[run.compute]
    return per_row * run.batch * max(1, run.options)


def stage_terms(stage: str, shape: Shape, run: Run) -> dict[str, float]:
    """The named terms (bytes) of ``stage``'s peak."""
    terms = {"weights": weight_bytes(shape, run), "overhead": CUDA_OVERHEAD if run.device == "cuda" else 0.0}
    if stage in ("stage1", "stage2"):
        terms["lora"] = lora_bytes(shape, run)
        terms["activations"] = training_activation_bytes(shape, run)
        terms["logits"] = logits_bytes(shape, run.batch, run.seq) * LOGITS_COPIES
    elif stage == "relevance":
        terms["activations"] = shape.layers * _layer_bytes(shape, run, RELEVANCE_HIDDEN_TENSORS,
                                                           RELEVANCE_INTERMEDIATE_TENSORS)
        terms["logits"] = logits_bytes(shape, run.batch, 8) * 2  # the item tokens' logits and their gradient
    elif stage == "evaluation":
        terms.update(max(evaluation_passes(shape, run), key=lambda t: sum(t.values())))
    else:
        raise ValueError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    return terms


def evaluation_passes(shape: Shape, run: Run) -> list[dict[str, float]]:
    """The terms of the evaluation's two passes, which do not overlap: the prompts' (their key/value
    cache, one layer's working set, the last position's logits) and the answers' (the cache repeated
    for the ``options`` continuations, their answer positions' logits)."""
    rows = run.batch * max(1, run.options)
    logit = EVAL_LOGIT_BYTES / 4  # logits_bytes counts 4 bytes a logit
    prompts = {"kv_cache": kv_cache_bytes(shape, replace(run, options=1)),
               "activations": _layer_bytes(shape, run, LAYER_HIDDEN_TENSORS / 2, LAYER_INTERMEDIATE_TENSORS / 2),
               "logits": logits_bytes(shape, run.batch, 1) * logit}
    answers = {"kv_cache": kv_cache_bytes(shape, run), "activations": 0.0,
               "logits": logits_bytes(shape, rows, ANSWER_TOKENS) * logit}
    return [prompts, answers]


def peak_bytes(stage: str, shape: Shape, run: Run) -> float:
    return sum(stage_terms(stage, shape, run).values())


# ------------------------------------------------------------------------------ a recipe's stages

#: the recipe key that sets each stage's batch (what to lower when a stage does not fit)
BATCH_KEYS = {"relevance": "decselfmask.relevance.batch_size", "stage1": "micro_batch_size",
              "stage2": "decselfmask.classification.batch_size",
              "evaluation": "decselfmask.classification.eval_batch_size"}
#: the plugin's defaults where the recipe sets nothing (args.py)
DEFAULTS = {"relevance_batch": 4, "stage2_batch": 8, "eval_batch": 8, "stage2_rank": 32, "sequence_len": 2048,
            "option_chunk": 8}


def optimiser_kind(name: str | None) -> str:
    name = (name or "adamw_torch_fused").lower()
    return "paged_adamw_8bit" if "8bit" in name else ("sgd" if "sgd" in name else "adamw")


def scored_options(block: dict) -> int:
    """The continuations scored together on one prompt's cache at the evaluation: the (question,
    option) pairs of the recipe's task with the most (``multi_label: true``: a yes/no question per
    label), at most ``classification.option_chunk``; that chunk where a task's labels are not listed."""
    cls = block.get("classification") or {}
    chunk = int(cls.get("option_chunk") or DEFAULTS["option_chunk"])
    pairs = []
    for task in [cls, *(block.get("tasks") or [])]:
        labels = task.get("labels") or cls.get("labels") or []
        multi = task.get("multi_label", cls.get("multi_label")) is True
        pairs.append(2 * len(labels) if multi else len(labels))
    return min(chunk, max(pairs)) if all(pairs) else chunk


def recipe_shape(cfg: dict) -> Shape | None:
    """The shape of the recipe's ``base_model``: its local ``config.json``, else :data:`KNOWN_SHAPES`."""
    base = str(cfg.get("base_model") or "")
    config = Path(base) / "config.json"
    if config.is_file():
        return shape_from_config(json.loads(config.read_text()))
    return KNOWN_SHAPES.get(base)


def recipe_runs(cfg: dict, compute: str = "bf16", device: str = "cuda") -> dict[str, Run]:
    """Each stage's :class:`Run` as the recipe sets it (``compute``: the precision the run trains in).

    QLoRA (``adapter: qlora`` or ``load_in_4bit``) loads stages 1 and 2 and the evaluation in 4 bits;
    relevance in 4 bits where ``relevance.load_in_4bit`` says so. A relevance batch holds
    ``batch_size`` texts times ``items_per_text`` prompts (counted whole: an upper bound); the
    evaluation scores :func:`scored_options` continuations on each prompt."""
    block = cfg.get("decselfmask") or {}
    rel, cls = block.get("relevance") or {}, block.get("classification") or {}
    four_bit = bool(cfg.get("load_in_4bit")) or cfg.get("adapter") == "qlora"
    base = "nf4" if four_bit else compute
    seq = int(cfg.get("sequence_len") or DEFAULTS["sequence_len"])
    cls_seq = int(cls.get("max_length") or seq)
    checkpointing = bool(cfg.get("gradient_checkpointing", True))
    common = dict(compute=compute, device=device)
    items = max(1, int(block.get("items_per_text") or 1))
    return {
        "relevance": Run(weights="nf4" if rel.get("load_in_4bit") else compute, batch=int(
            rel.get("batch_size") or DEFAULTS["relevance_batch"]) * items, seq=seq, rank=0, **common),
        "stage1": Run(weights=base, batch=int(cfg.get("micro_batch_size") or 1), seq=seq,
                      rank=int(cfg.get("lora_r") or 8) if cfg.get("adapter") else 0,
                      optimiser=optimiser_kind(cfg.get("optimizer")), checkpointing=checkpointing, **common),
        "stage2": Run(weights=base, batch=int(cls.get("batch_size") or DEFAULTS["stage2_batch"]), seq=cls_seq,
                      rank=int(cls.get("lora_r") or DEFAULTS["stage2_rank"]), checkpointing=checkpointing, **common),
        "evaluation": Run(weights=base, batch=int(cls.get("eval_batch_size") or DEFAULTS["eval_batch"]),
                          seq=cls_seq, rank=0, options=scored_options(block), **common),
    }


@dataclass(frozen=True)
class Prediction:
    stage: str
    peak: float
    terms: dict
    run: Run

    def line(self) -> str:
        parts = ", ".join(f"{k} {v / GB:.1f}" for k, v in sorted(self.terms.items(), key=lambda kv: -kv[1]) if v)
        return f"{self.stage}: {self.peak / GB:.1f} GB ({parts})"

    def as_dict(self) -> dict:
        return {"stage": self.stage, "peak_gb": round(self.peak / GB, 2),
                "terms_gb": {k: round(v / GB, 3) for k, v in self.terms.items()}, "run": asdict(self.run)}


def predict_recipe(cfg: dict, compute: str = "bf16", device: str = "cuda") -> list[Prediction] | None:
    """Every stage's predicted peak for the recipe ``cfg`` (None when its model's shape is unknown)."""
    shape = recipe_shape(cfg)
    if shape is None:
        return None
    out = []
    for stage, run in recipe_runs(cfg, compute, device).items():
        terms = stage_terms(stage, shape, run)
        out.append(Prediction(stage, sum(terms.values()), terms, run))
    return out


def key_to_change(prediction: Prediction, cfg: dict) -> str:
    """The recipe key that lowers this stage's peak most: its batch, unless the weights dominate."""
    terms = prediction.terms
    if terms["weights"] >= max(v for k, v in terms.items() if k != "weights") and prediction.run.weights != "nf4":
        return "decselfmask.relevance.load_in_4bit: true" if prediction.stage == "relevance" else \
            "adapter: qlora with load_in_4bit: true"
    return f"{BATCH_KEYS[prediction.stage]} (now {prediction.run.batch})"


def device_memory(device: str) -> tuple[float, str]:
    """(bytes, words): the GPU's total memory on CUDA, else the machine's available RAM."""
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(0)
        return float(props.total_memory), f"this GPU's {props.total_memory / GB:.1f} GB ({props.name})"
    available = available_ram()
    return available, f"this machine's {available / GB:.1f} GB of available RAM"


def available_ram() -> float:
    """Bytes of RAM the kernel says are available (``MemAvailable`` of /proc/meminfo), else the free
    pages (``os.sysconf``): read without psutil, which is only the experiments extra's."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def start_check(cfg: dict, compute: str = "bf16", device: str = "cuda", memory: tuple[float, str] | None = None,
                stages: tuple[str, ...] = STAGES) -> str | None:
    """One warning line when a stage's predicted peak exceeds the device's memory (the first such
    stage, the key to change, the others named), else None. ``memory``: (bytes, words), default
    :func:`device_memory`."""
    predictions = predict_recipe(cfg, compute, device)
    if not predictions:
        return None
    limit, words = memory or device_memory(device)
    over = [p for p in predictions if p.stage in stages and p.peak > limit]
    if not over:
        return None
    first = over[0]
    others = "; also " + ", ".join(f"{p.stage} {p.peak / GB:.1f} GB" for p in over[1:]) if over[1:] else ""
    return (f"decselfmask: {first.stage} is predicted to need {first.line().split(': ', 1)[1]}, more than "
            f"{words}: lower {key_to_change(first, cfg)}{others} (the memory model: docs/recipes.md)")


def with_batch(run: Run, batch: int) -> Run:
    return replace(run, batch=batch)


def largest_batch(stage: str, shape: Shape, run: Run, limit: float) -> int:
    """The largest batch (a power of two, at least 1) whose predicted peak fits ``limit``."""
    batch = 1
    while batch < 1024 and peak_bytes(stage, shape, with_batch(run, batch * 2)) <= limit:
        batch *= 2
    return batch if peak_bytes(stage, shape, with_batch(run, batch)) <= limit else 0


def gb(value: float) -> float:
    return math.floor(value / GB * 10 + 0.5) / 10


def check_at_start(cfg: dict) -> str | None:
    """The plugin's start check (``register``, once Axolotl runs a command): :func:`start_check` on
    this machine (CUDA: the GPU's memory; else the available RAM), in the precision the plugin
    resolved (``bf16`` in the recipe). Never raises: an unknown model or a failed reading is no line."""
    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        compute = "bf16" if cfg.get("bf16") in (True, "true") else "fp32"
        return start_check(cfg, compute, device)
    except Exception:  # noqa: BLE001 - a forecast must never stop a run
        return None
