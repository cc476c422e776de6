#!/usr/bin/env python
"""GPU check: peak memory, tokens/s and notes/s of every stage of the recipes, on random-weight models
(issues 14, 31, 32).

docs/recipes.md gives each stage's *predicted* peak memory (the memory model,
``axolotl_decselfmask/memory.py``) and time *estimates*; no GPU was used to write them. This script
measures them on one GPU, with models of the recipes' real shapes and random weights (no hub, no data,
no tokenizer download), and writes one JSON plus a table with each measured peak beside the memory
model's prediction for the same settings.

What it runs. The models are Llama 3.2 1B Instruct and Llama 3.1 8B Instruct as their public
config.json gives them (``CONFIGS``: hidden size, layers, heads, vocabulary, llama3 rope, tying; 1.24B
and 8.03B parameters) with random weights (seed 0). Every batch size, length, rank and precision is
read from the recipes themselves (``recipes/llama-3.2-1b-instruct.yml``, ``recipes/llama-3.1-8b-instruct.yml``)
through the memory model's own reading of a recipe (``memory.recipe_runs``), so each measured part and its
prediction have the same settings: stage 1 ``micro_batch_size`` x ``sequence_len`` (4 x 1024 for the 1B,
2 x 1024 for the 8B) with LoRA ``lora_r``/``lora_alpha``/``lora_dropout`` (16/32/0.05), stage 2
``classification.batch_size`` x ``sequence_len`` (8 x 1024, 2 x 1024) with LoRA r 32/alpha 64, the
evaluation ``classification.eval_batch_size`` notes of ``sequence_len`` (8, 2), relevance
``relevance.batch_size`` x ``items_per_text`` prompts of ``sequence_len`` (2, 1). Texts are random words
of a word-level tokenizer built in memory (one word, one token; a Llama 3 style chat template), so a
note fills a prompt to exactly ``sequence_len`` tokens, rendered and tokenised by the package's own
prompt functions (``prompts.reconstruction_messages``, ``classification_messages``,
``tokenize_for_training``: labels on the answer only).

The parts, for each model; the recipes are QLoRA recipes, so their own parts (4 bits; relevance as the
recipe sets it: bf16 for the 1B, 4 bits for the 8B) run first for both models, then the 16-bit variants
(a LoRA recipe's), so a run cut by its time budget keeps the recipes' own figures:

1. ``stage1_qlora`` / ``stage1_lora``: stage-1 optimiser steps (masked reconstruction examples).
   Axolotl trains stage 1, so the loop is the script's stand-in for Axolotl's trainer: the model loaded
   with the package's ``quantized.bnb_config`` (the ``BitsAndBytesConfig`` of Axolotl 0.19's QLoRA
   loader: NF4, double quantisation, bf16 compute), then as Axolotl's loader prepares it
   (``peft.prepare_model_for_kbit_training``, then the norms and embeddings back to bf16), LoRA on every
   linear layer (``lora_target_linear``), gradient checkpointing, AdamW (fused on CUDA), bf16 autocast;
   forward + backward + step, one warm-up then ``--steps`` timed. No ``trainable_token_indices``: a Llama 3
   tokenizer has reserved special tokens, so the mask is one of them and no row is added or trained
   (``mask_token.py``; the added-row case is Qwen's, Mistral's, SmolLM2's). The trained adapter is saved as
   Axolotl saves ``output_dir``: stage 2 starts from it. ``stage1_lora``: the bf16 model, no quantisation.
2. ``stage2_qlora`` / ``stage2_lora``: the joint stage-2 classifier's steps. The model is the package's:
   ``quantized.load_start`` (the 4-bit base with the stage-1 adapter applied frozen and unmerged, adapter
   ``stage1``) and ``quantized.add_trainable_adapter`` (the trainable stage-2 LoRA beside it), and the
   trained classifier is saved as ``training.train_classifier`` saves it (``keep_trained_adapter_only``,
   ``write_combined_adapter``: one rank-48 adapter with stage 1 in it). The loop is the script's stand-in for
   TRL's ``SFTTrainer`` (TRL is not on the GPU machine, and ``stage2/training.py`` imports ``datasets``):
   gradient checkpointing, ``enable_input_require_grads``, the trainable weights in bf16 on a quantised
   model (what SFTTrainer does), AdamW, bf16 autocast, rows of the package's classification prompt with the
   loss on the answer (the label and the end of turn). ``stage2_lora``: a fresh LoRA on the bf16 model
   (as SFTTrainer's ``peft_config``).
3. ``evaluation_4bit`` / ``evaluation``: the evaluation's scoring of the trained classifier, the package's
   ``scoring.score_options`` (what ``Scorer`` runs for a single-label task: each note's prompt once with its
   key/value cache, ``eval_batch_size`` notes at a time, the 2 options' answers on it) on random notes
   that fill ``sequence_len``; one warm-up batch, then 16 notes or ``--steps`` batches, whichever is more,
   timed; notes/s. The classifier
   is loaded as the evaluation loads it: QLoRA, ``model.load_classifier_model`` (the 4-bit base with the
   combined adapter unmerged, ``quantized.load_classifier``); 16 bits, the stage-2 adapter merged into the
   model (``merge_and_unload``, as ``classifier_after_training``).
4. ``predict_4bit`` / ``predict``: ``axolotl decselfmask predict`` for one task on ``--predict-notes``
   random notes, through the package's own ``stage2.predict.predict`` function (the command without its
   argument parsing and ``read_recipe``, which needs Axolotl's ``DictDefault``: the recipe is given as a
   dict with attribute access, ``Recipe``). It runs everything the command runs: the trained run's checks
   (``trained_tasks``: the adapter, the saved decision ``stage2/calibration-<task>.json``, written here by
   the package's ``calibration_record``, calibration ``none``), the notes read in chunks of
   ``--predict-chunk``, the classifier loaded (``NoteLabeller``: tokenizer, chat template, prompt,
   ``load_classifier``), each chunk scored and decided (the evaluation's ``Scorer``), its shard written,
   the output assembled. ``notes_per_s`` counts the chunks after the first (scoring: cutting, tokenising,
   the forward passes, the decision; the first chunk also pays CUDA's first-use costs, and is given apart
   as ``first_chunk_s``); ``end_to_end_s`` is the whole call (load, read, score, write), ``load_s`` the
   classifier's load. The timing wraps ``NoteLabeller`` in a subclass that only reads the clock.
5. ``relevance_attnlrp`` / ``relevance_grad_x_input`` (bf16) and ``relevance_attnlrp_4bit``: the
   package's own relevance methods (``relevance.methods``) on prompts of random ids laid out as a
   relevance prompt (template, note, lead-in, a 5-token item), target ``sum_logprob``, one item per note;
   the 4-bit one on a copy loaded by the package's ``load_relevance_model(..., load_in_4bit=True)``.

Each part builds or loads its model afresh. ``peak_gb`` is ``torch.cuda.max_memory_allocated`` from the
moment the part's model is loaded (weights included) to its end (GB of 10^9 bytes, as the memory model and
docs/recipes.md), ``peak_reserved_gb`` the caching allocator's ``max_memory_reserved`` over the same time
(its unused blocks too), ``weights_gb`` what the loaded model holds and ``load_peak_gb`` the load's own
peak (it can pass through copies the steps never hold: ``prepare_model_for_kbit_training``'s float32
embeddings); the environment's ``cuda_context_gb`` is what the process holds outside the allocator (the CUDA
context). ``predicted_gb`` is the memory model's peak for that part's stage, precision, batch, length and
rank (``predicted_terms_gb``: its terms; ``predicted_run``: its settings; the predict parts are predicted as
the evaluation stage, which is what they run); it includes the model's 1 GB ``overhead`` for the context,
the cuBLAS workspaces and fragmentation, which ``peak_gb`` does not count. Throughput: ``tokens_per_s``
(training and relevance), ``notes_per_s`` (evaluation, predict, relevance), ``minutes_per_1k_notes`` (stage
1: 1.5 examples of ``sequence_len`` per note, docs/recipes.md's assumption). On a CPU there is no memory
reading (``peak_gb`` null).

Every part runs in its own try block: a failure is a row with ``status: failed``, its error and
traceback; a part whose package needs a module this machine cannot import (bitsandbytes; pydantic, which
the package's settings need, so stage 2's loader, scoring and predict; axolotl, trl, datasets, which no
part here needs) is a row with ``status: skipped`` and the reason. The JSON is rewritten after every
part, so a run stopped at its time limit still leaves what it measured; ``--budget-s`` starts no part
after that many seconds (those rows say so). The 4-bit parts and predict load the random weights from a
bf16 checkpoint saved once per model (2.5 GB, 16 GB for the 8B; ``--tmp-dir``) with the tokenizer.

On the lent GPU machine (no network; torch, transformers, peft, accelerate, pyyaml there; no axolotl,
trl, datasets, bitsandbytes or pydantic), from the repository root, with the ``run`` tool, one call:

    command: export PYTHONPATH=$PWD/.whl/site; set -o pipefail; PYTHONUNBUFFERED=1 python3
             benchmarks/gpu_check.py --out $OUT/gpu_check.json --budget-s 360 2>&1 | tee $OUT/gpu_check.log
    carry: [".whl/site"]     timeout_s: 480

(4 to 8 minutes expected: an estimate, since nothing has run on a GPU yet; the JSON is complete after
each part, so a run cut at timeout_s returns what it measured; a rerun of what failed, on the same warm
machine: the same command with ``--models ... --parts ...``). ``.whl/site``
(git-ignored, 12 MB) holds bitsandbytes stripped to its CUDA 13.0 library and pydantic with its three
dependencies, unpacked for Python 3.12; make it once, here (pip works here, not there):

    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d /tmp/whl bitsandbytes==0.50.2 \\
        pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.8.0 typing-inspection==0.4.5 \\
        typing-extensions==4.15.0
    mkdir -p .whl/site && for w in /tmp/whl/*.whl; do (cd .whl/site && unzip -q -o $w); done
    find .whl/site/bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*cuda130.so' ! -name '*cpu.so' -delete

(the ``.dist-info`` folders stay: transformers looks bitsandbytes' version up through them; the
bitsandbytes wheel's other CUDA/ROCm/XPU builds make it 43 MB zipped). Its CUDA library needs
``libcudart.so.13``, ``libcublas.so.13`` and ``libcublasLt.so.13``, which torch's nvidia packages bring
there (not yet seen loading on that machine). Without ``.whl/site`` the 4-bit parts (no bitsandbytes)
and the evaluation and predict parts (no pydantic) are skipped, their rows say why; stage 1, stage 2 in
16 bits and relevance run.

    python benchmarks/gpu_check.py --tiny --device cpu --out /tmp/gpu_check.json   # the CPU check

``--tiny`` keeps the models' structure (grouped-query attention, llama3 rope, tying) but shrinks them
(2 layers, hidden 64, vocabulary 512, every length 64) and runs every part on a CPU in about a second each,
the 4-bit ones on bitsandbytes' CPU backend (tests/unit/test_gpu_check.py). ``--without axolotl trl datasets``
makes those packages unimportable in the process, as on the GPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.abc
import json
import os
import platform
import random
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub (and that machine has no network)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
#: each model's recipe: every batch, length, rank and precision of the parts is read from it
RECIPE_FILES = {name: ROOT / "recipes" / f"{name}.yml" for name in CONFIGS}

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=512, bos_token_id=1, eos_token_id=2)
TINY_SEQ = 64
#: docs/recipes.md's assumption for stage 1's minutes per 1k notes: 1.5 examples of sequence_len a note
EXAMPLES_PER_NOTE = 1.5
#: the task the evaluation and predict parts score (the recipes' example task)
TASK = dict(task="gpu_check", labels=["yes", "no"], question="Does the patient have a pacemaker?")
#: the stage-1 answer (the masked span) in words
SPAN_WORDS = 5
#: the fewest notes the evaluation parts time (after a warm-up batch)
EVALUATION_NOTES = 16

#: every part, in the order they run for a model (the model's recipe's own parts first: :func:`plan`)
PARTS = ("stage1_qlora", "stage2_qlora", "evaluation_4bit", "predict_4bit", "relevance_attnlrp",
         "relevance_attnlrp_4bit", "stage1_lora", "stage2_lora", "evaluation", "predict", "relevance_grad_x_input")
#: each part's stage in the memory model and whether its weights are 4-bit
PART_STAGE = {
    "stage1_qlora": ("stage1", True), "stage1_lora": ("stage1", False),
    "stage2_qlora": ("stage2", True), "stage2_lora": ("stage2", False),
    "evaluation_4bit": ("evaluation", True), "evaluation": ("evaluation", False),
    "predict_4bit": ("evaluation", True), "predict": ("evaluation", False),
    "relevance_attnlrp": ("relevance", False), "relevance_grad_x_input": ("relevance", False),
    "relevance_attnlrp_4bit": ("relevance", True),
}
#: modules a part may need that a machine may lack: an ImportError of one makes the row "skipped"
CARRIED = {"bitsandbytes": ".whl/site (this script's docstring)", "pydantic": ".whl/site (this script's docstring)",
           "pydantic_core": ".whl/site", "annotated_types": ".whl/site", "typing_inspection": ".whl/site"}
OPTIONAL = set(CARRIED) | {"axolotl", "trl", "datasets"}
GB = 1e9  # the memory model's and docs/recipes.md's unit


# ----------------------------------------------------------------------------- settings
@functools.lru_cache(maxsize=None)
def recipe_yaml(name: str) -> dict:
    """The model's recipe as read (read once: treat it as read-only)."""
    import yaml

    return yaml.safe_load(RECIPE_FILES[name].read_text(encoding="utf-8"))


def is_cuda(args) -> bool:
    return args.device.startswith("cuda")


def runs(name: str, args) -> dict:
    """Each stage's :class:`memory.Run` as the memory model reads the model's recipe (``--tiny``: every
    length :data:`TINY_SEQ`); the measured parts use these batches, lengths and ranks."""
    from axolotl_decselfmask import memory

    cuda = is_cuda(args)
    out = memory.recipe_runs(recipe_yaml(name), compute="bf16" if cuda else "fp32", device="cuda" if cuda else "cpu")
    return {k: replace(r, seq=TINY_SEQ) if args.tiny else r for k, r in out.items()}


def part_run(part: str, name: str, args):
    """The memory model's Run of ``part``: its stage's, with the part's weight precision."""
    stage, four_bit = PART_STAGE[part]
    run = runs(name, args)[stage]
    return replace(run, weights="nf4" if four_bit else run.compute)


def recipe_settings(name: str) -> dict:
    """The recipe's LoRA settings and scoring settings the Run does not hold (the plugin's defaults where unset)."""
    raw = recipe_yaml(name)
    block = raw.get("decselfmask") or {}
    cls, rel = block.get("classification") or {}, block.get("relevance") or {}
    return dict(stage1_alpha=int(raw.get("lora_alpha") or 2 * int(raw.get("lora_r") or 8)),
                stage1_dropout=float(raw.get("lora_dropout") or 0.0),
                stage2_alpha=int(cls.get("lora_alpha", 64)), stage2_dropout=float(cls.get("lora_dropout", 0.05)),
                option_chunk=int(cls.get("option_chunk", 8)), relevance_method=rel.get("method", "attnlrp"),
                relevance_4bit=bool(rel.get("load_in_4bit")),
                qlora=raw.get("adapter") == "qlora" and bool(raw.get("load_in_4bit")))


def recipe_parts(name: str) -> set[str]:
    """The parts that are the recipe's own setting (QLoRA or LoRA; relevance in 4 bits or not)."""
    s = recipe_settings(name)
    own = {"stage1_qlora", "stage2_qlora", "evaluation_4bit", "predict_4bit"} if s["qlora"] else \
        {"stage1_lora", "stage2_lora", "evaluation", "predict"}
    own.add("relevance_attnlrp_4bit" if s["relevance_4bit"] else f"relevance_{s['relevance_method']}")
    return own


def plan(args) -> list[tuple[str, str]]:
    """(part, model) in the order they run: every model's recipe parts, then every model's other parts."""
    own = [(p, m) for m in args.models for p in args.parts if p in recipe_parts(m)]
    return own + [(p, m) for m in args.models for p in args.parts if p not in recipe_parts(m)]


class Recipe(dict):
    """The recipe as the package's functions read it (``cfg.key`` and ``cfg.get("key")``, a missing key
    None): the stand-in for Axolotl's ``DictDefault``, which is Axolotl's."""

    def __getattr__(self, key):
        if key.startswith("__"):
            raise AttributeError(key)
        return self.get(key)


def work_dir(name: str, args) -> Path:
    return Path(args.tmp_dir) / name


def checkpoint_dir(name: str, args) -> Path:
    return work_dir(name, args) / "base"


def run_dir(name: str, args, four_bit: bool) -> Path:
    """The ``output_dir`` of the model's run: the stage-1 adapter (QLoRA) and ``stage2/``."""
    return work_dir(name, args) / ("qlora" if four_bit else "lora")


def package_cfg(name: str, args, four_bit: bool) -> Recipe:
    """The recipe the package's stage-2, evaluation and predict functions get: the random checkpoint as
    ``base_model``, the run folder as ``output_dir``, the recipe's scoring settings, one task."""
    r = runs(name, args)
    s = recipe_settings(name)
    classification = dict(TASK, train_file="unused.jsonl", eval_batch_size=r["evaluation"].batch,
                          option_chunk=s["option_chunk"], batch_size=r["stage2"].batch, lora_r=r["stage2"].rank,
                          lora_alpha=s["stage2_alpha"], max_length=r["evaluation"].seq)
    return Recipe(base_model=str(checkpoint_dir(name, args)), output_dir=str(run_dir(name, args, four_bit)),
                  adapter="qlora" if four_bit else "lora", load_in_4bit=four_bit, sequence_len=r["evaluation"].seq,
                  bf16=is_cuda(args), gradient_checkpointing=True, trust_remote_code=False,
                  decselfmask={"classification": classification})


# ----------------------------------------------------------------------------- models, tokenizer, texts
def model_config(name: str, tiny: bool):
    from transformers import LlamaConfig

    values = dict(CONFIGS[name])
    values.pop("model_type")
    if tiny:
        values.update(TINY)
    return LlamaConfig(**values)


def dtype_for(args):
    return torch.bfloat16 if is_cuda(args) else torch.float32


def build_model(name: str, args):
    """A random-weight bf16 (float32 on a CPU) causal LM of the recipe model's shape (seed 0), on the device."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(args.device):
        model = AutoModelForCausalLM.from_config(model_config(name, args.tiny), dtype=dtype_for(args),
                                                 attn_implementation="sdpa")
    return model


SPECIAL = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<unk>",
           "<|reserved_special_token_0|>"]
#: a Llama 3 style chat template (header tokens, end of turn), whitespace around the content
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                 "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
_TOKENIZERS: dict = {}


def system_prompt(name: str) -> str:
    """The package's default system prompt ``name`` (``args.DEFAULT_MASK_SYSTEM``, ``DEFAULT_CLASSIFY_SYSTEM``),
    read from args.py's source: importing args.py imports pydantic, which stage 1 here does not need."""
    import ast

    tree = ast.parse((ROOT / "axolotl_decselfmask" / "args.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"axolotl_decselfmask/args.py defines no {name}")


def make_tokenizer(vocab_size: int):
    """A word-level tokenizer of ``vocab_size`` tokens built in memory (no download): the template's
    special tokens, the words of the prompts, then ``w0``, ``w1``, ...; text split on whitespace, so a
    note of n words is n tokens."""
    if vocab_size in _TOKENIZERS:
        return _TOKENIZERS[vocab_size]
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    fixed = " ".join(["system user assistant Options: -", system_prompt("DEFAULT_CLASSIFY_SYSTEM"),
                      system_prompt("DEFAULT_MASK_SYSTEM"), TASK["question"], *TASK["labels"]]).split()
    vocab: dict[str, int] = {}
    for word in SPECIAL + fixed:
        vocab.setdefault(word, len(vocab))
    vocab.update({f"w{i}": len(vocab) + i for i in range(vocab_size - len(vocab))})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=SPECIAL[0], eos_token=SPECIAL[1],
                                        unk_token="<unk>", additional_special_tokens=SPECIAL[2:4] + SPECIAL[5:])
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.pad_token = tokenizer.eos_token  # as the package's load_tokenizer and Axolotl do for Llama
    _TOKENIZERS[vocab_size] = tokenizer
    return tokenizer


def tokenizer_for(name: str, args):
    return make_tokenizer(model_config(name, args.tiny).vocab_size)


def random_words(n: int, vocab_words: int, rng: random.Random) -> str:
    return " ".join(f"w{rng.randrange(vocab_words)}" for _ in range(n))


def words_to_fill(tokenizer, messages_for, seq: int) -> int:
    """How many words a text needs for ``messages_for(text)`` to tokenise to ``seq`` tokens."""
    from axolotl_decselfmask.prompts import tokenize_for_training

    n = seq - len(tokenize_for_training(tokenizer, messages_for(""))["input_ids"])
    if n < 2:
        raise ValueError(f"a prompt of {seq} tokens leaves no room for a text")
    return n


def stage1_rows(tokenizer, n: int, seq: int, seed: int) -> list[dict]:
    """``n`` masked-reconstruction examples of ``seq`` tokens, made as the dataset type makes them
    (``reconstruction_messages`` with the mask system prompt, ``tokenize_for_training``: loss on the answer)."""
    from axolotl_decselfmask.prompts import reconstruction_messages, tokenize_for_training

    mask_system = system_prompt("DEFAULT_MASK_SYSTEM")
    rng, words = random.Random(seed), len(tokenizer) - 64
    answer = random_words(SPAN_WORDS, words, rng)
    k = words_to_fill(tokenizer, lambda text: reconstruction_messages(text, answer, mask_system), seq)
    rows = []
    for _ in range(n):
        text = random_words(k - 1, words, rng).split()
        text.insert(len(text) // 2, SPECIAL[5])  # the mask: a reserved special token, as on Llama 3
        rows.append(tokenize_for_training(tokenizer, reconstruction_messages(" ".join(text), answer,
                                                                             mask_system)))
    return rows


def classification_fill(tokenizer, seq: int) -> int:
    from axolotl_decselfmask.prompts import classification_messages

    return words_to_fill(tokenizer, lambda text: classification_messages(
        text, TASK["question"], TASK["labels"], system_prompt("DEFAULT_CLASSIFY_SYSTEM"), answer=TASK["labels"][0]),
        seq)


def notes(tokenizer, n: int, seq: int, seed: int) -> list[str]:
    """``n`` random notes whose classification prompt with its answer is ``seq`` tokens."""
    rng, k = random.Random(seed), classification_fill(tokenizer, seq)
    return [random_words(k, len(tokenizer) - 64, rng) for _ in range(n)]


def stage2_rows(tokenizer, n: int, seq: int, seed: int) -> list[dict]:
    """``n`` classification conversations of ``seq`` tokens, the label as the answer (loss on it only)."""
    from axolotl_decselfmask.prompts import classification_messages, tokenize_for_training

    rng = random.Random(seed)
    return [tokenize_for_training(tokenizer, classification_messages(
        text, TASK["question"], TASK["labels"], system_prompt("DEFAULT_CLASSIFY_SYSTEM"),
        answer=rng.choice(TASK["labels"])))
        for text in notes(tokenizer, n, seq, seed)]


def batch_of(rows: list[dict], device: str):
    if len({len(r["input_ids"]) for r in rows}) != 1:
        raise RuntimeError("rows of different lengths")
    ids = torch.tensor([r["input_ids"] for r in rows], device=device)
    labels = torch.tensor([r["labels"] for r in rows], device=device)
    return ids, labels


def random_checkpoint(name: str, args) -> Path:
    """The random weights of :func:`build_model` (seed 0) with the tokenizer, saved once per model: the
    ``base_model`` of the 4-bit loads and of predict."""
    folder = checkpoint_dir(name, args)
    if not (folder / "config.json").exists():
        base = build_model(name, args)
        base.save_pretrained(folder)
        tokenizer_for(name, args).save_pretrained(folder)
        del base
        reset_memory(args)
    return folder


# ----------------------------------------------------------------------------- measuring
def sync(args):
    if is_cuda(args):
        torch.cuda.synchronize()


def autocast(args):
    """bf16 autocast on CUDA, as the Trainer's ``bf16: true`` (Axolotl's ``bf16: auto`` on a GPU with bf16)."""
    if is_cuda(args):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def reset_memory(args, freeze: bool = False):
    """Free what is unreachable (the last part's model) and restart the peak. ``freeze``: at a point where
    no model is alive, every object left is moved out of the collector's sight (``gc.freeze``), so later
    collections scan only what was made since (a full collection after transformers' imports takes a
    second, and this runs several times a part); :func:`main` gives them back at its end."""
    gc.collect()
    if freeze:
        gc.freeze()
    if is_cuda(args):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def memory_gb(args, peak: bool, reserved: bool = False) -> float | None:
    """GB the caching allocator holds for tensors (``reserved``: holds from the device, unused blocks too),
    now or at its peak; None on a CPU."""
    if not is_cuda(args):
        return None
    if reserved:
        value = torch.cuda.max_memory_reserved() if peak else torch.cuda.memory_reserved()
    else:
        value = torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()
    return round(value / GB, 3)


def after_load(args) -> dict:
    """The weights held once the model is loaded and the load's own peak; the peak then starts again, so a
    part's ``peak_gb`` is its steps' (weights included), as the memory model predicts it (loading can pass
    through copies the steps never hold: ``prepare_model_for_kbit_training``'s float32 embeddings)."""
    out = dict(weights_gb=memory_gb(args, peak=False), load_peak_gb=memory_gb(args, peak=True))
    if is_cuda(args):
        torch.cuda.reset_peak_memory_stats()
    return out


def cuda_context_gb(args) -> float | None:
    """What this process holds on the GPU outside the caching allocator (the CUDA context, which
    ``max_memory_allocated`` never counts and the memory model's 1 GB ``overhead`` does), read at the start."""
    if not is_cuda(args):
        return None
    torch.zeros(1, device=args.device)
    free, total = torch.cuda.mem_get_info(torch.device(args.device))
    return round((total - free - torch.cuda.memory_reserved()) / GB, 3)


def timed_steps(model, optimizer, ids, labels, args) -> dict:
    """One warm-up step, then ``args.steps`` timed steps (forward, backward, AdamW): the stand-in for the
    trainers' loop (Axolotl's for stage 1, TRL's SFTTrainer for stage 2), one micro-batch a step."""
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
    if not loss == loss:
        raise RuntimeError("the loss is not a number")
    step_s = sum(times) / len(times)
    return dict(step_s=round(step_s, 4), tokens_per_s=round(ids.numel() / step_s, 1), loss=round(loss, 4),
                steps=args.steps)


def optimizer_for(model, args):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0, fused=is_cuda(args))


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def n_4bit(model) -> int:
    return sum(type(m).__name__ == "Linear4bit" for m in model.modules())


def four_bit_unavailable(args) -> str | None:
    """Why the 4-bit parts cannot run here, else None (a CPU runs them with --tiny or --qlora-cpu)."""
    if not is_cuda(args) and not (args.qlora_cpu or args.tiny):
        return "4-bit parts are measured on CUDA only (--qlora-cpu or --tiny run them on bitsandbytes' CPU backend)"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a library that fails to load
        return (f"bitsandbytes does not import ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): "
                f"not carried ({CARRIED['bitsandbytes']})")
    return None


def skipped(reason: str) -> dict:
    return dict(status="skipped", reason=reason)


# ----------------------------------------------------------------------------- stage 1
def lora_config(r: int, alpha: int, dropout: float):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear", task_type="CAUSAL_LM")


def stage1_lora_config(name: str, args):
    run, s = runs(name, args)["stage1"], recipe_settings(name)
    return lora_config(run.rank, s["stage1_alpha"], s["stage1_dropout"])


def load_4bit_as_axolotl(name: str, args):
    """The random checkpoint in 4 bits with the package's ``quantized.bnb_config`` (Axolotl 0.19's QLoRA
    ``BitsAndBytesConfig``), prepared as Axolotl's loader prepares it for a LoRA: ``prepare_model_for_kbit_training``
    (which casts every unquantised weight to float32), then the norms and the embeddings back to the compute
    dtype (its ``_convert_embedding_modules_dtype``)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from axolotl_decselfmask.stage2 import quantized

    cfg = package_cfg(name, args, True)
    dtype = dtype_for(args)
    model = AutoModelForCausalLM.from_pretrained(random_checkpoint(name, args), dtype=dtype,
                                                 quantization_config=quantized.bnb_config(cfg, dtype),
                                                 attn_implementation="sdpa")
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    for module_name, module in model.named_modules():
        if "norm" in module_name or module_name.endswith(("embed_tokens", "lm_head")):
            module.to(dtype)
    return model


def stage1(name: str, args, four_bit: bool) -> dict:
    """Stage-1 steps (see the module's text); QLoRA saves the adapter as ``output_dir`` for stage 2."""
    from peft import get_peft_model

    if four_bit and (reason := four_bit_unavailable(args)):
        return skipped(reason)
    run = runs(name, args)["stage1"]
    if four_bit:
        random_checkpoint(name, args)  # saved once per model, not counted in load_s
    t0 = time.perf_counter()
    if four_bit:
        model = load_4bit_as_axolotl(name, args)
    else:
        model = build_model(name, args)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    load_s = round(time.perf_counter() - t0, 1)
    loaded, linear4bit = after_load(args), n_4bit(model)
    model = get_peft_model(model, stage1_lora_config(name, args))  # LoRA in float32 (PEFT's default), autocast
    ids, labels = batch_of(stage1_rows(tokenizer_for(name, args), run.batch, run.seq, seed=1), args.device)
    row = timed_steps(model, optimizer_for(model, args), ids, labels, args)
    row.update(loaded)
    row.update(batch=run.batch, seq_len=run.seq, rank=run.rank, lora_params=trainable(model),
               label_tokens=int((labels[0] != -100).sum()), gradient_checkpointing=True, load_s=load_s)
    row["minutes_per_1k_notes"] = round(1000 * EXAMPLES_PER_NOTE * run.seq / row["tokens_per_s"] / 60, 2)
    if four_bit:
        row.update(linear4bit=linear4bit, quantisation="nf4, double quant, bf16 compute (quantized.bnb_config)")
        out = run_dir(name, args, True)
        model.save_pretrained(out)  # Axolotl's trainer saves the adapter to output_dir
        tokenizer_for(name, args).save_pretrained(out)
        row["adapter"] = str(out)
    return row


def ensure_stage1_adapter(name: str, args) -> Path:
    """The QLoRA run's stage-1 adapter: ``stage1_qlora``'s, else a fresh (untrained) one of the recipe's settings."""
    from peft import get_peft_model

    out = run_dir(name, args, True)
    if not (out / "adapter_model.safetensors").is_file():
        model = get_peft_model(load_4bit_as_axolotl(name, args), stage1_lora_config(name, args))
        model.save_pretrained(out)
        tokenizer_for(name, args).save_pretrained(out)
        del model
        reset_memory(args)
    return out


# ----------------------------------------------------------------------------- stage 2
def stage2_model(name: str, args, four_bit: bool):
    """The stage-2 model before its steps, as the package builds it: QLoRA, ``quantized.load_start`` on
    the stage-1 adapter, then ``quantized.add_trainable_adapter``; 16 bits, a fresh LoRA (SFTTrainer's
    ``peft_config``). Then what SFTTrainer and the Trainer do to it: gradient checkpointing,
    ``enable_input_require_grads``, a quantised model's trainable weights in bf16."""
    from peft import get_peft_model

    from axolotl_decselfmask.stage2 import quantized

    run, s = runs(name, args)["stage2"], recipe_settings(name)
    lora = lora_config(run.rank, s["stage2_alpha"], s["stage2_dropout"])
    if four_bit:
        folder = ensure_stage1_adapter(name, args)
        random_checkpoint(name, args)
        reset_memory(args)
        model = quantized.load_start(package_cfg(name, args, True), str(folder), dtype_for(args))
        model = quantized.add_trainable_adapter(model, lora)
    else:
        model = build_model(name, args)
        model = get_peft_model(model, lora)
        # the adapter's base: the folder the 16-bit stage-2 model is loaded from (here the random checkpoint)
        model.peft_config["default"].base_model_name_or_path = str(checkpoint_dir(name, args))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    if four_bit and is_cuda(args):  # SFTTrainer: a quantised model's adapter in bf16 (QLoRA)
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    return model


def save_classifier(model, name: str, args, four_bit: bool) -> Path:
    """The trained classifier saved as ``training.train_classifier`` saves it (QLoRA: the stage-2
    adapter alone, then the package's ``write_combined_adapter``: one adapter with stage 1 in it)."""
    from axolotl_decselfmask.stage2 import outputs, quantized

    out = outputs.classifier_dir(run_dir(name, args, four_bit))
    model.save_pretrained(str(out))
    tokenizer_for(name, args).save_pretrained(str(out))
    if four_bit:
        quantized.keep_trained_adapter_only(out)
        quantized.write_combined_adapter(model, out, quantized.base_model_name(package_cfg(name, args, True)))
    return out


def stage2(name: str, args, four_bit: bool) -> dict:
    if four_bit and (reason := four_bit_unavailable(args)):
        return skipped(reason)
    run = runs(name, args)["stage2"]
    t0 = time.perf_counter()
    model = stage2_model(name, args, four_bit)
    load_s = round(time.perf_counter() - t0, 1)
    loaded = after_load(args)
    ids, labels = batch_of(stage2_rows(tokenizer_for(name, args), run.batch, run.seq, seed=2), args.device)
    row = timed_steps(model, optimizer_for(model, args), ids, labels, args)
    row.update(loaded)
    row.update(batch=run.batch, seq_len=run.seq, rank=run.rank, lora_params=trainable(model),
               label_tokens=int((labels[0] != -100).sum()), gradient_checkpointing=True, load_s=load_s)
    if four_bit:
        row.update(linear4bit=n_4bit(model), adapters=sorted(model.peft_config),
                   quantisation="nf4, double quant, bf16 compute (quantized.load_start)")
    out = save_classifier(model, name, args, four_bit)
    row["classifier"] = str(out)
    if four_bit:
        row["classifier_rank"] = json.loads((out / "adapter_config.json").read_text())["r"]
    return row


def ensure_classifier(name: str, args, four_bit: bool) -> Path:
    """The run's classifier: the stage-2 part's, else a fresh (untrained) one made the same way."""
    from axolotl_decselfmask.stage2 import outputs

    out = outputs.classifier_dir(run_dir(name, args, four_bit))
    if not (out / "adapter_model.safetensors").is_file():
        save_classifier(stage2_model(name, args, four_bit), name, args, four_bit)
        reset_memory(args)
    return out


# ----------------------------------------------------------------------------- evaluation
def load_classifier(name: str, args, four_bit: bool):
    """The classifier as the evaluation scores it: QLoRA, the package's ``load_classifier_model`` (the
    4-bit base and the combined adapter, unmerged); 16 bits, the stage-2 adapter merged into the model in
    memory (``classifier_after_training``'s ``merge_and_unload``)."""
    from peft import PeftModel

    from axolotl_decselfmask.args import plugin_config
    from axolotl_decselfmask.stage2.model import load_classifier_model

    folder = ensure_classifier(name, args, four_bit)
    reset_memory(args)
    if four_bit:
        cfg = package_cfg(name, args, True)
        return load_classifier_model(cfg, plugin_config(cfg), folder, dtype_for(args), what="gpu_check evaluation")
    model = PeftModel.from_pretrained(build_model(name, args), str(folder)).merge_and_unload()
    return model.eval()


def evaluation(name: str, args, four_bit: bool) -> dict:
    """The package's ``score_options`` on the trained classifier (see the module's text)."""
    import numpy as np

    from axolotl_decselfmask.args import DEFAULT_CLASSIFY_SYSTEM
    from axolotl_decselfmask.stage2.scoring import score_options  # imports args, so pydantic

    if four_bit and (reason := four_bit_unavailable(args)):
        return skipped(reason)
    run, s = runs(name, args)["evaluation"], recipe_settings(name)
    t0 = time.perf_counter()
    model = load_classifier(name, args, four_bit)
    load_s = round(time.perf_counter() - t0, 1)
    loaded = after_load(args)
    tokenizer = tokenizer_for(name, args)
    batches = max(args.steps, -(-EVALUATION_NOTES // run.batch))  # at least EVALUATION_NOTES timed notes
    texts = notes(tokenizer, run.batch * (batches + 1), run.seq, seed=3)

    def score(batch):
        return score_options(model, tokenizer, batch, TASK["labels"], TASK["question"], DEFAULT_CLASSIFY_SYSTEM,
                             progress=False, batch_size=run.batch, option_chunk=s["option_chunk"])

    first = score(texts[: run.batch])  # warm-up: one batch
    sync(args)
    t1 = time.perf_counter()
    rest = score(texts[run.batch:])
    sync(args)
    seconds = time.perf_counter() - t1
    scores = np.concatenate([first, rest])
    if scores.shape != (len(texts), 2) or not np.isfinite(scores).all():
        raise RuntimeError(f"scores of shape {scores.shape}, finite: {bool(np.isfinite(scores).all())}")
    n = len(texts) - run.batch
    row = dict(batch=run.batch, seq_len=run.seq, notes=n, seconds=round(seconds, 3), notes_per_s=round(n / seconds, 2),
               tokens_per_s=round(n * run.seq / seconds, 1), option_chunk=s["option_chunk"],
               options=len(TASK["labels"]),
               load_s=load_s, linear4bit=n_4bit(model), **loaded,
               minutes_per_1k_notes=round(1000 / (n / seconds) / 60, 2))
    return row


# ----------------------------------------------------------------------------- predict
def write_decision(name: str, args, four_bit: bool, cfg) -> Path:
    """The saved decision predict reads (``stage2/calibration-<task>.json``), as the evaluation's
    ``save_decision`` writes it: calibration ``none`` (the argmax), the prompt, the classifier's sha256."""
    from axolotl_decselfmask.args import plugin_config
    from axolotl_decselfmask.io.files import file_sha256
    from axolotl_decselfmask.stage2 import outputs
    from axolotl_decselfmask.stage2.calibration import Calibration, calibration_record
    from axolotl_decselfmask.stage2.task_prompt import task_prompt

    folder = ensure_classifier(name, args, four_bit)
    weights = folder / "adapter_model.safetensors"
    prompt = task_prompt(plugin_config(cfg), 0, tokenizer_for(name, args))
    record = calibration_record(Calibration.fit("none", TASK["labels"]), task=TASK["task"], labels=TASK["labels"],
                                classifier="lora", weights=str(weights), weights_sha256=file_sha256(weights),
                                question=prompt.question, system_prompt=prompt.system_prompt, prompt=prompt.style,
                                max_length=cfg.sequence_len)
    return outputs.write_calibration(cfg.output_dir, TASK["task"], record)


def predict(name: str, args, four_bit: bool) -> dict:
    """``axolotl decselfmask predict`` for one task through the package's ``stage2.predict.predict``."""
    from axolotl_decselfmask.stage2 import predict as predict_module

    if four_bit and (reason := four_bit_unavailable(args)):
        return skipped(reason)
    run = runs(name, args)["evaluation"]
    cfg = package_cfg(name, args, four_bit)
    write_decision(name, args, four_bit, cfg)
    random_checkpoint(name, args)  # the classifier's base: the 16-bit classifier is merged into it as it loads
    folder = Path(cfg.output_dir)
    tokenizer_for(name, args).save_pretrained(folder)  # Axolotl saves the tokenizer in output_dir
    n = args.predict_notes
    notes_path, out_path = folder / "notes.jsonl", folder / "predictions.jsonl"
    with open(notes_path, "w", encoding="utf-8") as f:
        for i, text in enumerate(notes(tokenizer_for(name, args), n, run.seq, seed=4)):
            f.write(json.dumps({"id": f"note-{i}", "text": text}) + "\n")
    timing = dict(load_s=0.0, chunks=[], loaded={})

    class TimedLabeller(predict_module.NoteLabeller):  # the package's class; only the clock (and memory) is read
        def __init__(self, *a, **k):
            t0 = time.perf_counter()
            super().__init__(*a, **k)
            timing["load_s"] += time.perf_counter() - t0
            timing["loaded"] = after_load(args)  # the classifier's weights; the peak from here is the scoring's

        def records(self, chunk, *a, **k):
            sync(args)
            t0 = time.perf_counter()
            out = super().records(chunk, *a, **k)
            sync(args)
            timing["chunks"].append((len(chunk), time.perf_counter() - t0))
            return out

    reset_memory(args)
    original = predict_module.NoteLabeller
    predict_module.NoteLabeller = TimedLabeller
    try:
        t0 = time.perf_counter()
        result = predict_module.predict(cfg, str(notes_path), out_path, progress=False, chunk_rows=args.predict_chunk,
                                        restart=True)
        total = time.perf_counter() - t0
    finally:
        predict_module.NoteLabeller = original
    written = [json.loads(line) for line in out_path.read_text(encoding="utf-8").splitlines()]
    if len(written) != n or {r["label"] for r in written} - set(TASK["labels"]):
        labels = sorted({r["label"] for r in written})
        raise RuntimeError(f"predict wrote {len(written)} rows for {n} notes, labels {labels}")
    chunks = timing["chunks"]
    steady = chunks[1:] or chunks
    steady_notes, steady_s = sum(c for c, _ in steady), sum(s for _, s in steady)
    return dict(batch=run.batch, seq_len=run.seq, notes=n, chunk_rows=args.predict_chunk, chunks=len(chunks),
                notes_per_s=round(steady_notes / steady_s, 2), tokens_per_s=round(steady_notes * run.seq / steady_s, 1),
                first_chunk_s=round(chunks[0][1], 3), load_s=round(timing["load_s"], 1), end_to_end_s=round(total, 1),
                end_to_end_notes_per_s=round(n / total, 2), rows=result["rows"], **timing["loaded"],
                counts=result["tasks"][TASK["task"]]["counts"],
                minutes_per_1k_notes=round(1000 / (steady_notes / steady_s) / 60, 2))


# ----------------------------------------------------------------------------- relevance
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

    run = runs(name, args)["relevance"]
    if model is None:
        model = build_model(name, args)
        model.eval()
        model.requires_grad_(False)
    loaded = after_load(args)
    # the method reads only the tokenizer's pad and eos ids
    eos = model.config.eos_token_id
    tokenizer = SimpleNamespace(pad_token_id=None, eos_token_id=eos[0] if isinstance(eos, list) else eos)
    method = BUILTIN_METHODS[method_name](model, tokenizer, target="sum_logprob")
    n = run.batch
    prompts = relevance_prompts(model.config.vocab_size, n * (args.steps + 1), run.seq)
    times = []
    for k in range(args.steps + 1):
        sync(args)
        t0 = time.perf_counter()
        maps = method.attribute(prompts[k * n: (k + 1) * n])
        sync(args)
        if k:
            times.append(time.perf_counter() - t0)
        if not all(len(m) == len(prompts[0].text_positions) and bool(abs(m).sum() > 0) for m in maps):
            raise RuntimeError(f"{method_name}: maps of the wrong length or all zero")
    batch_s = sum(times) / len(times)
    tokens_per_s = n * run.seq / batch_s
    return dict(batch=n, seq_len=run.seq, **loaded, batch_s=round(batch_s, 4),
                tokens_per_s=round(tokens_per_s, 1), notes_per_s=round(n / batch_s, 2), steps=args.steps,
                target="sum_logprob", dtype=str(dtype_for(args)),
                minutes_per_1k_notes=round(1000 * run.seq / tokens_per_s / 60, 2))


def relevance_4bit(name: str, args) -> dict:
    """AttnLRP on a 4-bit nf4 copy loaded by the package's own loader (``relevance.load_in_4bit: true``)."""
    from axolotl_decselfmask.relevance.loading import load_relevance_model

    if reason := four_bit_unavailable(args):
        return skipped(reason)
    folder = random_checkpoint(name, args)
    reset_memory(args)
    model = load_relevance_model(str(folder), dtype="bfloat16", device=args.device, load_in_4bit=True)
    row = relevance("attnlrp", name, args, model=model)
    row.update(linear4bit=n_4bit(model), dtype="4-bit nf4, bf16 compute")
    return row


RUNNERS = {
    "stage1_qlora": lambda name, args: stage1(name, args, True),
    "stage1_lora": lambda name, args: stage1(name, args, False),
    "stage2_qlora": lambda name, args: stage2(name, args, True),
    "stage2_lora": lambda name, args: stage2(name, args, False),
    "evaluation_4bit": lambda name, args: evaluation(name, args, True),
    "evaluation": lambda name, args: evaluation(name, args, False),
    "predict_4bit": lambda name, args: predict(name, args, True),
    "predict": lambda name, args: predict(name, args, False),
    "relevance_attnlrp": lambda name, args: relevance("attnlrp", name, args),
    "relevance_grad_x_input": lambda name, args: relevance("grad_x_input", name, args),
    "relevance_attnlrp_4bit": relevance_4bit,
}


# ----------------------------------------------------------------------------- running and reporting
class Without(importlib.abc.MetaPathFinder):
    """Makes the top-level packages ``names`` unimportable (``--without``), as on a machine without them."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (--without)", name=fullname)
        return None


def importable(module: str) -> str:
    try:
        imported = __import__(module)
        return str(getattr(imported, "__version__", "importable"))
    except Exception as exc:  # noqa: BLE001 - a library that fails to load is reported, not raised
        return f"not importable: {type(exc).__name__}"


def environment(args) -> dict:
    import peft
    import transformers

    env = dict(python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
               peft=peft.__version__, cuda=torch.version.cuda, device=args.device, tiny=args.tiny,
               without=sorted(args.without))
    for module in ("bitsandbytes", "pydantic", "axolotl", "trl", "datasets"):
        env[module] = importable(module)
    if is_cuda(args):
        props = torch.cuda.get_device_properties(torch.device(args.device))
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / GB, 1),
                   multiprocessors=props.multi_processor_count, cuda_context_gb=cuda_context_gb(args))
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
                         tie_word_embeddings=config.tie_word_embeddings,
                         recipe=str(RECIPE_FILES[name].relative_to(ROOT)),
                         recipe_parts=sorted(recipe_parts(name)))
    return out


def prediction(part: str, name: str, args) -> dict:
    """The memory model's peak (GB) and terms for ``part`` as run (its stage, precision, batch, length, rank)."""
    from axolotl_decselfmask import memory

    run = part_run(part, name, args)
    shape = memory.shape_from_config(model_config(name, args.tiny).to_dict())
    terms = memory.stage_terms(PART_STAGE[part][0], shape, run)
    return dict(predicted_gb=round(sum(terms.values()) / GB, 4),
                predicted_terms_gb={k: round(v / GB, 4) for k, v in terms.items()}, predicted_run=asdict(run))


def missing_module(exc: BaseException) -> str | None:
    """The top-level name of an optional module whose import failed, else None."""
    while exc is not None:
        if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] in OPTIONAL:
            return exc.name.split(".")[0]
        exc = exc.__cause__ or exc.__context__
    return None


def run_part(part: str, name: str, args) -> dict:
    row = dict(part=part, model=name, recipe_own=part in recipe_parts(name))
    reset_memory(args)
    t0 = time.perf_counter()
    try:
        result = RUNNERS[part](name, args)
        row["status"] = "ok"
        row.update(result)
        if row["status"] == "ok":
            row["peak_gb"] = memory_gb(args, peak=True)
            row["peak_reserved_gb"] = memory_gb(args, peak=True, reserved=True)
            row.update(prediction(part, name, args))
    except Exception as exc:  # one failure does not stop the others
        module = missing_module(exc)
        if module is not None:
            row.update(status="skipped", reason=f"needs {module}, which does not import here ({exc}); carry it: "
                                                f"{CARRIED.get(module, 'not needed by this script (a bug)')}")
        else:
            row.update(status="failed", error=f"{type(exc).__name__}: {str(exc)[:500]}",
                       traceback=traceback.format_exc(limit=8)[-3000:])
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    reset_memory(args, freeze=True)
    return row


def print_table(rows: list[dict]) -> None:
    print(f"{'part':<24}{'model':<24}{'status':<9}{'peak GB':>9}{'pred GB':>9}{'tokens/s':>11}{'notes/s':>9}"
          f"{'min/1k':>8}  note")
    for r in rows:
        peak = "-" if r.get("peak_gb") is None else f"{r['peak_gb']:.2f}"
        pred = "-" if r.get("predicted_gb") is None else f"{r['predicted_gb']:.2f}"
        tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        nps = f"{r['notes_per_s']:.1f}" if "notes_per_s" in r else "-"
        per_1k = f"{r['minutes_per_1k_notes']:.1f}" if "minutes_per_1k_notes" in r else "-"
        note = r.get("reason") or r.get("error") or f"batch {r.get('batch')} x {r.get('seq_len')}"
        print(f"{r['part']:<24}{r['model']:<24}{r['status']:<9}{peak:>9}{pred:>9}{tps:>11}{nps:>9}{per_1k:>8}  "
              f"{note[:90]}")


def write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the JSON to write")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true",
                   help="2-layer models of hidden 64, lengths of 64 (the CPU check; 4-bit parts on bitsandbytes' "
                        "CPU backend)")
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS))
    p.add_argument("--steps", type=int, default=3, help="timed steps (or batches) after one warm-up")
    p.add_argument("--predict-notes", type=int, default=None, help="notes predict labels (default 64; --tiny 8)")
    p.add_argument("--predict-chunk", type=int, default=None, help="predict's --chunk-size (default 16; --tiny 4)")
    p.add_argument("--budget-s", type=float, default=360.0, help="start no part after this many seconds")
    p.add_argument("--qlora-cpu", action="store_true",
                   help="run the 4-bit parts on a CPU too (bitsandbytes' CPU backend: checks the code path only)")
    p.add_argument("--without", nargs="+", default=[], metavar="PACKAGE",
                   help="make these top-level packages unimportable here (e.g. axolotl trl datasets, as on the GPU "
                        "machine)")
    p.add_argument("--tmp-dir", default=None,
                   help="where the random checkpoints and runs are saved (default: a temp dir)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps must be at least 1")
    args.predict_notes = args.predict_notes or (8 if args.tiny else 64)
    args.predict_chunk = args.predict_chunk or (4 if args.tiny else 16)
    if args.device == "cuda":
        args.device = "cuda:0"  # one index everywhere (device_map, the relevance loader)
    if is_cuda(args) and not torch.cuda.is_available():
        p.error(f"--device {args.device}: no CUDA device is available here; use --device cpu (with --tiny)")
    already = sorted(m for m in args.without if m in sys.modules)
    if already:
        p.error(f"--without {' '.join(already)}: already imported in this process; run the script in a new process")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    finder = Without(args.without) if args.without else None
    with contextlib.ExitStack() as stack:
        if finder is not None:
            sys.meta_path.insert(0, finder)
            stack.callback(sys.meta_path.remove, finder)
        if args.tmp_dir is None:
            args.tmp_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check_"))
        stack.callback(gc.unfreeze)
        report = dict(environment=environment(args), models=model_summary(args), settings=dict(
            steps=args.steps, budget_s=args.budget_s, predict_notes=args.predict_notes,
            predict_chunk=args.predict_chunk, examples_per_note=EXAMPLES_PER_NOTE, task=TASK,
            runs={name: {k: asdict(v) for k, v in runs(name, args).items()} for name in args.models}), parts=[])
        print(json.dumps(report["environment"]), flush=True)
        for part, name in plan(args):
            if time.perf_counter() - start > args.budget_s:
                row = dict(part=part, model=name, status="skipped", reason=f"time budget ({args.budget_s:.0f} s)")
            else:
                row = run_part(part, name, args)
            report["parts"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("traceback", "predicted_run")}), flush=True)
            write(args.out, report)
        report["total_s"] = round(time.perf_counter() - start, 1)
        write(args.out, report)
    print_table(report["parts"])
    return report


if __name__ == "__main__":
    main()
