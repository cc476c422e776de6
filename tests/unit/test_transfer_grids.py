"""The transfer of the ladder's moving rungs (docs/results.md, amendment T1): scripts/transfer_grids.py's rule
for which rungs moved the result, worked on hand-made ladders, and the grids it writes (valid for the runner,
the rungs' factors over mtsamples' core grid and over Qwen on the hallmarks, rung 6 left out for Qwen)."""

from pathlib import Path

import pytest
from helpers import script_module
import yaml

from axolotl_decselfmask.tools.experiments.grid import Grid

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return script_module("transfer_grids")


def _ladder(options: list, string_match: list | None = None, status: str = "complete") -> dict:
    """Rungs 1.. with DecSelfMask minus SFT means (None: no figure under that scorer)."""
    string_match = string_match or [None] * len(options)
    return {"rungs": [{"rung": n, "status": status, "difference": {
        "options": {"sft": None if o is None else {"mean": o}},
        "string_match": {"sft": None if s is None else {"mean": s}}}}
        for n, (o, s) in enumerate(zip(options, string_match), start=1)]}


@pytest.mark.parametrize("options, string_match, moved", [
    ([0.0, 0.01, 0.05, 0.05, 0.04, 0.10, 0.10], None, [3, 6]),      # +0.04 at 3, +0.06 at 6
    ([0.0, 0.019, 0.038, 0.057, 0.076, 0.095, 0.114], None, []),     # steps of 0.019: none is two points
    ([0.0, 0.0, 0.02, 0.0, 0.0, 0.0, 0.0], None, [3]),               # exactly two points counts
    ([0.10, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], None, []),                # a fall is no move
    ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], [2]),  # the string match alone
    ([0.0, None, 0.03, 0.03, 0.03, 0.03, 0.03], None, [3]),          # against the previous rung with a figure
])
def test_which_rungs_moved_the_result(options, string_match, moved):
    assert _script().moved_rungs(_ladder(options, string_match)) == moved


def test_an_unfinished_ladder_picks_no_rung():
    lad = _ladder([0.0, 0.05])
    lad["rungs"][1]["status"] = "partial"
    with pytest.raises(SystemExit, match="not finished"):
        _script().moved_rungs(lad)
    lad["include_partial"] = True  # a declared cut: the rungs shown count
    assert _script().moved_rungs(lad) == [2]


def test_the_grids_carry_the_factors_of_the_moving_rungs():
    tg = _script()
    grids = tg.transfer_grids([2, 4, 6])
    mts, qwen = grids["mtsamples"], grids["qwen"]
    for g in (mts, qwen):
        Grid(**g)
        assert g["methods"] == ["sft", "decselfmask", "continual_pretraining_authors"] and g["seeds"] == [0, 1, 2]
        assert g["probing"] is True and g["decselfmask"]["classification"]["scorer"] == "both"
        assert g["decselfmask"]["classification"]["train_on_inputs"] is True  # rung 2
        assert g["decselfmask"]["classification"]["lora_alpha"] == 16
        assert g["pool_size"] == 1700 and g["stage1_token_budget"] == 100_000_000  # rung 4
        assert "train_on_inputs" not in g["recipe"]  # rung 3 was not given
    assert mts["decselfmask"]["relevance"]["model"] == "models/qwen2.5-coder-0.5b-instruct"  # rung 6, a teacher
    assert "model" not in qwen["decselfmask"]["relevance"]  # no teacher for the teacher itself
    assert qwen["model"] == "models/qwen2.5-coder-0.5b-instruct"
    core = yaml.safe_load((ROOT / "examples" / "grids" / "comparison_core_mtsamples.yml").read_text())
    assert mts["corpora"] == core["corpora"] and mts["test_notes"] == core["test_notes"]
    ladder1 = yaml.safe_load((ROOT / "examples" / "grids" / "ladder_1_hallmarks.yml").read_text())
    assert qwen["corpora"] == ladder1["corpora"] and qwen["labelled_per_task"] == ladder1["labelled_per_task"]


def test_write_and_check(tmp_path, monkeypatch, capsys):
    tg = _script()
    monkeypatch.setattr(tg, "OUT", {k: tmp_path / v.name for k, v in tg.OUT.items()})
    assert tg.main(["--rungs", "3", "--check"]) == 1
    assert tg.main(["--rungs", "3"]) == 0
    assert tg.main(["--rungs", "3", "--check"]) == 0 and tg.main(["--rungs", "3,5", "--check"]) == 1
    assert (tmp_path / "transfer_mtsamples.yml").read_text().startswith("# PRE-REGISTERED (docs/results.md, amendment T1)")
    assert tg.main(["--rungs", ""]) == 0 and "no rung moved the result" in capsys.readouterr().out
