"""benchmarks/gpu_check.py on a CPU with tiny models: every part of every stage measured, the 4-bit ones on
bitsandbytes' CPU backend, with Axolotl, TRL and datasets unimportable as on the GPU machine; the parts
that need pydantic skipped, with the reason, where it is missing; the settings and predictions those of
the recipes."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ONE_B, EIGHT_B = "llama-3.2-1b-instruct", "llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_script(tmp_path, *args) -> dict:
    """The script in a new process (``--without`` must act before anything imports those packages)."""
    out = tmp_path / "gpu_check.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--steps", "1",
                           "--predict-notes", "6", "--predict-chunk", "3", "--tmp-dir", str(tmp_path / "work"),
                           "--out", str(out), *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def rows_by_key(report):
    return {(r["part"], r["model"]): r for r in report["parts"]}


def test_every_part_runs_on_a_cpu_without_axolotl_trl_or_datasets(gpu_check, tmp_path):
    report = run_script(tmp_path, "--without", "axolotl", "trl", "datasets")
    env = report["environment"]
    assert env["without"] == ["axolotl", "datasets", "trl"]
    assert all(env[m].startswith("not importable") for m in ("axolotl", "trl", "datasets"))
    rows = rows_by_key(report)
    assert set(rows) == {(p, m) for p in gpu_check.PARTS for m in gpu_check.CONFIGS}
    for (part, model), row in rows.items():
        assert row["status"] == "ok", row
        assert row["tokens_per_s"] > 0, row
        assert row["peak_gb"] is None  # no CUDA: no memory reading
        assert row["predicted_gb"] > 0 and row["predicted_terms_gb"]["weights"] > 0  # the memory model beside it
        if part.startswith(("evaluation", "predict", "relevance")):
            assert row["notes_per_s"] > 0, row
    # the recipes' own parts (QLoRA; relevance in bf16 for the 1B, 4 bits for the 8B) ran first, for both models
    order = [(r["part"], r["model"]) for r in report["parts"]]
    own = [key for key in order if rows[key]["recipe_own"]]
    assert order[: len(own)] == own and len(own) == 10
    assert rows[("relevance_attnlrp", ONE_B)]["recipe_own"] and rows[("relevance_attnlrp_4bit", EIGHT_B)]["recipe_own"]
    # the recipes' batches (stage 1 micro_batch_size, stage 2 batch_size, eval_batch_size, relevance batch_size)
    for model, (s1, s2, ev, rel) in {ONE_B: (4, 8, 8, 2), EIGHT_B: (2, 2, 2, 1)}.items():
        assert [rows[(p, model)]["batch"] for p in ("stage1_qlora", "stage2_qlora", "evaluation_4bit",
                                                     "relevance_attnlrp")] == [s1, s2, ev, rel]
        assert rows[("stage1_qlora", model)]["linear4bit"] == 2 * 7  # every linear layer of both tiny layers
        assert rows[("evaluation", model)]["linear4bit"] == 0
        # stage 2 trains its r32 LoRA beside the frozen stage-1 adapter; the classifier stacks both (16 + 32)
        stage2 = rows[("stage2_qlora", model)]
        assert stage2["adapters"] == ["default", "stage1"] and stage2["classifier_rank"] == 48
        assert stage2["lora_params"] == 2 * rows[("stage1_qlora", model)]["lora_params"]
        assert stage2["label_tokens"] == 2  # the loss on the label and the end of turn only
        for part in ("predict", "predict_4bit"):
            row = rows[(part, model)]
            assert row["rows"] == row["notes"] == 6 and row["chunks"] == 2 and sum(row["counts"].values()) == 6
    assert rows[("stage2_lora", ONE_B)]["lora_params"] == 2 * rows[("stage1_lora", ONE_B)]["lora_params"]


def test_the_parts_that_need_pydantic_say_so_where_it_is_missing(tmp_path):
    report = run_script(tmp_path, "--without", "axolotl", "trl", "datasets", "pydantic", "--models", ONE_B,
                        "--parts", "stage1_qlora", "stage2_qlora", "evaluation", "predict_4bit", "relevance_attnlrp")
    rows = rows_by_key(report)
    for part in ("stage1_qlora", "relevance_attnlrp"):  # stage 1 and relevance need no pydantic
        assert rows[(part, ONE_B)]["status"] == "ok", rows[(part, ONE_B)]
    for part in ("stage2_qlora", "evaluation", "predict_4bit"):  # the package's settings (args.py) import pydantic
        row = rows[(part, ONE_B)]
        assert row["status"] == "skipped" and "needs pydantic" in row["reason"] and ".whl/site" in row["reason"], row


def test_full_configs_are_the_public_models(gpu_check):
    params = {}
    for name in gpu_check.CONFIGS:
        args = gpu_check.parse_args(["--out", "unused.json", "--models", name])
        params[name] = gpu_check.model_summary(args)[name]["params"]
    assert round(params[ONE_B] / 1e9, 2) == 1.24  # the model card's 1.24B
    assert round(params[EIGHT_B] / 1e9, 2) == 8.03


def test_the_predictions_are_the_memory_models_for_the_recipes(gpu_check):
    """On a GPU, each of a recipe's own parts is predicted exactly as the memory model predicts the recipe's
    stage (docs/recipes.md's table), and measured with that stage's batch, length and rank."""
    from axolotl_decselfmask import memory

    args = SimpleNamespace(device="cuda:0", tiny=False)
    for name in gpu_check.CONFIGS:
        recipe = gpu_check.recipe_yaml(name)
        expected = {p.stage: p for p in memory.predict_recipe(recipe, compute="bf16", device="cuda")}
        for part in gpu_check.recipe_parts(name):
            stage = gpu_check.PART_STAGE[part][0]
            got = gpu_check.prediction(part, name, args)
            assert got["predicted_gb"] == round(expected[stage].peak / gpu_check.GB, 4), (name, part)
            assert got["predicted_run"]["seq"] == recipe["sequence_len"] == 1024
            assert got["predicted_run"]["batch"] == gpu_check.runs(name, args)[stage].batch
    # a part in another precision than its recipe's is predicted in that precision
    bf16 = gpu_check.prediction("stage1_lora", EIGHT_B, args)
    nf4 = gpu_check.prediction("stage1_qlora", EIGHT_B, args)
    assert bf16["predicted_run"]["weights"] == "bf16" and nf4["predicted_run"]["weights"] == "nf4"
    assert bf16["predicted_terms_gb"]["weights"] > 2 * nf4["predicted_terms_gb"]["weights"]
