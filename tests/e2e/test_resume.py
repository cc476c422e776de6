"""A precompute killed with SIGKILL resumes, and ends byte-identical to an uninterrupted run.

The killed run is a small random Llama (the SmolLM2 tokenizer) over 40 texts in 40 shards: slow enough a
shard that the run is still going when the third shard appears, fast enough that three runs take seconds
beyond Python's start.
"""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import DATA, make_tiny_llama

SCRIPT = r"""
import json, sys
from transformers import AutoTokenizer
from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.stage1.precompute import run_precompute
model, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = [json.loads(l)["text"][:400] for l in open(sys.argv[4])][:n]
cfg = DecSelfMaskConfig(items=["neoplasms", "cardiovascular diseases"], items_per_text=2,
                        relevance={"batch_size": 2, "shard_size": 2, "dtype": "float32"})
run_precompute(texts, cfg, AutoTokenizer.from_pretrained(model), model, cache, progress=False)
print("DONE")
"""


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def test_sigkill_during_relevance_then_resume(tmp_path):
    model = make_tiny_llama(tmp_path / "model", hidden_size=128, layers=4)
    pool = DATA / "abstracts_unlabelled.jsonl"
    n = 40  # 80 (text, item) pairs in 40 shards

    killed = tmp_path / "killed"
    proc = _run([model, killed, n, pool])
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list(killed.glob("relevance-*/part-*.json"))) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stdout.read()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in killed.glob("relevance-*/part-*.json"))
    assert 3 <= len(done_before) < n
    assert not list(killed.glob("examples-*/manifest.json"))  # nothing passes as complete
    mtimes = {p.name: p.stat().st_mtime_ns for p in killed.glob("relevance-*/part-*.json")}

    resumed = _run([model, killed, n, pool])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0 and "DONE" in out, out[-3000:]
    # shards written before the kill were reused, not recomputed
    after = {p.name: p.stat().st_mtime_ns for p in killed.glob("relevance-*/part-*.json")}
    assert len(after) == n and all(after[k] == v for k, v in mtimes.items())

    clean = tmp_path / "clean"
    fresh = _run([model, clean, n, pool])
    out, _ = fresh.communicate(timeout=600)
    assert fresh.returncode == 0, out[-3000:]
    ex_k = next(killed.glob("examples-*/examples.jsonl"))
    ex_c = next(clean.glob("examples-*/examples.jsonl"))
    assert ex_k.parent.name == ex_c.parent.name
    assert ex_k.read_bytes() == ex_c.read_bytes()
    for part in sorted(clean.glob("relevance-*/part-*.json")):
        twin = next(killed.glob(f"relevance-*/{part.name}"))
        assert json.loads(part.read_text()) == json.loads(twin.read_text())


def test_truncated_shard_is_recomputed_not_used(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.precompute import run_precompute

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    texts = [json.loads(l)["text"][:300] for l in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()[:6]]
    cfg = DecSelfMaskConfig(items=["neoplasms"], relevance={"shard_size": 2},
                            spans={"rescale_after_smoothing": True})
    first = run_precompute(texts, cfg, tok, str(tiny_llama), tmp_path, progress=False)
    shard = sorted(tmp_path.glob("relevance-*/part-*.json"))[1]
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])  # a torn write
    (first.directory / "manifest.json").unlink()  # force the examples to be rebuilt
    second = run_precompute(texts, cfg, tok, str(tiny_llama), tmp_path, progress=False)
    assert not second.reused
    assert shard.read_bytes() == good
    assert second.examples == first.examples


def test_silently_altered_shard_and_damaged_examples_are_rebuilt(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.precompute import run_precompute

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    texts = [json.loads(l)["text"][:300] for l in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()[:4]]
    cfg = DecSelfMaskConfig(items=["neoplasms"], relevance={"shard_size": 2},
                            spans={"rescale_after_smoothing": True})
    first = run_precompute(texts, cfg, tok, str(tiny_llama), tmp_path, progress=False)
    shard = sorted(tmp_path.glob("relevance-*/part-*.json"))[0]
    data = json.loads(shard.read_text())
    data["records"][0]["scores"][0] += 1.0  # still valid JSON, wrong numbers
    shard.write_text(json.dumps(data))
    examples = first.directory / "examples.jsonl"
    examples.write_text(examples.read_text()[:-40])  # torn last line
    second = run_precompute(texts, cfg, tok, str(tiny_llama), tmp_path, progress=False)
    assert not second.reused and second.examples == first.examples
    assert json.loads(shard.read_text())["records"][0]["scores"][0] != data["records"][0]["scores"][0]
