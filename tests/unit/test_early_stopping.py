"""``classification.early_stopping`` (stage2/epochs.py): stage 2's epochs chosen on a validation split
of the labelled notes. The selection on hand-made curves; the split on hand-made tasks (stratified,
seeded, one side per note across tasks, never a test note held out); then a joint stage 2 of two
tasks sharing their notes on a tiny random Llama with SmolLM2's tokenizer: the chosen epochs and the
validation curve in metrics.json, the held-out notes neither test notes nor trained on in the
search, and the retrain on every labelled note."""

from __future__ import annotations

import re

import pytest
from helpers import LABELS, base_recipe, data_rows, run_stage2_captured, write_rows
from pydantic import ValidationError

from axolotl_decselfmask.args import ClassificationConfig
from axolotl_decselfmask.io.labelled import LabelledData
from axolotl_decselfmask.io.tables import TextReport
from axolotl_decselfmask.stage2.epochs import best_epoch, stop_now, validation_split
from axolotl_decselfmask.stage2.tasks import Task, TaskData, TaskPrompt


def test_the_peak_of_a_curve_that_improves_then_worsens_is_chosen():
    curve = [0.30, 0.45, 0.61, 0.52, 0.40]
    assert best_epoch(curve) == 3
    assert not stop_now(curve[:4], patience=2) and stop_now(curve, patience=2)
    assert stop_now(curve[:4], patience=1)
    assert best_epoch([0.5, 0.5, 0.5]) == 1  # a tie keeps the earlier (fewer epochs)
    assert best_epoch([0.50, 0.505, 0.49], threshold=0.01) == 1  # a gain under the threshold is none
    assert best_epoch([0.50, 0.52, 0.49], threshold=0.01) == 2
    with pytest.raises(ValueError):
        best_epoch([])


def _task(name, texts, labels, options):
    data = TaskData(LabelledData(list(texts), list(labels), list(range(len(texts))), TextReport(len(texts))),
                    None, list(options))
    return Task(ClassificationConfig(task=name, labels=list(options)), data, TaskPrompt("q?", "s"), 64,
                list(texts), list(labels), None, None)


def test_the_split_is_stratified_seeded_and_one_side_per_note():
    texts = [f"note {i}" for i in range(16)]
    topic = _task("topic", texts, ["a"] * 8 + ["b"] * 8, ["a", "b"])
    # the second task shares 12 of the notes, in another order, and has 4 of its own
    other_texts = texts[4:][::-1] + [f"other {i}" for i in range(4)]
    other = _task("other", other_texts, ["yes", "no"] * 8, ["yes", "no"])
    split = validation_split([topic, other], 0.25, seed=3)
    assert split == validation_split([topic, other], 0.25, seed=3)
    assert split != validation_split([topic, other], 0.25, seed=4)
    (t_train, t_held), (o_train, o_held) = split
    assert sorted(t_train + t_held) == list(range(16)) and sorted(o_train + o_held) == list(range(16))
    assert sorted(topic.train_labels[i] for i in t_held) == ["a", "a", "b", "b"]  # 25% of each label
    held = {texts[i] for i in t_held} | {other_texts[i] for i in o_held}
    trained = {texts[i] for i in t_train} | {other_texts[i] for i in o_train}
    assert held and not held & trained  # no note held out for one task and trained on for another


def test_a_labelled_note_that_is_a_test_note_is_never_held_out():
    texts = [f"note {i}" for i in range(8)]
    task = _task("t", texts, ["a", "b"] * 4, ["a", "b"])
    for seed in range(10):
        (train, held), = validation_split([task], 0.5, seed, test_texts=["  NOTE 0 ", "note 1"])
        assert 0 in train and 1 in train and len(held) == 4  # 2 of each label, the rest free to go
        assert all(texts[i] not in ("note 0", "note 1") for i in held)
    (train, held), = validation_split([_task("one", ["x", "y", "z"], ["a", "a", "b"], ["a", "b"])], 0.9, 0)
    assert [i for i in held if i == 2] == []  # a label with one note keeps it to train on


def test_early_stopping_and_max_steps_exclude_each_other():
    with pytest.raises(ValidationError, match="max_steps"):
        ClassificationConfig(early_stopping={"enabled": True}, max_steps=5)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("early-stopping")
    train = data_rows("abstracts_train.jsonl", per_class=4)
    test = data_rows("abstracts_test.jsonl", per_class=1)
    write_rows(tmp / "train.jsonl", train)
    write_rows(tmp / "test.jsonl", test)
    yes_no = lambda rows: [dict(r, label="yes" if r["label"] == "neoplasms" else "no") for r in rows]  # noqa: E731
    write_rows(tmp / "train_neo.jsonl", yes_no(train))
    write_rows(tmp / "test_neo.jsonl", yes_no(test))
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["sequence_len"] = 256
    block = recipe["decselfmask"]
    block["classification"].update(max_length=256, batch_size=8, learning_rate=5e-3,
                                   early_stopping={"enabled": True, "max_epochs": 3, "patience": 1})
    block["tasks"] = [
        {"task": "abstracts"},
        {"task": "neoplasm", "train_file": str(tmp / "train_neo.jsonl"), "test_file": str(tmp / "test_neo.jsonl"),
         "labels": ["yes", "no"], "question": "Is the text above about a neoplasm?"},
    ]
    metrics, log = run_stage2_captured(recipe, tmp / "out")
    return tmp / "out", train, test, metrics, log


def test_the_chosen_epochs_and_the_curve_are_in_metrics(searched):
    out, train, _, metrics, log = searched
    records = [metrics["tasks"][t]["stage2_epochs"] for t in ("abstracts", "neoplasm")]
    assert records[0] == records[1]  # one joint LoRA, one search
    r = records[0]
    values = [e["macro_f1"] for e in r["curve"]]
    assert 1 <= r["epochs_run"] == len(values) <= 3
    assert [e["epoch"] for e in r["curve"]] == list(range(1, len(values) + 1))
    assert r["chosen_epochs"] == best_epoch(values)
    for e in r["curve"]:  # the joint figure is the mean of the tasks'
        assert set(e["per_task"]) == {"abstracts", "neoplasm"}
        assert e["macro_f1"] == pytest.approx(sum(e["per_task"].values()) / 2)
        assert all(0.0 <= v <= 1.0 for v in e["per_task"].values())
    assert r["n_validation"] == {"abstracts": 5, "neoplasm": 5}  # one of each of 5 labels x 4 notes
    assert r["final"] == "retrain" and not (out / "stage2" / "epoch_search").exists()
    assert f"{r['chosen_epochs']} epoch(s) chosen" in log


def test_the_validation_notes_are_no_test_note_nor_trained_on_and_the_retrain_uses_all(searched):
    out, train, test, metrics, log = searched
    r = metrics["tasks"]["abstracts"]["stage2_epochs"]
    texts = [row["text"] for row in train]
    held = {texts[i] for t in ("abstracts", "neoplasm") for i in r["validation_rows"][t]}
    trained = {texts[i] for t in ("abstracts", "neoplasm") for i in range(len(texts))
               if i not in r["validation_rows"][t]}
    assert held and not held & {row["text"] for row in test} and not held & trained
    search = re.findall(r"classifier saved to \S+epoch_search \((\d+) examples", log)
    final = re.findall(rf"classifier saved to {re.escape(str(out / 'stage2'))} \((\d+) examples", log)
    assert search == [str(2 * (len(texts) - 5))]  # the training parts of both tasks
    assert final == [str(2 * len(texts))]  # every labelled note of both tasks
    assert all(metrics["tasks"][t]["n_train"] == len(texts) for t in ("abstracts", "neoplasm"))


def test_the_callback_stops_after_patience_and_puts_the_best_epoch_back(monkeypatch):
    """The validation figures are a hand-made curve (the scorer is tested above, through a run): the
    callback stops training ``patience`` epochs after the peak and restores the peak's weights."""
    import torch
    from transformers import TrainerControl, TrainerState

    from axolotl_decselfmask.args import EarlyStoppingConfig
    from axolotl_decselfmask.stage2 import epochs

    curve = iter([0.2, 0.7, 0.4, 0.3, 0.9])
    monkeypatch.setattr(epochs, "validation_macro_f1", lambda *a: {"t": next(curve)})
    model = torch.nn.Linear(2, 1)
    callback = epochs.EpochValidation(None, [], EarlyStoppingConfig(enabled=True, patience=2), keep_best=True)
    state, control = TrainerState(), TrainerControl()
    for epoch in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(epoch)  # the weights after this epoch
        state.global_step = epoch
        callback.on_epoch_end(None, state, control, model=model)
        if control.should_training_stop:
            break
    assert epoch == 4 and [e["macro_f1"] for e in callback.curve] == [0.2, 0.7, 0.4, 0.3]
    callback.on_train_end(None, state, control, model=model)
    assert torch.equal(model.weight, torch.full((1, 2), 2.0))  # epoch 2's


def test_the_early_stopping_methods_differ_from_theirs_only_in_the_setting(tmp_path):
    import yaml
    from conftest import SMOLLM
    from helpers import write_corpus

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.tools.experiments.data import build_data
    from axolotl_decselfmask.tools.experiments.grid import load_grid
    from axolotl_decselfmask.tools.experiments.methods import DEFAULT_METHODS, METHODS, _flat, definition_problems
    from axolotl_decselfmask.tools.experiments.runner import plan

    corpus = write_corpus(tmp_path / "corpus.csv.gz", "abstracts_test.jsonl")
    methods = ["sft", "sft_early_stop", "decselfmask", "decselfmask_early_stop"]
    grid = {"model": str(SMOLLM), "methods": methods, "seeds": [0], "labelled_per_task": 4, "test_per_task": 4,
            "pool_size": 4, "corpora": [{"name": "abstracts", "file": str(corpus), "tasks": [
                {"name": "neoplasms", "label_column": "label", "positive": "neoplasms", "question": "Neoplasms?"}]}]}
    (tmp_path / "grid.yml").write_text(yaml.safe_dump(grid))
    g = load_grid(tmp_path / "grid.yml")
    recipes = {r["method"]: r["recipe"] for r in plan(g, tmp_path / "out", build_data(g, tmp_path / "out"))}
    ignore = ("output_dir", "dataset_prepared_path", "decselfmask.tasks")
    assert not definition_problems(recipes, ignore=ignore), definition_problems(recipes, ignore=ignore)
    for base in ("sft", "decselfmask"):
        a = _flat({k: v for k, v in recipes[base].items() if k not in ignore})
        b = _flat({k: v for k, v in recipes[f"{base}_early_stop"].items() if k not in ignore})
        assert sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) == [
            "decselfmask.classification.early_stopping.enabled"]
        assert DecSelfMaskConfig(**recipes[f"{base}_early_stop"]["decselfmask"]).classification.early_stopping.enabled
    assert not {"sft_early_stop", "decselfmask_early_stop"} & set(DEFAULT_METHODS)
    assert not METHODS["sft_early_stop"].baseline and not METHODS["decselfmask_early_stop"].baseline


def test_final_best_epoch_keeps_the_searchs_lora_trained_on_the_training_part(tmp_path, tiny_llama):
    train = data_rows("abstracts_train.jsonl", per_class=4)
    write_rows(tmp_path / "train.jsonl", train)
    write_rows(tmp_path / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=1))
    recipe = base_recipe(tmp_path, tiny_llama, stage1=False)
    recipe["sequence_len"] = 256
    recipe["decselfmask"]["classification"].update(
        max_length=256, batch_size=8, labels=LABELS,
        early_stopping={"enabled": True, "max_epochs": 2, "patience": 1, "final": "best_epoch"})
    metrics, log = run_stage2_captured(recipe, tmp_path / "out")
    r = metrics["tasks"]["abstracts"]["stage2_epochs"]
    assert r["final"] == "best_epoch" and r["chosen_epochs"] == best_epoch([e["macro_f1"] for e in r["curve"]])
    saved = re.findall(r"classifier saved to (\S+) \((\d+) examples", log)
    assert saved == [(str(tmp_path / "out" / "stage2"), str(len(train) - 5))]  # no retrain
    assert "the best epoch's LoRA kept" in log and (tmp_path / "out" / "stage2" / "adapter_model.safetensors").is_file()
