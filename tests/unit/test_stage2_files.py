"""Stage 2's files in output_dir have one owner (stage2/outputs.py; the ``test_fraction`` split's is
io/labelled.py, the layer below, which makes the split): each file name is written in one module of
the package, and its paths, writes, reads and removals go through it."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest

from axolotl_decselfmask.stage2 import outputs

PKG = Path(__file__).resolve().parents[2] / "axolotl_decselfmask"
#: stage 2's file names: a string (or an f-string's literal part) in code that is one of them
NAMES = {
    "metrics.json": re.compile(r"(^|/)metrics\.json"),
    "predictions-": re.compile(r"(^|/)predictions-"),
    "calibration-": re.compile(r"(^|/)calibration-"),
    "multilabel-": re.compile(r"(^|/)multilabel-"),
    "split-": re.compile(r"(^|/)split-"),
    "stage2 (the folder)": re.compile(r"(^|/)stage2(/|$)"),
}


def _code_strings(path: Path) -> list[str]:
    """The string literals of a module that are not docstrings (an f-string's literal parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def _is_file_name(pattern: re.Pattern, value: str) -> bool:
    """A literal that names the file (a path or a part of one, a pattern, an f-string's literal part),
    not a sentence of a message or a description that mentions it."""
    return pattern.search(value) is not None and " " not in value.strip()


#: the module that writes each name: stage2/outputs.py, but the split file's is io/labelled.py's (io/ is
#: below stage2/ and imports nothing from it; outputs.py imports the split's path, read and write from there)
OWNER = {name: {"stage2/outputs.py"} for name in NAMES} | {"split-": {"io/labelled.py"}}
#: literals that name something else, per module: memory.py's stage names ("stage2": the stage, not the folder)
NOT_FILES = {"memory.py": {"stage1", "stage2"}}


def test_each_stage2_file_name_is_written_in_one_module():
    found: dict[str, set[str]] = {name: set() for name in NAMES}
    for path in PKG.rglob("*.py"):
        for value in _code_strings(path):
            if value in NOT_FILES.get(str(path.relative_to(PKG)), ()):
                continue
            for name, pattern in NAMES.items():
                if _is_file_name(pattern, value):
                    found[name].add(str(path.relative_to(PKG)))
    assert found == OWNER, found


def test_the_check_finds_a_file_name_written_elsewhere(tmp_path):
    """The rule above is not vacuous: a module that builds the path itself is caught."""
    module = tmp_path / "elsewhere.py"
    module.write_text('"""Writes metrics.json."""\n'
                      'def f(out, task):\n    return out / f"predictions-{task}.jsonl", out / "metrics.json"\n')
    named = [v for v in _code_strings(module) for p in NAMES.values() if _is_file_name(p, v)]
    assert sorted(named) == ["metrics.json", "predictions-"]


def test_paths_writes_reads_and_forgetting(tmp_path):
    """Every file of a task, written by the owner, is where the other rooms (and the hub's patterns)
    expect it, and forget_results removes exactly what an earlier stage 2 wrote of that task."""
    import fnmatch

    out = tmp_path / "out"
    outputs.write_metrics(out, "a/b", {"macro_f1": 0.4, "accuracy": 0.5, "n_test": 2}, extra={"labels": ["x", "y"]})
    outputs.write_metrics(out, "other", {"macro_f1": 0.8, "accuracy": 0.9, "n_test": 2})
    outputs.write_predictions(out, "a/b", ["n1", "n2"], [0, 1], ["x", "y"], ["x", "x"],
                              np.array([[-0.1, -2.0], [-1.0, -np.inf]]), ["x", "y"])
    outputs.write_calibration(out, "a/b", {"format": "decselfmask-calibration", "calibration": {"mode": "none"}})
    outputs.write_calibration(out, "a/b/yes", {"format": "decselfmask-calibration"})
    outputs.write_label_set_record(out, "a/b", {"task": "a/b", "sub_tasks": {"yes": "a/b/yes"}})
    outputs.write_split(out, "a/b", {"test_rows": [1]})
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["metrics.json", "predictions-a_b.jsonl", "split-a_b.json", "stage2/calibration-a_b.json",
                       "stage2/calibration-a_b_yes.json", "stage2/multilabel-a_b.json"]
    assert all(any(fnmatch.fnmatch(f, p) for p in outputs.RESULT_PATTERNS) for f in written)
    assert outputs.read_metrics(out)["macro_f1_mean"] == pytest.approx(0.6)
    assert [r["scores"] for r in outputs.read_predictions(out, "a/b")] == [[-0.1, -2.0], [-1.0, None]]
    assert outputs.read_label_set_record(out, "a/b")["sub_tasks"] == {"yes": "a/b/yes"}
    assert outputs.read_split(out, "a/b") == {"test_rows": [1]}
    assert outputs.classifier_dir(out, "a/b") == out / "stage2" / "a_b"
    outputs.forget_results(out, "a/b")
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == ["metrics.json", "split-a_b.json"]  # the split is kept: a rerun tests on the same rows
    assert list(json.loads((out / "metrics.json").read_text())["tasks"]) == ["other"]
    assert outputs.read_predictions(out, "a/b") is None and outputs.read_label_set_record(out, "a/b") is None
