"""`axolotl preprocess` and `axolotl train` with this plugin, on a tiny random model and real abstracts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import LABELS, PYTHON_LAUNCHER, base_recipe, data_rows, write_rows


def _axolotl(cmd, recipe_path, cwd, *options):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), cmd, str(recipe_path), *options],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("e2e")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=10) + [{"id": -1, "text": "   ", "label": ""}])
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    write_rows(tmp / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=2))
    return tmp


def test_preprocess_then_train_runs_decselfmask(workdir, tiny_llama):
    recipe = base_recipe(workdir, tiny_llama)
    path = workdir / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    log = _axolotl("preprocess", path, workdir)
    assert "self-relevance" in log
    assert "1 empty or whitespace-only texts skipped" in log or "1 empty skipped" in log

    cache = workdir / "prepared" / "decselfmask"
    ex_dirs = list(cache.glob("examples-*"))
    assert len(ex_dirs) == 1
    manifest = json.loads((ex_dirs[0] / "manifest.json").read_text())
    assert manifest["complete"] and manifest["n_texts"] == 10
    assert list(cache.glob("relevance-*/part-*.json"))
    examples = [json.loads(l) for l in (ex_dirs[0] / "examples.jsonl").read_text().splitlines()]
    assert len(examples) == manifest["n_examples"] > 0
    pool = [r["text"] for r in data_rows("abstracts_unlabelled.jsonl", n=10)]
    mask = manifest["settings"]["masking"]["mask_token"]
    assert mask == "<|decselfmask_mask|>"  # masking.mask_token: auto on SmolLM2's tokenizer: the added token
    for ex in examples:
        assert ex["masked_text"].count(mask) == len(ex["spans"]) >= 1
        original = pool[ex["text_index"]]
        rebuilt = ex["masked_text"]
        for s, e in ex["spans"]:
            rebuilt = rebuilt.replace(mask, original[s:e], 1)
        assert original.startswith(rebuilt)  # equal, or the text was truncated to fit
        assert ex["item"] in LABELS

    log = _axolotl("train", path, workdir)
    assert "self-relevance" not in log  # the preprocessed examples are reused
    # the recipe sets no lora_*_kernel: on this CPU the plugin turned Axolotl's CUDA-only kernels off
    assert "fused LoRA kernels (lora_mlp_kernel, lora_qkv_kernel, lora_o_kernel, lora_embedding_kernel) are off" in log
    for key in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel"):
        assert f'"{key}": false' in log  # Axolotl's resolved config
    assert "AMP is not supported on this GPU" not in log
    out = workdir / "out"
    assert (out / "adapter_config.json").is_file()  # stage 1
    # the added mask's embedding row was trained in stage 1 (PEFT's trainable tokens), as one token
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["trainable_token_indices"] == {"embed_tokens": [49152]}
    # the adapter holds that row, not the resized embedding (49153 x 32 float32: 6.3 MB)
    assert (out / "adapter_model.safetensors").stat().st_size < 0.05 * 49153 * 32 * 4
    assert "hold the trained embedding rows [49152]" in log
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(mask) == 49152
    assert (out / "stage2" / "adapter_config.json").is_file()  # stage 2
    metrics = json.loads((out / "metrics.json").read_text())
    task = metrics["tasks"]["abstracts"]
    assert task["n_test"] == 10 and 0.0 <= task["macro_f1"] <= 1.0 and 0.0 <= task["accuracy"] <= 1.0
    assert metrics["macro_f1_mean"] == pytest.approx(task["macro_f1"])
    assert "macro_f1_mean" in log and "abstracts" in log
    preds = [json.loads(l) for l in (out / "predictions-abstracts.jsonl").read_text().splitlines()]
    assert len(preds) == 10 and all(p["pred"] in LABELS for p in preds)
    test_rows = data_rows("abstracts_test.jsonl", per_class=2)
    assert [p["id"] for p in preds] == [r["id"] for r in test_rows]  # the file's id column
    assert [p["row"] for p in preds] == list(range(10)) and [p["gold"] for p in preds] == [r["label"] for r in test_rows]
    assert all(len(p["scores"]) == len(LABELS) and all(s < 0 for s in p["scores"]) for p in preds)
    assert {"macro_f1_argmax", "per_class_f1", "confusion_matrix", "calibration"} <= set(task)
    assert sum(map(sum, task["confusion_matrix"]["matrix"])) == 10 and set(task["per_class_f1"]) == set(LABELS)
    _assert_every_core_and_the_machines_precision(log, task, out)


def _assert_every_core_and_the_machines_precision(log, task, out):
    """`axolotl train` runs under `accelerate launch` (OMP_NUM_THREADS=1); the plugin's line says the
    training process got every core, and metrics.json/the model card say what it ran on."""
    from axolotl_decselfmask.hardware import available_cores, decide_precision

    line = re.search(r"decselfmask: precision (\w+) \((.*?)\); (\d+) CPU thread", log)
    assert line, "no precision line in the training log"
    assert line.group(1) == decide_precision(False).dtype and "bf16: false in the recipe" in line.group(2)
    if "OMP_NUM_THREADS" not in os.environ:
        assert int(line.group(3)) == available_cores() and "accelerate had set OMP_NUM_THREADS=1" in log
    env = task["environment"]
    assert env["dtype"] == line.group(1) and env["threads"] == int(line.group(3))
    assert env["cpu_capability"] and env["torch"] and env["transformers"]
    assert "## Compute environment" in (out / "README.md").read_text()


def test_changed_span_setting_recomputes_examples_not_relevance(workdir, tiny_llama):
    recipe = base_recipe(workdir, tiny_llama)
    recipe["decselfmask"]["spans"]["high"] = 0.6
    path = workdir / "recipe_high.yml"
    path.write_text(yaml.safe_dump(recipe))
    log = _axolotl("preprocess", path, workdir)
    assert "self-relevance" not in log  # relevance shards reused
    cache = workdir / "prepared" / "decselfmask"
    assert len(list(cache.glob("examples-*"))) == 2
    assert len(list(cache.glob("relevance-*"))) == 1
    assert len([p for p in (workdir / "prepared").glob("decselfmask-*")]) == 2


def test_plain_sft_variant_skips_stage1(workdir, tiny_llama):
    recipe = base_recipe(workdir, tiny_llama, stage1=False)
    recipe["output_dir"] = str(workdir / "out_sft")
    recipe["use_tensorboard"] = True
    path = workdir / "recipe_sft.yml"
    path.write_text(yaml.safe_dump(recipe))
    log = _axolotl("train", path, workdir, *PYTHON_LAUNCHER)
    assert "self-relevance" not in log
    assert "skipping masked-reconstruction training" in log
    assert "starting from none (plain SFT)" in log
    metrics = json.loads((workdir / "out_sft" / "metrics.json").read_text())
    assert metrics["tasks"]["abstracts"]["n_test"] == 10
    assert metrics["tasks"]["abstracts"]["stage1"] is False
    # the evaluation's metrics go to the recipe's logger (tensorboard here)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(workdir / "out_sft" / "runs" / "decselfmask"))
    events.Reload()
    logged = events.Scalars("decselfmask/abstracts/macro_f1")
    assert logged[0].value == pytest.approx(metrics["tasks"]["abstracts"]["macro_f1"])
    # the model card of the trained output folder
    card = (workdir / "out_sft" / "README.md").read_text()
    assert "abstracts" in card and f"{metrics['tasks']['abstracts']['macro_f1']:.4f}" in card


def test_bad_label_fails_before_any_model_work(workdir, tiny_llama):
    recipe = base_recipe(workdir, tiny_llama)
    recipe["decselfmask"]["classification"]["labels"] = LABELS[:4]
    recipe["output_dir"] = str(workdir / "out_bad")
    path = workdir / "recipe_bad.yml"
    path.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), "train", str(path), *PYTHON_LAUNCHER],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "label 'general pathological conditions' is not among" in log
    assert "train.jsonl, row" in log
    assert "Loading weights" not in log and "self-relevance" not in log


def test_pool_text_column_other_than_text(workdir, tiny_llama):
    """Axolotl's dataset schema drops `text_column`; the plugin carries it through."""
    notes = [{"note": r["text"], "text": "decoy"} for r in data_rows("abstracts_unlabelled.jsonl", n=6)]
    write_rows(workdir / "notes.jsonl", notes)
    recipe = base_recipe(workdir, tiny_llama)
    recipe["datasets"][0].update(path=str(workdir / "notes.jsonl"), text_column="note")
    recipe["dataset_prepared_path"] = str(workdir / "prepared_notes")
    path = workdir / "recipe_notes.yml"
    path.write_text(yaml.safe_dump(recipe))
    _axolotl("preprocess", path, workdir)
    ex_dir = next((workdir / "prepared_notes" / "decselfmask").glob("examples-*"))
    examples = [json.loads(l) for l in (ex_dir / "examples.jsonl").read_text().splitlines()]
    assert examples and all("decoy" not in ex["masked_text"] for ex in examples)
    assert {ex["text_index"] for ex in examples} <= set(range(6))
