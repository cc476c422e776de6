"""``predict`` on a multi-label task before any model work: its labels' saved decisions found through
``stage2/multilabel-<task>.json`` (as the evaluation writes them), the checks of a recipe changed since
training, each label decided by its own calibration, a note's uncertainty as its least certain
label's, and the label set as a list (JSON Lines) or joined by the task's separator (CSV)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.calibration import Calibration
from axolotl_decselfmask.stage2.evaluation import save_label_set_decisions
from axolotl_decselfmask.stage2.multilabel import label_set_decisions
from axolotl_decselfmask.stage2.outputs import calibration_path, label_set_record_path
from axolotl_decselfmask.stage2.predict import (
    TaskNotes,
    _label_set_results,
    output_path,
    trained_tasks,
    write_rows,
)
from axolotl_decselfmask.stage2.scoring import Scorer
from axolotl_decselfmask.stage2.task_prompt import label_question, task_prompt
from axolotl_decselfmask.stage2.tasks import Task, TaskData

LABELS = ["Surgery", "Neurology", "Cardiovascular / Pulmonary"]
ANSWERS = ["yes", "no"]


def _cfg(tmp_path, **classification):
    from axolotl.utils.dict import DictDefault

    block = {"classification": {"task": "specialty", "train_file": "unused.csv", "label_column": "specialties",
                                "labels": LABELS, "train": False, **classification}}
    return DictDefault({"output_dir": str(tmp_path / "out"), "base_model": "unused", "sequence_len": 256,
                        "decselfmask": block})


def _fitted(shift: float, seed: int) -> Calibration:
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(20, 2)) + np.array([shift, 0.0])
    labels = [ANSWERS[i] for i in rng.integers(0, 2, size=20)]
    return Calibration.fit("balanced", ANSWERS, scores, labels)


def _train(tmp_path) -> list[Calibration]:
    """The decisions a finished evaluation saves (stage 2 off): one per label, and the task's record."""
    cfg = _cfg(tmp_path)
    config = DecSelfMaskConfig(**cfg["decselfmask"])
    (c,) = config.task_configs()
    parent = Task(c, TaskData(None, None, ANSWERS, LABELS), task_prompt(config, 0, None), 256, [], [], None, None)
    parts = []
    for label in LABELS:
        question = label_question(c, label)
        sub = c.model_copy(update={"task": f"{c.task}/{label}", "labels": ANSWERS, "question": question})
        parts.append(Task(sub, TaskData(None, None, ANSWERS), task_prompt(config, 0, None, question), 256, [], [],
                          None, None, parent=parent, label=label))
    calibrations = [_fitted(shift, seed) for seed, shift in enumerate([2.0, -1.0, 0.5])]
    save_label_set_decisions(cfg, parts, [Scorer.of(None, None, t) for t in parts], calibrations)
    return calibrations


def _tasks(tmp_path, **classification):
    cfg = _cfg(tmp_path, **classification)
    return trained_tasks(cfg, DecSelfMaskConfig(**cfg["decselfmask"]))


def test_each_labels_saved_decision_is_found(tmp_path):
    calibrations = _train(tmp_path)
    (t,) = _tasks(tmp_path)
    assert t.multi_label and t.label_set == LABELS and t.answers == ANSWERS and t.kind == "none"
    assert [p.settings.task for p in t.parts] == [f"specialty/{y}" for y in LABELS]
    assert [p.record["question"] for p in t.parts] == [f"Does the text above concern {y}?" for y in LABELS]
    scores = np.random.default_rng(5).normal(size=(7, 2))
    for p, fitted in zip(t.parts, calibrations):
        assert np.array_equal(p.calibration.decide(scores)[1], fitted.decide(scores)[1])
    (empty,) = _tasks(tmp_path, labels=[])  # labels from the training file: the saved set is used
    assert empty.label_set == LABELS


def test_a_recipe_changed_since_training_is_refused(tmp_path):
    _train(tmp_path)
    with pytest.raises(InputError, match=r"\[specialty\]: the recipe's labels \['Surgery', 'Neurology'\] differ "
                                         r"from the labels the classifier was trained .*multilabel-specialty.json"):
        _tasks(tmp_path, labels=LABELS[:2])
    with pytest.raises(InputError, match=r"\[specialty/Surgery\]: the recipe's label_answers \['present', 'absent'\] "
                                         r"differ from the options"):
        _tasks(tmp_path, label_answers=["present", "absent"])
    with pytest.raises(InputError, match=r"sets multi_label: false, but the run trained the task as a multi-label"):
        _tasks(tmp_path, multi_label=False)
    calibration_path(tmp_path / "out", "specialty/Neurology").unlink()
    with pytest.raises(InputError, match=r"\[specialty/Neurology\]: no saved decision .*calibration-specialty_"
                                         r"Neurology.json: stage 2 and its calibration have not finished"):
        _tasks(tmp_path)
    label_set_record_path(tmp_path / "out", "specialty").unlink()
    with pytest.raises(InputError, match=r"no saved decision .*calibration-specialty.json \(nor, for a multi-label "
                                         r"task, .*multilabel-specialty.json\)"):
        _tasks(tmp_path)


def test_labels_are_decided_per_label_and_the_least_certain_label_ranks_a_note(tmp_path):
    _train(tmp_path)
    (t,) = _tasks(tmp_path)
    scores = np.random.default_rng(1).normal(size=(6, 3, 2)) * 2
    has, post = label_set_decisions([p.calibration for p in t.parts], scores)
    for j, p in enumerate(t.parts):
        pred, expected = p.calibration.decide(scores[:, j])
        assert np.array_equal(has[:, j], pred == 0) and np.allclose(post[:, j], expected)
    notes = TaskNotes(["a"] * 6, [0, 1, 2, 4, 5, 6], [f"n{i}" for i in range(6)])
    keyed, uncertain, entry = _label_set_results(t, notes, scores, 4)
    rows = [row for _, row in keyed]
    assert [r["label"] for r in rows] == [[y for y, on in zip(LABELS, h) if on] for h in has]
    assert rows[2]["scores"] == {y: pytest.approx(list(scores[2, j])) for j, y in enumerate(LABELS)}
    assert entry["counts"] == {y: int(has[:, j].sum()) for j, y in enumerate(LABELS)} and entry["multi_label"]
    label_margins = np.abs(post[:, :, 0] - post[:, :, 1])  # two answers: the margin of the top two
    order = np.argsort(label_margins.min(axis=1), kind="stable")[:4]
    assert [u["id"] for u in uncertain] == [f"n{j}" for j in order] == entry["most_uncertain"]
    assert [u["margin"] for u in uncertain] == pytest.approx(list(label_margins.min(axis=1)[order]))
    assert [u["uncertain_label"] for u in uncertain] == [LABELS[k] for k in label_margins.argmin(axis=1)[order]]
    assert all(list(u["posteriors"]) == LABELS for u in uncertain)


def test_a_label_set_is_a_list_in_json_lines_and_joined_in_csv(tmp_path):
    rows = [{"id": "mt-1", "task": "specialty", "label": ["Surgery", "Cardiovascular / Pulmonary"],
             "scores": {"Surgery": [-0.2, -1.7]}},
            {"id": "mt-2", "task": "specialty", "label": [], "scores": {"Surgery": [-2.0, -0.1]}},
            {"id": "mt-1", "task": "finding", "label": "other", "scores": [-1.0, -0.5]}]
    write_rows(output_path(tmp_path / "p.jsonl"), rows, {"specialty": ";"})
    assert [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] == rows
    write_rows(output_path(tmp_path / "p.csv"), rows, {"specialty": ";"})
    with open(tmp_path / "p.csv", encoding="utf-8") as handle:
        read = list(csv.DictReader(handle))
    assert [r["label"] for r in read] == ["Surgery;Cardiovascular / Pulmonary", "", "other"]
    assert json.loads(read[0]["scores"]) == {"Surgery": [-0.2, -1.7]} and json.loads(read[2]["scores"]) == [-1.0, -0.5]
    uncertain = [{"task": "finding", "rank": 1, "id": "a", "margin": 0.1},
                 {"task": "specialty", "rank": 1, "id": "b", "margin": 0.2, "uncertain_label": "Surgery"}]
    write_rows(tmp_path / "u.csv", uncertain)  # the columns of every row
    with open(tmp_path / "u.csv", encoding="utf-8") as handle:
        read = list(csv.DictReader(handle))
    assert read[0]["uncertain_label"] == "" and read[1]["uncertain_label"] == "Surgery"


def test_the_docs_predict_rows_are_what_predict_writes(tmp_path):
    """docs/own_data.md, "Several labels per note": its predict rows (CSV and JSON Lines) are one
    row written both ways with the section's recipe (its labels and separator)."""
    import yaml
    from conftest import ROOT

    section = (ROOT / "docs" / "own_data.md").read_text().split("## Several labels per note", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```")[1::2]
    block = yaml.safe_load(next(b for b in blocks if b.startswith("yaml\n")).split("\n", 1)[1])["decselfmask"]
    (c,) = DecSelfMaskConfig(**block).task_configs()
    row = json.loads(next(b for b in blocks if b.startswith("json\n") and '"task"' in b).split("\n", 1)[1])
    assert row["task"] == c.task and set(row["label"]) <= set(c.labels) and list(row["scores"]) == c.labels
    assert all(len(v) == 2 for v in row["scores"].values())
    shown = next(b for b in blocks if b.startswith("\nid,task,label,scores\n")).lstrip("\n")
    write_rows(tmp_path / "p.csv", [row], {c.task: c.label_separator})
    with open(tmp_path / "p.csv", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    shown_rows = list(csv.DictReader(shown.splitlines()))
    assert [(r["id"], r["task"], r["label"]) for r in shown_rows] == [(r["id"], r["task"], r["label"]) for r in written]
    assert json.loads(shown_rows[0]["scores"]) == json.loads(written[0]["scores"])
