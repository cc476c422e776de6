"""``report --ladder ... --transfer GRID`` (docs/results.md, amendment T1): the transfer grids' DecSelfMask minus
SFT and minus continual pretraining under both scorers, on hand-made predictions written by the runner's own
writer whose figures are worked out by hand; withheld until every run of the grid is there; the moving rungs
named once the ladder is finished (and "nothing is carried over" when none moved); a grid written from other
rungs flagged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import script_module
from ladder_predictions import ALWAYS_NO, HALF, PERFECT, RESAMPLES, ROOT, TASKS, grid_file, write_run

from axolotl_decselfmask.tools.experiments.cli import main

METHODS = ["sft", "decselfmask", "continual_pretraining_authors"]


def _transfer_grids():
    return script_module("transfer_grids")


def _transfer_grid(folder: Path, rungs: list[int], seeds: list[int]) -> str:
    """A transfer grid as scripts/transfer_grids.py writes it (its header names the rungs), on two tasks of
    the hallmarks."""
    tg = _transfer_grids()
    grid = tg.transfer_grids(rungs)["qwen"]
    grid["corpora"][0]["file"] = str(folder / "absent.csv.gz")
    grid["corpora"][0]["tasks"] = [{**grid["corpora"][0]["tasks"][0], "name": t} for t in TASKS]
    grid["seeds"] = seeds
    path = folder / f"transfer_test_{'_'.join(map(str, rungs))}.yml"
    path.write_text(tg.render("qwen", rungs, grid))
    return str(path)


def _ladder(tmp: Path, pred: Path, second: tuple) -> list[str]:
    """Rungs 1 and 2, seed 0, complete: DecSelfMask minus SFT 0 at rung 1, and at rung 2 what ``second`` (the
    DecSelfMask answers against SFT's ALWAYS_NO) gives."""
    g1 = grid_file(tmp, 1, ["sft", "decselfmask", "continual_pretraining_authors"], [0])
    g2 = grid_file(tmp, 2, ["sft", "decselfmask", "continual_pretraining_authors"], [0])
    for g, dsm in ((g1, ALWAYS_NO), (g2, second)):
        write_run(pred, g, "sft", 0, ALWAYS_NO)
        write_run(pred, g, "decselfmask", 0, dsm)
        write_run(pred, g, "continual_pretraining_authors", 0, ALWAYS_NO)
    return [g1, g2]


def _report(tmp: Path, grids: list[str], pred: Path, *extra: str) -> tuple[dict, str]:
    out = tmp / "out"
    main(["report", "--ladder", *grids, *extra, "--out", str(out), "--predictions-dir", str(pred),
          "--resamples", str(RESAMPLES)])
    return json.loads((out / "ladder.json").read_text()), (out / "ladder.md").read_text()


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """A finished ladder whose rung 2 moved the result (+2/3), and a transfer grid of rung 2, seeds 0 and 1:
    SFT always "no" (1/3), DecSelfMask HALF (11/15), continual pretraining PERFECT (1)."""
    tmp = tmp_path_factory.mktemp("transfer")
    pred = tmp / "predictions"
    grids = _ladder(tmp, pred, PERFECT)
    transfer = _transfer_grid(tmp, [2], [0, 1])
    for seed in (0, 1):
        for method, answers in zip(METHODS, (ALWAYS_NO, HALF, PERFECT)):
            write_run(pred, transfer, method, seed, answers)
    return tmp, pred, grids, transfer


def test_the_transfer_figures_are_the_hand_worked_ones(moved):
    tmp, pred, grids, transfer = moved
    lad, md = _report(tmp, grids, pred, "--transfer", transfer)
    tr = lad["transfer"]
    assert tr["moved"] == [2]
    (g,) = tr["grids"]
    assert g["status"] == "complete" and not g["withheld"] and not g["stale"] and g["carries"] == [2]
    assert g["kept"] == [2] and len(g["present"]) == 6
    for scorer in ("options", "string_match"):  # the string match reads the same answers here
        assert g["difference"][scorer]["sft"]["mean"] == pytest.approx(11 / 15 - 1 / 3)
        assert g["difference"][scorer]["sft"]["low"] <= 0.4 <= g["difference"][scorer]["sft"]["high"]
        assert g["difference"][scorer]["continual_pretraining_authors"]["mean"] == pytest.approx(11 / 15 - 1)
    assert g["methods"]["decselfmask"]["off_format"]["mean"] == 0.0
    # the ladder's own figure at the highest rung the grid carries, for reference
    assert g["ladder"]["rung"] == 2 and g["ladder"]["options"]["mean"] == pytest.approx(2 / 3)
    assert "rung 2 moved the result" in md
    row = next(line for line in md.splitlines() if line.startswith(f"| `{Path(transfer).stem}`"))
    assert "complete: 6 of 6 runs" in row and "+0.4000" in row and "rung 2: +0.6667" in row


def test_a_partial_transfer_grid_is_withheld_unless_a_cut_is_declared(moved, tmp_path):
    tmp, pred, grids, transfer = moved
    missing = pred / Path(transfer).stem / "hallmarks_of_cancer" / "continual_pretraining_authors-seed1.jsonl.gz"
    kept = missing.read_bytes()
    missing.unlink()
    try:
        lad, md = _report(tmp_path, grids, pred, "--transfer", transfer)
        (g,) = lad["transfer"]["grids"]
        assert g["status"] == "partial" and g["withheld"] and g["difference"] == {} and g["methods"] == {}
        assert "continual_pretraining_authors-seed1" in g["absent"][0]
        row = next(line for line in md.splitlines() if line.startswith(f"| `{Path(transfer).stem}`"))
        assert "partial: 5 of 6 runs; figures withheld until complete" in row and "+0.4000" not in row
        lad, _ = _report(tmp_path, grids, pred, "--transfer", transfer, "--include-partial")
        (g,) = lad["transfer"]["grids"]
        assert not g["withheld"] and g["difference"]["options"]["sft"]["mean"] == pytest.approx(11 / 15 - 1 / 3)
        assert g["difference"]["options"]["continual_pretraining_authors"]["seeds"] == [0]
    finally:
        missing.write_bytes(kept)


def test_a_grid_written_from_other_rungs_is_flagged(moved, tmp_path):
    tmp, pred, grids, _ = moved
    other = _transfer_grid(tmp_path, [1], [0])
    lad, md = _report(tmp_path, grids, pred, "--transfer", other)
    (g,) = lad["transfer"]["grids"]
    assert g["stale"] and g["status"] == "missing"
    assert "carries rungs 1, but the rungs that moved the result are 2**" in md


def test_nothing_moved_says_nothing_is_carried_over(tmp_path):
    pred = tmp_path / "predictions"
    grids = _ladder(tmp_path, pred, ALWAYS_NO)  # DecSelfMask minus SFT 0 at both rungs
    lad, md = _report(tmp_path, grids, pred)
    assert lad["transfer"]["moved"] == [] and lad["transfer"]["grids"] == []
    assert "no rung moved the result" in md and "nothing is carried over" in md


def test_an_unfinished_ladder_names_no_moving_rung(tmp_path):
    pred = tmp_path / "predictions"
    grids = _ladder(tmp_path, pred, PERFECT)
    (pred / "ladder_2_test" / "hallmarks_of_cancer" / "sft-seed0.jsonl.gz").unlink()
    lad, md = _report(tmp_path, grids, pred)
    assert lad["transfer"] is None and "The transfer" not in md  # nothing said before the ladder is finished
    transfer = _transfer_grid(tmp_path, [2], [0])
    lad, md = _report(tmp_path, grids, pred, "--transfer", transfer)
    assert lad["transfer"]["moved"] is None and not lad["transfer"]["grids"][0]["stale"]
    assert "read once the ladder is finished" in md


def test_bad_transfer_input_is_a_clear_error(moved, tmp_path):
    tmp, pred, grids, transfer = moved
    with pytest.raises(SystemExit, match="add --ladder"):
        main(["report", transfer, "--transfer", transfer, "--out", str(tmp_path / "o")])
    plain = tmp_path / "transfer_plain.yml"
    plain.write_text("\n".join(line for line in Path(transfer).read_text().splitlines() if not line.startswith("#")))
    with pytest.raises(SystemExit, match="transfer_plain.yml does not say which rungs it carries"):
        _report(tmp_path, grids, pred, "--transfer", str(plain))
