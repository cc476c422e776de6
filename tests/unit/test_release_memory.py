"""Freed heap goes back to the machine: after ``release_freed_memory``, and after an in-process relevance
precompute, so that the trainer that follows (and the data worker it forks) does not carry the relevance
model's leftovers (benchmarks/relevance_release.py: 2.7 GB for SmolLM2-135M, 3.8 GB for Qwen2.5-0.5B)."""

import gc
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from transformers import AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.hardware import release_freed_memory
from axolotl_decselfmask.stage1.precompute import run_precompute

GLIBC = release_freed_memory()


def _anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssAnon in /proc/self/status")


def _holes_in_the_heap():
    """About 270 MB of freed heap in holes between live blocks: glibc keeps it (only a free top is
    returned on its own). Returns the live blocks, which the caller keeps until it has measured."""
    blocks = [np.ones(100_000 // 8) for _ in range(3000)]  # 100 kB each: below the mmap threshold, on the heap
    live = blocks[::10]
    del blocks
    gc.collect()
    return live


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_release_hands_freed_heap_back():
    live = _holes_in_the_heap()
    before = _anon_mib()
    assert release_freed_memory() is True
    assert _anon_mib() < before - 80, "malloc_trim returned less than 80 of the ~270 MB freed"
    del live


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_precompute_leaves_the_heap_released(tmp_path, tiny_llama):
    texts = [json.loads(line)["text"][:200] for line in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()][:4]
    config = DecSelfMaskConfig(items=["neoplasms", "digestive system diseases"],
                               relevance={"method": "grad_x_input", "dtype": "float32"},
                               spans={"rescale_after_smoothing": True})
    live = _holes_in_the_heap()
    before = _anon_mib()
    result = run_precompute(texts, config, AutoTokenizer.from_pretrained(tiny_llama), str(tiny_llama), tmp_path,
                            progress=False)
    assert result.examples
    # the model was loaded, scored and dropped; what was freed, the holes included, went back
    assert _anon_mib() < before - 80
    del live
