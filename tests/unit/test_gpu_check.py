"""benchmarks/gpu_check.py on a CPU with tiny models: every part measured (or skipped with a reason), one JSON."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rows_by_key(report):
    return {(r["part"], r["model"]): r for r in report["parts"]}


def test_tiny_cpu_run_measures_every_part(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    gpu_check.main(["--tiny", "--device", "cpu", "--steps", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["environment"]["torch"] and report["environment"]["transformers"] and report["environment"]["peft"]
    assert set(report["models"]) == set(gpu_check.CONFIGS)
    rows = rows_by_key(report)
    assert set(rows) == {(p, m) for p in gpu_check.PARTS for m in gpu_check.CONFIGS}
    for (part, model), row in rows.items():
        if part in ("stage1_qlora", "stage2_qlora", "relevance_attnlrp_4bit"):
            # on a CPU without --qlora-cpu: skipped, and it says why (4-bit relevance: also by recipe)
            assert row["status"] == "skipped" and row["reason"], row
            continue
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0 and row["peak_gb"] is None  # no CUDA: no memory reading
        assert row["predicted_gb"] > 0  # the memory model's prediction beside it
    assert rows[("stage1_lora", "llama-3.2-1b-instruct")]["batch"] == 4  # the recipe's micro_batch_size
    assert rows[("stage1_lora", "llama-3.1-8b-instruct")]["batch"] == 2
    assert rows[("stage2_lora", "llama-3.2-1b-instruct")]["batch"] == 16
    # rank 32 on every linear layer doubles stage 1's rank 16
    assert rows[("stage2_lora", "llama-3.2-1b-instruct")]["lora_params"] == \
        2 * rows[("stage1_lora", "llama-3.2-1b-instruct")]["lora_params"]
    assert "CUDA" in rows[("relevance_attnlrp_4bit", "llama-3.1-8b-instruct")]["reason"]
    assert "bf16" in rows[("relevance_attnlrp_4bit", "llama-3.2-1b-instruct")]["reason"]


def test_full_configs_are_the_public_models(gpu_check):
    params = {}
    for name in gpu_check.CONFIGS:
        args = gpu_check.parse_args(["--out", "unused.json", "--models", name])
        params[name] = gpu_check.model_summary(args)[name]["params"]
    assert round(params["llama-3.2-1b-instruct"] / 1e9, 2) == 1.24  # the model card's 1.24B
    assert round(params["llama-3.1-8b-instruct"] / 1e9, 2) == 8.03


def test_4bit_parts_run_on_bitsandbytes_cpu_backend(gpu_check, tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "q.json"
    gpu_check.main(["--tiny", "--device", "cpu", "--qlora-cpu", "--steps", "1", "--models", "llama-3.1-8b-instruct",
                    "--parts", "stage1_qlora", "stage2_qlora", "relevance_attnlrp_4bit", "--out", str(out)])
    rows = rows_by_key(json.loads(out.read_text()))
    for part in ("stage1_qlora", "stage2_qlora", "relevance_attnlrp_4bit"):
        row = rows[(part, "llama-3.1-8b-instruct")]
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0
        assert row["linear4bit"] == 2 * 7  # every linear layer of both tiny layers is 4-bit (lm_head stays bf16)
