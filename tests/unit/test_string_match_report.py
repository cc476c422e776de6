"""The experiment runner's string-match fields: a run's predictions rows (as the evaluation writes them
with ``scorer: both``) become ``sm_*`` fields of the committed task lines, and ``report`` shows the
string-match Macro F1 (mean of tasks with its bootstrap interval, pooled) and the off-format share per
method beside the options figure; files without the fields report as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score

from axolotl_decselfmask.tools.experiments.bootstrap import bootstrap
from axolotl_decselfmask.tools.experiments.predictions import _task_lines, string_match_records
from axolotl_decselfmask.tools.experiments.report import string_match_boot, string_match_lines

YES, NO = "8505", "2152"  # answers as joined token ids


def _line(task, gold, pred, sm_pred, off):
    sm_gold = [YES if g == 0 else NO for g in gold]
    return {"task": task, "labels": ["yes", "no"], "row": list(range(len(gold))), "gold": gold, "pred": pred,
            "n_train": 4, "n_pseudo": "", "probe_macro_f1": "", "multi_label_task": "",
            "sm_gold": sm_gold, "sm_pred": sm_pred, "sm_off": off}


def _records():
    rng = np.random.default_rng(0)
    recs = []
    for method, wrong in (("decselfmask", 0.2), ("sft", 0.5)):
        tasks = []
        for t in range(3):
            gold = rng.integers(0, 2, 20).tolist()
            pred = [g if rng.random() > wrong else 1 - g for g in gold]
            sm_pred = [(YES if p == 0 else NO) if rng.random() > wrong else f"99{t}" for p in pred]
            tasks.append(_line(f"t{t}", gold, pred, sm_pred, [int(p not in (YES, NO)) for p in sm_pred]))
        recs.append({"corpus": "c", "method": method, "seed": 0, "seeds": [0], "tasks": tasks})
    return recs


def test_predictions_rows_become_sm_fields():
    preds = [{"row": i, "gold": g, "pred": "yes", "string_match": {"gold": a, "pred": b, "off_format": o,
                                                                    "answer": "x"}}
             for i, (g, a, b, o) in enumerate([("yes", YES, YES, False), ("no", NO, "123", True)])]
    (line,) = _task_lines("t", {"labels": ["yes", "no"]}, preds, None, Path("p"))
    assert (line["sm_gold"], line["sm_pred"], line["sm_off"]) == ([YES, NO], [YES, "123"], [0, 1])
    multi = [{"row": 0, "gold": ["a"], "pred": [], "string_match": {"per_label": {
        "a": {"gold": YES, "pred": NO, "off_format": False}}}}]
    (ml,) = _task_lines("m", {"multi_label": True, "per_label": {"a": {}}}, multi, None, Path("p"))
    assert ml["task"] == "m/a" and ml["sm_pred"] == [NO]
    old = [{k: v for k, v in p.items() if k != "string_match"} for p in preds]
    assert "sm_gold" not in _task_lines("t", {"labels": ["yes", "no"]}, old, None, Path("p"))[0]


def test_point_figures_are_scikit_learns_with_the_classes_present():
    recs = _records()
    boot = string_match_boot(recs, resamples=200)
    for rec in recs:
        m = rec["method"]
        per_task = [f1_score(li["sm_gold"], li["sm_pred"], average="macro", zero_division=0) for li in rec["tasks"]]
        assert boot["scopes"]["all"]["methods"][m]["mean"] == pytest.approx(np.mean(per_task))
        gold = [y for li in rec["tasks"] for y in li["sm_gold"]]
        pred = [y for li in rec["tasks"] for y in li["sm_pred"]]
        assert boot["pooled"][m] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
        assert boot["off_format"][m] == pytest.approx(np.mean([o for li in rec["tasks"] for o in li["sm_off"]]))
    d = boot["scopes"]["all"]["difference"]["sft"]
    assert d["low"] <= d["mean"] <= d["high"]
    lines = string_match_lines({"string_match": boot}, {"summary": {"sft": {"mean": 0.5}}})
    assert any(line.startswith("| sft | 0.5000 | ") for line in lines)


def test_a_resample_counts_only_the_classes_it_draws():
    # one task, notes 0-1 gold yes predicted yes, note 2 gold no predicted an off-format answer
    line = _line("t", [0, 0, 1], [0, 0, 1], [YES, YES, "77"], [0, 0, 1])
    rec = {"corpus": "c", "method": "decselfmask", "seed": 0, "seeds": [0], "tasks": [line]}
    sm = string_match_records([rec])
    assert sm[0]["tasks"][0]["labels"] == sorted({YES, NO, "77"})
    from axolotl_decselfmask.tools.experiments.bootstrap import prepare, slot_f1

    (corpus,) = prepare(sm, ["decselfmask"])
    only_yes = slot_f1(corpus, [np.array([[2.0, 1.0, 0.0]], np.float32)])
    assert only_yes[0, 0, 0] == pytest.approx(1.0)  # sklearn on [yes, yes, yes] vs itself
    every = slot_f1(corpus, [np.ones((1, 3), np.float32)])
    assert every[0, 0, 0] == pytest.approx(f1_score([YES, YES, NO], [YES, YES, "77"], average="macro",
                                                    zero_division=0))


def test_files_without_the_fields_report_as_before():
    recs = _records()
    for rec in recs:
        for li in rec["tasks"]:
            for k in ("sm_gold", "sm_pred", "sm_off"):
                del li[k]
    assert string_match_boot(recs) == {} and string_match_records(recs) == []
    assert string_match_lines({"scopes": {}}) == []
    before = bootstrap(recs, ["decselfmask", "sft"], 100)
    assert before["scopes"]["all"]["methods"]["sft"]["mean"] == pytest.approx(
        np.mean([f1_score(li["gold"], li["pred"], labels=[0, 1], average="macro", zero_division=0)
                 for li in recs[1]["tasks"]]))
