"""The many-task comparison's committed numbers (docs/results/: results.csv, bootstrap.json,
results.md) are what ``experiments report`` gives from the committed grid files and per-note
predictions alone (issue 14's "report reproduces every number"), without any run."""

import json
import re
from pathlib import Path

import pytest

from axolotl_decselfmask.tools.experiments.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "results"
FLOAT32 = ROOT / "examples" / "grids" / "comparison_float32_hallmarks.yml"
GRIDS = [ROOT / "examples" / "grids" / f"comparison_{tier}_{c}.yml"
         for c in ("hallmarks", "mtsamples") for tier in ("core", "second")]


def _same_report(out: Path, committed: Path) -> None:
    assert (out / "results.csv").read_text() == (committed / "results.csv").read_text()
    untimed = lambda p: re.sub(r"\(seed (\d+), [\d.]+ s\)", r"(seed \1, _ s)", p.read_text())  # noqa: E731
    assert untimed(out / "results.md") == untimed(committed / "results.md")
    fresh, kept = (json.loads(p.read_text()) for p in (out / "bootstrap.json", committed / "bootstrap.json"))
    fresh.pop("seconds"), kept.pop("seconds")  # the bootstrap's own time
    assert fresh == kept
    assert {p.name for p in out.glob("*.png")} <= {p.name for p in committed.glob("*.png")}


@pytest.mark.skipif(not (COMMITTED / "results.csv").is_file(), reason="the comparison's results are not committed yet")
def test_the_committed_results_are_what_report_gives_from_the_committed_predictions(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the grids' paths resolve from the checkout
    out = tmp_path / "report"
    main(["report", *map(str, GRIDS), "--out", str(out), "--predictions-dir", str(COMMITTED / "predictions")])
    _same_report(out, COMMITTED)


FLOAT32_METHODS = "sft,decselfmask,continual_pretraining,sft_mask_fill"


@pytest.mark.skipif(not (COMMITTED / "float32_hallmarks" / "results.csv").is_file(),
                    reason="the float32-only comparison is not committed yet")
def test_the_committed_float32_comparison_is_what_report_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "float32"
    main(["report", str(FLOAT32), str(ROOT / "examples" / "grids" / "comparison_second_hallmarks.yml"),
          "--methods", FLOAT32_METHODS, "--out", str(out), "--predictions-dir", str(COMMITTED / "predictions")])
    _same_report(out, COMMITTED / "float32_hallmarks")


@pytest.mark.skipif(not (COMMITTED / "precision.json").is_file(), reason="the precision check is not committed yet")
def test_the_committed_precision_effect_is_what_report_precision_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "precision"
    main(["report", "--precision", str(FLOAT32), str(GRIDS[0]), "--out", str(out),
          "--predictions-dir", str(COMMITTED / "predictions")])
    fresh, kept = (json.loads(p.read_text()) for p in (out / "precision.json", COMMITTED / "precision.json"))
    relative = lambda d: {k: v.replace(str(ROOT) + "/", "") for k, v in d.items()}  # noqa: E731
    assert {**fresh, "a": relative(fresh["a"]), "b": relative(fresh["b"])} == \
        {**kept, "a": relative(kept["a"]), "b": relative(kept["b"])}
    assert (out / "precision.md").read_text().replace(str(ROOT) + "/", "") == \
        (COMMITTED / "precision.md").read_text().replace(str(ROOT) + "/", "")


BUDGET_GRIDS = [f"examples/grids/{stem}.yml" for stem in (
    "comparison_budget_hallmarks_8", "comparison_core_hallmarks", "comparison_budget_hallmarks_32",
    "comparison_budget_hallmarks_128")]


@pytest.mark.skipif(not (COMMITTED / "budget" / "budget.json").is_file(), reason="the label-budget curve is not committed yet")
def test_the_committed_label_budget_curve_is_what_report_budget_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the command in docs/experiments.md, with relative paths as it is written there
    out = tmp_path / "budget"
    main(["report", "--budget", *BUDGET_GRIDS, "--out", str(out), "--predictions-dir", "docs/results/predictions"])
    curve = json.loads((out / "budget.json").read_text())
    assert curve == json.loads((COMMITTED / "budget" / "budget.json").read_text())
    assert (out / "budget.md").read_text() == (COMMITTED / "budget" / "budget.md").read_text()
    assert (out / "budget.png").is_file() and (COMMITTED / "budget" / "budget.png").is_file()
    assert [p["labelled_per_task"] for p in curve["points"]] == [8, 16, 32, 128]  # every point is in


@pytest.mark.skipif(not (COMMITTED / "qwen_hallmarks" / "results.csv").is_file(),
                    reason="the Qwen2.5-Coder-0.5B comparison is not committed yet")
def test_the_committed_qwen_comparison_is_what_report_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "qwen"
    main(["report", str(ROOT / "examples" / "grids" / "comparison_qwen_hallmarks.yml"), "--out", str(out),
          "--predictions-dir", str(COMMITTED / "predictions")])
    _same_report(out, COMMITTED / "qwen_hallmarks")
