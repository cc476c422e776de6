"""``python -m axolotl_decselfmask.predict`` before any model work: the saved decision rebuilt exactly
(``Calibration.from_dict``), the checks of a run that has not finished stage 2 and of the notes
file, the output formats and the uncertainty measure."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers import data_rows, write_rows

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.calibration import (
    Calibration,
    calibration_from_record,
    calibration_record,
)
from axolotl_decselfmask.stage2.outputs import (
    STAGE2_DIR,
    calibration_path,
    read_calibration,
    write_calibration,
)
from axolotl_decselfmask.stage2.predict import (
    margins,
    output_path,
    predict,
    read_notes,
    trained_tasks,
)
from axolotl_decselfmask.stage2.predict import (
    write_rows as write_output,
)

OPTIONS = ["yes", "no", "maybe"]


def _fitted(mode="pool", temperature=True) -> tuple[Calibration, np.ndarray]:
    rng = np.random.default_rng(0)
    labelled = rng.normal(size=(30, 3)) + np.array([2.0, 0.0, -1.0])
    labels = [OPTIONS[i] for i in rng.integers(0, 3, size=30)]
    pool = rng.normal(size=(50, 3))
    return Calibration.fit(mode, OPTIONS, labelled, labels, pool, temperature=temperature), rng.normal(size=(200, 3))


@pytest.mark.parametrize("mode", ["none", "balanced", "labelled", "pool", "pool_uncorrected"])
def test_a_saved_calibration_decides_exactly_as_the_fitted_one(tmp_path, mode):
    fitted, scores = _fitted(mode)
    path = calibration_path(tmp_path, "my task")
    assert path == tmp_path / STAGE2_DIR / "calibration-my_task.json"
    assert write_calibration(tmp_path, "my task", calibration_record(fitted, task="my task", labels=OPTIONS)) == path
    record = read_calibration(tmp_path, "my task")
    loaded = calibration_from_record(record, path)
    assert record["task"] == "my task" and loaded.options == OPTIONS and loaded.mode == mode
    assert np.array_equal(loaded.decide(scores)[0], fitted.decide(scores)[0])
    assert np.array_equal(loaded.decide(scores)[1], fitted.decide(scores)[1])  # full precision, not rounded
    # metrics.json's rounded entry, with the task's labels, gives the same decisions (up to rounding)
    rounded = Calibration.from_dict(fitted.to_dict(), OPTIONS)
    assert np.allclose(rounded.decide(scores)[1], fitted.decide(scores)[1], atol=1e-5)


def test_a_broken_calibration_record_is_refused(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"format": "decselfmask-calibration", "calibration": {"mode": "balanced"}}))
    with pytest.raises(InputError, match=r"c.json: not a readable calibration \(calibration: the record names no options"):
        calibration_from_record(json.loads(path.read_text()), path)
    with pytest.raises(ValueError, match="log_bias has 2 values for 3 options"):
        Calibration.from_dict({"mode": "balanced", "options": OPTIONS, "log_bias": [0.0, 1.0]})


def _cfg(tmp_path, **classification):
    from axolotl.utils.dict import DictDefault

    block = {"classification": {"task": "t", "train_file": "unused.jsonl", "labels": OPTIONS, **classification}}
    return DictDefault({"output_dir": str(tmp_path / "out"), "base_model": "unused", "sequence_len": 256,
                        "decselfmask": block})


def _trained(tmp_path, **classification):
    cfg = _cfg(tmp_path, **classification)
    config = DecSelfMaskConfig(**cfg["decselfmask"])
    return cfg, config


def test_a_run_without_stage2_is_named_before_any_model_is_loaded(tmp_path):
    cfg, config = _trained(tmp_path)
    with pytest.raises(InputError, match=r"\[t\]: no stage-2 adapter in .*stage2 \(adapter_config.json, "
                                         r"adapter_model.safetensors missing\): stage 2 has not finished"):
        trained_tasks(cfg, config)
    stage2 = tmp_path / "out" / STAGE2_DIR
    stage2.mkdir(parents=True)
    (stage2 / "adapter_config.json").write_text("{}")
    (stage2 / "adapter_model.safetensors").write_bytes(b"weights")
    with pytest.raises(InputError, match=r"no saved decision .*calibration-t.json"):
        trained_tasks(cfg, config)
    fitted, _ = _fitted("balanced")
    write_calibration(cfg.output_dir, "t", calibration_record(fitted, labels=OPTIONS, weights_sha256="0" * 64,
                                                              question="q", system_prompt="s"))
    with pytest.raises(InputError, match="changed after its decision was fitted"):
        trained_tasks(cfg, config)
    head_cfg, head_config = _trained(tmp_path, method="head")
    with pytest.raises(InputError, match=r"no classification head in .*heads \(t.json, t.safetensors missing\)"):
        trained_tasks(head_cfg, head_config)
    per_task_cfg, per_task = _trained(tmp_path, joint=False)
    with pytest.raises(InputError, match=r"stage2/t \("):
        trained_tasks(per_task_cfg, per_task)


def test_a_run_with_other_labels_is_refused(tmp_path):
    cfg, config = _trained(tmp_path, train=False, labels=["yes", "no"])
    fitted, _ = _fitted("balanced")
    write_calibration(cfg.output_dir, "t", calibration_record(fitted, labels=OPTIONS))
    with pytest.raises(InputError, match=r"labels \['yes', 'no'\] differ from the options"):
        trained_tasks(cfg, config)
    cfg, config = _trained(tmp_path, train=False)  # zero-shot: no stage-2 weights, the decision is enough
    [task] = trained_tasks(cfg, config)
    assert task.kind == "none" and task.labels == OPTIONS


def test_the_notes_file_and_its_column_are_checked_by_name(tmp_path):
    cfg, config = _trained(tmp_path, train=False, text_column="note", id_column="note_id")
    fitted, _ = _fitted("balanced")
    write_calibration(cfg.output_dir, "t", calibration_record(fitted, labels=OPTIONS))
    tasks = trained_tasks(cfg, config)
    with pytest.raises(InputError, match=r"NOTES: file .*missing.csv.* does not exist"):
        predict(cfg, str(tmp_path / "missing.csv"), tmp_path / "out.csv")
    rows = data_rows("abstracts_test.jsonl", n=3)
    wrong = write_rows(tmp_path / "notes.jsonl", rows)
    with pytest.raises(InputError, match=r"notes.jsonl: no column 'note' \(set by decselfmask.classification."
                                         r"text_column of task t\); the file has \['id', 'text', 'label'\]"):
        predict(cfg, wrong, tmp_path / "out.jsonl")
    notes = write_rows(tmp_path / "notes2.jsonl", [{"note_id": f"n{i}", "note": r["text"]} for i, r in enumerate(rows)]
                       + [{"note_id": "empty", "note": "  "}])
    [got] = read_notes(notes, tasks)
    assert got.ids == ["n0", "n1", "n2"] and got.rows == [0, 1, 2]  # the empty note skipped
    with pytest.raises(InputError, match=r"--out 'out.txt'.*\.jsonl or \.csv"):
        predict(cfg, notes, "out.txt")


def test_outputs_by_extension_and_the_margin(tmp_path):
    rows = [{"id": "a", "task": "t", "label": "yes", "scores": [-0.1, None]},
            {"id": None, "task": "t", "label": "no", "scores": [-2.0, -0.5]}]
    write_output(output_path(tmp_path / "p.jsonl"), rows)
    assert [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()] == rows
    write_output(output_path(tmp_path / "p.csv"), rows)
    with open(tmp_path / "p.csv", encoding="utf-8") as handle:
        read = list(csv.DictReader(handle))
    assert [(r["id"], r["label"], json.loads(r["scores"])) for r in read] == [
        ("a", "yes", [-0.1, None]), ("", "no", [-2.0, -0.5])]
    post = np.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]])
    assert np.allclose(margins(post), [0.2, 0.85, 0.01])


def test_the_recipe_is_read_without_starting_a_run(tmp_path):
    from axolotl_decselfmask.stage2.predict import read_recipe

    with pytest.raises(InputError, match="RECIPE: file .*nope.yml.* does not exist"):
        read_recipe(tmp_path / "nope.yml")
    (tmp_path / "list.yml").write_text("- a\n- b\n")
    with pytest.raises(InputError, match="needs base_model and output_dir"):
        read_recipe(tmp_path / "list.yml")
    out = tmp_path / "out"
    out.mkdir()
    (out / "debug.log").write_text("the training run's log")
    (tmp_path / "r.yml").write_text(f"base_model: m\noutput_dir: {out}\ndecselfmask:\n  protocol: paper\n")
    cfg = read_recipe(tmp_path / "r.yml")
    assert cfg.sequence_len == 512 and cfg.output_dir == str(out)  # Axolotl's default where the recipe has none
    assert DecSelfMaskConfig(**cfg["decselfmask"]).classification.prompt == "mask_fill"  # the preset applies
    assert (out / "debug.log").read_text() == "the training run's log"
