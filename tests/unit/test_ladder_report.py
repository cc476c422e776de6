"""``report --ladder`` (issue 34; docs/results.md, "The ladder (issue 34): plan"): per rung, DecSelfMask
minus SFT and minus continual_pretraining_authors under the option scoring and the authors' string
match, the heads, the off-format shares; from predictions files written by the experiment runner's own
writer (:func:`.predictions.export_run`), on hand-made predictions whose figures are worked out by hand.
The figures of a rung that is not complete are withheld unless ``--include-partial``; ``--results-md``
rewrites the generated part of a results file (the table, the plot, the sentence) and nothing else.
And, once the ladder's report is committed, that it (and docs/results.md's section) is what
``report --ladder`` gives from the committed predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ladder_predictions import (ALL_OFF, ALWAYS_NO, ALWAYS_YES, COMMITTED, CORPUS, GOLD, HALF, NO, OFF_ON_YES, PERFECT,
                                RESAMPLES, ROOT, YES, grid_file, write_run)

from axolotl_decselfmask.tools.experiments.cli import main
from axolotl_decselfmask.tools.experiments.ladder import BEGIN, END, off_format
from axolotl_decselfmask.tools.experiments.predictions import load_predictions


@pytest.fixture(scope="module")
def ladder(tmp_path_factory):
    """Rung 1 complete (2 seeds); rung 2 partial (decselfmask seed 1 absent, a float32 file); rung 3
    without sft in its grid, one file; rung 4 no file at all."""
    tmp = tmp_path_factory.mktemp("ladder")
    pred = tmp / "predictions"
    g1 = grid_file(tmp, 1, ["zero_shot", "sft", "decselfmask", "continual_pretraining_authors"], [0, 1])
    g2 = grid_file(tmp, 2, ["sft", "decselfmask", "continual_pretraining_authors"], [0, 1])
    g3 = grid_file(tmp, 3, ["decselfmask", "continual_pretraining_authors"], [0])
    g4 = grid_file(tmp, 4, ["decselfmask", "continual_pretraining_authors"], [0])
    write_run(pred, g1, "zero_shot", 0, ALWAYS_YES, seeds=[0, 1])
    for seed in (0, 1):
        write_run(pred, g1, "sft", seed, OFF_ON_YES, {"package": GOLD, "authors": ["no"] * 8})
        write_run(pred, g1, "decselfmask", seed, PERFECT, {"package": GOLD, "authors": GOLD})
        write_run(pred, g1, "continual_pretraining_authors", seed, PERFECT, {"package": ["no"] * 8, "authors": GOLD})
    write_run(pred, g2, "sft", 0, ALWAYS_NO)
    write_run(pred, g2, "sft", 1, PERFECT)  # unpaired, sft's mean would be 2/3 and the difference 1/3
    write_run(pred, g2, "decselfmask", 0, PERFECT)
    write_run(pred, g2, "continual_pretraining_authors", 0, ALWAYS_NO)
    write_run(pred, g2, "continual_pretraining_authors", 1, ALWAYS_NO, dtype="float32")
    write_run(pred, g3, "decselfmask", 0, ALWAYS_YES)
    out = tmp / "out"
    # the grids in another order than the rungs': the report orders them by rung; the partial rungs'
    # figures shown (--include-partial), as at a cut declared at the end
    main(["report", "--ladder", g3, g1, g4, g2, "--out", str(out), "--predictions-dir", str(pred),
          "--resamples", str(RESAMPLES), "--include-partial"])
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
    assert "| factor 4. | missing: 0 of 2 runs; SFT: rung 2's |" in rows["4"]
    assert rows["4"].endswith("| – | – | – | – | –, – |")
    assert "| complete: 7 of 7 runs, seeds 0,1 |" in rows["1"]
    assert ("partial: 4 of 6 runs (sft seeds 0,1; decselfmask seed 0; continual_pretraining_authors seed 0), shown "
            "(--include-partial) |") in rows["2"]
    assert "partial: 1 of 2 runs (decselfmask seed 0), shown (--include-partial); SFT: rung 2's |" in rows["3"]
    assert "| withheld" not in md and "withheld until" not in md
    assert lad["include_partial"] and [r["withheld"] for r in lad["rungs"]] == [None] * 4
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
          "--resamples", str(RESAMPLES), "--include-partial"])
    assert json.loads((tmp_path / "ladder.json").read_text()) == lad
    assert (tmp_path / "ladder.md").read_text() == md


def test_ladder_and_budget_are_separate_reports(ladder, tmp_path):
    lad, _, _, pred = ladder
    with pytest.raises(SystemExit, match="separate reports"):
        main(["report", "--ladder", "--budget", lad["rungs"][0]["grid"], "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="same rung"):
        main(["report", "--ladder", lad["rungs"][0]["grid"], lad["rungs"][0]["grid"], "--out", str(tmp_path),
              "--predictions-dir", str(pred)])


# --------------------------------------------------------------------------- withheld until complete

def _keys(value) -> set:
    """Every key of a nested dict/list."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


def _results_md(path: Path) -> tuple[str, str]:
    """A results file with text of its own around the markers; its head and tail."""
    head = "# Results\n\nHand-written text before; it stays as it is.\n\n## Which part carries the gain\n\nIntro.\n\n"
    tail = "\n\n# The next section\n\nHand-written text after, with a stray <!-- comment -->.\n"
    path.write_text(head + BEGIN + "\nold generated text\n" + END + tail)
    return head, tail


def _section(path: Path) -> str:
    text = path.read_text()
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)]


def _section_rows(section: str) -> dict[str, str]:
    table = section.split("| rung | adds |")[1].split("\n\n")[0]
    return {line.split(" | ")[0].strip("| "): line for line in table.splitlines()[2:]}


@pytest.fixture(scope="module")
def withheld(ladder, tmp_path_factory):
    """The same predictions reported as the plan reads them (no --include-partial), with a results file."""
    lad, _, _, pred = ladder
    tmp = tmp_path_factory.mktemp("withheld")
    md_path = tmp / "docs" / "results.md"
    md_path.parent.mkdir()
    head, tail = _results_md(md_path)
    out = tmp / "docs" / "results" / "ladder"
    main(["report", "--ladder", *[r["grid"] for r in lad["rungs"]], "--out", str(out), "--predictions-dir",
          str(pred), "--resamples", str(RESAMPLES), "--results-md", str(md_path)])
    return json.loads((out / "ladder.json").read_text()), (out / "ladder.md").read_text(), md_path, head, tail


def test_a_partial_rung_s_figures_are_withheld(ladder, withheld):
    shown, _, _, _ = ladder
    lad, md, _, _, _ = withheld
    r1, r2, r3, r4 = lad["rungs"]
    assert not lad["include_partial"]
    assert [r["withheld"] for r in lad["rungs"]] == [None, "rung", "rung", "rung"]
    # the complete rung: the same figures as with every rung shown
    assert r1["methods"] == shown["rungs"][0]["methods"] and r1["difference"] == shown["rungs"][0]["difference"]
    assert lad["zero_shot"] == shown["zero_shot"]
    # the partial rungs: their runs counted, no figure computed or written
    for r, was in ((r2, shown["rungs"][1]), (r3, shown["rungs"][2])):
        assert r["methods"] == {} and r["difference"] == {} and "mean" not in _keys(r)
        assert (r["present"], r["absent"]) == (was["present"], was["absent"])
    assert r3["sft_runs"] == {"present": [f"{CORPUS}/sft-seed0"], "absent": []}
    rows = _rows(md)
    assert "| partial: 4 of 6 runs; figures withheld until complete |" in rows["2"]
    assert rows["2"].endswith("| withheld | withheld | withheld | withheld | withheld, withheld |")
    assert "| partial: 1 of 2 runs; figures withheld until complete; SFT: rung 2's |" in rows["3"]
    assert "| missing: 0 of 2 runs; SFT: rung 2's |" in rows["4"] and "withheld" not in rows["4"]
    assert "| 2 | (figures withheld until the rung is complete) |" in md
    assert "| 2 | withheld | withheld |" in md  # the heads
    assert "+0.6667" not in rows["2"] and "| 2 | sft |" not in md


def test_the_section_holds_the_complete_rung_s_figures(withheld):
    lad, _, md_path, head, tail = withheld
    text = md_path.read_text()
    assert text.startswith(head + BEGIN + "\n") and text.endswith("\n" + END + tail)
    section = _section(md_path)
    assert "old generated text" not in section
    rows = _section_rows(section)
    assert list(rows) == ["1", "2", "3", "4"]
    r1 = lad["rungs"][0]
    for view in ("options", "string_match"):
        for base in ("sft", "continual_pretraining_authors"):
            d = r1["difference"][view][base]
            assert f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" in rows["1"], (view, base)
    off = r1["methods"]["sft"]["off_format"]
    assert f"{100 * off['mean']:.1f}% [{100 * off['low']:.1f}, {100 * off['high']:.1f}]" in rows["1"]
    assert "| partial: 4 of 6 runs; figures withheld until complete |" in rows["2"]
    assert rows["2"].endswith("| withheld | withheld | withheld | withheld | withheld |")
    assert rows["4"].endswith("| missing: 0 of 2 runs; SFT: rung 2's | – | – | – | – | – |")
    # the plot, relative to the results file; the heads
    assert "](results/ladder/ladder.png)" in section
    package = r1["difference"]["heads"]["package"]["continual_pretraining_authors"]
    assert f"| 1 | {package['mean']:+.4f} [" in section
    # one complete rung: its figure, and no step read
    d = r1["difference"]["options"]["sft"]
    assert (f"Only rung 1 (factor 1) has a decselfmask minus sft figure yet (rung 2 partial (4 of 6 runs), rung 3 "
            f"partial (1 of 2 runs), rung 4 missing (0 of 2 runs)): under the options scorer it is "
            f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] *, whose 95% interval excludes zero") in section
    assert "no step between rungs can be read yet" in section


def test_the_section_is_rewritten_in_place_and_only_there(withheld, tmp_path):
    lad, _, md_path, head, tail = withheld
    first = md_path.read_text()
    copy = tmp_path / "results.md"
    copy.write_text(first.replace("Intro.", "Intro, edited by someone else meanwhile."))
    out = tmp_path / "ladder"
    main(["report", "--ladder", *[r["grid"] for r in lad["rungs"]], "--out", str(out), "--predictions-dir",
          lad["predictions_dir"], "--resamples", str(RESAMPLES), "--results-md", str(copy)])
    again = copy.read_text()
    assert again.startswith(head.replace("Intro.", "Intro, edited by someone else meanwhile.") + BEGIN + "\n")
    assert again.endswith("\n" + END + tail)
    assert _section(copy).replace("](ladder/ladder.png)", "](results/ladder/ladder.png)") == _section(md_path)


def test_include_partial_shows_the_partial_rungs_and_names_them(ladder, tmp_path):
    lad, _, _, pred = ladder
    md_path = tmp_path / "results.md"
    _results_md(md_path)
    main(["report", "--ladder", *[r["grid"] for r in lad["rungs"]], "--out", str(tmp_path / "ladder"),
          "--predictions-dir", str(pred), "--resamples", str(RESAMPLES), "--include-partial",
          "--results-md", str(md_path)])
    section = _section(md_path)
    rows = _section_rows(section)
    d = lad["rungs"][1]["difference"]["options"]["sft"]
    assert f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" in rows["2"]
    assert "| withheld |" not in section and "withheld until complete" not in section
    assert ("Partial rungs are shown (`--include-partial`, a declared cut): rung 2 4 of 6 runs (sft seeds 0,1; "
            "decselfmask seed 0; continual_pretraining_authors seed 0); rung 3 1 of 2 runs (decselfmask seed 0).") \
        in section
    assert "here shown anyway: `--include-partial`" in section


def test_a_missing_or_misplaced_marker_is_an_error_naming_the_file(ladder, tmp_path):
    lad, _, _, pred = ladder
    grids = [r["grid"] for r in lad["rungs"]]
    for name, text in (("no_end.md", f"# R\n{BEGIN}\nx\n"), ("none.md", "# R\n"),
                       ("reversed.md", f"{END}\nx\n{BEGIN}\n"), ("twice.md", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n")):
        path = tmp_path / name
        path.write_text(text)
        out = tmp_path / f"out_{name}"
        with pytest.raises(SystemExit, match=f"{path}.*{BEGIN}.*{END}"):
            main(["report", "--ladder", *grids, "--out", str(out), "--predictions-dir", str(pred),
                  "--resamples", str(RESAMPLES), "--results-md", str(path)])
        assert path.read_text() == text and not out.exists()  # checked before anything is computed or written
    with pytest.raises(SystemExit, match="absent.md is not a file"):
        main(["report", "--ladder", *grids, "--out", str(tmp_path / "o"), "--results-md", str(tmp_path / "absent.md")])
    with pytest.raises(SystemExit, match="add --ladder"):
        main(["report", grids[0], "--out", str(tmp_path / "o"), "--results-md", str(tmp_path / "none.md")])


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """Three rungs of seed 0 (rung 3 borrows rung 2's sft). Options, decselfmask minus sft: rung 1
    HALF - ALWAYS_NO = 11/15 - 1/3 = 0.4; rung 2 PERFECT - ALL_OFF = 2/3 (a step of +4/15); rung 3
    ALWAYS_YES - ALL_OFF = 0 (a step of -2/3, the largest), whose string-match difference is 1/3 - 0."""
    tmp = tmp_path_factory.mktemp("steps")
    grids = [grid_file(tmp, 1, ["sft", "decselfmask"], [0]), grid_file(tmp, 2, ["sft", "decselfmask"], [0]),
             grid_file(tmp, 3, ["decselfmask"], [0])]
    return tmp, grids


def _report_steps(tmp: Path, grids: list[str], pred: Path, name: str) -> tuple[dict, str]:
    md_path = tmp / f"{name}.md"
    _results_md(md_path)
    main(["report", "--ladder", *grids, "--out", str(tmp / name), "--predictions-dir", str(pred),
          "--resamples", str(RESAMPLES), "--results-md", str(md_path)])
    return json.loads((tmp / name / "ladder.json").read_text()), _section(md_path)


def test_the_sentence_names_the_rung_of_the_largest_step(steps):
    tmp, (g1, g2, g3) = steps
    pred = tmp / "all"
    for grid, sft, dsm in ((g1, ALWAYS_NO, HALF), (g2, ALL_OFF, PERFECT), (g3, None, ALWAYS_YES)):
        if sft:
            write_run(pred, grid, "sft", 0, sft)
        write_run(pred, grid, "decselfmask", 0, dsm)
    lad, section = _report_steps(tmp, [g1, g2, g3], pred, "all")
    means = [r["difference"]["options"]["sft"]["mean"] for r in lad["rungs"]]
    assert means == pytest.approx([0.4, 2 / 3, 0.0])
    d3, sm3 = (lad["rungs"][2]["difference"][v]["sft"] for v in ("options", "string_match"))
    assert ("Of the complete rungs (1, 2, 3), rung 3's factor (factor 3) changes decselfmask minus sft under the "
            f"options scorer the most: from {means[1]:+.4f} at rung 2 to {d3['mean']:+.4f} [") in section
    assert f"a step of {means[2] - means[1]:+.4f}; rung 3's 95% interval includes zero" in section
    assert sm3["mean"] == pytest.approx(1 / 3)
    assert (f"Under the authors' string match it is {sm3['mean']:+.4f} [{sm3['low']:+.4f}, {sm3['high']:+.4f}]"
            f"{' *' if sm3['excludes_zero'] else ''}, {sm3['mean'] - d3['mean']:+.4f} above the options difference: "
            "that much of the string-match gain can be a format effect (off-format answers: sft 100.0% [100.0, "
            "100.0], decselfmask 0.0% [0.0, 0.0]).") in section


def test_no_rung_complete_and_a_borrowed_sft_not_complete(steps):
    tmp, (g1, g2, g3) = steps
    pred = tmp / "few"
    write_run(pred, g1, "sft", 0, ALWAYS_NO)
    lad, section = _report_steps(tmp, [g1, g2, g3], pred, "none")
    assert ("No rung is complete yet: rung 1 partial (1 of 2 runs), rung 2 missing (0 of 2 runs), rung 3 missing "
            "(0 of 1 runs); no figure is read until its rung is complete.") in section
    assert all(r["methods"] == {} for r in lad["rungs"])
    assert ("Defaults rule (pre-registered): not applied yet: rungs 1, 2, 3 are incomplete and the arm beyond the "
            "paper (amendment A1) has not run (`--arm` gives it; `--without-arm` declares it will not run); it is "
            "applied when the ladder and the arm are finished or a cut is declared (`--include-partial`). No rung is "
            "complete, so no candidate is considered yet.") in section and lad["defaults_rule"]["candidates"] == []
    # rung 3 complete, but rung 2's sft of seed 0 is not there: its minus-SFT figures wait for it
    write_run(pred, g3, "decselfmask", 0, ALWAYS_YES)
    lad, section = _report_steps(tmp, [g1, g2, g3], pred, "borrowed")
    r3 = lad["rungs"][2]
    assert r3["status"] == "complete" and r3["withheld"] == "sft" and r3["difference"]["options"]["sft"] is None
    assert list(r3["methods"]) == ["decselfmask"]
    assert ("No rung shown has a decselfmask minus sft figure under the options scorer yet (rung 1: partial, no "
            "figure; rung 2: missing, no figure; rung 3: minus SFT withheld until rung 2's sft runs of its seeds "
            "are all there).") in section
    assert ("| complete: 1 of 1 runs, seed 0; SFT: rung 2's (0 of 1 of its runs of seed 0; minus SFT withheld "
            "until they are all there) | withheld | – | withheld | – | withheld; 0.0% [0.0, 0.0]; – |") \
        in _section_rows(section)["3"]


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
    # docs/results.md's generated section too: a copy of the file as it is now, its section rewritten
    results = tmp_path / "docs" / "results.md"
    results.parent.mkdir()
    results.write_text((ROOT / "docs" / "results.md").read_text())
    out = tmp_path / "docs" / "results" / "ladder"
    arm = ROOT / "examples" / "grids" / "arm_hallmarks.yml"  # the arm, once scripts/arm_grids.py has written it
    # the transfer grids, once scripts/transfer_grids.py has written them (as scripts/ladder_sync.sh gives them)
    transfer = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples" / "grids").glob("transfer_*.yml"))
    main(["report", "--ladder", *LADDER_GRIDS, "--out", str(out), "--predictions-dir", "docs/results/predictions",
          "--results-md", str(results), *(["--arm", "examples/grids/arm_hallmarks.yml"] if arm.is_file() else []),
          *(["--transfer", *transfer] if transfer else [])])
    lad = json.loads((committed / "ladder.json").read_text())
    assert json.loads((out / "ladder.json").read_text()) == lad
    assert (out / "ladder.md").read_text() == (committed / "ladder.md").read_text()
    assert (committed / "ladder.png").is_file()
    assert results.read_text() == (ROOT / "docs" / "results.md").read_text(), (
        "docs/results.md's ladder section is not what `report --ladder ... --results-md docs/results.md` writes: "
        "run scripts/ladder_sync.sh's report line and commit docs/results.md")
    # the plan: no figure of a rung that is not complete is committed
    assert not lad["include_partial"]
    assert all(r["methods"] == {} and r["difference"] == {} for r in lad["rungs"] if r["status"] != "complete")


# --------------------------------------------------------------------------- the defaults rule

# options: 7 of 8 right (a "yes" note answered "no"): F1 yes 2*3/(4+3) = 6/7, no 2*4/(4+5) = 8/9, mean 55/63
ONE_MORE = (["yes", "no", "yes", "no", "yes", "no", "no", "no"], [YES, NO, YES, NO, YES, NO, NO, NO])
NO_HEADS = {"package": ["no"] * 8, "authors": ["no"] * 8}  # each head Macro F1 1/3


def _rule(tmp: Path, runs: dict, complete: bool = True, flags: tuple = ()) -> tuple[dict, str]:
    """Two rungs of seed 0, each running sft and decselfmask; ``runs``: (rung, method) -> (answers, heads,
    seconds); without ``complete``, rung 2's sft is not written. The rule and the results section."""
    tmp.mkdir(parents=True, exist_ok=True)
    grids = {n: grid_file(tmp, n, ["sft", "decselfmask"], [0]) for n in (1, 2)}
    pred = tmp / "predictions"
    for (rung, method), (answers, heads, seconds) in runs.items():
        if complete or (rung, method) != (2, "sft"):
            write_run(pred, grids[rung], method, 0, answers, heads, seconds=seconds)
    md_path = tmp / "results.md"
    _results_md(md_path)
    # the arm is not part of these rules' cases: declared not to run (else the rule waits for it)
    main(["report", "--ladder", grids[1], grids[2], "--out", str(tmp / "out"), "--predictions-dir", str(pred),
          "--resamples", str(RESAMPLES), "--results-md", str(md_path), "--without-arm", *flags])
    lad = json.loads((tmp / "out" / "ladder.json").read_text())
    section = _section(md_path)
    # the paragraph follows the one-sentence summary, in ladder.md too
    assert section.index("**In one sentence.**") < section.index("Defaults rule (pre-registered): ") < \
        section.index("| rung | adds |")
    assert "Defaults rule (pre-registered): " in (tmp / "out" / "ladder.md").read_text()
    return lad["defaults_rule"], section


def _pick(c: dict | None) -> tuple | None:
    return c and (c["rung"], c["method"], c["classifier"])


def test_rule_a_head_clearly_best_becomes_the_default(tmp_path):
    rule, section = _rule(tmp_path, {
        (1, "sft"): (OFF_ON_YES, NO_HEADS, 50.0), (1, "decselfmask"): (ALWAYS_NO, NO_HEADS, 100.0),
        (2, "sft"): (OFF_ON_YES, NO_HEADS, 50.0),
        (2, "decselfmask"): (HALF, {"package": GOLD, "authors": ["no"] * 8}, 500.0)})
    assert rule["applied"] and rule["rungs_considered"] == [1, 2] and rule["rungs_not_considered"] == []
    means = {_pick(c): c["mean"] for c in rule["candidates"]}
    assert means == pytest.approx({(1, "decselfmask", "options"): 1 / 3, (1, "decselfmask", "package"): 1 / 3,
                                   (1, "decselfmask", "authors"): 1 / 3, (2, "decselfmask", "options"): 11 / 15,
                                   (2, "decselfmask", "package"): 1.0, (2, "decselfmask", "authors"): 1 / 3})
    assert _pick(rule["reference"]) == (1, "decselfmask", "options") and rule["reference"]["seconds"] == 100.0
    assert _pick(rule["winner"]) == (2, "decselfmask", "package") and rule["winner"]["seconds"] == 500.0
    d = rule["difference"]
    assert d["mean"] == pytest.approx(2 / 3) and d["excludes_zero"] and d["low"] > 0 and d["seeds"] == [0]
    # chosen for its interval, though dearer
    assert _pick(rule["choice"]) == (2, "decselfmask", "package") and rule["why"] == "its interval excludes zero"
    assert not rule["without_decselfmask"]["beats_every_decselfmask"] and rule["readme_sentence"] is None
    assert (f"the highest is rung 2's decselfmask (package head), 1.0000 [1.0000, 1.0000]; minus today's default "
            f"(rung 1's decselfmask (options), 0.3333 [") in section
    assert (f"it is {d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}] (seeds 0), whose interval excludes zero "
            "(run seconds 500 against 100): rung 2's decselfmask (package head) becomes the default") in section
    assert "not applied yet" not in section


@pytest.mark.parametrize(("seconds", "chosen"), [((100.0, 500.0), 1), ((500.0, 100.0), 2)])
def test_rule_an_interval_with_zero_keeps_the_cheaper(tmp_path, seconds, chosen):
    rule, section = _rule(tmp_path, {
        (1, "sft"): (ALWAYS_NO, None, 50.0), (1, "decselfmask"): (HALF, None, seconds[0]),
        (2, "sft"): (ALWAYS_NO, None, 50.0), (2, "decselfmask"): (ONE_MORE, None, seconds[1])})
    assert [_pick(c) for c in rule["candidates"]] == [(1, "decselfmask", "options"), (2, "decselfmask", "options")]
    assert _pick(rule["winner"]) == (2, "decselfmask", "options") and rule["winner"]["mean"] == pytest.approx(55 / 63)
    d = rule["difference"]
    # one note differs: a resample without it has a difference of 0, so the interval reaches zero
    assert d["mean"] == pytest.approx(55 / 63 - 11 / 15) and d["low"] == 0 and not d["excludes_zero"]
    assert _pick(rule["choice"]) == (chosen, "decselfmask", "options")
    assert rule["why"] == "its interval includes zero: the cheaper of the two by run seconds"
    verb = "stays" if chosen == 1 else "becomes"
    assert (f"whose interval includes zero (run seconds {seconds[1]:.0f} against {seconds[0]:.0f}): rung {chosen}'s "
            f"decselfmask (options) {verb} the default") in section


@pytest.mark.parametrize("seconds", [(100.0, 150.0), (150.0, 100.0), (100.0, 199.0)])
def test_rule_run_seconds_within_twice_are_no_cost_difference(tmp_path, seconds):
    """Amendment L5: beside a second lane one run's seconds move by up to 1.9x, so seconds within 2x of each
    other make neither setting the cheaper one: with an interval through zero, today's default stays."""
    rule, section = _rule(tmp_path, {
        (1, "sft"): (ALWAYS_NO, None, 50.0), (1, "decselfmask"): (HALF, None, seconds[0]),
        (2, "sft"): (ALWAYS_NO, None, 50.0), (2, "decselfmask"): (ONE_MORE, None, seconds[1])})
    assert not rule["difference"]["excludes_zero"]
    assert _pick(rule["choice"]) == (1, "decselfmask", "options") and "within 2x" in rule["why"]
    assert "rung 1's decselfmask (options) stays the default" in section


def test_rule_sft_or_a_head_on_the_untouched_model_beating_every_decselfmask_setting(tmp_path):
    rule, section = _rule(tmp_path / "sft", {
        (1, "sft"): (PERFECT, NO_HEADS, 50.0), (1, "decselfmask"): (ALWAYS_NO, NO_HEADS, 100.0),
        (2, "sft"): (HALF, NO_HEADS, 50.0), (2, "decselfmask"): (HALF, NO_HEADS, 100.0)})
    w = rule["without_decselfmask"]
    assert [_pick(c) for c in w["candidates"]] == [(1, "sft", c) for c in ("options", "package", "authors")] + \
        [(2, "sft", c) for c in ("options", "package", "authors")]
    assert _pick(w["best"]) == (1, "sft", "options") and w["best"]["mean"] == 1.0
    assert w["beats_every_decselfmask"] and w["minus_winner"]["mean"] == pytest.approx(1 - 11 / 15)
    assert rule["readme_sentence"] == "Plain SFT beats every DecSelfMask setting of the ladder."
    assert 'The README says so: "Plain SFT beats every DecSelfMask setting of the ladder."' in section
    # a head of the sft runs (the untouched model) above every DecSelfMask setting
    rule, section = _rule(tmp_path / "head", {
        (1, "sft"): (ALWAYS_NO, {"package": ["no"] * 8, "authors": GOLD}, 50.0),
        (1, "decselfmask"): (ALWAYS_NO, NO_HEADS, 100.0), (2, "sft"): (ALWAYS_NO, None, 50.0),
        (2, "decselfmask"): (ONE_MORE, NO_HEADS, 100.0)})
    assert _pick(rule["without_decselfmask"]["best"]) == (1, "sft", "authors")
    assert rule["readme_sentence"] == ("A head on the untouched model (the authors head) beats every DecSelfMask "
                                       "setting of the ladder.")
    # level with the best DecSelfMask setting is not above it
    rule, _ = _rule(tmp_path / "level", {
        (1, "sft"): (ONE_MORE, None, 50.0), (1, "decselfmask"): (ALWAYS_NO, None, 100.0),
        (2, "sft"): (ALWAYS_NO, None, 50.0), (2, "decselfmask"): (ONE_MORE, None, 100.0)})
    assert not rule["without_decselfmask"]["beats_every_decselfmask"] and rule["readme_sentence"] is None


def test_rule_not_applied_while_a_rung_is_incomplete(tmp_path, withheld, ladder):
    runs = {(1, "sft"): (ALWAYS_NO, None, 50.0), (1, "decselfmask"): (HALF, None, 100.0),
            (2, "sft"): (ALWAYS_NO, None, 50.0), (2, "decselfmask"): (PERFECT, None, 100.0)}
    rule, section = _rule(tmp_path / "partial", runs, complete=False)
    assert not rule["applied"] and rule["incomplete_rungs"] == [2]
    assert rule["rungs_considered"] == [1] and rule["rungs_not_considered"] == [{"rung": 2, "status": "partial"}]
    assert {c["rung"] for c in rule["candidates"]} == {1}  # rung 2's decselfmask (Macro F1 1) is not read
    assert ("Defaults rule (pre-registered): not applied yet: rung 2 is incomplete; it is applied when the ladder "
            "is finished or a cut is declared (`--include-partial`). So far, over the complete rung 1: ") in section
    assert ("the highest is rung 1's decselfmask (options), 0.7333 [0.3333, 1.0000], today's default itself: rung 1's "
            "decselfmask (options) would stay.") in section and "1.0000 [" not in section
    # the same runs with the cut declared: applied over what there is, rung 2 included
    rule, section = _rule(tmp_path / "cut", runs, complete=False, flags=("--include-partial",))
    assert rule["applied"] and rule["rungs_considered"] == [1, 2] and rule["incomplete_rungs"] == [2]
    assert _pick(rule["winner"]) == (2, "decselfmask", "options") and "not applied yet" not in section
    # the module fixtures: rungs 2-4 incomplete (withheld); with --include-partial rung 4 (no run) is not considered
    rule = withheld[0]["defaults_rule"]
    assert not rule["applied"] and rule["incomplete_rungs"] == [2, 3, 4] and rule["rungs_considered"] == [1]
    assert "Defaults rule (pre-registered): not applied yet: rungs 2, 3, 4 are incomplete" in _section(withheld[2])
    rule = ladder[0]["defaults_rule"]
    assert rule["applied"] and rule["rungs_considered"] == [1, 2, 3]
    assert rule["rungs_not_considered"] == [{"rung": 4, "status": "missing"}]
    assert "(not considered, no figures: rung 4 missing)" in ladder[1]


def _clause_rung(opt: float, sm: float, off_sft: float, off_dsm: float) -> dict:
    cell = lambda m: {"mean": m, "low": m - 0.01, "high": m + 0.01, "excludes_zero": False}  # noqa: E731
    return {"rung": 4, "difference": {"options": {"sft": cell(opt)}, "string_match": {"sft": cell(sm)}},
            "methods": {"sft": {"off_format": cell(off_sft)}, "decselfmask": {"off_format": cell(off_dsm)}}}


@pytest.mark.parametrize("opt, sm, offs, says, mostly_off", [
    (0.0, 0.10, (1.0, 0.0), "+0.1000 above the options difference: that much of the string-match gain can be a "
                            "format effect", False),
    (-0.0852, -0.0005, (0.973, 1.0), "+0.0847 above the options difference but no gain: no format effect", True),
    (0.05, 0.02, (0.5, 0.95), "not above the options difference (-0.0300): no format effect", False),
])
def test_the_format_clause_calls_a_gain_only_a_gain(opt, sm, offs, says, mostly_off):
    from axolotl_decselfmask.tools.experiments.ladder import format_clause

    text = format_clause(_clause_rung(opt, sm, *offs))
    assert says in text
    assert ("Nearly every answer of both is off format" in text) is mostly_off


def test_a_string_match_gain_at_another_rung_is_named_beside_the_largest_step():
    """Rung 4 has the largest options step, but rung 1's string match is far above its options (a format
    effect): the sentence names rung 1 after rung 4; where the largest gap is at the rung described, or no
    rung has a string-match gain, nothing is added."""
    from axolotl_decselfmask.tools.experiments.ladder import largest_gap_clause, ladder_sentence

    r1 = dict(_clause_rung(-0.0254, 0.2651, 0.125, 0.001), rung=1, adds="the core grid's setting.", status="complete")
    r4 = dict(_clause_rung(-0.0852, -0.0005, 0.973, 1.0), adds="stage-1 volume.", status="complete")
    text = ladder_sentence({"rungs": [r1, r4]})
    assert "rung 4's factor (stage-1 volume) changes decselfmask minus sft under the options scorer the most" in text
    assert text.index("rung 4's factor") < text.index(
        "The string-match gain departs most from the options at rung 1 (the core grid's setting): there the options "
        "give -0.0254 [-0.0354, -0.0154]. Under the authors' string match it is +0.2651 [+0.2551, +0.2751], "
        "+0.2905 above the options difference: that much of the string-match gain can be a format effect "
        "(off-format answers: sft 12.5% [11.5, 13.5], decselfmask 0.1% [-0.9, 1.1]).")
    assert largest_gap_clause([r1, r4], r1) == ""  # rung 1 is the one described already
    assert largest_gap_clause([r4], r4) == "" and largest_gap_clause([r4, r4], r1) == ""  # no string-match gain
    below = dict(_clause_rung(0.30, 0.10, 0.0, 0.0), rung=2, adds="x.", status="complete")  # a gain, below options
    assert largest_gap_clause([below, r4], r4) == ""
