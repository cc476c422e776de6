"""The prepared stage-1 data is keyed by where the test texts come from: with
``classification.test_fraction`` the test side is part of the labelled train_file, so a changed
labelled file (or another fraction or seed) gets its own prepared dataset, and the pool's check
against the test texts runs again."""

from __future__ import annotations

import copy

from helpers import data_rows, write_rows

from axolotl_decselfmask.recipe import prepare_raw_recipe


def _prepared(raw: dict) -> str:
    cfg = copy.deepcopy(raw)
    prepare_raw_recipe(cfg, cfg["decselfmask"])
    return cfg["dataset_prepared_path"]


def _raw(tmp_path, **classification) -> dict:
    return {
        "datasets": [{"path": str(tmp_path / "pool.jsonl"), "ds_type": "json",
                      "type": "axolotl_decselfmask.masked_reconstruction", "text_column": "text"}],
        "dataset_prepared_path": str(tmp_path / "prepared"),
        "decselfmask": {"masking": {"mask_token": "<mask>"}, "items": ["Neoplasm"],
                        "classification": {"task": "neoplasm", "train_file": str(tmp_path / "labelled.jsonl"),
                                           "test_fraction": 0.5, **classification}},
    }


def test_a_changed_labelled_file_under_test_fraction_changes_the_prepared_dataset(tmp_path):
    rows = data_rows("abstracts_train.jsonl", per_class=2)
    write_rows(tmp_path / "labelled.jsonl", rows)
    raw = _raw(tmp_path)
    first = _prepared(raw)
    assert _prepared(raw) == first  # the same file and settings: the same folder
    assert first.startswith(str(tmp_path / "prepared" / "decselfmask-"))
    write_rows(tmp_path / "labelled.jsonl", rows[:-1] + [dict(rows[-1], text=rows[-1]["text"] + " More.")])
    changed = _prepared(raw)
    assert changed != first  # same name, other content: other test texts may be on the test side
    assert _prepared(_raw(tmp_path, test_fraction=0.25)) != changed
    other_seed = copy.deepcopy(raw)
    other_seed["decselfmask"]["seed"] = 1
    assert _prepared(other_seed) != changed
    assert _prepared(_raw(tmp_path, label_column="topic")) != changed
    # the labelled file matters only through the test side: without test_fraction it does not key stage 1
    plain = _raw(tmp_path, test_fraction=None)
    before = _prepared(plain)
    write_rows(tmp_path / "labelled.jsonl", rows)
    assert _prepared(plain) == before
