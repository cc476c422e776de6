"""``classification.test_fraction``: one labelled file split into training and test rows, stratified,
seeded, saved to ``<output_dir>/split-<task>.json`` and reused; the errors (both sources, too few
rows of a label); the split's test side kept out of the unlabelled pool."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
from helpers import LABELS, data_rows, write_rows
from pydantic import ValidationError

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.labelled import split_path, stratified_split
from axolotl_decselfmask.stage2.data import load_task_data


def _rows():
    return data_rows("abstracts_train.jsonl", per_class=8)  # 8 of each of the 5 labels, real abstracts


def _config(path, **extra) -> ClassificationConfig:
    return ClassificationConfig(task="abstracts", train_file=str(path), test_fraction=0.25, **extra)


def test_the_split_is_stratified_seeded_and_keeps_ids(tmp_path):
    rows = _rows()
    path = write_rows(tmp_path / "labelled.jsonl", rows)
    data = load_task_data(_config(path), tmp_path / "out", seed=3)
    assert Counter(data.test.labels) == {label: 2 for label in LABELS}  # 8 x 0.25 of every label
    assert Counter(data.train.labels) == {label: 6 for label in LABELS}
    assert sorted(data.train.rows + data.test.rows) == list(range(len(rows)))
    assert [rows[r]["id"] for r in data.test.rows] == data.test.ids  # each row keeps its id and text
    assert [rows[r]["text"] for r in data.test.rows] == data.test.texts
    assert data.labels == sorted(LABELS)
    again = load_task_data(_config(path), tmp_path / "elsewhere", seed=3)  # the same seed: the same rows
    assert again.test.rows == data.test.rows
    other = load_task_data(_config(path), tmp_path / "third", seed=4)
    assert other.test.rows != data.test.rows and Counter(other.test.labels) == Counter(data.test.labels)


def test_the_split_is_saved_and_a_rerun_uses_it(tmp_path, caplog):
    path = write_rows(tmp_path / "labelled.jsonl", _rows())
    out = tmp_path / "out"
    first = load_task_data(_config(path), out, seed=0)
    saved = json.loads(split_path(out, "abstracts").read_text())
    assert saved["test_rows"] == first.test.rows and saved["train_rows"] == first.train.rows
    assert saved["counts"] == {label: [6, 2] for label in sorted(LABELS)}
    # a rerun reads the saved rows rather than drawing again: an edited (still valid) saved split is used
    saved["test_rows"], saved["train_rows"] = first.train.rows[:10], first.test.rows + first.train.rows[10:]
    split_path(out, "abstracts").write_text(json.dumps(saved))
    assert load_task_data(_config(path), out, seed=0).test.rows == first.train.rows[:10]
    # other contents of the file: a new split replaces the saved one, with a warning
    write_rows(tmp_path / "labelled.jsonl", _rows()[::-1])
    with caplog.at_level(logging.WARNING):
        redrawn = load_task_data(_config(path), out, seed=0)
    assert "a new split replaces it" in caplog.text
    assert json.loads(split_path(out, "abstracts").read_text())["test_rows"] == redrawn.test.rows


def test_test_file_and_test_fraction_together_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="test_file .* and test_fraction .* are both set"):
        ClassificationConfig(train_file="a.jsonl", test_file="b.jsonl", test_fraction=0.2)
    with pytest.raises(ValidationError, match=r"\[b\]: test_file .* and test_fraction"):
        DecSelfMaskConfig(tasks=[{"task": "a"}, {"task": "b", "test_file": "b_test.jsonl", "test_fraction": 0.5}])
    # a task's own test source replaces the one it would inherit from classification
    a, b = DecSelfMaskConfig(classification={"test_fraction": 0.2},
                             tasks=[{"task": "a"}, {"task": "b", "test_file": "b_test.jsonl"}]).task_configs()
    assert (a.test_file, a.test_fraction, b.test_file, b.test_fraction) == (None, 0.2, "b_test.jsonl", None)
    [c] = DecSelfMaskConfig(classification={"test_file": "t.jsonl"}, tasks=[{"task": "c", "test_fraction": 0.3}]
                            ).task_configs()
    assert (c.test_file, c.test_fraction) == (None, 0.3)
    c = ClassificationConfig(train_file=write_rows(tmp_path / "l.jsonl", _rows())).model_copy(
        update={"test_file": "t.jsonl", "test_fraction": 0.2})  # as task_configs() merges, unvalidated
    with pytest.raises(InputError, match="both set"):
        load_task_data(c)
    with pytest.raises(ValidationError):
        ClassificationConfig(test_fraction=1.0)


def test_a_label_with_too_few_rows_is_named(tmp_path):
    rows = _rows()[:16] + [dict(_rows()[-1], label="rare")]
    path = write_rows(tmp_path / "labelled.jsonl", rows)
    with pytest.raises(InputError, match=r"'rare' has 1.*test_file"):
        load_task_data(_config(path), tmp_path / "out")
    assert not split_path(tmp_path / "out", "abstracts").exists()


def test_every_label_is_on_both_sides():
    train, test = stratified_split(["a", "a", "b", "b", "b", "b", "b", "b", "b", "b"], 0.05, 0, "x")
    assert len(test) == 2 and {0, 1} & set(test) and {0, 1} - set(test)  # round(2 x 0.05) = 0, raised to 1
    train, test = stratified_split(["a", "a", "b", "b"], 0.9, 0, "x")
    assert len(train) == 2  # round(2 x 0.9) = 2, lowered to 1: one row of each label stays for training


def test_the_test_side_is_kept_out_of_the_pool(tmp_path):
    from axolotl_decselfmask.stage1.pool import without_test_texts

    rows = _rows()
    path = write_rows(tmp_path / "labelled.jsonl", rows)
    config = DecSelfMaskConfig(classification={"train_file": path, "test_fraction": 0.25}, seed=1)
    test = load_task_data(config.classification, tmp_path / "out", seed=1).test
    train_text = next(r["text"] for i, r in enumerate(rows) if i not in test.rows)
    pool = [test.texts[0], train_text, "an unlabelled note"]
    with pytest.raises(InputError, match=r"test_fraction side"):
        without_test_texts(pool, config, "notes.jsonl")
    config.drop_test_texts_from_pool = True
    assert without_test_texts(pool, config, "notes.jsonl") == [train_text, "an unlabelled note"]
