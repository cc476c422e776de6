"""Through Axolotl's CLI: a plugin error ends in one clear line, not an 80-line traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import base_recipe, data_rows, write_rows


def _preprocess(recipe_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    env.pop("DECSELFMASK_TRACEBACK", None)
    return subprocess.run([str(Path(sys.executable).parent / "axolotl"), "preprocess", str(recipe_path)],
                          cwd=recipe_path.parent, env=env, capture_output=True, text=True, timeout=600)


def test_axolotl_preprocess_with_bad_input_ends_in_one_clear_line(tmp_path, tiny_llama):
    rows = [json.dumps({"text": r["text"]}) for r in data_rows("abstracts_unlabelled.jsonl", n=5)]
    (tmp_path / "pool.jsonl").write_text("\n".join(rows[:2] + ['{"text": "cut off'] + rows[2:]) + "\n")
    write_rows(tmp_path / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    write_rows(tmp_path / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=1))
    recipe = tmp_path / "recipe.yml"
    recipe.write_text(yaml.safe_dump(base_recipe(tmp_path, tiny_llama)))
    proc = _preprocess(recipe)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("decselfmask: datasets[0].path: ") and "pool.jsonl, line 3 is not valid JSON" in last
    assert "DECSELFMASK_TRACEBACK=1" in last
    # stopped before any model work: no relevance pass, no prepared dataset
    assert "self-relevance" not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("prepared/decselfmask-*"))
