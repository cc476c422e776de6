"""A multi-label task through ``run_stage2`` (stage 1 off, tiny random Llama, real abstracts with
made-up label sets): one yes/no question per label trained in the joint LoRA with a single-label
task, calibrated and evaluated per label, Macro and micro F1 as scikit-learn computes them from
the predictions; ``joint: false`` trains one LoRA for all of a task's labels; heads per label."""

import copy
import csv
import json

import numpy as np
import pytest
from helpers import base_recipe, data_rows, run_stage2_captured, write_rows

LABELS = ["neoplasms", "cardiovascular diseases", "treatment"]


def _sets(row):
    """Made-up label sets: the abstract's class (two of the five) and whether it mentions treatment."""
    return [y for y in LABELS[:2] if row["label"] == y] + (["treatment"] if "treatment" in row["text"].lower() else [])


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("multilabel")
    train = data_rows("abstracts_train.jsonl", per_class=2)
    test = data_rows("abstracts_test.jsonl", per_class=2)
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=12))
    write_rows(tmp / "train.jsonl", train)
    write_rows(tmp / "test.jsonl", test)
    with open(tmp / "topics_train.csv", "w", newline="") as f:  # a CSV with a `; `-joined column
        w = csv.DictWriter(f, fieldnames=["id", "text", "topics"])
        w.writeheader()
        w.writerows({"id": r["id"], "text": r["text"], "topics": "; ".join(_sets(r))} for r in train)
    write_rows(tmp / "topics_test.jsonl", [{"id": r["id"], "text": r["text"], "topics": _sets(r)} for r in test])
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["decselfmask"]["classification"].update(calibration="balanced")
    topics = {"task": "topics", "train_file": str(tmp / "topics_train.csv"), "test_file": str(tmp / "topics_test.jsonl"),
              "label_column": "topics", "labels": LABELS}
    recipe["decselfmask"]["tasks"] = [{"task": "abstracts"}, topics]
    return tmp, recipe, train, test


_run = run_stage2_captured


def _decide(scores, cal):
    """The balanced decision from the recorded calibration: argmax of softmax(s + b) * priors / reference."""
    z = np.asarray(scores) + np.array([cal["log_bias"]["yes"], cal["log_bias"]["no"]])
    post = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    post = post * np.array([cal["priors"]["yes"], cal["priors"]["no"]])
    post = post / np.array([cal["reference_priors"]["yes"], cal["reference_priors"]["no"]])
    return post / post.sum()


def test_joint_stage2_trains_and_evaluates_every_label(setting):
    from sklearn.metrics import accuracy_score, f1_score

    tmp, recipe, train, test = setting
    out = tmp / "out_joint"
    metrics, log = _run(recipe, out)
    # one LoRA, trained on the single-label task's rows and one yes/no row per (note, label)
    assert (out / "stage2" / "adapter_config.json").is_file()
    assert f"classifier saved to {out / 'stage2'} ({len(train) + len(LABELS) * len(train)} examples" in log
    assert set(metrics["tasks"]) == {"abstracts", "topics"}  # the user's task names only
    m = metrics["tasks"]["topics"]
    assert m["multi_label"] and m["labels"] == LABELS and m["n_test"] == len(test) and m["n_train"] == len(train)
    assert list(m["per_label"]) == LABELS

    preds = [json.loads(line) for line in (out / "predictions-topics.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in test] and [p["row"] for p in preds] == list(range(len(test)))
    assert [p["gold"] for p in preds] == [[y for y in LABELS if y in _sets(r)] for r in test]
    assert all(set(p["pred"]) <= set(LABELS) and list(p["scores"]) == LABELS for p in preds)
    assert all(len(s) == 2 for p in preds for s in p["scores"].values())
    gold = np.array([[y in p["gold"] for y in LABELS] for p in preds], dtype=int)
    pred = np.array([[y in p["pred"] for y in LABELS] for p in preds], dtype=int)
    assert m["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert m["micro_f1"] == pytest.approx(f1_score(gold, pred, average="micro", zero_division=0))
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, pred))  # the whole label set right

    for j, label in enumerate(LABELS):
        p = m["per_label"][label]
        yes_no_gold = ["yes" if g else "no" for g in gold[:, j]]
        yes_no_pred = ["yes" if g else "no" for g in pred[:, j]]
        assert p["macro_f1"] == pytest.approx(f1_score(yes_no_gold, yes_no_pred, labels=["yes", "no"],
                                                       average="macro", zero_division=0))
        assert p["f1"] == pytest.approx(f1_score(gold[:, j], pred[:, j], zero_division=0))
        assert p["confusion_matrix"]["labels"] == ["yes", "no"] and np.sum(p["confusion_matrix"]["matrix"]) == len(test)
        assert p["question"] == f"Does the text above concern {label}?"
        # calibrated on its own label's training answers: the smoothed share of "yes" among them
        cal = p["calibration"]
        n_yes = sum(label in _sets(r) for r in train)
        assert cal["mode"] == "balanced" and cal["n_labelled"] == len(train)
        assert cal["reference_priors"]["yes"] == pytest.approx((n_yes + 1) / (len(train) + 2), abs=1e-6)
        for row in preds:  # the predictions are that calibration's decisions on the recorded scores
            post = _decide(row["scores"][label], cal)
            if abs(post[0] - post[1]) > 1e-3:
                assert (label in row["pred"]) == (post[0] > post[1])
    assert len({json.dumps(m["per_label"][y]["calibration"]["log_bias"]) for y in LABELS}) == 3
    assert not list(out.glob("predictions-topics_*"))  # no file per label
    assert "Macro F1 over labels" in log


def test_per_task_stage2_on_one_labelled_file_trains_one_lora_for_all_labels(setting):
    """``joint: false``: one LoRA for all of the task's labels; ``test_fraction`` splits the one
    labelled CSV (stratified by label sets), and the pool calibration fits each label on pool notes."""
    tmp, recipe, train, _ = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"].update(joint=False, test_file=None, calibration="pool",
                                                   calibration_pool_texts=4)
    topics = {k: v for k, v in recipe["decselfmask"]["tasks"][1].items() if k != "test_file"}
    recipe["decselfmask"]["tasks"] = [dict(topics, test_fraction=0.3)]
    out = tmp / "out_per_task"
    metrics, log = _run(recipe, out)
    assert (out / "stage2" / "topics" / "adapter_config.json").is_file()
    assert [p.name for p in (out / "stage2").iterdir() if p.is_dir()] == ["topics"]
    split = json.loads((out / "split-topics.json").read_text())
    assert len(split["test_rows"]) == 4 and len(split["train_rows"]) == len(train) - 4  # one per stratum
    assert f"classifier saved to {out / 'stage2' / 'topics'} ({len(LABELS) * (len(train) - 4)} examples" in log
    m = metrics["tasks"]["topics"]
    assert set(metrics["tasks"]) == {"topics"} and m["stage2_joint"] is False and m["n_test"] == 4
    assert all(p["calibration"]["mode"] == "pool" and p["calibration"]["n_pool"] == 4 for p in m["per_label"].values())


def test_heads_per_label_and_decisions_saved_without_a_test_file(setting):
    tmp, recipe, _, _ = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"].update(method="head", head={"epochs": 10}, test_file=None)
    recipe["decselfmask"]["tasks"] = [{k: v for k, v in recipe["decselfmask"]["tasks"][1].items() if k != "test_file"}]
    out = tmp / "out_head"
    metrics, _ = _run(recipe, out)
    assert metrics == {} and not (out / "metrics.json").exists()
    heads = out / "stage2" / "heads"
    for label in LABELS:
        name = f"topics_{label.replace(' ', '_')}"
        assert (heads / f"{name}.safetensors").is_file()
        assert (out / "stage2" / f"calibration-{name}.json").is_file()
    record = json.loads((out / "stage2" / "multilabel-topics.json").read_text())
    assert record["labels"] == LABELS and record["answers"] == ["yes", "no"]
    assert record["sub_tasks"]["treatment"] == "topics/treatment"
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.predict import saved_label_tasks

    (c,) = DecSelfMaskConfig(**recipe["decselfmask"]).task_configs()
    subs = saved_label_tasks(out, c)
    assert [s.task for s in subs] == [f"topics/{y}" for y in LABELS] and subs[0].labels == ["yes", "no"]
    assert subs[2].question == "Does the text above concern treatment?"
    assert saved_label_tasks(tmp / "out_joint", c.model_copy(update={"task": "abstracts"})) is None
    # a new run forgets them first (the plugin, before stage 2)
    from axolotl_decselfmask.stage2.outputs import forget_results

    forget_results(out, "topics")
    assert not list((out / "stage2").glob("calibration-topics_*")) and saved_label_tasks(out, c) is None
