"""Calibrated decisions (stage2/calibration.py): EM prior estimation, the bias correction, the
API's separation from test labels, and the pool notes it may read."""

from __future__ import annotations

import inspect
import json
import typing

import numpy as np
import pytest
from sklearn.metrics import f1_score

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.calibration import (
    MODES,
    Calibration,
    adjust,
    calibration_pool_texts,
    em_priors,
    estimate_priors,
    fit_bias,
    fit_from_config,
    fit_temperature,
    posteriors,
)
from axolotl_decselfmask.stage2.metrics import result_from_scores

MEANS = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])  # three Gaussian classes, unit variance


def _draw(rng, n, priors):
    y = rng.choice(len(priors), size=n, p=priors)
    return MEANS[y] + rng.normal(size=(n, 2)), y


def _log_density(x):
    return -0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(-1)  # up to a constant shared by the classes


def _exact_posteriors(x, priors):
    """The Bayes posteriors of the generating model under ``priors``."""
    z = _log_density(x) + np.log(priors)
    return posteriors(z)


def test_posteriors_are_a_softmax_over_the_options():
    scores = np.array([[-1.0, -2.0, -3.0], [-50.0, -50.0, -1000.0]])
    post = posteriors(scores)
    np.testing.assert_allclose(post.sum(1), 1.0)
    np.testing.assert_allclose(post[0], np.exp(scores[0]) / np.exp(scores[0]).sum())
    np.testing.assert_allclose(post[1], [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(posteriors(scores + 7.0), post)  # a constant per row does not matter
    assert posteriors(scores, temperature=10.0)[0].max() < post[0].max()
    with pytest.raises(ValueError, match="non-finite"):
        posteriors(np.array([[0.0, np.nan]]))


def test_adjust_is_the_bayes_prior_shift():
    rng = np.random.default_rng(0)
    x, _ = _draw(rng, 50, [1 / 3] * 3)
    train, new = np.array([1 / 3] * 3), np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(adjust(_exact_posteriors(x, train), train, new), _exact_posteriors(x, new), atol=1e-12)


def test_em_recovers_a_known_prior_from_calibrated_posteriors():
    rng = np.random.default_rng(1)
    train, true = np.array([1 / 3] * 3), np.array([0.6, 0.3, 0.1])
    x, _ = _draw(rng, 4000, true)
    post = _exact_posteriors(x, train)  # calibrated for the training priors
    estimate = estimate_priors(post, train, max_iter=1000)
    assert estimate.converged and estimate.iterations > 1
    np.testing.assert_allclose(estimate.priors, true, atol=0.03)
    # the plain mean of the posteriors is pulled towards the training priors; EM is not
    assert np.abs(post.mean(0) - true).max() > 0.08
    np.testing.assert_allclose(em_priors(post, train, max_iter=1000), estimate.priors)
    np.testing.assert_allclose(estimate.priors.sum(), 1.0)


def test_em_stops_at_max_iter_and_says_so():
    rng = np.random.default_rng(2)
    x, _ = _draw(rng, 500, [0.8, 0.1, 0.1])
    estimate = estimate_priors(_exact_posteriors(x, [1 / 3] * 3), [1 / 3] * 3, max_iter=2, tol=0.0)
    assert estimate.iterations == 2 and not estimate.converged


def test_fit_bias_meets_the_moment_condition_and_undoes_a_class_offset():
    rng = np.random.default_rng(3)
    x, y = _draw(rng, 300, [1 / 3] * 3)
    true_logits = _log_density(x)
    offset = np.array([0.0, 4.0, -2.0])  # a model that over-answers class 1
    target = posteriors(true_logits).mean(0)
    b = fit_bias(true_logits + offset, target)
    np.testing.assert_allclose(posteriors(true_logits + offset + b).mean(0), target, atol=1e-8)
    np.testing.assert_allclose(b, -(offset - offset.mean()), atol=1e-6)


def _yes_biased(rng, n, prior_yes, bias=4.0):
    """Scores (no, yes) of a classifier whose log-odds are the true ones plus ``bias``, and the gold."""
    y = (rng.random(n) < prior_yes).astype(int)
    x = rng.normal(np.where(y == 1, 1.0, -1.0), 1.0)  # true log-odds 2x under equal priors
    return np.stack([np.zeros(n), 2.0 * x + bias], 1), y


OPTIONS = ["no", "yes"]


def test_the_bias_correction_fixes_an_always_yes_classifier():
    rng = np.random.default_rng(4)
    lab_scores, lab_y = _yes_biased(rng, 400, 0.5)
    pick = np.r_[np.where(lab_y == 0)[0][:16], np.where(lab_y == 1)[0][:16]]  # 16 + 16 balanced labels
    lab_scores, lab_labels = lab_scores[pick], [OPTIONS[i] for i in lab_y[pick]]
    pool_scores, _ = _yes_biased(rng, 256, 0.2)
    test_scores, test_y = _yes_biased(rng, 2000, 0.2)
    argmax = test_scores.argmax(1)
    assert argmax.mean() > 0.85  # "yes" to nearly every note of a 20%-positive set
    plain = f1_score(test_y, argmax, average="macro")
    assert plain < 0.35
    for mode in ("balanced", "labelled", "pool"):
        cal = Calibration.fit(mode, OPTIONS, lab_scores, lab_labels, pool_scores)
        pred, post = cal.decide(test_scores)
        np.testing.assert_allclose(post.sum(1), 1.0)
        assert f1_score(test_y, pred, average="macro") > 0.7 > plain + 0.3, mode
    corrected = Calibration.fit("pool", OPTIONS, lab_scores, lab_labels, pool_scores)
    assert abs(corrected.priors[1] - 0.2) < 0.1  # EM after the correction finds about 20% positives
    uncorrected = Calibration.fit("pool_uncorrected", OPTIONS, lab_scores, lab_labels, pool_scores)
    assert uncorrected.priors[1] > 0.85  # EM alone trusts the biased posteriors: even more positives
    assert f1_score(test_y, uncorrected.decide(test_scores)[0], average="macro") < 0.35


def test_none_is_the_argmax_and_balanced_equals_labelled_on_balanced_labels():
    rng = np.random.default_rng(5)
    scores, y = _yes_biased(rng, 40, 0.5)
    labels = [OPTIONS[i] for i in y]
    pred, post = Calibration.fit("none", OPTIONS, scores, labels).decide(scores)  # the labels are not used
    np.testing.assert_array_equal(pred, scores.argmax(1))
    np.testing.assert_allclose(post, posteriors(scores))
    balanced_labels = ["no"] * 20 + ["yes"] * 20
    a = Calibration.fit("balanced", OPTIONS, scores, balanced_labels).decide(scores)[1]
    b = Calibration.fit("labelled", OPTIONS, scores, balanced_labels).decide(scores)[1]
    np.testing.assert_allclose(a, b)
    c = Calibration.fit("labelled", OPTIONS, scores, ["no"] * 30 + ["yes"] * 10).decide(scores)[1]
    assert c[:, 1].mean() < a[:, 1].mean()  # a labelled file with fewer positives: fewer "yes"


def test_the_temperature_fit_recovers_a_known_scale():
    rng = np.random.default_rng(6)
    scores, y = _yes_biased(rng, 3000, 0.5, bias=1.0)
    t, b = fit_temperature(scores * 3.0, y, np.bincount(y) / len(y))  # scores 3x over-confident
    assert t == pytest.approx(3.0, rel=0.15)
    assert b[1] - b[0] == pytest.approx(-1.0, abs=0.25)
    cal = Calibration.fit("balanced", OPTIONS, scores * 3.0, [OPTIONS[i] for i in y], temperature=True)
    assert cal.fitted_temperature and cal.temperature == pytest.approx(t)


def test_no_way_to_pass_test_labels():
    """Structural: fitting takes the labelled examples and pool scores, deciding takes scores only."""
    fit = set(inspect.signature(Calibration.fit).parameters)
    assert fit == {"mode", "options", "labelled_scores", "labelled_labels", "pool_scores", "temperature",
                   "max_iter", "tol"}
    assert list(inspect.signature(Calibration.decide).parameters) == ["self", "scores"]
    assert set(inspect.signature(fit_from_config).parameters) == {"c", "options", "labelled_scores",
                                                                  "labelled_labels", "pool_scores"}


def test_decisions_do_not_change_when_the_test_labels_change():
    rng = np.random.default_rng(7)
    lab_scores, lab_y = _yes_biased(rng, 32, 0.5)
    cal = Calibration.fit("pool", OPTIONS, lab_scores, [OPTIONS[i] for i in lab_y], _yes_biased(rng, 64, 0.2)[0])
    test_scores, test_y = _yes_biased(rng, 100, 0.2)
    gold = [OPTIONS[i] for i in test_y]
    a = result_from_scores(test_scores, gold, OPTIONS, cal)
    b = result_from_scores(test_scores, [OPTIONS[1 - i] for i in test_y], OPTIONS, cal)  # every label flipped
    assert a["predictions"] == b["predictions"] and a["predictions_argmax"] == b["predictions_argmax"]
    assert a["calibration"] == b["calibration"]
    assert a["macro_f1"] != b["macro_f1"]  # the labels are used for the score, and only there
    assert a["macro_f1"] > a["macro_f1_argmax"]
    assert result_from_scores(test_scores, gold, OPTIONS)["calibration"] == {"mode": "none"}


def test_to_dict_for_metrics_json():
    rng = np.random.default_rng(8)
    lab_scores, lab_y = _yes_biased(rng, 32, 0.5)
    cal = Calibration.fit("pool", OPTIONS, lab_scores, [OPTIONS[i] for i in lab_y], _yes_biased(rng, 50, 0.2)[0])
    d = json.loads(json.dumps(cal.to_dict()))
    assert d["mode"] == "pool" and d["n_pool"] == 50 and d["n_labelled"] == 32 and d["em_converged"] is True
    assert set(d["priors"]) == set(OPTIONS) and sum(d["priors"].values()) == pytest.approx(1.0, abs=1e-5)
    assert d["em_iterations"] >= 1 and d["temperature"] == 1.0 and d["log_bias"]["yes"] < 0
    assert "n_pool" not in Calibration.fit("balanced", OPTIONS, lab_scores, [OPTIONS[i] for i in lab_y]).to_dict()
    assert Calibration.fit("none", OPTIONS).to_dict() == {"mode": "none"}


def test_bad_input_is_named():
    scores = np.zeros((2, 2))
    with pytest.raises(InputError, match="calibration must be one of"):
        Calibration.fit("platt", OPTIONS, scores, ["no", "yes"])
    with pytest.raises(InputError, match="not among the options"):
        Calibration.fit("balanced", OPTIONS, scores, ["no", "maybe"])
    with pytest.raises(InputError, match="needs unlabelled pool notes"):
        Calibration.fit("pool", OPTIONS, scores, ["no", "yes"], pool_scores=np.zeros((0, 2)))
    with pytest.raises(InputError, match="needs the labelled examples"):
        Calibration.fit("labelled", OPTIONS, scores, [])
    with pytest.raises(ValueError, match="expected"):
        Calibration.fit("balanced", OPTIONS, np.zeros((3, 2)), ["no", "yes"])


def test_the_config_keys_match_the_modes():
    literal = typing.get_args(ClassificationConfig.model_fields["calibration"].annotation)
    assert set(literal) == set(MODES)
    c = ClassificationConfig(calibration="labelled", calibration_temperature=False)
    cal = fit_from_config(c, OPTIONS, np.array([[0.0, 1.0], [0.0, 2.0], [0.0, -1.0]]), ["yes", "yes", "no"])
    assert cal.mode == "labelled" and cal.reference_priors[1] == pytest.approx(3 / 5)  # add-one smoothed


def _pool_recipe(tmp_path, texts, test_texts):
    from axolotl.utils.dict import DictDefault

    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"note": t}) + "\n" for t in texts))
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"text": t, "label": "a"}) + "\n" for t in test_texts))
    cfg = DictDefault({"datasets": [{"path": str(pool), "ds_type": "json",
                                     "type": "axolotl_decselfmask.masked_reconstruction", "text_column": "note"}]})
    config = DecSelfMaskConfig(seed=3, max_texts=2, classification={"test_file": str(test), "labels": ["a", "b"]})
    return cfg, config


def test_calibration_pool_texts_sample_the_pool_without_test_texts(tmp_path):
    texts = [f"Unlabelled note number {i}." for i in range(30)] + ["  "]
    test_texts = ["Unlabelled note number 4.", "UNLABELLED  note number 7.", "a test text not in the pool"]
    cfg, config = _pool_recipe(tmp_path, texts, test_texts)
    allowed = [t for i, t in enumerate(texts[:30]) if i not in (4, 7)]
    every = calibration_pool_texts(cfg, config, 1000)
    assert every == allowed  # not cut to decselfmask.max_texts, the empty one and the test texts dropped
    some = calibration_pool_texts(cfg, config, 10)
    assert len(some) == 10 and set(some) <= set(allowed)
    assert some == sorted(some, key=allowed.index)  # in pool order
    assert some == calibration_pool_texts(cfg, config, 10)  # seeded
    assert some != calibration_pool_texts(cfg, config.model_copy(update={"seed": 4}), 10)


def test_calibration_pool_texts_need_a_pool_dataset(tmp_path):
    cfg, config = _pool_recipe(tmp_path, ["x"], ["y"])
    cfg["datasets"] = [{"path": "some/chat", "type": "chat_template"}]
    with pytest.raises(InputError, match="no datasets entry of type"):
        calibration_pool_texts(cfg, config, 10)


def test_the_evaluation_decides_before_reading_test_labels(tmp_path):
    """stage2/evaluation.py end to end with a fixed scorer: flipping every test label changes the
    scores of the decision, never the decision, its calibration, or the predictions' scores."""
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.stage2.data import load_task_data
    from axolotl_decselfmask.stage2.evaluation import evaluate_task
    from axolotl_decselfmask.stage2.scoring import Scorer
    from axolotl_decselfmask.stage2.tasks import Task, TaskPrompt

    class KeywordScorer(Scorer):  # an always-yes classifier, less sure when the note says "benign"
        def __init__(self):
            self.head = None

        def __call__(self, texts):
            return np.array([[0.0, 1.0 - 0.8 * ("benign" in t)] for t in texts])

    rng = np.random.default_rng(9)
    train = [{"text": f"note {i} {'malignant' if i % 2 else 'benign'}", "label": "yes" if i % 2 else "no"}
             for i in range(16)]
    test = [{"id": f"t{i}", "text": f"test {i} {'benign' if rng.random() < 0.6 else 'malignant'}",
             "label": "yes" if rng.random() < 0.3 else "no"} for i in range(30)]
    flipped = [{**r, "label": "no" if r["label"] == "yes" else "yes"} for r in test]
    results = []
    for name, rows in (("a", test), ("b", flipped)):
        folder = tmp_path / name
        folder.mkdir()
        for f, content in (("train.jsonl", train), ("test.jsonl", rows)):
            (folder / f).write_text("".join(json.dumps(r) + "\n" for r in content))
        c = ClassificationConfig(task="t", train_file=str(folder / "train.jsonl"), test_file=str(folder / "test.jsonl"),
                                 labels=OPTIONS, calibration="balanced")
        data = load_task_data(c)
        task = Task(c, data, TaskPrompt(c.question, c.system_prompt), 512, data.train.texts, data.train.labels,
                    data.test.texts, data.test.labels)
        cfg = DictDefault({"output_dir": str(folder), "use_tensorboard": False, "use_wandb": False})
        metrics = evaluate_task(cfg, DecSelfMaskConfig(), task, KeywordScorer())
        preds = [json.loads(line) for line in (folder / "predictions-t.jsonl").read_text().splitlines()]
        results.append((metrics["tasks"]["t"], preds))
    (ma, pa), (mb, pb) = results
    assert [p["pred"] for p in pa] == [p["pred"] for p in pb] and [p["scores"] for p in pa] == [p["scores"] for p in pb]
    assert [p["id"] for p in pa] == [f"t{i}" for i in range(30)] and [p["gold"] for p in pa] != [p["gold"] for p in pb]
    assert ma["calibration"] == mb["calibration"] and ma["calibration"]["mode"] == "balanced"
    assert ma["macro_f1"] != mb["macro_f1"]
    assert ma["confusion_matrix"]["matrix"] != mb["confusion_matrix"]["matrix"]
    assert all(p["scores"][1] > p["scores"][0] for p in pa)  # the argmax says "yes" to every note
    assert all(p["pred"] == ("no" if "benign" in t else "yes") for p, t in zip(pa, [r["text"] for r in test]))
