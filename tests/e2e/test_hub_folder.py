"""`axolotl train` with `decselfmask.hub_model_id` while offline, on a tiny random Llama with a stage-1 LoRA
(the mask token added and its row trained): the run says at start that it will not upload, finishes
with exit 0, and leaves `output_dir/hub`, whose root loads with `AutoModelForCausalLM.from_pretrained`
and labels the test notes as the evaluation did (through `predict.yml`, inside the folder)."""

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import base_recipe, data_rows, write_rows

REPO = "someone/abstracts-classifier"


def _axolotl(cmd, recipe_path, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1", HF_TOKEN="hf_" + "x" * 30)
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), cmd, str(recipe_path)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def test_offline_run_builds_the_shared_folder_that_predicts_as_the_run_did(tmp_path, tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    from axolotl_decselfmask.stage2.predict import predict, read_recipe

    write_rows(tmp_path / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=8))
    write_rows(tmp_path / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    test = data_rows("abstracts_test.jsonl", per_class=2)
    write_rows(tmp_path / "test.jsonl", test)
    write_rows(tmp_path / "notes.jsonl", [{"id": r["id"], "text": r["text"]} for r in test])
    recipe = base_recipe(tmp_path, tiny_llama)
    recipe["decselfmask"]["hub_model_id"] = REPO
    recipe["decselfmask"]["classification"].update(learning_rate=0.02)
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    start = _axolotl("preprocess", path, tmp_path)
    assert f"decselfmask.hub_model_id is '{REPO}' but HF_HUB_OFFLINE is set" in start  # said at start
    log = _axolotl("train", path, tmp_path)
    said, stage1_done = log.index("but HF_HUB_OFFLINE is set"), log.index("stage 1 complete")
    assert said < stage1_done  # before training, not after it
    folder = tmp_path / "out" / "hub"
    assert f"not uploaded, HF_HUB_OFFLINE is set (offline mode); the classifier to share is in {folder}" in log
    assert not (folder / "adapter_config.json").exists()  # the root is not the stage-1 adapter
    record = json.loads((folder / "decselfmask_classifier.json").read_text())
    assert record["root"] == "classifier" and record["tasks"] == ["abstracts"]

    model = AutoModelForCausalLM.from_pretrained(folder)  # the documented call
    assert model.get_input_embeddings().weight.shape[0] == 49153  # the added mask token's row is in it
    monkeypatch.chdir(folder)
    with contextlib.redirect_stdout(io.StringIO()):
        predict(read_recipe("predict.yml"), str(tmp_path / "notes.jsonl"), tmp_path / "labels.jsonl", progress=False)
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    evaluated = [json.loads(line) for line in (tmp_path / "out" / "predictions-abstracts.jsonl").read_text().splitlines()]
    assert [r["label"] for r in labels] == [p["pred"] for p in evaluated]
    for r, p in zip(labels, evaluated):
        assert r["scores"] == pytest.approx(p["scores"], abs=1e-4)
