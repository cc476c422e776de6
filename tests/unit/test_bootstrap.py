"""The paired bootstrap of the comparison (tools/experiments/bootstrap.py) on synthetic predictions."""

import numpy as np
from helpers import prediction_records
from sklearn.metrics import f1_score

from axolotl_decselfmask.tools.experiments.bootstrap import (
    bootstrap,
    draw,
    prepare,
    statistics,
)

def test_a_method_identical_to_decselfmask_differs_by_exactly_zero():
    recs = prediction_records({"sft": 0.3, "decselfmask": 0.2, "twin": "copy:decselfmask"})
    for r in recs:
        if r["method"] == "twin":
            r["method"] = "random_masking"
    out = bootstrap(recs, ["sft", "random_masking", "decselfmask"], resamples=500, seed=1)
    d = out["scopes"]["all"]["difference"]["random_masking"]
    assert (d["mean"], d["low"], d["high"], d["excludes_zero"]) == (0.0, 0.0, 0.0, False)
    assert out["scopes"]["a"]["difference"]["random_masking"]["high"] == 0.0


def test_a_clearly_better_method_excludes_zero_and_a_noisy_equal_one_does_not():
    recs = prediction_records({"sft": 0.40, "random_masking": 0.20, "decselfmask": 0.20},
                    corpora=(("a", 8, 150), ("b", 4, 100)))
    out = bootstrap(recs, ["sft", "random_masking", "decselfmask"], resamples=2000, seed=0)
    sft = out["scopes"]["all"]["difference"]["sft"]
    assert sft["low"] > 0.1 and sft["excludes_zero"] and sft["low"] < sft["mean"] < sft["high"]
    same = out["scopes"]["all"]["difference"]["random_masking"]
    assert same["low"] < 0 < same["high"] and not same["excludes_zero"]
    for scope in ("a", "b"):
        assert out["scopes"][scope]["difference"]["sft"]["excludes_zero"]
    assert out["scopes"]["all"]["n_tasks"] == 12 and out["scopes"]["b"]["n_tasks"] == 4
    m = out["scopes"]["all"]["methods"]["sft"]
    assert m["low"] < m["mean"] < m["high"] < out["scopes"]["all"]["methods"]["decselfmask"]["low"]


def test_the_point_estimate_is_the_mean_of_sklearn_macro_f1_over_seeds_then_tasks():
    recs = prediction_records({"zero_shot": 0.45, "sft": 0.3, "decselfmask": 0.2}, corpora=(("a", 3, 40), ("b", 2, 30)))
    out = bootstrap(recs, ["zero_shot", "sft", "decselfmask"], resamples=10, seed=0)

    def mean_f1(method, corpus=None):
        per_task: dict = {}
        for r in recs:
            if r["method"] == method and corpus in (None, r["corpus"]):
                for t in r["tasks"]:
                    per_task.setdefault((r["corpus"], t["task"]), []).append(
                        f1_score(t["gold"], t["pred"], labels=[0, 1], average="macro", zero_division=0))
        return np.mean([np.mean(v) for v in per_task.values()])  # tasks of both corpora pooled

    for m in ("zero_shot", "sft", "decselfmask"):
        assert np.isclose(out["scopes"]["all"]["methods"][m]["mean"], mean_f1(m))
        assert np.isclose(out["scopes"]["b"]["methods"][m]["mean"], mean_f1(m, "b"))
    assert np.isclose(out["scopes"]["all"]["difference"]["sft"]["mean"], mean_f1("decselfmask") - mean_f1("sft"))


def _reference(recs, methods, corpora, weights, tcounts, b):
    """The statistics of draw ``b`` by a loop: every note repeated as often as drawn (the weight of
    its row in its corpus' draw, the same for every task with those rows), scikit-learn's F1."""
    note_w = {}
    for c, ws in zip(corpora, weights):
        for g, w in zip(c.groups, ws):
            for t in g.tasks:
                note_w[c.name, t] = dict(zip(g.rows.tolist(), w[b].tolist()))
    num, den = np.zeros(len(methods)), np.zeros(len(methods))
    for c, tc in zip(corpora, tcounts):
        for ti, task in enumerate(c.tasks):
            for mi, m in enumerate(methods):
                f1s = []
                for r in recs:
                    if r["corpus"] == c.name and r["method"] == m:
                        line = next(t for t in r["tasks"] if t["task"] == task)
                        reps = [int(note_w[c.name, task][row]) for row in line["row"]]
                        gold, pred = np.repeat(line["gold"], reps), np.repeat(line["pred"], reps)
                        f1s.append(f1_score(gold, pred, labels=[0, 1], average="macro", zero_division=0))
                num[mi] += tc[b, ti] * np.mean(f1s)
                den[mi] += tc[b, ti]
    return num / den


def test_notes_are_resampled_jointly_for_tasks_that_share_them_as_a_slow_loop_does():
    def rows_of(corpus, t):  # corpus a: t0, t1 share notes 100..; t2 has its own (reversed order too)
        return list(range(500, 512))[::-1] if (corpus, t) == ("a", 2) else list(range(100, 112))

    recs = prediction_records({"sft": 0.35, "decselfmask": 0.25}, corpora=(("a", 3, 12), ("b", 2, 12)), seeds=(0, 1),
                    rows_of=rows_of)
    methods = ["sft", "decselfmask"]
    corpora = prepare(recs, methods)
    assert [g.tasks for g in corpora[0].groups] == [["t0", "t1"], ["t2"]] and len(corpora[1].groups) == 1
    weights, tcounts = draw(corpora, np.random.default_rng(3), 20)
    assert all(w.sum(1).tolist() == [12.0] * 20 for ws in weights for w in ws)  # n notes drawn of n
    got = statistics(corpora, weights, tcounts, ref=1)["all"]
    for b in range(20):
        want = _reference(recs, methods, corpora, weights, tcounts, b)
        assert np.allclose(got[0][b], want, atol=1e-9)
        assert np.isclose(got[1][b, 0], want[1] - want[0], atol=1e-9)
    # the vectorised statistics do depend on the weights: drawing again gives other values
    other = statistics(corpora, *draw(corpora, np.random.default_rng(4), 20), ref=1)["all"]
    assert not np.allclose(other[0], got[0])


def test_deterministic_with_a_seed_and_other_with_another():
    recs = prediction_records({"sft": 0.3, "decselfmask": 0.25})
    a = bootstrap(recs, ["sft", "decselfmask"], resamples=1500, seed=7)
    b = bootstrap(recs, ["sft", "decselfmask"], resamples=1500, seed=7)
    c = bootstrap(recs, ["sft", "decselfmask"], resamples=1500, seed=8)
    assert a["scopes"] == b["scopes"] and a["scopes"] != c["scopes"]


def test_ten_thousand_resamples_of_the_full_grid_take_seconds():
    methods = {"zero_shot": 0.45, "sft": 0.3, "random_masking": 0.25, "decselfmask": 0.22,
               "decselfmask_paper": 0.24, "setfit": 0.2}
    recs = prediction_records(methods, corpora=(("mtsamples", 22, 200), ("hallmarks", 10, 200)))
    out = bootstrap(recs, list(methods), resamples=10_000, seed=0)
    print(f"10,000 resamples, 32 tasks x 6 methods x 3 seeds x 200 notes: {out['seconds']:.2f} s")
    assert out["seconds"] < 30 and out["scopes"]["all"]["n_tasks"] == 32


def test_a_difference_is_over_the_tasks_both_methods_have():
    recs = prediction_records({"sft": 0.3, "decselfmask": 0.2}, corpora=(("a", 4, 60),))
    for r in recs:
        if r["method"] == "decselfmask":
            r["tasks"] = r["tasks"][:2]  # decselfmask has t0 and t1 only
    out = bootstrap(recs, ["sft", "decselfmask"], resamples=300, seed=0)

    def f1(method, tasks):
        return np.mean([np.mean([f1_score(t["gold"], t["pred"], average="macro") for r in recs
                                 if r["method"] == method for t in r["tasks"] if t["task"] == name])
                        for name in tasks])

    scope = out["scopes"]["all"]
    assert np.isclose(scope["methods"]["sft"]["mean"], f1("sft", ["t0", "t1", "t2", "t3"]))
    assert np.isclose(scope["difference"]["sft"]["mean"], f1("decselfmask", ["t0", "t1"]) - f1("sft", ["t0", "t1"]))
    assert np.isfinite([scope["difference"]["sft"]["low"], scope["difference"]["sft"]["high"]]).all()
    assert bootstrap([], ["sft"], resamples=10)["scopes"] == {}
