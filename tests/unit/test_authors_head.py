"""The authors' head (classification.head.style: authors; probing.heads), out-of-fold decisions of
heads (head.decision_scores), and the experiment runner's record and report of both probing heads.

The authors' head, as read from ferrazzipietro/DecSelfMask (d_classification_head.sh,
scripts/train_classification_head.py, src/classifier_training/{data,model}.py): the final-layer
state at the last token of the raw text ``note + "{item}? <mask>"`` (no chat template), H -> 256 ->
dropout 0.1 -> labels with no activation between (USE_NON_LINEARITY=false), no feature
standardisation, AdamW lr 1e-3 on shuffled mini-batches of 64, 1 epoch.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import data_rows

from axolotl_decselfmask.args import ClassificationConfig, HeadConfig, ProbingConfig
from axolotl_decselfmask.prompts import mask_fill_question
from axolotl_decselfmask.stage2.calibration import Calibration, calibrate
from axolotl_decselfmask.stage2.head import (
    HeadClassifier,
    fit_head,
    head_scores,
    out_of_fold_scores,
    stratified_folds,
)
from axolotl_decselfmask.stage2.probing import (
    cached_features,
    fit_network,
    network_of,
    probe_tasks,
    prompt_ids,
)
from axolotl_decselfmask.stage2.scoring import Scorer
from axolotl_decselfmask.stage2.tasks import TaskPrompt

MASK = "<empty_output>"  # an added special token of SmolLM2 (one token)
ITEM = "Which category does the text above belong to"
LABELS = ["neoplasms", "cardiovascular diseases"]
SYSTEM = "Fill in the masked part of the following text."
QUESTION = mask_fill_question(ITEM, MASK)  # the mask_fill prompt's question: "{item}? <mask>"


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype="float32").eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def notes():
    """6 abstracts of each of two labels, cut to their first 25 words."""
    rows = [r for r in data_rows("abstracts_train.jsonl", per_class=6) if r["label"] in LABELS]
    return [" ".join(r["text"].split()[:25]) for r in rows], [r["label"] for r in rows]


def test_authors_style_is_one_key_and_each_setting_can_be_set():
    a = HeadConfig(style="authors")
    assert (a.prompt, a.position, a.activation, a.dropout, a.standardise, a.batch_size, a.epochs,
            a.learning_rate, a.hidden_size) == ("raw", "last", "none", 0.1, False, 64, 1, 1e-3, 256)
    p = HeadConfig()
    assert (p.prompt, p.position, p.activation, p.dropout, p.standardise, p.batch_size, p.epochs) == (
        "chat", "auto", "relu", 0.0, True, 0, 200)
    assert HeadConfig(style="authors", epochs=7, dropout=0.0).epochs == 7
    assert HeadConfig.model_validate(HeadConfig(style="authors", epochs=3).model_dump()) == HeadConfig(
        style="authors", epochs=3)
    assert ClassificationConfig(method="head", head={"style": "authors"}).head == a
    assert ProbingConfig().heads == ["package", "authors"]
    assert ProbingConfig(authors_head={"epochs": 5}).authors_head == HeadConfig(style="authors", epochs=5)
    with pytest.raises(ValueError, match="style"):
        HeadConfig(style="paper")


def test_the_authors_feature_is_the_last_token_of_the_raw_text_without_chat_template(tiny, notes):
    model, tok = tiny
    texts = notes[0][:3]
    fed = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: fed.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone())),
        with_kwargs=True)
    try:
        feats = cached_features(model, tok, texts, LABELS, QUESTION, SYSTEM, "last", None, batch_size=3,
                                progress=False, prompt="raw")
    finally:
        hook.remove()
    ((ids, mask),) = fed
    expected = {tuple(tok(t + f"{ITEM}? {MASK}")["input_ids"]) for t in texts}
    got = {tuple(row[m.bool()].tolist()) for row, m in zip(ids, mask)}
    assert got == expected  # exactly the tokenizer's ids of the raw string: no chat template, no options
    mask_id = tok.convert_tokens_to_ids(MASK)
    for text, feature in zip(texts, feats):
        ids_one = prompt_ids(tok, text, LABELS, QUESTION, SYSTEM, "raw")
        assert ids_one == tok(text + f"{ITEM}? {MASK}")["input_ids"] and ids_one[-1] == mask_id
        with torch.no_grad():
            direct = model(input_ids=torch.tensor([ids_one]), output_hidden_states=True).hidden_states[-1][0, -1]
        torch.testing.assert_close(feature, direct, rtol=1e-4, atol=1e-5)


def test_the_authors_network_has_no_activation_and_dropout_before_the_output():
    net = network_of(48, 3, HeadConfig(style="authors"))
    kinds = [type(m) for m in net]
    assert kinds == [torch.nn.Linear, torch.nn.Identity, torch.nn.Dropout, torch.nn.Linear]
    assert (net[0].in_features, net[0].out_features, net[2].p, net[3].out_features) == (48, 256, 0.1, 3)
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.GELU, torch.nn.Tanh)) for m in net.modules())
    assert [type(m) for m in network_of(48, 3, HeadConfig())] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]


def test_the_authors_head_trains_on_raw_features_in_shuffled_seeded_mini_batches(tiny, notes):
    model, tok = tiny
    texts, gold = notes
    feats = cached_features(model, tok, texts, LABELS, QUESTION, SYSTEM, "last", None, progress=False, prompt="raw")
    y = [LABELS.index(g) for g in gold]
    settings = HeadConfig(style="authors", epochs=100, batch_size=4)
    losses: list = []
    net = fit_network(feats, y, 2, settings, seed=0, losses=losses)
    assert len(losses) == 100 * 3  # 12 notes in batches of 4, 100 epochs
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.1  # training reduces the loss (last epoch vs first)
    again = fit_network(feats, y, 2, settings, seed=0)
    other = fit_network(feats, y, 2, settings, seed=1)
    with torch.no_grad():
        assert torch.equal(net(feats), again(feats)) and not torch.equal(net(feats), other(feats))
    head = fit_head(model, tok, texts, gold, LABELS, QUESTION, SYSTEM, settings, seed=0, progress=False)
    assert head.position == "last" and torch.equal(head.mean, torch.zeros_like(head.mean))
    assert torch.equal(head.std, torch.ones_like(head.std))  # no standardisation
    assert head.predict(feats) == [LABELS[i] for i in net(feats).argmax(1).tolist()]  # eval mode: no dropout
    np.testing.assert_array_equal(head_scores(model, tok, head, texts, progress=False), head.log_probs(feats))
    one_step: list = []
    fit_network(feats, y, 2, HeadConfig(style="authors"), seed=0, losses=one_step)
    assert len(one_step) == 1  # the authors' 1 epoch in batches of 64: 12 notes, one step


def test_the_authors_head_is_saved_and_loaded_with_its_prompt(tmp_path, tiny, notes):
    model, tok = tiny
    texts, gold = notes
    head = fit_head(model, tok, texts, gold, LABELS, QUESTION, SYSTEM, HeadConfig(style="authors", epochs=5),
                    seed=2, progress=False)
    head.save(tmp_path, "t")
    loaded = HeadClassifier.load(tmp_path, "t")
    assert loaded.settings == head.settings and loaded.settings.prompt == "raw"
    np.testing.assert_array_equal(head_scores(model, tok, loaded, texts, progress=False),
                                  head_scores(model, tok, head, texts, progress=False))


# ------------------------------------------------------------------- out-of-fold decisions


def _noise(n=40, positives=10, dim=64, seed=0):
    """Features without any signal: a head can only memorise them."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32), ["yes"] * positives + ["no"] * (n - positives)


def test_stratified_folds_are_balanced_and_seeded():
    y = [0] * 10 + [1] * 5
    fold = stratified_folds(y, 5, seed=0)
    assert sorted(np.bincount(fold).tolist()) == [3, 3, 3, 3, 3]
    assert np.bincount(fold[np.asarray(y) == 1], minlength=5).tolist() == [1] * 5  # each fold one of class 1
    assert np.array_equal(fold, stratified_folds(y, 5, seed=0))
    assert not np.array_equal(fold, stratified_folds(y, 5, seed=1))


def test_out_of_fold_scores_come_from_heads_that_never_saw_the_note():
    x, y = _noise()
    settings = HeadConfig(epochs=50, hidden_size=32)
    oof = out_of_fold_scores(x, y, ["yes", "no"], settings, seed=0, texts=[f"n{i}" for i in range(40)])
    assert len(oof.train_rows) == 5 and oof.scores.shape == (40, 2)
    for i in range(40):
        assert i not in set(oof.train_rows[oof.fold[i]].tolist())  # its head never trained on it
        assert set(oof.train_rows[oof.fold[i]].tolist()) == set(np.flatnonzero(oof.fold != oof.fold[i]).tolist())
    for f, rows in enumerate(oof.train_rows):  # and those heads are what the record says
        held = np.flatnonzero(oof.fold == f)
        head = HeadClassifier.fit(x[rows], [y[i] for i in rows], ["yes", "no"], settings, seed=0)
        np.testing.assert_allclose(oof.scores[held], head.log_probs(x[held]), rtol=1e-6, atol=1e-6)


class _FeatureScorer(Scorer):
    """The evaluation's scorer of a head, on given features of its texts (no model)."""

    def __init__(self, head, texts, x):
        super().__init__(None, None, head.labels, TaskPrompt("Q?", "S."), ClassificationConfig(), False, head, {})
        self.rows, self.x, self.calls = {t: i for i, t in enumerate(texts)}, x, []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return self.head.log_probs(self.x[[self.rows[t] for t in texts]])


def _task(texts, labels, calibration="balanced"):
    return SimpleNamespace(settings=ClassificationConfig(calibration=calibration), data=SimpleNamespace(
        labels=["yes", "no"]), train_texts=texts, train_labels=labels)


def test_out_of_fold_decision_differs_from_in_sample_where_the_head_overfits():
    """A head memorises 40 notes without signal (10 yes). In sample it is sure and right, and the
    decision needs a large bias to move its saturated posteriors onto the (smoothed) labelled
    priors, which then makes it answer the minority on most new notes; out of fold its posteriors
    already average to the priors, and the bias stays near zero."""
    x, y = _noise()
    texts = [f"note {i}" for i in range(40)]
    decisions = {}
    for how in ("in_sample", "out_of_fold"):
        settings = HeadConfig(epochs=300, hidden_size=64, decision_scores=how)
        head = HeadClassifier.fit(x, y, ["yes", "no"], settings, seed=0)
        if how == "out_of_fold":
            head.out_of_fold = out_of_fold_scores(x, y, ["yes", "no"], settings, seed=0, texts=texts)
        in_sample = head.log_probs(x)
        assert (np.array(["yes", "no"])[in_sample.argmax(1)] == np.array(y)).all()  # memorised
        scorer = _FeatureScorer(head, texts, x)
        decisions[how] = calibrate(_task(texts, y), scorer, None)
        assert scorer.calls == ([] if how == "out_of_fold" else [texts])
    cal_in, cal_oof = decisions["in_sample"], decisions["out_of_fold"]
    assert cal_in.log_bias[0] - cal_in.log_bias[1] > 2.0  # fitted on memorised scores
    assert abs(cal_oof.log_bias[0] - cal_oof.log_bias[1]) < 0.5
    fresh, _ = _noise(n=200, positives=50, seed=1)
    head = HeadClassifier.fit(x, y, ["yes", "no"], HeadConfig(epochs=300, hidden_size=64), seed=0)
    d_in, d_oof = (cal.decide(head.log_probs(fresh))[0] for cal in (cal_in, cal_oof))
    assert (d_in == 0).sum() > (d_oof == 0).sum() + 30  # the in-sample decision answers "yes" far more often


def test_in_sample_decisions_score_the_training_texts_with_the_final_head():
    x, y = _noise(n=10, positives=5)
    head = HeadClassifier.fit(x, y, ["yes", "no"], HeadConfig(epochs=5, decision_scores="in_sample"), seed=0)
    assert head.out_of_fold is None
    texts = [f"t{i}" for i in range(10)]
    scorer = _FeatureScorer(head, texts, x)
    cal = calibrate(_task(texts, y), scorer, None)
    assert scorer.calls == [texts]
    np.testing.assert_allclose(cal.log_bias, Calibration.fit("balanced", ["yes", "no"], head.log_probs(x), y).log_bias)


# ------------------------------------------------------------------- probing and the runner


def test_probing_records_both_heads_and_the_runner_reports_them(tmp_path, tiny, notes):
    from axolotl_decselfmask.io.files import atomic_write_jsonl
    from axolotl_decselfmask.stage2 import outputs
    from axolotl_decselfmask.tools.experiments.predictions import (
        export_run,
        head_records,
        read_predictions,
        rows_from_predictions,
    )
    from axolotl_decselfmask.tools.experiments.report import write_results

    model, tok = tiny
    texts, gold = notes
    test_texts, test_gold = texts[::2], gold[::2]
    config = SimpleNamespace(seed=0, probing=ProbingConfig(enabled=True, epochs=20, authors_head={"epochs": 3}))
    records = []
    for method in ("sft", "decselfmask"):
        task = SimpleNamespace(name="t@seed0", train_texts=texts[1::2], train_labels=gold[1::2], test_texts=test_texts,
                               gold=test_gold, data=SimpleNamespace(labels=LABELS), parent=None, run_info={},
                               prompt=TaskPrompt(QUESTION, SYSTEM, "mask_fill", MASK))
        probe_tasks(config, [task], model, tok, False, {})
        heads = task.run_info["probe_heads"]
        assert set(heads) == {"package", "authors"}
        assert all(len(h["predictions"]) == len(test_texts) for h in heads.values())
        assert task.run_info["probe_macro_f1"] == heads["package"]["macro_f1"]
        run = {"corpus": "abstracts", "method": method, "dir": tmp_path / method,
               "recipe": {"decselfmask": {"tasks": [{"task": "t@seed0", "test_file": str(tmp_path / "test.jsonl")}]}}}
        atomic_write_jsonl(tmp_path / "test.jsonl", [{"text": t, "label": g, "row": 10 + i}
                                                     for i, (t, g) in enumerate(zip(test_texts, test_gold))])
        n = len(test_texts)
        outputs.write_predictions(run["dir"] / "output", "t@seed0", list(range(n)), list(range(n)), test_gold,
                                  test_gold, np.zeros((n, 2)), LABELS)
        entry = {"labels": LABELS, "n_train": 6, **task.run_info}
        (path,) = export_run(run, {"seconds": 1.0, "metrics": {"tasks": {"t@seed0": entry}}}, tmp_path / "p", [0])
        rec = read_predictions(path)
        (line,) = rec["tasks"]
        assert line["heads"] == {s: [LABELS.index(p) for p in heads[s]["predictions"]] for s in heads}
        records.append(rec)
    assert sorted(r["method"] for r in head_records(records)) == [
        "decselfmask:authors_head", "decselfmask:package_head", "sft:authors_head", "sft:package_head"]
    boot = write_results(tmp_path / "out", rows_from_predictions(records), records=records, resamples=100)
    assert set(boot["heads"]) == {"package", "authors"}
    text = (tmp_path / "out" / "results.md").read_text()
    assert "Heads on the frozen model before stage 2" in text
    assert "| package head | decselfmask minus this | authors head | decselfmask minus this |" in text
    assert "| sft | " in text.split("Heads on the frozen model")[1]


def test_old_predictions_without_heads_give_the_same_report(tmp_path):
    from helpers import prediction_records

    from axolotl_decselfmask.tools.experiments.predictions import rows_from_predictions
    from axolotl_decselfmask.tools.experiments.report import write_results

    records = prediction_records({"sft": 0.3, "decselfmask": 0.3})
    boot = write_results(tmp_path, rows_from_predictions(records), records=records, resamples=100)
    assert "heads" not in boot and "Heads on the frozen model" not in (tmp_path / "results.md").read_text()
