"""Stage 2 run as the plugin runs it (``run_stage2``), stage 1 off, on a tiny random Llama and real
abstracts: the calibrated decision never reads the test file, the head as a way to classify, and
stage-2 checkpoints that a second run resumes from."""

import copy
import json

import pytest
from helpers import LABELS, base_recipe, data_rows, run_stage2_captured, write_rows


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("decisions")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=12))
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    test = data_rows("abstracts_test.jsonl", per_class=2)
    write_rows(tmp / "test.jsonl", test)
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["decselfmask"]["classification"].update(calibration="pool", calibration_pool_texts=8, batch_size=4)
    return tmp, recipe, test


_run = run_stage2_captured


def _predictions(out, task="abstracts"):
    return [json.loads(line) for line in (out / f"predictions-{task}.jsonl").read_text().splitlines()]


def test_calibration_never_reads_the_test_labels(setting):
    tmp, recipe, test = setting
    metrics, _ = _run(recipe, tmp / "out_a")
    # the same test texts with other gold labels: the decision rule and every prediction are the same
    shifted = [dict(r, label=LABELS[0]) for r in test]
    write_rows(tmp / "test_shifted.jsonl", shifted)
    other = copy.deepcopy(recipe)
    other["decselfmask"]["classification"]["test_file"] = str(tmp / "test_shifted.jsonl")
    metrics_b, _ = _run(other, tmp / "out_b")
    a, b = metrics["tasks"]["abstracts"], metrics_b["tasks"]["abstracts"]
    assert a["calibration"] == b["calibration"] and a["calibration"]["mode"] == "pool"
    assert a["calibration"]["n_pool"] == 8
    assert [p["pred"] for p in _predictions(tmp / "out_a")] == [p["pred"] for p in _predictions(tmp / "out_b")]
    assert [p["scores"] for p in _predictions(tmp / "out_a")] == [p["scores"] for p in _predictions(tmp / "out_b")]
    assert a["confusion_matrix"] != b["confusion_matrix"]  # the gold labels did change
    # the argmax and the decision are both recorded; the predictions file holds the decision
    assert "macro_f1_argmax" in a and set(a["per_class_f1"]) == set(LABELS)


def test_head_classifies_and_is_saved(setting):
    from axolotl_decselfmask.stage2.head import HeadClassifier

    tmp, recipe, _ = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"].update(method="head", calibration="balanced", head={"epochs": 20},
                                                   max_train_examples=6)
    out = tmp / "out_head"
    metrics, log = _run(recipe, out)
    task = metrics["tasks"]["abstracts"]
    heads = out / "stage2" / "heads"
    assert (heads / "abstracts.json").is_file() and (heads / "abstracts.safetensors").is_file()
    assert str(heads) in task["stage2_head"] and task["head_position"] == "last"
    assert not (out / "stage2" / "adapter_config.json").exists()  # no LoRA with the head
    head = HeadClassifier.load(out / "stage2" / "heads", "abstracts")
    assert head.labels == LABELS and head.position == "last"
    preds = _predictions(out)
    assert all(abs(sum(2.718281828 ** s for s in p["scores"]) - 1) < 1e-6 for p in preds)  # log-probabilities
    assert "head trained on 6 examples" in log  # max_train_examples: the first 6 of 10 labelled rows
    assert task["n_train"] == 6 and task["calibration"]["n_labelled"] == 6


def test_stage2_checkpoints_resume_and_restart(setting):
    tmp, recipe, _ = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"].update(save_steps=1, max_steps=2, calibration="none")
    out = tmp / "out_resume"
    _, first = _run(recipe, out)
    assert (out / "stage2" / "checkpoint-2").is_dir() and "resuming" not in first
    _, second = _run(recipe, out)
    assert f"resuming from {out / 'stage2' / 'checkpoint-2'}" in second
    # other examples: the old checkpoints are not resumed from, and are removed
    changed = copy.deepcopy(recipe)
    changed["decselfmask"]["classification"]["learning_rate"] = 1e-3
    _, third = _run(changed, out)
    assert ": resuming from" not in third and "not resuming from" in third and "stage 2 starts over" in third
