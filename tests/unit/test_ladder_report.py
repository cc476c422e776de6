"""``report --ladder`` (issue 34; docs/results.md, "The ladder (issue 34): plan"): per rung, DecSelfMask
minus SFT and minus continual_pretraining_authors under the option scoring and the authors' string
match, the heads, the off-format shares; from predictions files written by the experiment runner's own
writer (:func:`.predictions.export_run`), on hand-made predictions whose figures are worked out by hand.
And, once the ladder's report is committed, that it is what ``report --ladder`` gives from the
committed predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from axolotl_decselfmask.io.files import atomic_write_jsonl
from axolotl_decselfmask.stage2 import outputs
from axolotl_decselfmask.tools.experiments.cli import main
from axolotl_decselfmask.tools.experiments.ladder import off_format
from axolotl_decselfmask.tools.experiments.predictions import export_run, load_predictions

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "results"
CORPUS = "hallmarks_of_cancer"
YES, NO, OFF = "8505", "2152", "99 13"  # answers as the string-match scorer reads them: joined token ids
GOLD = ["yes", "no", "yes", "no", "yes", "no", "yes", "no"]  # 4 + 4 test notes, shared by both tasks
TASKS = ("t1", "t2")
RESAMPLES = 400

# the hand-made predictions (per note): options answer, string-match answer
PERFECT = ([*GOLD], [YES if g == "yes" else NO for g in GOLD])
ALWAYS_NO = (["no"] * 8, [NO] * 8)  # options: Macro F1 (0 + 2*4/(4+8)) / 2 = 1/3
OFF_ON_YES = (["no"] * 8, [OFF if g == "yes" else NO for g in GOLD])  # string match: (0 + 1 + 0) / 3 = 1/3
ALWAYS_YES = (["yes"] * 8, [YES] * 8)  # 1/3 under both


def _grid(folder: Path, rung: int, methods: list[str], seeds: list[int]) -> str:
    """A rung's grid file, as scripts/ladder_grids.py writes them (its "Rung <n> adds" line), two tasks."""
    grid = yaml.safe_load((ROOT / "examples" / "grids" / "ladder_1_hallmarks.yml").read_text())
    grid["corpora"][0]["file"] = str(folder / "absent.csv.gz")  # a report from predictions needs no corpus file
    grid["corpora"][0]["tasks"] = [{**grid["corpora"][0]["tasks"][0], "name": t} for t in TASKS]
    grid.update(methods=methods, seeds=seeds)
    path = folder / f"ladder_{rung}_test.yml"
    path.write_text(f"# Rung {rung} adds: factor {rung}.\n" + yaml.safe_dump(grid, sort_keys=False))
    return str(path)


def _write(pred_dir: Path, grid_path: str, method: str, seed: int, answers: tuple, heads: dict | None = None,
           dtype: str = "bfloat16", seeds: list[int] | None = None) -> None:
    """One run's predictions file, through the runner's writer (a run folder, its metrics entries)."""
    run_dir = pred_dir.parent / "runs" / f"{Path(grid_path).stem}-{method}-{seed}"
    test_file = run_dir / "test.jsonl"
    atomic_write_jsonl(test_file, [{"text": "x", "label": g, "row": 100 + i} for i, g in enumerate(GOLD)])
    run = {"corpus": CORPUS, "method": method, "dir": run_dir,
           "recipe": {"decselfmask": {"tasks": [{"task": f"{t}@seed{seed}", "test_file": str(test_file)}
                                                for t in TASKS]}}}
    entries = {}
    for t in TASKS:
        outputs.write_prediction_rows(run_dir / "output", f"{t}@seed{seed}", [
            {"id": i, "row": i, "gold": g, "pred": p, "scores": [0.0, 0.0],
             "string_match": {"gold": YES if g == "yes" else NO, "pred": sm, "off_format": sm not in (YES, NO)}}
            for i, (g, p, sm) in enumerate(zip(GOLD, *answers))])
        entries[f"{t}@seed{seed}"] = {
            "labels": ["yes", "no"], "n_train": 16, "environment": {"dtype": dtype, "cpu_capability": "AMX"},
            "probe_heads": {style: {"predictions": list(pred)} for style, pred in (heads or {}).items()}}
    record = {"seconds": 1.0, "run_key": f"{grid_path}-{method}-{seed}", "metrics": {"tasks": entries}}
    export_run(run, record, pred_dir / Path(grid_path).stem, seeds or [seed])


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """Rung 1 complete (2 seeds); rung 2 partial (decselfmask seed 1 absent, a float32 file); rung 3
    without sft in its grid, one file; rung 4 no file at all."""
    tmp = tmp_path_factory.mktemp("ladder")
    pred = tmp / "predictions"
    g1 = _grid(tmp, 1, ["zero_shot", "sft", "decselfmask", "continual_pretraining_authors"], [0, 1])
    g2 = _grid(tmp, 2, ["sft", "decselfmask", "continual_pretraining_authors"], [0, 1])
    g3 = _grid(tmp, 3, ["decselfmask", "continual_pretraining_authors"], [0])
    g4 = _grid(tmp, 4, ["decselfmask", "continual_pretraining_authors"], [0])
    _write(pred, g1, "zero_shot", 0, ALWAYS_YES, seeds=[0, 1])
    for seed in (0, 1):
        _write(pred, g1, "sft", seed, OFF_ON_YES, {"package": GOLD, "authors": ["no"] * 8})
        _write(pred, g1, "decselfmask", seed, PERFECT, {"package": GOLD, "authors": GOLD})
        _write(pred, g1, "continual_pretraining_authors", seed, PERFECT, {"package": ["no"] * 8, "authors": GOLD})
    _write(pred, g2, "sft", 0, ALWAYS_NO)
    _write(pred, g2, "sft", 1, PERFECT)  # unpaired, sft's mean would be 2/3 and the difference 1/3
    _write(pred, g2, "decselfmask", 0, PERFECT)
    _write(pred, g2, "continual_pretraining_authors", 0, ALWAYS_NO)
    _write(pred, g2, "continual_pretraining_authors", 1, ALWAYS_NO, dtype="float32")
    _write(pred, g3, "decselfmask", 0, ALWAYS_YES)
    out = tmp / "out"
    # the grids in another order than the rungs': the report orders them by rung
    main(["report", "--ladder", g3, g1, g4, g2, "--out", str(out), "--predictions-dir", str(pred),
          "--resamples", str(RESAMPLES)])
    return json.loads((out / "ladder.json").read_text()), (out / "ladder.md").read_text(), out, pred


def _rows(md: str) -> dict[str, str]:
    """The main table's rows by rung."""
    table = md.split("| rung | adds |")[1].split("\n\n")[0]
    return {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}


def test_rungs_are_in_order_each_with_its_status_and_runs(ladder):
    lad, md, out, _ = ladder
    assert [r["rung"] for r in lad["rungs"]] == [1, 2, 3, 4]
    assert [r["status"] for r in lad["rungs"]] == ["complete", "partial", "partial", "missing"]
    r2, r3, r4 = lad["rungs"][1:]
    assert r2["absent"] == [f"{CORPUS}/decselfmask-seed1", f"{CORPUS}/continual_pretraining_authors-seed1"]
    assert r2["not_counted"] == [{"run": f"{CORPUS}/continual_pretraining_authors-seed1",
                                  "why": "recorded precision float32, not bfloat16"}]
    assert r3["present"] == [f"{CORPUS}/decselfmask-seed0"] and r3["sft_from_rung"] == 2
    assert r4["present"] == [] and r4["methods"] == {}
    assert r4["absent"] == [f"{CORPUS}/decselfmask-seed0", f"{CORPUS}/continual_pretraining_authors-seed0"]
    rows = _rows(md)
    assert list(rows) == ["1", "2", "3", "4"]
    assert "| factor 4. | missing; SFT: rung 2's |" in rows["4"]
    assert rows["4"].endswith("| – | – | – | – | –, – |")
    assert "partial: 1 of 2; SFT: rung 2's" in rows["3"]
    assert "| 4 | missing (`" in md and f"{CORPUS}/decselfmask-seed0, " in md.split("| 4 | missing (`")[1]
    assert (out / "ladder.png").stat().st_size > 0


def test_differences_are_the_hand_worked_ones(ladder):
    lad, md, _, _ = ladder
    r1, r2, r3, _ = lad["rungs"]
    options, sm = r1["difference"]["options"], r1["difference"]["string_match"]
    assert options["sft"]["mean"] == pytest.approx(2 / 3) and options["sft"]["seeds"] == [0, 1]
    assert options["sft"]["low"] > 0 and options["sft"]["excludes_zero"]
    assert (options["continual_pretraining_authors"]["low"], options["continual_pretraining_authors"]["high"]) == (0, 0)
    assert sm["sft"]["mean"] == pytest.approx(2 / 3) and sm["sft"]["pooled"] == pytest.approx(2 / 3)
    assert sm["continual_pretraining_authors"]["mean"] == pytest.approx(0.0)
    assert r1["methods"]["sft"]["options"]["mean"] == pytest.approx(1 / 3)
    assert r1["methods"]["sft"]["string_match"]["mean"] == pytest.approx(1 / 3)
    assert r1["methods"]["decselfmask"]["pooled"] == pytest.approx(1.0)
    # paired by seed: rung 2's decselfmask has seed 0 only, whose sft always says "no"
    assert r2["difference"]["options"]["sft"]["mean"] == pytest.approx(2 / 3)
    assert r2["difference"]["options"]["sft"]["seeds"] == [0]
    assert r2["methods"]["sft"]["options"]["mean"] == pytest.approx(2 / 3)  # its own figure: both seeds
    # rung 3 against rung 2's sft (seed 0): always "yes" and always "no" score the same 1/3
    assert r3["difference"]["options"]["sft"]["mean"] == pytest.approx(0.0)
    assert r3["difference"]["options"]["continual_pretraining_authors"] is None
    assert "+0.6667 [" in _rows(md)["1"] and "+0.0000 [+0.0000, +0.0000]" in _rows(md)["1"]
    assert "(seeds 0)" not in _rows(md)["2"]  # decselfmask has seed 0 only: the pair is all of it


def test_heads_off_format_and_zero_shot(ladder):
    lad, md, _, pred = ladder
    r1 = lad["rungs"][0]
    heads = r1["difference"]["heads"]
    assert heads["package"]["continual_pretraining_authors"]["mean"] == pytest.approx(2 / 3)
    assert heads["authors"]["continual_pretraining_authors"]["mean"] == pytest.approx(0.0)
    assert r1["methods"]["sft"]["heads"]["authors"]["mean"] == pytest.approx(1 / 3)
    off = r1["methods"]["sft"]["off_format"]
    # a note is off format in every answer (a "yes" note) or in none: a resample's share is the share of
    # "yes" notes drawn, Binomial(8, 1/2) / 8, whose 2.5th and 97.5th percentiles are 1/8 and 7/8
    assert off == {"mean": 0.5, "low": 0.125, "high": 0.875}
    assert r1["methods"]["decselfmask"]["off_format"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    zero = lad["zero_shot"]
    assert zero["rung"] == 1 and zero["options"]["mean"] == pytest.approx(1 / 3)
    assert zero["string_match"]["mean"] == pytest.approx(1 / 3)
    assert "Zero-shot (rung 1), the reference: options 0.3333 [" in md
    assert "| 3 | sft (rung 2's) |" in md
    records = load_predictions(pred / "ladder_1_test")
    assert off_format(records, "sft", RESAMPLES, 0) == off
    assert off_format(records, "decselfmask", RESAMPLES, 0)["mean"] == 0.0
    assert off_format(records, "no_such_method", RESAMPLES, 0) is None


def test_the_report_is_the_same_from_the_same_files(ladder, tmp_path):
    lad, md, out, pred = ladder
    grids = [r["grid"] for r in lad["rungs"]]
    main(["report", "--ladder", *grids, "--out", str(tmp_path), "--predictions-dir", str(pred),
          "--resamples", str(RESAMPLES)])
    assert json.loads((tmp_path / "ladder.json").read_text()) == lad
    assert (tmp_path / "ladder.md").read_text() == md


def test_ladder_and_budget_are_separate_reports(ladder, tmp_path):
    lad, _, _, pred = ladder
    with pytest.raises(SystemExit, match="separate reports"):
        main(["report", "--ladder", "--budget", lad["rungs"][0]["grid"], "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="same rung"):
        main(["report", "--ladder", lad["rungs"][0]["grid"], lad["rungs"][0]["grid"], "--out", str(tmp_path),
              "--predictions-dir", str(pred)])


LADDER_GRIDS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples" / "grids").glob("ladder_*_hallmarks.yml"))
LADDER_FILES = list((COMMITTED / "predictions").glob("ladder_*/*/*.jsonl.gz"))


@pytest.mark.skipif(not LADDER_FILES, reason="no ladder predictions are committed yet "
                    "(docs/results/predictions/ladder_*/): nothing for docs/results/ladder to be built from")
def test_the_committed_ladder_is_what_report_ladder_gives(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the command in docs/experiments.md, with relative paths as it is written there
    committed = COMMITTED / "ladder"
    assert (committed / "ladder.json").is_file(), (
        "ladder predictions are committed but docs/results/ladder/ladder.json is not: run `axolotl decselfmask "
        "experiments report --ladder examples/grids/ladder_*_hallmarks.yml --out docs/results/ladder "
        "--predictions-dir docs/results/predictions` and commit its files")
    out = tmp_path / "ladder"
    main(["report", "--ladder", *LADDER_GRIDS, "--out", str(out), "--predictions-dir", "docs/results/predictions"])
    assert json.loads((out / "ladder.json").read_text()) == json.loads((committed / "ladder.json").read_text())
    assert (out / "ladder.md").read_text() == (committed / "ladder.md").read_text()
    assert (committed / "ladder.png").is_file()
