"""One test set per corpus shared by its tasks (grid keys ``test_notes``, ``test_min_positives``;
tools/experiments/data.py): every task's test file holds the same notes, each task (from the
rarest) reaches its positives, no labelled or pool note is a test note, the same across builds,
and without ``test_notes`` the stratified split per task as before."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import Grid

N_ROWS = 400
#: label column -> rows with the label (the rarest first)
POSITIVES = {"rare": 14, "mid": 40, "common": 150}


def _corpus(path: Path) -> Path:
    rng = np.random.default_rng(0)
    cols = {c: set(rng.choice(N_ROWS, n, replace=False).tolist()) for c, n in POSITIVES.items()}
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", *POSITIVES, "kind", "sparse"])
        w.writeheader()
        for i in range(N_ROWS):
            w.writerow({"text": f"note number {i} " + "word " * int(rng.integers(3, 20)),
                        **{c: int(i in rows) for c, rows in cols.items()},
                        "kind": ["a", "b", "c"][i % 3] if i % 17 else "d",  # d: 24 rows
                        "sparse": "" if i % 5 == 0 else int(i % 2)})  # every fifth cell empty
    return path


def _grid(tmp_path: Path, **over) -> Grid:
    tasks = [{"name": c, "label_column": c, "positive": 1, "question": f"Is it {c}?"} for c in POSITIVES]
    tasks += [{"name": "kind", "label_column": "kind", "question": "Which kind?"},
              {"name": "sparse", "label_column": "sparse", "positive": 1, "question": "Sparse?"}]
    raw = {"model": "m", "seeds": [0, 1], "labelled_per_task": 8, "test_per_task": 40, "pool_size": 60,
           "test_notes": 50, "test_min_positives": 10,
           "corpora": [{"name": "notes", "file": str(_corpus(tmp_path / "notes.csv")), "tasks": tasks}]}
    raw.update(over)
    return Grid(**{k: v for k, v in raw.items() if v is not None})


def _read(path) -> list[dict]:
    return [json.loads(line) for line in open(path)]


def test_every_task_shares_one_test_set_with_its_positives(tmp_path):
    grid = _grid(tmp_path)
    info = build_data(grid, tmp_path / "out")["notes"]
    tests = {name: _read(d["test"]) for name, d in info["tasks"].items()}
    rows = {name: [r["row"] for r in t] for name, t in tests.items()}
    shared = rows["rare"]
    assert info["test_shared"] and info["n_test"] == len(shared) > grid.test_notes  # positives were added
    for name in ("mid", "common", "kind"):
        assert rows[name] == shared  # the same notes, in the same order
    # the task with empty cells: the shared notes less those without its label, only
    assert rows["sparse"] == [r for r in shared if r % 5 != 0] and len(rows["sparse"]) < len(shared)
    assert sum(r["label"] == "yes" for r in tests["rare"]) >= grid.test_min_positives
    assert sum(r["label"] == "yes" for r in tests["mid"]) >= grid.test_min_positives
    assert min(sum(r["label"] == y for r in tests["kind"]) for y in "abcd") >= grid.test_min_positives
    assert info["tasks"]["rare"]["test_positives"]["yes"] >= grid.test_min_positives
    pool = {r["row"] for r in _read(info["pool"])}
    assert len(pool) == grid.pool_size and not pool & set(shared)
    for d in info["tasks"].values():
        for seed in grid.seeds:
            labelled = _read(d["train"][seed])
            assert len(labelled) == grid.labelled_per_task and not {r["row"] for r in labelled} & set(shared)
    rare = _read(info["tasks"]["rare"]["train"][0])
    assert sorted(r["label"] for r in rare) == ["no"] * 4 + ["yes"] * 4  # balanced still: 4 positives left


def test_the_shared_test_set_is_the_same_across_builds(tmp_path):
    a = build_data(_grid(tmp_path), tmp_path / "a")["notes"]
    b = build_data(_grid(tmp_path), tmp_path / "b")["notes"]
    for name in a["tasks"]:
        assert _read(a["tasks"][name]["test"]) == _read(b["tasks"][name]["test"])
        assert _read(a["tasks"][name]["train"][1]) == _read(b["tasks"][name]["train"][1])
    assert _read(a["pool"]) == _read(b["pool"])
    other = build_data(_grid(tmp_path, split_seed=99), tmp_path / "c")["notes"]
    assert _read(other["tasks"]["mid"]["test"]) != _read(a["tasks"]["mid"]["test"])


def test_without_test_notes_each_task_has_its_stratified_split(tmp_path):
    grid = _grid(tmp_path, test_notes=None)
    info = build_data(grid, tmp_path / "out")["notes"]
    assert "test_shared" not in info
    rows = {name: [r["row"] for r in _read(d["test"])] for name, d in info["tasks"].items()}
    assert all(len(r) == grid.test_per_task for r in rows.values())
    assert rows["rare"] != rows["mid"]  # a split per task
    yes = sum(r["label"] == "yes" for r in _read(info["tasks"]["rare"]["test"]))
    assert yes == round(grid.test_per_task * POSITIVES["rare"] / N_ROWS)  # proportional


def test_too_many_test_notes_or_positives_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match=r"corpora\[notes\].*test_notes 500 is more than the corpus' 400 rows"):
        build_data(_grid(tmp_path, test_notes=500), tmp_path / "a")
    with pytest.raises(SystemExit, match=r"task rare: label .yes. has 14 rows; test_min_positives 12 .*"
                                         r"labelled_per_task 8 needs \(4 of each label"):
        build_data(_grid(tmp_path, test_min_positives=12), tmp_path / "b")
