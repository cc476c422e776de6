"""``experiments report`` over grids whose predictions sit in different folders (a grid with its own
``<predictions-dir>/<grid file stem>`` folder, the others in the top folder) and ``report --methods``,
on the committed per-note predictions of the many-task comparison (real runs, no training here)."""

import csv
import shutil
from pathlib import Path

import pytest

from axolotl_decselfmask.tools.experiments.cli import main

ROOT = Path(__file__).resolve().parents[2]
PREDICTIONS = ROOT / "docs" / "results" / "predictions"
GRIDS = ROOT / "examples" / "grids"
CORE, FLOAT32, SECOND = (GRIDS / f"comparison_{n}_hallmarks.yml" for n in ("core", "float32", "second"))

pytestmark = pytest.mark.skipif(not (PREDICTIONS / "comparison_float32_hallmarks").is_dir(),
                                reason="the float32 check's predictions are not committed")


def _rows(out: Path) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _by_method(rows: list[dict], method: str) -> dict:
    return {(r["task"], r["seed"]): r["macro_f1"] for r in rows if r["method"] == method}


def test_a_grid_with_its_own_folder_is_read_from_it_and_the_others_from_the_top_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["report", str(FLOAT32), str(SECOND), "--out", str(tmp_path / "both"), "--predictions-dir", str(PREDICTIONS)])
    main(["report", str(FLOAT32), "--out", str(tmp_path / "own"),
          "--predictions-dir", str(PREDICTIONS / "comparison_float32_hallmarks")])
    main(["report", str(CORE), "--out", str(tmp_path / "core"), "--predictions-dir", str(PREDICTIONS)])
    both, own, core = (_rows(tmp_path / n) for n in ("both", "own", "core"))
    assert _by_method(both, "sft") == _by_method(own, "sft")  # the float32 grid's sft: from its own folder
    assert _by_method(both, "sft") != _by_method(core, "sft")  # not the core grid's file of the same name
    assert len(_by_method(both, "sft")) == 30
    assert {r["method"] for r in both} == {"sft", "decselfmask", "continual_pretraining", "sft_mask_fill",
                                           "sft_options", "logreg_minilm", "synthetic_labels"}


def test_report_methods_keeps_only_those_methods(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    main(["report", str(FLOAT32), str(SECOND), "--methods", "decselfmask,continual_pretraining",
          "--out", str(tmp_path / "sub"), "--predictions-dir", str(PREDICTIONS)])
    rows = _rows(tmp_path / "sub")
    assert {r["method"] for r in rows} == {"decselfmask", "continual_pretraining"} and len(rows) == 60
    text = (tmp_path / "sub" / "results.md").read_text()
    assert "| continual_pretraining |" in text and "| sft_options |" not in text
    with pytest.raises(SystemExit, match="setfit"):  # not a method of these grids: said before any work
        main(["report", str(FLOAT32), "--methods", "sft,setfit", "--out", str(tmp_path / "bad"),
              "--predictions-dir", str(PREDICTIONS)])
    assert not (tmp_path / "bad").exists()


def test_the_same_run_in_two_folders_is_an_error_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    top = tmp_path / "predictions"
    for folder in (top / "hallmarks_of_cancer", top / "comparison_float32_hallmarks" / "hallmarks_of_cancer"):
        folder.mkdir(parents=True)
    shutil.copy(PREDICTIONS / "hallmarks_of_cancer" / "sft-seed0.jsonl.gz", top / "hallmarks_of_cancer")
    shutil.copy(PREDICTIONS / "comparison_float32_hallmarks" / "hallmarks_of_cancer" / "sft-seed0.jsonl.gz",
                top / "comparison_float32_hallmarks" / "hallmarks_of_cancer")
    with pytest.raises(SystemExit, match=r"hallmarks_of_cancer/sft-seed0 is in both .*predictions and .*comparison_float32"):
        main(["report", str(CORE), str(FLOAT32), "--out", str(tmp_path / "out"), "--predictions-dir", str(top)])
