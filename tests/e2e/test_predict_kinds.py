"""``predict`` with each kind of stage-2 classifier, after ``run_stage2`` as the plugin runs it (stage 1
off, a tiny random Llama, real abstracts): per-task LoRAs (``joint: false``) reproduce the
evaluation's scores and decisions on the test notes; a head without any test file is calibrated,
saved and applied; the pool calibration is fitted without a test file too."""

import contextlib
import copy
import io
import json

import pytest
from helpers import LABELS, base_recipe, data_rows, write_rows


@pytest.fixture(scope="module")
def setting(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("predict_kinds")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=12))
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    test = data_rows("abstracts_test.jsonl", per_class=2)
    write_rows(tmp / "test.jsonl", test)
    yes_no = [dict(r, label="yes" if r["label"] == "neoplasms" else "no")
              for r in data_rows("abstracts_train.jsonl", per_class=2)]
    write_rows(tmp / "train_neo.jsonl", yes_no)
    write_rows(tmp / "notes.jsonl", [{"id": f"note-{r['id']}", "text": r["text"]} for r in test])
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["decselfmask"]["classification"].update(batch_size=4, max_steps=1)
    return tmp, recipe, test


def _run(recipe, out):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.run import run_stage2

    recipe = dict(copy.deepcopy(recipe), output_dir=str(out))
    with contextlib.redirect_stdout(io.StringIO()):
        run_stage2(DictDefault(recipe), DecSelfMaskConfig(**recipe["decselfmask"]), progress=False)
    return DictDefault(recipe)


def _predict(cfg, notes, out, **kw):
    from axolotl_decselfmask.stage2.predict import predict

    with contextlib.redirect_stdout(io.StringIO()):
        summary = predict(cfg, str(notes), out, progress=False, **kw)
    if str(out).endswith(".csv"):
        return summary, rows_of_csv(out)
    return summary, [json.loads(line) for line in open(out, encoding="utf-8")]


def test_per_task_adapters_repeat_the_evaluation(setting):
    tmp, recipe, test = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"]["joint"] = False
    recipe["decselfmask"]["tasks"] = [
        {"task": "abstracts"},
        {"task": "neoplasm", "train_file": str(tmp / "train_neo.jsonl"), "test_file": None, "test_fraction": 0.5,
         "labels": ["yes", "no"], "question": "Is the text above about a neoplasm?"}]
    out = tmp / "out_per_task"
    cfg = _run(recipe, out)
    assert (out / "stage2" / "abstracts" / "adapter_model.safetensors").is_file()
    summary, rows = _predict(cfg, tmp / "notes.jsonl", tmp / "per_task.jsonl", most_uncertain=3)
    assert [(r["id"], r["task"]) for r in rows] == [(f"note-{t['id']}", task) for t in test
                                                   for task in ("abstracts", "neoplasm")]
    evaluated = [json.loads(line) for line in (out / "predictions-abstracts.jsonl").read_text().splitlines()]
    mine = [r for r in rows if r["task"] == "abstracts"]
    assert [r["label"] for r in mine] == [p["pred"] for p in evaluated]
    for r, p in zip(mine, evaluated):
        assert r["scores"] == pytest.approx(p["scores"], abs=1e-4) and len(r["scores"]) == len(LABELS)
    assert all(len(r["scores"]) == 2 and r["label"] in ("yes", "no") for r in rows if r["task"] == "neoplasm")
    uncertain = [json.loads(line) for line in (tmp / "per_task-most-uncertain.jsonl").read_text().splitlines()]
    assert [u["rank"] for u in uncertain] == [1, 2, 3, 1, 2, 3]
    assert summary["tasks"]["neoplasm"]["most_uncertain"] == [u["id"] for u in uncertain if u["task"] == "neoplasm"]
    assert json.loads((out / "split-neoplasm.json").read_text())["counts"] == {"no": [4, 4], "yes": [1, 1]}


def test_a_head_without_a_test_file_is_calibrated_saved_and_applied(setting):
    tmp, recipe, test = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"].update(method="head", test_file=None, head={"epochs": 20})
    out = tmp / "out_head"
    cfg = _run(recipe, out)
    assert not (out / "metrics.json").exists()  # nothing to evaluate on
    saved = json.loads((out / "stage2" / "calibration-abstracts.json").read_text())
    assert saved["classifier"] == "head" and saved["calibration"]["mode"] == "balanced"
    assert saved["calibration"]["n_labelled"] == 10 and saved["labels"] == LABELS
    _, rows = _predict(cfg, tmp / "notes.jsonl", tmp / "head.jsonl")
    assert [r["id"] for r in rows] == [f"note-{t['id']}" for t in test]
    assert all(abs(sum(2.718281828 ** s for s in r["scores"]) - 1) < 1e-6 for r in rows)  # a head's log-probabilities


def test_the_pool_calibration_is_fitted_without_a_test_file(setting):
    tmp, recipe, _ = setting
    recipe = copy.deepcopy(recipe)
    recipe["decselfmask"]["classification"].update(train=False, test_file=None, calibration="pool",
                                                   calibration_pool_texts=6)
    out = tmp / "out_pool"
    cfg = _run(recipe, out)
    saved = json.loads((out / "stage2" / "calibration-abstracts.json").read_text())
    assert saved["classifier"] == "none" and saved["calibration"]["n_pool"] == 6
    summary, rows = _predict(cfg, tmp / "notes.jsonl", tmp / "pool.csv")
    assert summary["rows"] == len(rows) == 10 and all(len(json.loads(r["scores"])) == len(LABELS) for r in rows)


def rows_of_csv(path):
    import csv

    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_heads_of_tasks_on_the_same_notes_share_each_note_s_prefix(setting, monkeypatch):
    """Three yes/no tasks with heads on the same notes: predict reads their features on one prompt prefix per
    note (stage2/shared_features.py) and gives the evaluation's scores and labels of the same notes."""
    from axolotl_decselfmask.stage2 import shared_features

    tmp, recipe, test = setting
    recipe = copy.deepcopy(recipe)
    yes_no = [dict(r, label="yes" if r["label"] == "neoplasms" else "no") for r in test]
    write_rows(tmp / "test_neo.jsonl", yes_no)
    questions = ("Is the text above about a neoplasm?", "Does the abstract above name a tumour?",
                 "Is cancer the subject of the abstract above?")
    recipe["decselfmask"]["tasks"] = [
        {"task": f"neo{k}", "train_file": str(tmp / "train_neo.jsonl"), "test_file": str(tmp / "test_neo.jsonl"),
         "labels": ["yes", "no"], "question": q} for k, q in enumerate(questions)]
    recipe["decselfmask"]["classification"].update(method="head", head={"epochs": 20})
    out = tmp / "out_heads"
    cfg = _run(recipe, out)
    computed = []
    real = shared_features.prefetch_features
    monkeypatch.setattr(shared_features, "prefetch_features",
                        lambda *a, **k: computed.append(real(*a, **k)) or computed[-1])
    _, rows = _predict(cfg, tmp / "notes.jsonl", tmp / "heads.jsonl")
    # the (note, task) features on shared prefixes: all but those of notes cut differently for each question
    # (sequence_len 192), which are left to each task's own call
    assert computed and 2 * len(test) <= computed[0] <= 3 * len(test)
    for k in range(3):
        evaluated = [json.loads(line) for line in (out / f"predictions-neo{k}.jsonl").read_text().splitlines()]
        mine = [r for r in rows if r["task"] == f"neo{k}"]
        assert [r["label"] for r in mine] == [p["pred"] for p in evaluated]
        for r, p in zip(mine, evaluated):
            assert r["scores"] == pytest.approx(p["scores"], abs=1e-4)
    # `evaluate` reads them on shared prefixes too, and gives the run's own figures
    from axolotl_decselfmask.stage2.evaluate import evaluate

    computed.clear()
    with contextlib.redirect_stdout(io.StringIO()):
        again = evaluate(cfg, tmp / "evaluated_heads", progress=False)["metrics"]
    run = json.loads((out / "metrics.json").read_text())
    assert computed and computed[0] > 0
    for k in range(3):
        assert again["tasks"][f"neo{k}"]["macro_f1"] == pytest.approx(run["tasks"][f"neo{k}"]["macro_f1"], abs=1e-6)
        assert again["tasks"][f"neo{k}"]["confusion_matrix"] == run["tasks"][f"neo{k}"]["confusion_matrix"]
