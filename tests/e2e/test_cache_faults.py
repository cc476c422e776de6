"""The cache under faults: full disk, two runs at once, text kept out on request; safety checks."""

import errno
import json
import re
import subprocess
import sys

import pytest
from conftest import DATA, ROOT
from transformers import AutoTokenizer

import axolotl_decselfmask.io.files as cache_mod
from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.stage1.precompute import run_precompute

TEXTS = [json.loads(l)["text"][:300] for l in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()[:8]]


def _cfg(**masking):
    return DecSelfMaskConfig(items=["neoplasms", "cardiovascular diseases"], items_per_text=2,
                             relevance={"shard_size": 3}, spans={"rescale_after_smoothing": True},
                             masking=masking)


def test_full_disk_fails_cleanly_and_never_leaves_a_complete_looking_cache(tmp_path, tiny_llama, monkeypatch):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    real_fsync, calls = cache_mod.os.fsync, {"n": 0}

    def fsync_then_full(fd):
        calls["n"] += 1
        if calls["n"] >= 4:  # the disk fills up while the 4th file is written
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(cache_mod.os, "fsync", fsync_then_full)
    with pytest.raises(OSError, match="No space left"):
        run_precompute(TEXTS, _cfg(), tok, str(tiny_llama), tmp_path, progress=False)
    assert not list(tmp_path.rglob("manifest.json")) and not list(tmp_path.rglob("examples.jsonl"))
    assert not list(tmp_path.rglob("*.tmp"))  # no half-written files left behind
    monkeypatch.setattr(cache_mod.os, "fsync", real_fsync)
    again = run_precompute(TEXTS, _cfg(), tok, str(tiny_llama), tmp_path, progress=False)
    clean = run_precompute(TEXTS, _cfg(), tok, str(tiny_llama), tmp_path / "clean", progress=False)
    assert again.examples == clean.examples


SCRIPT = r"""
import json, sys
from transformers import AutoTokenizer
from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.stage1.precompute import run_precompute
texts = json.loads(sys.argv[3])
cfg = DecSelfMaskConfig(items=["neoplasms", "cardiovascular diseases"], items_per_text=2,
                        relevance={"shard_size": 1}, spans={"rescale_after_smoothing": True})
r = run_precompute(texts, cfg, AutoTokenizer.from_pretrained(sys.argv[1]), sys.argv[1], sys.argv[2], progress=False)
print(json.dumps(r.examples))
"""


def test_two_runs_on_one_cache_do_not_corrupt_it(tmp_path, tiny_llama):
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tiny_llama), str(tmp_path), json.dumps(TEXTS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    first, second = (json.loads(o[0].strip().splitlines()[-1]) for o in outs)
    assert first == second
    assert not list(tmp_path.rglob("*.tmp"))
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    cfg = DecSelfMaskConfig(items=["neoplasms", "cardiovascular diseases"], items_per_text=2,
                            relevance={"shard_size": 1}, spans={"rescale_after_smoothing": True})
    reread = run_precompute(TEXTS, cfg, tok, str(tiny_llama), tmp_path, progress=False)
    assert reread.reused and reread.examples == first


def test_write_jsonl_false_keeps_text_out_of_the_cache(tmp_path, tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    quiet = run_precompute(TEXTS, _cfg(write_jsonl=False), tok, str(tiny_llama), tmp_path, progress=False)
    assert not list(tmp_path.rglob("examples.jsonl"))
    words = {w for t in TEXTS for w in re.findall(r"[A-Za-z]{6,}", t)} - {"neoplasms", "cardiovascular", "diseases", "disease"}  # item names
    for f in tmp_path.rglob("*"):
        if f.is_file():
            content = f.read_text()
            assert not any(w in content for w in words), f  # offsets and scores only
    loud = run_precompute(TEXTS, _cfg(), tok, str(tiny_llama), tmp_path / "other", progress=False)
    assert quiet.examples == loud.examples
    rebuilt = run_precompute(TEXTS, _cfg(write_jsonl=False), tok, str(tiny_llama), tmp_path, progress=False)
    assert rebuilt.examples == quiet.examples


def test_no_pickle_no_torch_load_no_implicit_remote_code():
    src = "\n".join(p.read_text() for p in (ROOT / "axolotl_decselfmask").rglob("*.py"))
    assert "import pickle" not in src and "torch.load(" not in src
    assert "trust_remote_code=True" not in src
    assert re.search(r"trust_remote_code=bool\(cfg\.trust_remote_code\)", src)
