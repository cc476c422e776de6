"""Benchmarks of the relevance engine.

``python -m axolotl_decselfmask.bench relevance``: every registered relevance method on the
same notes with the same model, one table: notes/s, forward-pass equivalents per note (the
method's time over a plain inference forward of the same batch, measured right before and
right after it), peak RSS during the method, and the overlap of its top tokens (and of its
spans) with integrated gradients'.

``python -m axolotl_decselfmask.bench items``: K items of one note scored in one
``compute_relevance`` call (grad x input shares their prompt's prefix) against K separate
scorings, as a cost ratio.

Timings on a shared machine are noisy, so every measurement is paired: a plain forward of the
same batch runs before and after each method call (the methods rotate their order from note to
note), and the cost of a method is the median over calls of its time over the mean of the two
forwards around it. notes/s is the raw throughput of the same calls and moves with the load.

See ``docs/benchmark.md`` for the command, a run on the embedded model and what it found.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from axolotl_decselfmask.relevance import build_relevance_prompt, compute_relevance
from axolotl_decselfmask.relevance.methods.base import MethodNotSupported
from axolotl_decselfmask.stage1.spans import SpanSettings

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "models/smollm2-135m-instruct"
_DATA_NAME = "medical_abstracts.csv.gz"
#: the shared data folder beside the checkout, else the copy bundled in examples/data
DEFAULT_DATA = str(next((p for p in (ROOT.parent / "shared" / "data" / _DATA_NAME, ROOT / "shared" / "data" / _DATA_NAME,
                                     ROOT / "examples" / "data" / _DATA_NAME) if p.is_file()),
                        ROOT.parent / "shared" / "data" / _DATA_NAME))
DEFAULT_LEAD_IN = "Which clinical finding does the text above describe?"
DEFAULT_ITEM = "neoplasms"
DEFAULT_ITEMS = (
    "neoplasms", "digestive system diseases", "nervous system diseases", "cardiovascular diseases",
    "general pathological conditions", "diabetes", "hypertension", "infection",
)
DEFAULT_METHOD = "grad_x_input"  # the default of ``decselfmask.relevance.method``
REFERENCE = "integrated_gradients"
#: methods run once per note whatever ``--repeats`` says (they take seconds to minutes a note)
SLOW_METHODS = ("integrated_gradients", "feature_ablation")
#: the keys every JSON row of ``relevance`` has (others are extras)
ROW_KEYS = ("method", "notes_per_s", "forward_equivalents", "peak_rss_mib", "overlap_with_ig")
# Goals of the issue "Relevance engine"
GOAL_DEFAULT_FE = 2.2
GOAL_IG_SPEEDUP = 40.0
GOAL_ATTNLRP_VS_DEFAULT = 1.2
GOAL_ITEMS_RATIO = 0.6


# ---------------------------------------------------------------------------------------
# notes, model, prompts
# ---------------------------------------------------------------------------------------
def load_notes(path, column: str, n: int, seed: int, tokenizer, max_tokens: int,
               min_tokens: int | None = None) -> list[str]:
    """``n`` non-empty texts of ``column`` in a seeded random order, each cut at a token
    boundary to at most ``max_tokens`` tokens (the tokenizer's offset mapping). Texts with
    fewer than ``min_tokens`` tokens (default: ``max_tokens``, so that every note has the
    same length) are passed over while enough longer ones remain."""
    import pandas as pd

    frame = pd.read_csv(path)
    if column not in frame.columns:
        raise ValueError(f"{path} has no column {column!r}; columns: {list(frame.columns)}")
    texts = [t.strip() for t in frame[column].astype(str).tolist() if t.strip() and t != "nan"]
    if not texts:
        raise ValueError(f"{path}: column {column!r} has no text")
    need = max_tokens if min_tokens is None else min_tokens
    long_enough, short = [], []
    for i in np.random.default_rng(seed).permutation(len(texts)):
        n_tok = len(tokenizer(texts[i], add_special_tokens=False)["input_ids"])
        (long_enough if n_tok >= need else short).append(texts[i])
        if len(long_enough) >= n:
            break
    chosen = (long_enough + short)[:n]
    return [truncate_to_tokens(tokenizer, t, max_tokens) for t in chosen]


def truncate_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]].rstrip()


def load_model(path, dtype: str):
    from transformers import AutoTokenizer

    from axolotl_decselfmask.relevance.loading import load_relevance_model

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = load_relevance_model(str(path), dtype=dtype, device="cpu")
    return model, tokenizer


def attn_implementation(model) -> str:
    return getattr(model.config, "_attn_implementation", None) or "eager"


@contextlib.contextmanager
def keep_attn_implementation(model):
    """Restore the model's attention implementation after a method switched it (the
    attention-based methods switch the model to eager attention; the next method and the
    plain forwards must not inherit that)."""
    before = attn_implementation(model)
    try:
        yield
    finally:
        if attn_implementation(model) != before:
            model.set_attn_implementation(before)


# ---------------------------------------------------------------------------------------
# timing and memory
# ---------------------------------------------------------------------------------------
def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the RSS before a method is its live
    memory and not what an earlier method left in the allocator's free lists."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def _hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory of the process while the block runs.

    Exact where the kernel lets the peak counter be reset (``/proc/self/clear_refs``);
    otherwise a background thread samples the RSS every ``interval`` seconds."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.before = 0
        self.peak = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.how = ""

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self):
        _malloc_trim()
        self.before = self.peak = _rss_bytes()
        if _reset_hwm() and _hwm_bytes() is not None:
            self.how = "VmHWM"
        else:
            self.how = "sampled"
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            self.peak = max(self.peak, _hwm_bytes() or 0)
        self.peak = max(self.peak, _rss_bytes())
        return False

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.before) / 2**20


def plain_forward(model, batch) -> None:
    """A plain inference forward of the batch the methods see (logits at the scored positions)."""
    with torch.inference_mode():
        model(input_ids=batch.ids, attention_mask=batch.mask, logits_to_keep=batch.keep, use_cache=False)


def timed(fn: Callable, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


# ---------------------------------------------------------------------------------------
# overlap with integrated gradients
# ---------------------------------------------------------------------------------------
def top_fraction(scores: np.ndarray, fraction: float) -> set[int]:
    """Indices of the ``fraction`` of tokens with the highest |relevance| (at least one)."""
    scores = np.abs(np.asarray(scores, dtype=np.float64))
    k = max(1, int(round(fraction * len(scores))))
    return set(np.argsort(-scores, kind="stable")[:k].tolist())


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def span_chars(spans) -> set[int]:
    return {c for s, e in spans for c in range(s, e)}


# ---------------------------------------------------------------------------------------
# prototypes of faster grad x input (``--variants``), measured beside the real methods
# ---------------------------------------------------------------------------------------
def _gxi_values(method, batch, embeds, prompts):
    with torch.enable_grad():
        scores = method.scores(batch, inputs_embeds=embeds)
        (grad,) = torch.autograd.grad(scores.sum(), embeds)
    return method.text_values((embeds.detach().float() * grad.float()).sum(-1), prompts)


def _trimmed_batch(method, prompts):
    """The batch cut after the last position whose logits are read: the tokens after it
    (the item's last token, end of turn) cannot change the target of a causal model."""
    batch = method.batch(prompts)
    end = int(batch.cols.max()) + 1
    batch.ids, batch.mask = batch.ids[:, :end], batch.mask[:, :end]
    return batch


class Variant:
    """A prototype of grad x input with one change; ``attribute(prompts)`` like a method."""

    def __init__(self, name: str, base, fn):
        self.name, self.base, self.fn = name, base, fn

    def attribute(self, prompts):
        return self.fn(self.base, prompts)


def _variant_split(method, prompts):
    """Plain grad x input, with its forward and backward timed apart (``split`` extras)."""
    batch = method.batch(prompts)
    embeds = method.embedding(batch.ids).detach().requires_grad_(True)
    with torch.enable_grad():
        t0 = time.perf_counter()
        scores = method.scores(batch, inputs_embeds=embeds)
        t1 = time.perf_counter()
        (grad,) = torch.autograd.grad(scores.sum(), embeds)
        t2 = time.perf_counter()
    _variant_split.last = (t1 - t0, t2 - t1)
    return method.text_values((embeds.detach().float() * grad.float()).sum(-1), prompts)


def _variant_trim(method, prompts):
    batch = _trimmed_batch(method, prompts)
    embeds = method.embedding(batch.ids).detach().requires_grad_(True)
    return _gxi_values(method, batch, embeds, prompts)


def _variant_eager(method, prompts):
    model = method.model
    before = attn_implementation(model)
    model.set_attn_implementation("eager")
    try:
        return method.attribute(prompts)
    finally:
        model.set_attn_implementation(before)


def matmul_precision(value: str):
    from axolotl_decselfmask.relevance.methods.grad_x_input import (
        matmul_precision as precision,
    )

    return precision(value)


def _variant_matmul_medium(method, prompts):
    """``torch.set_float32_matmul_precision("medium")`` for the call: on a CPU, float32 matmuls
    go to oneDNN with bf16 "fpmath" allowed instead of MKL. On CPUs without AMX oneDNN still
    picks a float32 kernel (see docs/benchmark.md), with AMX it computes in bfloat16."""
    with matmul_precision("medium"):
        return method.attribute(prompts)


def _with_fast_backward(method, prompts, on: bool):
    copy = getattr(method, f"_bench_fast_{on}", None)
    if copy is None:
        copy = type(method)(method.model, method.tokenizer, method.target, method.token_position,
                            **{**method.options, "fast_backward": on})
        setattr(method, f"_bench_fast_{on}", copy)
    return copy.attribute(prompts)


def _variant_backward_medium(method, prompts):
    """The product's ``fast_backward`` option on (forward as is, the backward with ``"medium"``)."""
    return _with_fast_backward(method, prompts, True)


def _variant_exact_backward(method, prompts):
    """The product's ``fast_backward`` option off (the default before ``auto``)."""
    return _with_fast_backward(method, prompts, False)


def _variant_compile(method, prompts):
    """The same grad x input on ``torch.compile(model, dynamic=True)`` (Inductor fuses the
    norms, rotary embeddings and SiLU products of the forward and of the backward). The first
    call compiles (about a minute on 2 cores; it happens in the warm-up)."""
    compiled = getattr(method, "_bench_compiled", None)
    if compiled is None:
        compiled = type(method)(torch.compile(method.model, dynamic=True), method.tokenizer, method.target,
                                method.token_position, **method.options)
        method._bench_compiled = compiled
    return compiled.attribute(prompts)


def _variant_forward_medium(method, prompts):
    """Not a relevance method: a plain inference forward with ``"medium"`` matmul precision,
    to compare grad x input with a forward under the same setting (its relevance is zeros)."""
    with matmul_precision("medium"):
        plain_forward(method.model, method.batch(prompts))
    return [np.zeros(len(p.text_positions), dtype=np.float32) for p in prompts]


def _variant_autocast_bf16(method, prompts):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return method.attribute(prompts)


VARIANTS = {
    "split": _variant_split,
    "trim": _variant_trim,
    "eager": _variant_eager,
    "matmul_medium": _variant_matmul_medium,
    "backward_medium": _variant_backward_medium,
    "exact_backward": _variant_exact_backward,
    "autocast_bf16": _variant_autocast_bf16,
    "compile": _variant_compile,
    "forward_medium": _variant_forward_medium,
}
#: variants that compute no relevance (no overlap is reported for them)
NOT_RELEVANCE = ("forward_medium",)


# ---------------------------------------------------------------------------------------
# the relevance benchmark
# ---------------------------------------------------------------------------------------
@dataclass
class _Stats:
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    fwd: list[float] = field(default_factory=list)
    call_notes: list[int] = field(default_factory=list)
    peak: float = 0.0
    delta: float = 0.0
    notes: int = 0
    extras: dict = field(default_factory=dict)
    rel: dict = field(default_factory=dict)  # note index -> relevance
    note_time: dict = field(default_factory=dict)  # note index -> seconds (first call; a batch's time shared)
    status: str = "ok"


def product_fast_backward(model) -> bool:
    """What ``relevance.fast_backward: auto`` (the default) resolves to for ``model``'s device."""
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.cache import fast_backward

    device = "cpu" if model.get_input_embeddings().weight.device.type == "cpu" else "cuda"
    return fast_backward(DecSelfMaskConfig(relevance={"device": device}))


def _make_methods(names, model, tokenizer, target, steps, unit, variants):
    from axolotl_decselfmask.registry import relevance_methods

    registered = relevance_methods()
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"unknown relevance method(s) {unknown}; registered: {sorted(registered)}")
    made: dict[str, object] = {}
    status: dict[str, str] = {}
    fast = product_fast_backward(model)
    for name in names:
        cls = registered[name]
        try:
            cls.check_model_config(model.config)
            made[name] = cls(model, tokenizer, target, "middle", steps=steps, unit=unit, fast_backward=fast)
        except (MethodNotSupported, ImportError) as exc:
            status[name] = f"unavailable: {exc}"
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; known: {sorted(VARIANTS)}")
        base = registered[DEFAULT_METHOD](model, tokenizer, target, "middle", steps=steps, unit=unit,
                                          fast_backward=fast)
        made[f"{DEFAULT_METHOD}:{v}"] = Variant(f"{DEFAULT_METHOD}:{v}", base, VARIANTS[v])
    return made, status


def run_relevance(
    model,
    tokenizer,
    notes: Sequence[str],
    methods: Sequence[str] | None = None,
    *,
    item: str = DEFAULT_ITEM,
    lead_in: str = DEFAULT_LEAD_IN,
    target: str = "sum_logprob",
    batch_size: int = 1,
    ig_steps: int = 32,
    ig_notes: int | None = None,
    ablation_unit: str = "sentence",
    repeats: int = 1,
    top: float = 0.1,
    variants: Sequence[str] = (),
    progress: bool = True,
    warmup: bool = True,
) -> list[dict]:
    """Run the methods on ``notes`` (interleaved, paired with plain forwards); one row each.

    ``methods``: names from :func:`..registry.relevance_methods` (default: all of them).
    ``ig_notes``: run integrated gradients on the first n notes only (its overlap is then
    measured on those). ``variants``: prototypes of faster grad x input (see ``VARIANTS``).
    """
    from tqdm.auto import tqdm

    from axolotl_decselfmask.registry import get_selector, relevance_methods

    names = list(methods) if methods else list(relevance_methods())
    made, status = _make_methods(names, model, tokenizer, target, ig_steps, ablation_unit, variants)
    prompts = [build_relevance_prompt(tokenizer, t, item, lead_in) for t in notes]
    batches = [list(range(s, min(s + batch_size, len(prompts)))) for s in range(0, len(prompts), batch_size)]
    ig_limit = len(prompts) if ig_notes is None else max(1, min(ig_notes, len(prompts)))
    helper = next(iter(made.values()), None)
    # rows in the registry's order, then the variants
    stats = {name: _Stats(status=status.get(name, "ok")) for name in [*names, *[m for m in made if m not in names]]}

    def runs_on(name, batch):
        return not (name == REFERENCE and batch[0] >= ig_limit)

    if warmup and made:  # first calls pay for lazy imports, allocator growth, kernel selection
        short = build_relevance_prompt(tokenizer, truncate_to_tokens(tokenizer, notes[0], 24), item, lead_in)
        plain_forward(model, _batch_of(helper, [short]))
        for name, method in made.items():
            with keep_attn_implementation(model):
                try:
                    method.attribute([short])
                except (MethodNotSupported, ImportError) as exc:
                    stats[name].status = f"unavailable: {exc}"
                except Exception as exc:  # noqa: BLE001 - the run goes on; the row says why
                    stats[name].status = f"failed: {type(exc).__name__}: {exc}"
    live = {n: m for n, m in made.items() if stats[n].status == "ok"}
    steps = sum(
        (1 if n in SLOW_METHODS else repeats) for b in batches for n in live if runs_on(n, b))
    bar = tqdm(total=steps, desc="relevance bench", unit="call", disable=not progress, dynamic_ncols=True)
    order = list(live)
    for bi, batch_idx in enumerate(batches if live else []):
        batch_prompts = [prompts[i] for i in batch_idx]
        fbatch = _batch_of(helper, batch_prompts) if helper is not None else None
        rotation = order[bi % len(order):] + order[: bi % len(order)] if order else []
        t_prev, _ = timed(plain_forward, model, fbatch)
        for name in rotation:
            if not runs_on(name, batch_idx):
                continue
            st, method = stats[name], live[name]
            for rep in range(1 if name in SLOW_METHODS else repeats):
                bar.set_postfix_str(f"{name} note {batch_idx[0] + 1}/{len(prompts)}")
                with keep_attn_implementation(model), PeakRSS() as mem:
                    try:
                        t, rels = timed(method.attribute, batch_prompts)
                    except (MethodNotSupported, ImportError) as exc:
                        st.status = f"unavailable: {exc}"
                        break
                    except Exception as exc:  # noqa: BLE001 - the run goes on; the row says why
                        st.status = f"failed: {type(exc).__name__}: {exc}"
                        break
                t_next, _ = timed(plain_forward, model, fbatch)
                fwd = (t_prev + t_next) / 2
                t_prev = t_next
                st.times.append(t)
                st.fwd.append(fwd)
                st.call_notes.append(len(batch_idx))
                st.ratios.append(t / fwd)
                st.peak = max(st.peak, mem.peak_mib)
                st.delta = max(st.delta, mem.delta_mib)
                st.extras.setdefault("rss_how", mem.how)
                if name.endswith(":split"):
                    f, b = _variant_split.last
                    st.extras.setdefault("_fwd", []).append(f / fwd)
                    st.extras.setdefault("_bwd", []).append(b / fwd)
                if rep == 0:
                    st.notes += len(batch_idx)
                    for i in batch_idx:
                        st.note_time[i] = t / len(batch_idx)
                    for i, r in zip(batch_idx, rels):
                        st.rel[i] = np.asarray(r, dtype=np.float64)
                bar.update(1)
            if st.status != "ok":
                live.pop(name, None)
    bar.close()

    ref = stats.get(REFERENCE)
    ref_rel = ref.rel if ref is not None and ref.status == "ok" else {}
    settings = SpanSettings()
    registered = relevance_methods()
    rows = []
    for name, st in stats.items():
        row: dict = {"method": name, "notes_per_s": None, "forward_equivalents": None, "peak_rss_mib": None,
                     "overlap_with_ig": None}
        row["status"] = st.status
        if st.status == "ok" and st.times:
            calls = len(st.times)
            per_note = sum(st.times) / sum(st.call_notes)
            row.update({
                "notes_per_s": 1.0 / per_note,
                "forward_equivalents": statistics.median(st.ratios),
                "peak_rss_mib": st.peak,
                "seconds_per_note": per_note,
                "forward_s_per_note": sum(st.fwd) / sum(st.call_notes),
                "forward_equivalents_of_sums": sum(st.times) / sum(st.fwd),
                "forward_equivalents_min": min(st.ratios),
                "forward_equivalents_max": max(st.ratios),
                "calls": calls,
                "notes": st.notes,
                "peak_rss_delta_mib": st.delta,
                "rss_measure": st.extras.get("rss_how"),
            })
            if "_fwd" in st.extras:
                row["forward_part_fe"] = statistics.median(st.extras["_fwd"])
                row["backward_part_fe"] = statistics.median(st.extras["_bwd"])
            row["seconds_by_note"] = [st.note_time.get(i) for i in range(len(prompts))]
            if name.split(":")[-1] in NOT_RELEVANCE:
                rows.append(row)
                continue
            default = stats.get(DEFAULT_METHOD)
            if ":" in name and default is not None and default.rel:
                both = sorted(set(st.rel) & set(default.rel))
                row["overlap_with_default"] = float(np.mean(
                    [jaccard(top_fraction(st.rel[i], top), top_fraction(default.rel[i], top)) for i in both]))
                row["max_rel_diff_vs_default"] = max(
                    float(np.max(np.abs(st.rel[i] - default.rel[i])) / (np.max(np.abs(default.rel[i])) or 1.0))
                    for i in both)
            common = sorted(set(st.rel) & set(ref_rel))
            if common:
                row["overlap_with_ig"] = float(np.mean(
                    [jaccard(top_fraction(st.rel[i], top), top_fraction(ref_rel[i], top)) for i in common]))
                cls = registered.get(name.split(":")[0])
                select = get_selector(getattr(cls, "span_selector", None) or "hysteresis")
                ref_select = get_selector("hysteresis")
                rng = np.random.default_rng(0)
                span_j = []
                for i in common:
                    p = prompts[i]
                    a = span_chars(select(st.rel[i], p.offsets, p.text, settings, rng))
                    b = span_chars(ref_select(ref_rel[i], p.offsets, p.text, settings, np.random.default_rng(0)))
                    span_j.append(jaccard(a, b))
                row["span_overlap_with_ig"] = float(np.mean(span_j))
                row["overlap_notes"] = len(common)
        rows.append(row)
    return rows


def _batch_of(method, prompts):
    return method.base.batch(prompts) if isinstance(method, Variant) else method.batch(prompts)


# ---------------------------------------------------------------------------------------
# items: K items of one note at once vs K separate scorings
# ---------------------------------------------------------------------------------------
def run_items(
    model,
    tokenizer,
    notes: Sequence[str],
    items: Sequence[str] = DEFAULT_ITEMS,
    *,
    method_name: str = DEFAULT_METHOD,
    lead_in: str = DEFAULT_LEAD_IN,
    target: str = "sum_logprob",
    batch_size: int | None = None,
    padded_batch: bool = False,
    fast_backward: bool = False,
    progress: bool = True,
) -> list[dict]:
    """For each note: its K items scored in one ``compute_relevance`` call (as the precompute
    does; grad x input shares the prompt's prefix between the items) vs K separate
    ``attribute`` calls, interleaved (order alternates); the ratio is the median over notes of
    together / separate, and the maps are checked against the separate scorings
    (``max_rel_diff_vs_separate``). ``padded_batch`` adds the K prompts as one padded batch
    without sharing (``share_prefix=False``, the path before). ``batch_size``: texts per call."""
    from tqdm.auto import tqdm

    from axolotl_decselfmask.registry import get_method

    cls = get_method(method_name)
    method = cls(model, tokenizer, target, "middle", steps=32, unit="sentence", fast_backward=fast_backward)
    k = len(items)
    bs = batch_size or 1
    arms: dict[str, Callable] = {
        "together": lambda ps: compute_relevance(method, ps, bs),
        "separate": lambda ps: [method.attribute([p])[0] for p in ps],
    }
    if padded_batch:
        unshared = cls(model, tokenizer, target, "middle", steps=32, unit="sentence", fast_backward=fast_backward,
                       share_prefix=False)
        arms["padded_batch"] = lambda ps: unshared.attribute(ps)
    times: dict[str, list[float]] = {a: [] for a in arms}
    diffs: dict[str, list[float]] = {a: [] for a in arms}
    all_prompts = [[build_relevance_prompt(tokenizer, t, it, lead_in) for it in items] for t in notes]
    for arm in arms:  # warm-up
        arms[arm](all_prompts[0][:2])
    bar = tqdm(total=len(notes) * len(arms), desc="items bench", unit="arm", disable=not progress,
               dynamic_ncols=True)
    for n, ps in enumerate(all_prompts):
        order = list(arms) if n % 2 == 0 else list(reversed(arms))
        results = {}
        for arm in order:
            bar.set_postfix_str(f"{arm} note {n + 1}/{len(notes)}")
            t, results[arm] = timed(arms[arm], ps)
            times[arm].append(t)
            bar.update(1)
        ref = results["separate"]
        for arm, rels in results.items():
            if arm != "separate":
                diffs[arm].append(max(float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) or 1.0)) for a, b in zip(rels, ref)))
    bar.close()
    rows = []
    for arm in arms:
        if arm == "separate":
            continue
        ratios = [a / b for a, b in zip(times[arm], times["separate"])]
        suffix = ":fast_backward" if fast_backward else ""
        rows.append({
            "benchmark": "items", "method": (method_name if arm == "together" else f"{method_name}:{arm}") + suffix,
            "items": k, "notes": len(notes), "fast_backward": fast_backward,
            "seconds_per_note": statistics.median(times[arm]),
            "separate_seconds_per_note": statistics.median(times["separate"]),
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "max_rel_diff_vs_separate": max(diffs[arm]) if diffs[arm] else None,
        })
    return rows


# ---------------------------------------------------------------------------------------
# profile: where grad x input spends its time, by kind of operation
# ---------------------------------------------------------------------------------------
CATEGORIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::_mkldnn", "aten::mkldnn")),
    ("attention", ("aten::_scaled_dot_product", "aten::_flash", "aten::_efficient", "aten::softmax",
                   "aten::_softmax")),
    ("zeros/copies", ("aten::fill_", "aten::copy_", "aten::zero_", "aten::zeros", "aten::cat", "aten::index",
                      "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::slice_backward",
                      "aten::select_backward", "aten::empty")),
    ("elementwise", ("aten::mul", "aten::add", "aten::sub", "aten::div", "aten::neg", "aten::pow", "aten::rsqrt",
                     "aten::mean", "aten::sum", "aten::silu", "aten::sigmoid", "aten::exp", "aten::where",
                     "aten::_log_softmax", "aten::gather", "aten::embedding")),
)


def _category(op: str) -> str:
    for cat, prefixes in CATEGORIES:
        if op.startswith(prefixes):
            return cat
    return "other"


def _profiled(fn) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    out: dict[str, float] = {}
    for ev in prof.key_averages():
        out[ev.key] = out.get(ev.key, 0.0) + ev.self_cpu_time_total / 1e6
    return out


def run_profile(model, tokenizer, notes, *, item=DEFAULT_ITEM, lead_in=DEFAULT_LEAD_IN, target="sum_logprob",
                progress=True) -> list[dict]:
    """torch.profiler self-CPU seconds of a plain forward, the forward of grad x input (with
    autograd recording) and its backward, per operation, summed over ``notes``. One row a
    phase and kind of operation, plus the top operations of the backward."""
    from tqdm.auto import tqdm

    from axolotl_decselfmask.relevance.methods import GradientXInput

    method = GradientXInput(model, tokenizer, target, "middle")
    prompts = [build_relevance_prompt(tokenizer, t, item, lead_in) for t in notes]
    phases = ("plain_forward", "gxi_forward", "gxi_backward")
    totals: dict[str, dict[str, float]] = {ph: {} for ph in phases}
    method.attribute(prompts[:1])  # warm-up
    for p in tqdm(prompts, desc="profile", unit="note", disable=not progress):
        batch = method.batch([p])
        state = {}

        def fwd():
            embeds = method.embedding(batch.ids).detach().requires_grad_(True)
            with torch.enable_grad():
                state["embeds"], state["scores"] = embeds, method.scores(batch, inputs_embeds=embeds)

        def bwd():
            torch.autograd.grad(state["scores"].sum(), state["embeds"])

        for ph, fn in zip(phases, (lambda: plain_forward(model, batch), fwd, bwd)):
            for op, sec in _profiled(fn).items():
                totals[ph][op] = totals[ph].get(op, 0.0) + sec
    base = sum(totals["plain_forward"].values())
    rows = []
    for ph in phases:
        cats: dict[str, float] = {}
        for op, sec in totals[ph].items():
            cats[_category(op)] = cats.get(_category(op), 0.0) + sec
        for cat in [c for c, _ in CATEGORIES] + ["other", "total"]:
            sec = sum(cats.values()) if cat == "total" else cats.get(cat, 0.0)
            rows.append({"benchmark": "profile", "phase": ph, "category": cat,
                         "seconds_per_note": sec / len(prompts), "forward_equivalents": sec / base})
    top = sorted(totals["gxi_backward"].items(), key=lambda kv: -kv[1])[:12]
    for op, sec in top:
        rows.append({"benchmark": "profile", "phase": "gxi_backward", "op": op, "category": _category(op),
                     "seconds_per_note": sec / len(prompts), "forward_equivalents": sec / base})
    return rows


def format_profile(rows: list[dict]) -> str:
    cats = [c for c, _ in CATEGORIES] + ["other", "total"]
    phases = ("plain_forward", "gxi_forward", "gxi_backward")
    by = {(r["phase"], r["category"]): r for r in rows if "op" not in r}
    lines = ["self-CPU time as forward equivalents (a plain forward's total = 1.00); torch.profiler"]
    lines.append("category".ljust(14) + "".join(ph.rjust(15) for ph in phases))
    for c in cats:
        lines.append(c.ljust(14) + "".join(f"{by[(ph, c)]['forward_equivalents']:15.2f}" for ph in phases))
    lines.append("top operations of the backward:")
    for r in rows:
        if "op" in r:
            lines.append(f"  {r['op']:<60} {r['forward_equivalents']:6.2f}  ({r['category']})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# printing, goals, CLI
# ---------------------------------------------------------------------------------------
def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def format_relevance_table(rows: list[dict]) -> str:
    """One line a method; a method that did not run says why on its line."""
    cols = [("method", None), ("notes/s", "notes_per_s", ".3f"), ("fwd-equiv/note", "forward_equivalents", ".2f"),
            ("peak RSS MiB", "peak_rss_mib", ".0f"), ("(+ over start)", "peak_rss_delta_mib", ".0f"),
            ("top10% J(IG)", "overlap_with_ig", ".2f"), ("span J(IG)", "span_overlap_with_ig", ".2f"),
            ("notes", "notes", "d")]
    if any("overlap_with_default" in r for r in rows):
        cols.append(("top10% J(default)", "overlap_with_default", ".2f"))
    table = [[c[0] for c in cols]]
    for r in rows:
        if r.get("status", "ok") != "ok":
            continue
        table.append([r["method"]] + [_fmt(r.get(c[1]), c[2]) for c in cols[1:]])
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    widths[0] = max([widths[0]] + [len(r["method"]) for r in rows])
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
           for line in table]
    out += [f"{r['method'].ljust(widths[0])}  {r['status']}" for r in rows if r.get("status", "ok") != "ok"]
    return "\n".join(out)


def relevance_goals(rows: list[dict], ig_steps: int = 32) -> list[str]:
    by = {r["method"]: r for r in rows if r.get("status", "ok") == "ok"}
    out = []
    d = by.get(DEFAULT_METHOD)
    if d is None:
        return [f"goals: {DEFAULT_METHOD} did not run"]
    fe = d["forward_equivalents"]
    out.append(f"goal {DEFAULT_METHOD} <= {GOAL_DEFAULT_FE} forward equivalents per note: {fe:.2f} -> "
               f"{'met' if fe <= GOAL_DEFAULT_FE else 'NOT met'}")
    ig = by.get(REFERENCE)
    if ig is not None:
        speed = ig["forward_equivalents"] / fe
        common = [i for i, (a, b) in enumerate(zip(d["seconds_by_note"], ig["seconds_by_note"]))
                  if a is not None and b is not None]
        raw = sum(ig["seconds_by_note"][i] for i in common) / sum(d["seconds_by_note"][i] for i in common)
        steps_note = "" if ig_steps == 32 else f" (IG ran with {ig_steps} steps, the goal is for 32)"
        out.append(f"goal {DEFAULT_METHOD} >= {GOAL_IG_SPEEDUP:.0f}x the throughput of IG: {speed:.1f}x by paired "
                   f"forward equivalents ({raw:.1f}x by raw seconds on the same {len(common)} notes) -> {'met' if speed >= GOAL_IG_SPEEDUP else 'NOT met'}"
                   + steps_note)
    else:
        out.append(f"goal >= {GOAL_IG_SPEEDUP:.0f}x IG: not measured ({REFERENCE} did not run)")
    lrp = next((r for r in rows if r["method"] == "attnlrp"), None)
    if lrp is not None and lrp.get("status") == "ok":
        ratio = lrp["forward_equivalents"] / fe
        out.append(f"goal attnlrp <= {GOAL_ATTNLRP_VS_DEFAULT}x the cost of {DEFAULT_METHOD}: {ratio:.2f}x -> "
                   f"{'met' if ratio <= GOAL_ATTNLRP_VS_DEFAULT else 'NOT met'}")
    else:
        out.append(f"goal attnlrp <= {GOAL_ATTNLRP_VS_DEFAULT}x: not measured ("
                   f"{lrp['status'] if lrp else 'attnlrp not in the run'})")
    return out


def format_items(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        lines.append(
            f"{r['method']}: {r['items']} items of one note {r['seconds_per_note']:.2f} s vs {r['items']} separate "
            f"scorings {r['separate_seconds_per_note']:.2f} s -> ratio {r['ratio']:.2f} "
            f"(min {r['ratio_min']:.2f}, max {r['ratio_max']:.2f}, {r['notes']} notes; "
            f"max relative difference of the maps {r['max_rel_diff_vs_separate']:.1e}); goal <= {GOAL_ITEMS_RATIO}: "
            f"{'met' if r['ratio'] <= GOAL_ITEMS_RATIO else 'NOT met'}")
    return "\n".join(lines)


class _AttentionInterface(dict):
    """lxt replaces a modeling module's ``ALL_ATTENTION_FUNCTIONS`` by a plain dict; transformers 5
    calls ``.get_interface()`` on it."""

    def get_interface(self, attn_implementation, default):
        return self.get(attn_implementation, default)


def _apply_lxt_shim() -> str | None:
    """Benchmark-only stand-ins so that lxt 2.1's Llama patch can be *timed* on transformers 5
    (not a fix, and its relevance is not checked here):

    - lxt imports ``find_pruneable_heads_and_indices`` and ``prune_linear_layer`` (used only by its
      BERT patch) that transformers 5 removed: stand-ins that raise if called;
    - lxt's ``patch_attention`` stores a plain dict where transformers 5 wants an
      ``AttentionInterface``: the dict gets a ``get_interface`` method.

    Returns why it could not be applied (then attnlrp stays unavailable), or None."""
    import types

    import transformers.pytorch_utils as pu

    def _missing(*_a, **_k):
        raise NotImplementedError("removed from transformers 5 (bench --lxt-shim stand-in)")

    for name in ("find_pruneable_heads_and_indices", "prune_linear_layer"):
        if not hasattr(pu, name):
            setattr(pu, name, _missing)
    try:
        from axolotl_decselfmask.relevance.methods.attnlrp import _import_lxt

        _import_lxt()
        from lxt.efficient.models import DEFAULT_MAP
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    for patch_map in DEFAULT_MAP.values():
        for key, patch in list(patch_map.items()):
            if isinstance(key, types.ModuleType) and not getattr(patch, "_bench_shim", False):
                def wrapped(module, _patch=patch):
                    done = _patch(module)
                    fns = getattr(module, "ALL_ATTENTION_FUNCTIONS", None)
                    if isinstance(fns, dict) and not hasattr(fns, "get_interface"):
                        module.ALL_ATTENTION_FUNCTIONS = _AttentionInterface(fns)
                    return done

                wrapped._bench_shim = True
                patch_map[key] = wrapped
    return None


def _common_args(p: argparse.ArgumentParser, notes: int) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help="model folder (default: %(default)s)")
    p.add_argument("--data", default=DEFAULT_DATA, help="csv(.gz) of notes (default: %(default)s)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--notes", type=int, default=notes, help="notes drawn (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=300, help="notes cut to this many tokens (default: 300)")
    p.add_argument("--min-tokens", type=int, default=None,
                   help="prefer notes with at least this many tokens (default: --max-tokens; 0: any)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--lead-in", default=DEFAULT_LEAD_IN)
    p.add_argument("--target", choices=("sum_logprob", "token_logit"), default="sum_logprob")
    p.add_argument("--json", dest="json_path", default=None, help="also write the rows to this JSON file")
    p.add_argument("--no-progress", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m axolotl_decselfmask.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="bench", required=True)
    rel = sub.add_parser("relevance", help="every relevance method on the same notes")
    _common_args(rel, 8)
    rel.add_argument("--methods", default=None, help="comma-separated (default: every registered method)")
    rel.add_argument("--item", default=DEFAULT_ITEM)
    rel.add_argument("--batch-size", type=int, default=1)
    rel.add_argument("--ig-steps", type=int, default=32)
    rel.add_argument("--ig-notes", type=int, default=None, help="integrated gradients on the first n notes only")
    rel.add_argument("--ablation-unit", choices=("word", "sentence"), default="sentence")
    rel.add_argument("--repeats", type=int, default=1, help=f"calls per note of methods other than {SLOW_METHODS}")
    rel.add_argument("--top", type=float, default=0.1, help="share of tokens in the top-token overlap (default 0.1)")
    rel.add_argument("--variants", default="", help=f"prototypes of grad_x_input to time beside it: {','.join(VARIANTS)}")
    rel.add_argument("--lxt-shim", action="store_true",
                     help="stand-ins for the transformers helpers lxt 2.1 still imports (benchmark only)")
    prof = sub.add_parser("profile", help="grad_x_input's forward and backward by kind of operation")
    _common_args(prof, 2)
    prof.add_argument("--item", default=DEFAULT_ITEM)
    items = sub.add_parser("items", help="K items of one note vs K separate scorings")
    _common_args(items, 2)
    items.add_argument("--items", default=",".join(DEFAULT_ITEMS), help="comma-separated items (default: 8)")
    items.add_argument("--method", default=DEFAULT_METHOD)
    items.add_argument("--padded-batch", action="store_true",
                       help="also time the K prompts as one padded batch without sharing their prefix")
    items.add_argument("--fast-backward", action="store_true",
                       help="grad_x_input's fast_backward option, in every arm")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "lxt_shim", False):
        _apply_lxt_shim()
    model_path = Path(args.model)
    if not model_path.is_absolute() and not model_path.exists() and (ROOT / model_path).exists():
        model_path = ROOT / model_path
    model, tokenizer = load_model(model_path, args.dtype)
    notes = load_notes(args.data, args.text_column, args.notes, args.seed, tokenizer, args.max_tokens,
                       args.min_tokens)
    n_tok = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in notes]
    print(f"{args.bench}: {len(notes)} notes of {args.data} ({args.text_column}), {min(n_tok)}-{max(n_tok)} tokens "
          f"(cut at {args.max_tokens}); model {model_path} ({args.dtype}, {attn_implementation(model)} attention); "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs", flush=True)
    if args.bench == "relevance":
        rows = run_relevance(
            model, tokenizer, notes, args.methods.split(",") if args.methods else None, item=args.item,
            lead_in=args.lead_in, target=args.target, batch_size=args.batch_size, ig_steps=args.ig_steps,
            ig_notes=args.ig_notes, ablation_unit=args.ablation_unit, repeats=args.repeats, top=args.top,
            variants=[v for v in args.variants.split(",") if v], progress=not args.no_progress)
        for r in rows:
            r.update({"dtype": args.dtype, "threads": torch.get_num_threads(), "max_tokens": args.max_tokens})
        print(format_relevance_table(rows))
        fwd = [r["forward_s_per_note"] for r in rows if r.get("forward_s_per_note")]
        if fwd:
            print(f"plain forward (inference, {attn_implementation(model)}): median {statistics.median(fwd):.3f} s/note")
        for line in relevance_goals(rows, args.ig_steps):
            print(line)
        failed = any(str(r.get("status", "")).startswith("failed") for r in rows)
    elif args.bench == "profile":
        rows = run_profile(model, tokenizer, notes, item=args.item, lead_in=args.lead_in, target=args.target,
                           progress=not args.no_progress)
        print(format_profile(rows))
        failed = False
    else:
        rows = run_items(model, tokenizer, notes, [i.strip() for i in args.items.split(",") if i.strip()],
                         method_name=args.method, lead_in=args.lead_in, target=args.target,
                         padded_batch=args.padded_batch, fast_backward=args.fast_backward,
                         progress=not args.no_progress)
        print(format_items(rows))
        failed = False
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
