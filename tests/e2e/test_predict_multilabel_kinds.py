"""``predict`` on a multi-label task with the classifiers the end-to-end own-data test does not train
(after ``run_stage2``, stage 1 off, a tiny random Llama, real abstracts with made-up label sets): one
head per label (``method: head``), and one LoRA for all of the task's labels (``joint: false``,
``stage2/<task>``); both give the test notes the evaluation's label sets and per-label scores."""

import contextlib
import copy
import io
import json

import pytest
from helpers import base_recipe, data_rows, write_rows

LABELS = ["neoplasms", "cardiovascular diseases", "treatment"]


def _sets(row):
    return [y for y in LABELS[:2] if row["label"] == y] + (["treatment"] if "treatment" in row["text"].lower() else [])


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("predict_multilabel")
    train = data_rows("abstracts_train.jsonl", per_class=2)
    test = data_rows("abstracts_test.jsonl", per_class=1)
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    write_rows(tmp / "train.jsonl", [{"id": r["id"], "text": r["text"], "topics": _sets(r)} for r in train])
    write_rows(tmp / "test.jsonl", [{"id": f"t-{r['id']}", "text": r["text"], "topics": _sets(r)} for r in test])
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["decselfmask"]["classification"].update(task="topics", label_column="topics", labels=LABELS,
                                                   batch_size=4, max_steps=1)
    return tmp, recipe, test


def _run_and_predict(recipe, out, notes):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.predict import predict
    from axolotl_decselfmask.stage2.run import run_stage2

    cfg = DictDefault(dict(copy.deepcopy(recipe), output_dir=str(out)))
    with contextlib.redirect_stdout(io.StringIO()):
        run_stage2(cfg, DecSelfMaskConfig(**cfg["decselfmask"]), progress=False)
        summary = predict(cfg, str(notes), out / "labels.jsonl", most_uncertain=2, progress=False)
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    evaluated = [json.loads(line) for line in (out / "predictions-topics.jsonl").read_text().splitlines()]
    return summary, rows, evaluated


def _assert_repeats(rows, evaluated, test):
    assert [r["id"] for r in rows] == [f"t-{t['id']}" for t in test] == [p["id"] for p in evaluated]
    for r, p in zip(rows, evaluated):
        assert r["task"] == "topics" and r["label"] == p["pred"] and list(r["scores"]) == LABELS
        for label in LABELS:
            assert r["scores"][label] == pytest.approx(p["scores"][label], abs=1e-4)


def test_heads_per_label(setting):
    tmp, recipe, test = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"].update(method="head", head={"epochs": 10})
    summary, rows, evaluated = _run_and_predict(recipe, tmp / "out_head", tmp / "test.jsonl")
    _assert_repeats(rows, evaluated, test)
    # a head's log-probabilities: each label's two answers sum to 1
    assert all(abs(sum(2.718281828 ** v for v in s) - 1) < 1e-6 for r in rows for s in r["scores"].values())
    entry = summary["tasks"]["topics"]
    assert entry["multi_label"] and entry["counts"] == {y: sum(y in r["label"] for r in rows) for y in LABELS}


def test_one_lora_for_the_tasks_labels(setting):
    tmp, recipe, test = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"]["joint"] = False
    out = tmp / "out_per_task"
    summary, rows, evaluated = _run_and_predict(recipe, out, tmp / "test.jsonl")
    assert (out / "stage2" / "topics" / "adapter_model.safetensors").is_file()
    _assert_repeats(rows, evaluated, test)
    uncertain = [json.loads(line) for line in (out / "labels-most-uncertain.jsonl").read_text().splitlines()]
    assert [u["rank"] for u in uncertain] == [1, 2] and summary["tasks"]["topics"]["most_uncertain"] == [
        u["id"] for u in uncertain]
    assert all(u["uncertain_label"] in LABELS and u["margin"] <= 1.0 for u in uncertain)
