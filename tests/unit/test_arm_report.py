"""``report --ladder ... --arm GRID`` (docs/results.md, amendment A1): the arm beyond the paper's figures and
registered differences, on hand-made predictions written by the runner's own writer whose figures are
worked out by hand; withheld until every expected run is there (the reused-stage-1 methods expect the
seeds their rung ran); the arm's methods as candidates of the defaults rule."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import script_module
from ladder_predictions import ALWAYS_NO, HALF, PERFECT, RESAMPLES, ROOT, TASKS, grid_file, write_run

from axolotl_decselfmask.tools.experiments.cli import main

ARM_METHODS = ["sft_early_stop", "decselfmask_early_stop", "head", "head_authors", "decselfmask_head",
               "decselfmask_head_authors", "setfit"]
# the arm's answers: options view (what the runner writes as each run's decision)
ANSWERS = {"decselfmask_early_stop": PERFECT, "sft_early_stop": ALWAYS_NO, "decselfmask_head": HALF,
           "head": ALWAYS_NO, "decselfmask_head_authors": ALWAYS_NO, "head_authors": PERFECT, "setfit": HALF}


def _arm_grid(folder: Path, rung: int, seeds: list[int]) -> str:
    """An arm grid as scripts/arm_grids.py writes it (its header names the rung), two tasks."""
    arm = script_module("arm_grids")
    grid = arm.arm_grid(1)
    grid["corpora"][0]["file"] = str(folder / "absent.csv.gz")
    grid["corpora"][0]["tasks"] = [{**grid["corpora"][0]["tasks"][0], "name": t} for t in TASKS]
    grid["seeds"] = seeds
    path = folder / "arm_test.yml"
    path.write_text(arm.render(rung, grid))
    return str(path)


def _report(tmp: Path, grids: list[str], arm: str, pred: Path, *extra: str) -> tuple[dict, str]:
    out = tmp / "out"
    main(["report", "--ladder", *grids, "--arm", arm, "--out", str(out), "--predictions-dir", str(pred),
          "--resamples", str(RESAMPLES), *extra])
    return json.loads((out / "ladder.json").read_text()), (out / "ladder.md").read_text()


@pytest.fixture(scope="module")
def arm_of_rung_1(tmp_path_factory):
    """Rung 1 complete (seeds 0, 1; decselfmask always "no", 1/3); the arm of rung 1 complete."""
    tmp = tmp_path_factory.mktemp("arm")
    pred = tmp / "predictions"
    g1 = grid_file(tmp, 1, ["zero_shot", "sft", "decselfmask", "continual_pretraining_authors"], [0, 1])
    write_run(pred, g1, "zero_shot", 0, ALWAYS_NO, seeds=[0, 1])
    for seed in (0, 1):
        write_run(pred, g1, "sft", seed, ALWAYS_NO, seconds=10.0)
        write_run(pred, g1, "decselfmask", seed, ALWAYS_NO, seconds=100.0)
        write_run(pred, g1, "continual_pretraining_authors", seed, ALWAYS_NO)
    arm = _arm_grid(tmp, 1, [0, 1])
    for method, answers in ANSWERS.items():
        for seed in (0, 1):
            write_run(pred, arm, method, seed, answers, seconds=50.0)
    return tmp, pred, g1, arm


def test_arm_figures_and_differences_are_the_hand_worked_ones(arm_of_rung_1):
    tmp, pred, g1, arm = arm_of_rung_1
    lad, md = _report(tmp, [g1], arm, pred)
    a = lad["arm"]
    assert a["rung"] == 1 and a["status"] == "complete" and not a["withheld"] and len(a["present"]) == 14
    assert a["methods"]["decselfmask_early_stop"]["mean"] == pytest.approx(1.0)
    assert a["methods"]["setfit"]["mean"] == pytest.approx(11 / 15)
    assert a["methods"]["head"]["mean"] == pytest.approx(1 / 3) and a["methods"]["head"]["seeds"] == [0, 1]
    diff = {(d["method"], d["minus"]): d["difference"] for d in a["differences"]}
    assert len(diff) == 9
    assert diff["decselfmask_early_stop", "sft_early_stop"]["mean"] == pytest.approx(2 / 3)
    assert diff["decselfmask_early_stop", "sft_early_stop"]["excludes_zero"]
    assert diff["decselfmask_head", "head"]["mean"] == pytest.approx(11 / 15 - 1 / 3)
    assert diff["decselfmask_head_authors", "head_authors"]["mean"] == pytest.approx(-2 / 3)
    assert diff["decselfmask_early_stop", "setfit"]["mean"] == pytest.approx(4 / 15)
    # minus the rung's own decselfmask (its registered stage 2, rung 1's predictions)
    assert diff["decselfmask_early_stop", "decselfmask"]["mean"] == pytest.approx(2 / 3)
    assert diff["decselfmask_head", "decselfmask"]["mean"] == pytest.approx(11 / 15 - 1 / 3)
    assert diff["decselfmask_head", "decselfmask"]["seeds"] == [0, 1]
    assert "**The arm beyond the paper**" in md and "| decselfmask_early_stop minus sft_early_stop | 0,1 | +0.6667" in md
    assert "| decselfmask_head minus decselfmask (rung 1, its registered stage 2) | 0,1 | +0.4000" in md


def test_the_arm_s_best_becomes_the_default_when_its_interval_excludes_zero(arm_of_rung_1):
    tmp, pred, g1, arm = arm_of_rung_1
    lad, md = _report(tmp, [g1], arm, pred)
    rule = lad["defaults_rule"]
    assert rule["applied"] and rule["arm"] == "complete"
    assert rule["winner"]["rung"] == "arm" and rule["winner"]["method"] == "decselfmask_early_stop"
    assert rule["difference"]["mean"] == pytest.approx(2 / 3) and rule["difference"]["excludes_zero"]
    assert rule["choice"] is not None and rule["choice"]["method"] == "decselfmask_early_stop"
    assert "the arm's decselfmask_early_stop (its own decision; rung 1's stage 1) becomes the default" in md
    # without DecSelfMask: the arm's head_authors (1.0) is the best, but not above decselfmask_early_stop's 1.0
    best = rule["without_decselfmask"]["best"]
    assert (best["rung"], best["method"]) == ("arm", "head_authors")
    assert not rule["without_decselfmask"]["beats_every_decselfmask"] and rule["readme_sentence"] is None


def test_the_arm_is_withheld_until_complete_and_the_rule_waits_for_it(arm_of_rung_1, tmp_path):
    tmp, pred, g1, arm = arm_of_rung_1
    partial = tmp_path / "predictions"
    for path in pred.rglob("*.jsonl.gz"):
        if "setfit-seed1" not in path.name:
            (partial / path.relative_to(pred)).parent.mkdir(parents=True, exist_ok=True)
            (partial / path.relative_to(pred)).write_bytes(path.read_bytes())
    lad, md = _report(tmp_path, [g1], arm, partial)
    assert lad["arm"]["status"] == "partial" and lad["arm"]["withheld"]
    assert lad["arm"]["absent"] == ["hallmarks_of_cancer/setfit-seed1"]
    assert lad["arm"]["methods"] == {} and lad["arm"]["differences"] == []
    assert "figures withheld until every run is there" in md
    rule = lad["defaults_rule"]
    assert not rule["applied"] and "not applied yet: the arm beyond the paper (amendment A1) is partial" in md
    assert all(c["rung"] != "arm" for c in rule["candidates"])


def test_reused_stage1_methods_expect_the_seeds_of_their_rung(tmp_path):
    """The arm of a one-seed rung: its decselfmask_* methods have seed 0 only, the others seeds 0 and 1."""
    pred = tmp_path / "predictions"
    g4 = grid_file(tmp_path, 4, ["decselfmask", "continual_pretraining_authors"], [0])
    write_run(pred, g4, "decselfmask", 0, HALF)
    write_run(pred, g4, "continual_pretraining_authors", 0, ALWAYS_NO)
    arm = _arm_grid(tmp_path, 4, [0, 1])
    for method, answers in ANSWERS.items():
        for seed in ((0,) if method.startswith("decselfmask") else (0, 1)):
            write_run(pred, arm, method, seed, answers)
    lad, _ = _report(tmp_path, [g4], arm, pred)
    assert lad["arm"]["status"] == "complete" and len(lad["arm"]["present"]) == 3 + 4 * 2
    diff = {(d["method"], d["minus"]): d["difference"] for d in lad["arm"]["differences"]}
    assert diff["decselfmask_head", "head"]["seeds"] == [0]  # paired over the seeds both have


def test_arm_errors_name_what_to_do(arm_of_rung_1, tmp_path):
    tmp, pred, g1, arm = arm_of_rung_1
    with pytest.raises(SystemExit, match="add --ladder"):
        main(["report", g1, "--arm", arm, "--out", str(tmp_path / "o")])
    other = tmp_path / "arm_rung2.yml"
    other.write_text(Path(arm).read_text().replace("--rung 1", "--rung 2"))
    with pytest.raises(SystemExit, match="written from rung 2, which is not among the ladder's grids"):
        _report(tmp_path, [g1], str(other), pred)
    bare = tmp_path / "arm_bare.yml"
    bare.write_text(yaml.safe_dump(yaml.safe_load(Path(arm).read_text())))
    with pytest.raises(SystemExit, match="scripts/arm_grids.py --rung N"):
        _report(tmp_path, [g1], str(bare), pred)


def test_a_reused_stage1_costs_its_stage_1_too(arm_of_rung_1):
    """The rule compares whole settings: a decselfmask_* run's seconds plus its reused stage 1's, estimated as the
    rung's decselfmask seconds minus its sft seconds (100 - 10 = 90); the methods without stage 1 only their own."""
    tmp, pred, g1, arm = arm_of_rung_1
    lad, md = _report(tmp, [g1], arm, pred)
    a = lad["arm"]
    assert a["stage1_seconds"] == pytest.approx(90.0)
    assert a["methods"]["decselfmask_head"]["seconds"] == pytest.approx(50.0)
    assert a["methods"]["decselfmask_head"]["cost_seconds"] == pytest.approx(140.0)
    assert a["methods"]["head"]["cost_seconds"] == pytest.approx(50.0)
    assert lad["defaults_rule"]["winner"]["seconds"] == pytest.approx(140.0)
    assert "| decselfmask_head | 0,1 | 0.7333" in md and "| 50 (140 with stage 1) |" in md


def test_an_arm_of_another_rung_than_the_best_is_flagged(arm_of_rung_1, tmp_path):
    tmp, shared, g1, arm = arm_of_rung_1
    pred = tmp_path / "predictions"
    shutil.copytree(shared, pred)  # the module's files stay as they are
    g2 = grid_file(tmp_path, 2, ["sft", "decselfmask", "continual_pretraining_authors"], [0, 1])
    for seed in (0, 1):
        write_run(pred, g2, "sft", seed, ALWAYS_NO)
        write_run(pred, g2, "decselfmask", seed, PERFECT)  # rung 2 is the best: 1 against rung 1's 1/3
        write_run(pred, g2, "continual_pretraining_authors", seed, ALWAYS_NO)
    lad, md = _report(tmp_path, [g1, g2], arm, pred)
    assert lad["arm"]["best_rung"] == 2 and lad["arm"]["rung"] == 1
    assert "**The arm was written from rung 1, but A1's rung" in md and "arm_grids.py --rung 2`" in md
    with pytest.raises(SystemExit, match="contradict"):
        main(["report", "--ladder", g1, "--arm", arm, "--without-arm", "--out", str(tmp_path / "o")])
