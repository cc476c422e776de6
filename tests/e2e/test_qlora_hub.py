"""A QLoRA run (`adapter: qlora`, `load_in_4bit: true`) with `decselfmask.hub_model_id`, offline, on a tiny
random Llama with a stage-1 LoRA and the mask token added: the upload is logged, not made, and
`output_dir/hub` holds the classifier as ONE adapter on the base model (nothing merged into 4 bits) with the
tokenizer that has the mask token. The call the card documents loads it in 4 bits, and it labels the test
notes as the evaluation did; so does `predict.yml` inside the folder. The stage-2 checkpoints hold the
trained LoRA, not the resized embedding."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_llama
from helpers import base_recipe, data_rows, write_rows

REPO = "someone/abstracts-qlora-classifier"


def _axolotl(args, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               AXOLOTL_DO_NOT_TRACK="1", HF_TOKEN="hf_" + "x" * 30)
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora-hub")
    model = make_tiny_llama(tmp / "tiny", hidden_size=64)  # 64 wide: the smallest bitsandbytes' CPU kernels take
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=6))
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    test = data_rows("abstracts_test.jsonl", per_class=2)
    write_rows(tmp / "test.jsonl", test)
    write_rows(tmp / "notes.jsonl", [{"id": r["id"], "text": r["text"]} for r in test])
    recipe = base_recipe(tmp, model)
    recipe.update(adapter="qlora", load_in_4bit=True, max_steps=3)
    recipe["decselfmask"]["hub_model_id"] = REPO
    recipe["decselfmask"]["classification"].update(learning_rate=0.02, save_steps=1, save_total_limit=5)
    path = tmp / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    _axolotl(["preprocess", path], tmp)
    log = _axolotl(["train", path], tmp)
    return {"tmp": tmp, "model": model, "out": tmp / "out", "hub": tmp / "out" / "hub", "recipe": recipe, "log": log}


def _labels(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _documented_call(card: str, folder: Path):
    """The card's "How to load" code, run as written with the folder for REPO_OR_FOLDER."""
    code = re.search(r"## How to load\n\n```python\n(.*?)```", card, re.S).group(1)
    assert "AutoPeftModelForCausalLM.from_pretrained(" in code and "load_in_4bit=True" in code
    scope: dict = {}
    exec(code.replace("REPO_OR_FOLDER", str(folder)), scope)  # noqa: S102 - the card's own code
    return scope["model"], scope["tokenizer"]


def _predict(hub: Path, notes: Path, out: Path) -> list[dict]:
    import contextlib
    import io

    from axolotl_decselfmask.stage2.predict import predict, read_recipe

    cwd = Path.cwd()
    os.chdir(hub)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            predict(read_recipe("predict.yml"), str(notes), out, progress=False)
    finally:
        os.chdir(cwd)
    return _labels(out)


def test_hub_root_is_one_adapter_on_the_base_model(run):
    hub, out = run["hub"], run["out"]
    assert f"not uploaded, HF_HUB_OFFLINE is set (offline mode); the classifier to share is in {hub}" in run["log"]
    settings = json.loads((hub / "adapter_config.json").read_text())
    assert settings["base_model_name_or_path"] == str(Path(run["model"]).resolve())
    assert settings["r"] == run["recipe"]["lora_r"] + run["recipe"]["decselfmask"]["classification"]["lora_r"]
    assert settings["trainable_token_indices"]  # stage 1's mask row travels in the adapter
    weights = (out / "stage2" / "adapter_model.safetensors").read_bytes()
    assert (hub / "adapter_model.safetensors").read_bytes() == weights
    assert not list(hub.glob("model*.safetensors")) and not (hub / "config.json").exists()  # no model merged in 4 bits
    model_bytes = sum(p.stat().st_size for p in Path(run["model"]).glob("*.safetensors"))
    assert (hub / "adapter_model.safetensors").stat().st_size < 0.1 * model_bytes
    assert "<|decselfmask_mask|>" in (hub / "tokenizer.json").read_text()
    record = json.loads((hub / "decselfmask_classifier.json").read_text())
    assert record["root"] == "classifier" and "AutoPeftModelForCausalLM" in record["load"]
    for name in ("README.md", "recipe.yml", "predict.yml", "metrics.json", "predictions-abstracts.jsonl",
                 "stage2/calibration-abstracts.json"):
        assert (hub / name).is_file(), name
    card = (hub / "README.md").read_text()
    assert "load-with-autopeftmodelforcausallm" in card and "load-with-automodelforcausallm" not in card


def test_documented_call_labels_as_the_run_did(run, monkeypatch):
    """The card's one call gives the 4-bit classifier, and `predict` run with that model (inside the folder,
    with its decision files) labels the test notes as the evaluation did."""
    from axolotl_decselfmask.model_precision import quantised_layers
    from axolotl_decselfmask.stage2 import note_labels

    hub = run["hub"]
    model, tokenizer = _documented_call((hub / "README.md").read_text(), hub)
    assert quantised_layers(model) > 0
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == 49153  # grown to the mask token
    monkeypatch.setattr(note_labels, "load_classifier", lambda *a, **k: model.eval())
    labels = _predict(hub, run["tmp"] / "notes.jsonl", run["tmp"] / "labels-documented.jsonl")
    evaluated = _labels(run["out"] / "predictions-abstracts.jsonl")
    assert len(labels) == len(evaluated) == 10
    assert [r["label"] for r in labels] == [p["pred"] for p in evaluated]
    for r, p in zip(labels, evaluated):
        assert r["scores"] == pytest.approx(p["scores"], abs=1e-4)


def test_predict_yml_in_the_folder_labels_as_the_run_did(run):
    labels = _predict(run["hub"], run["tmp"] / "notes.jsonl", run["tmp"] / "labels.jsonl")
    evaluated = _labels(run["out"] / "predictions-abstracts.jsonl")
    assert [r["label"] for r in labels] == [p["pred"] for p in evaluated]
    for r, p in zip(labels, evaluated):
        assert r["scores"] == pytest.approx(p["scores"], abs=1e-4)


def test_stage2_checkpoints_hold_the_trained_lora_not_the_embedding(run):
    from safetensors import safe_open

    checkpoints = sorted((run["out"] / "stage2").glob("checkpoint-*"))
    assert checkpoints, "classification.save_steps: 1 wrote no checkpoint"
    model_bytes = sum(p.stat().st_size for p in Path(run["model"]).glob("*.safetensors"))
    for folder in checkpoints:
        weights = folder / "adapter_model.safetensors"
        with safe_open(str(weights), "pt") as f:
            keys = list(f.keys())
        assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys), [k for k in keys if "lora_" not in k]
        assert weights.stat().st_size < 0.1 * model_bytes, (folder, weights.stat().st_size)
        assert not (folder / "stage1").exists()
