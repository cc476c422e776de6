"""Constrained scoring of label options and Macro F1."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.prompts import classification_messages, render
from axolotl_decselfmask.stage2.metrics import forget_task, format_table, write_metrics
from axolotl_decselfmask.stage2.scoring import macro_f1, score_options

LABELS = ["neoplasms", "cardiovascular diseases", "nervous system diseases"]
Q = "Which category does the text above belong to?"
SYS = "Answer with one of the options."


def _full_sequence_scores(model, tok, text):
    """Reference: score each option by running prompt + answer as one sequence."""
    out = []
    for label in LABELS:
        turns = render(tok, classification_messages(text, Q, LABELS, SYS, answer=label))
        p = tok(turns.prompt, add_special_tokens=False)["input_ids"]
        a = tok(turns.answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + a])
        with torch.no_grad():
            lp = model(input_ids=ids).logits[0].float().log_softmax(-1)
        out.append(sum(lp[len(p) + k - 1, a[k]].item() for k in range(len(a))))
    return out


def test_cached_option_scoring_equals_full_sequences(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    texts = ["Tumour growth in the colon was observed.", "Stroke patients with atrial fibrillation."]
    texts += ["A long note. " * 9 + "Seizures and migraine.", "Short."]  # prompts of different lengths
    for batch_size in (1, 3, 8):  # left padding inside a batch must not change a text's scores
        got = score_options(model, tok, texts, LABELS, Q, SYS, progress=False, batch_size=batch_size)
        assert got.shape == (4, 3)
        for row, text in enumerate(texts):
            np.testing.assert_allclose(got[row], _full_sequence_scores(model, tok, text), rtol=1e-4, atol=1e-4)


def test_batched_scoring_on_the_real_model(smollm_model, smollm_tok):
    texts = ["Breast cancer treated with chemotherapy.", "Atrial fibrillation and stroke risk in elderly patients "
             "with hypertension, followed for five years.", "Epilepsy."]
    one = score_options(smollm_model, smollm_tok, texts, LABELS, Q, SYS, progress=False, batch_size=1)
    together = score_options(smollm_model, smollm_tok, texts, LABELS, Q, SYS, progress=False, batch_size=3)
    np.testing.assert_allclose(together, one, rtol=1e-3, atol=2e-3)
    assert (one.argmax(1) == together.argmax(1)).all()


def test_real_model_prefers_the_plausible_label(smollm_model, smollm_tok):
    texts = ["Breast cancer: a malignant tumour, treated with chemotherapy for metastatic carcinoma.",
             "Cerebral stroke and epilepsy: a disorder of the brain and the nervous system."]
    scores = score_options(smollm_model, smollm_tok, texts, LABELS, Q, SYS, progress=False)
    assert np.isfinite(scores).all() and (scores < 0).all()
    # The score depends on the text: the same options are ranked differently.
    assert not np.allclose(scores[0] - scores[0].max(), scores[1] - scores[1].max(), atol=1e-3)


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c", "d"]
    gold = list(rng.choice(labels, 50))
    pred = list(rng.choice(labels[:3], 50))  # "d" never predicted
    assert macro_f1(gold, pred, labels) == pytest.approx(
        f1_score(gold, pred, labels=labels, average="macro", zero_division=0))


def test_metrics_json_shape_and_merge(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, "t1", {"macro_f1": 0.5, "accuracy": 0.6, "n_test": 10})
    metrics = write_metrics(path, "t2", {"macro_f1": 0.7, "accuracy": 0.8, "n_test": 12})
    on_disk = json.loads(path.read_text())
    assert on_disk == metrics
    assert set(on_disk["tasks"]) == {"t1", "t2"}
    assert on_disk["tasks"]["t2"] == {"macro_f1": 0.7, "accuracy": 0.8, "n_test": 12}
    assert on_disk["macro_f1_mean"] == pytest.approx(0.6)
    table = format_table(on_disk)
    assert "t1" in table and "0.7000" in table and "macro_f1_mean: 0.6000" in table


def test_task_names_cannot_escape_the_output_folder(tmp_path):
    from axolotl_decselfmask.io.files import safe_filename

    for name in ["../../etc/passwd", "/abs/path", "a/../../b", "..", "ok-name_1"]:
        target = (tmp_path / f"predictions-{safe_filename(name)}.jsonl").resolve()
        assert target.parent == tmp_path.resolve(), name
    assert safe_filename("ok-name_1") == "ok-name_1"


def test_forget_task_updates_the_mean_and_removes_an_empty_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(path, "a", {"macro_f1": 0.2, "accuracy": 0.5, "n_test": 4})
    write_metrics(path, "b", {"macro_f1": 0.6, "accuracy": 0.7, "n_test": 4})
    assert json.loads(path.read_text())["macro_f1_mean"] == pytest.approx(0.4)
    forget_task(path, "a")
    metrics = json.loads(path.read_text())
    assert list(metrics["tasks"]) == ["b"] and metrics["macro_f1_mean"] == pytest.approx(0.6)
    forget_task(path, "missing")  # nothing to do
    forget_task(path, "b")
    assert not path.exists()
