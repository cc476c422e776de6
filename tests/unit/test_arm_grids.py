"""The arm beyond the paper (docs/results.md, amendment A1): scripts/arm_grids.py writes, for any rung the
ladder may pick, a grid the runner accepts, with the rung's data and stage-2 settings, the registered
methods and seeds, and the decselfmask_* methods starting from that rung's saved stage-1 models."""

from pathlib import Path

import pytest
from helpers import script_module
import yaml

from axolotl_decselfmask.tools.experiments.grid import Grid
from axolotl_decselfmask.tools.experiments.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return script_module("arm_grids")


@pytest.mark.parametrize("rung", range(1, 8))
def test_arm_grid_of_every_rung(rung):
    arm = _script()
    grid = arm.arm_grid(rung)
    ladder = yaml.safe_load((ROOT / "examples" / "grids" / f"ladder_{rung}_hallmarks.yml").read_text())
    Grid(**grid)  # the runner's own validation
    assert grid["methods"] == ["sft_early_stop", "decselfmask_early_stop", "head", "head_authors", "decselfmask_head",
                               "decselfmask_head_authors", "setfit"]
    assert grid["seeds"] == [0, 1, 2] and grid["share_stage1_across_seeds"] is False and grid["probing"] is False
    # the rung's data and stage 2, the option scorer only
    for key in ("corpora", "labelled_per_task", "test_notes", "test_min_positives", "split_seed", "max_text_chars",
                "model"):
        assert grid[key] == ladder[key], key
    # the recipe: the rung's, but for the keys of a full fine-tune's stage 1, which the arm does not train
    stage1_only = {"adapter", "learning_rate"} if ladder["recipe"].get("adapter", "lora") is None else set()
    assert grid["recipe"] == {k: v for k, v in ladder["recipe"].items() if k not in stage1_only}
    assert "adapter" not in grid["recipe"] or grid["recipe"]["adapter"] is not None
    stage2 = dict(ladder["decselfmask"]["classification"], scorer="options")
    assert grid["decselfmask"]["classification"] == stage2
    # every method with a stage 1 reuses the ladder's decselfmask run of the same rung and seed
    assert set(grid["stage1_models"]) == {m for m in grid["methods"] if METHODS[m].stage1}
    folder = grid["stage1_models"]["decselfmask_head"]
    assert f"ladder_{rung}_hallmarks/runs/{{corpus}}/decselfmask-seed{{seed}}/output" in folder
    assert folder.endswith("/output" if rung == 7 else "/output/stage1_merged")
    assert len(set(grid["stage1_models"].values())) == 1
    # early stopping: the methods turn it on, with the registered defaults
    assert "early_stopping" not in grid["decselfmask"]["classification"]


def test_arm_check_says_when_the_file_is_not_the_scripts(tmp_path, monkeypatch):
    arm = _script()
    monkeypatch.setattr(arm, "OUT", tmp_path / "arm_hallmarks.yml")
    assert arm.main(["--rung", "4", "--check"]) == 1  # not written yet
    assert arm.main(["--rung", "4"]) == 0
    assert arm.main(["--rung", "4", "--check"]) == 0
    assert arm.main(["--rung", "5", "--check"]) == 1
    text = (tmp_path / "arm_hallmarks.yml").read_text()
    assert text.startswith("# PRE-REGISTERED") and "so they run the seeds that rung ran: 0." in text
    assert "scripts/after_ladder.sh" in text
