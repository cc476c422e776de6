"""Constrained scoring of label options and Macro F1."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.prompts import classification_messages, render
from axolotl_decselfmask.stage2.metrics import (
    classification_report_dict,
    format_table,
    macro_f1,
    result_from_scores,
)
from axolotl_decselfmask.stage2.outputs import (
    forget_metrics,
    write_metrics,
    write_predictions,
)
from axolotl_decselfmask.stage2.scoring import score_options

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


def test_classification_report_by_hand():
    options = ["a", "b", "c"]
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "a", "a"]  # "c" never predicted
    report = classification_report_dict(gold, pred, options)
    # a: tp 2 fp 2 fn 1 -> 4/7; b: tp 1 fp 1 fn 1 -> 1/2; c: 0
    assert report["per_class_f1"] == pytest.approx({"a": 4 / 7, "b": 0.5, "c": 0.0})
    assert report["macro_f1"] == pytest.approx((4 / 7 + 0.5) / 3) == macro_f1(gold, pred, options)
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["confusion_matrix"] == {"labels": options, "matrix": [[2, 1, 0], [1, 1, 0], [1, 0, 0]]}
    json.dumps(report)  # plain types for metrics.json
    # an option no text has and none predicted counts 0, as before
    assert macro_f1(["a", "b"], ["a", "b"], ["a", "b", "d"]) == pytest.approx(2 / 3)
    assert classification_report_dict([], [], options)["confusion_matrix"]["matrix"] == [[0] * 3] * 3


def test_metrics_json_shape_and_merge(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(tmp_path, "t1", {"macro_f1": 0.5, "accuracy": 0.6, "n_test": 10})
    metrics = write_metrics(tmp_path, "t2", {"macro_f1": 0.7, "accuracy": 0.8, "n_test": 12})
    on_disk = json.loads(path.read_text())
    assert on_disk == metrics
    assert set(on_disk["tasks"]) == {"t1", "t2"}
    assert on_disk["tasks"]["t2"] == {"macro_f1": 0.7, "accuracy": 0.8, "n_test": 12}
    assert on_disk["macro_f1_mean"] == pytest.approx(0.6)
    table = format_table(on_disk)
    assert "t1" in table and "0.7000" in table and "macro_f1_mean: 0.6000" in table
    assert "macro_f1_argmax" not in table


def test_metrics_json_keeps_the_calibrated_and_the_argmax_scores(tmp_path):
    options = ["no", "yes"]
    scores = np.array([[0.0, 2.0], [0.0, 1.0], [0.0, 3.0], [0.0, -1.0]])  # argmax: yes, yes, yes, no
    gold = ["no", "no", "yes", "no"]

    class Threshold:  # a fitted decision rule: "yes" above 1.5 (the interface of calibration.Calibration)
        def decide(self, s):
            pred = (s[:, 1] - s[:, 0] > 1.5).astype(int)
            return pred, np.eye(2)[pred]

        def to_dict(self):
            return {"mode": "threshold"}

    result = result_from_scores(scores, gold, options, Threshold())
    assert result["predictions"] == ["yes", "no", "yes", "no"] and result["predictions_argmax"] == ["yes"] * 3 + ["no"]
    path = tmp_path / "metrics.json"
    metrics = write_metrics(tmp_path, "t", result, extra={"labels": options})
    entry = json.loads(path.read_text())["tasks"]["t"]
    assert entry["macro_f1"] == pytest.approx(f1_score(gold, result["predictions"], average="macro"))
    assert entry["macro_f1_argmax"] == pytest.approx(f1_score(gold, result["predictions_argmax"], average="macro"))
    assert entry["per_class_f1"] == pytest.approx({"no": 0.8, "yes": 2 / 3})
    assert entry["confusion_matrix"]["matrix"] == [[2, 1], [0, 1]] and entry["calibration"] == {"mode": "threshold"}
    assert "scores" not in entry and "predictions" not in entry
    table = format_table(metrics)
    assert "macro_f1_argmax" in table and f"{entry['macro_f1_argmax']:.4f}" in table
    write_metrics(tmp_path, "plain", {"macro_f1": 0.1, "accuracy": 0.2, "n_test": 3})
    assert "plain" in format_table(json.loads(path.read_text()))  # a task without it shows "-"


def test_predictions_rows(tmp_path):
    path = tmp_path / "predictions-t.jsonl"
    scores = np.array([[-0.5, -2.0], [-3.0, -np.inf]])
    write_predictions(tmp_path, "t", ["n-17", 4], [0, 2], ["a", "b"], ["a", "a"], scores, ["a", "b"])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"id": "n-17", "row": 0, "gold": "a", "pred": "a", "scores": [-0.5, -2.0]},
                    {"id": 4, "row": 2, "gold": "b", "pred": "a", "scores": [-3.0, None]}]
    with pytest.raises(ValueError, match="do not match"):
        write_predictions(tmp_path, "t", [1], [0, 2], ["a", "b"], ["a", "a"], scores, ["a", "b"])


def test_labelled_files_carry_their_ids(tmp_path):
    from axolotl_decselfmask.stage2.data import load_task_data

    rows = [{"text": f"note {i}", "label": "ab"[i % 2], "id": f"p{i}", "mrn": 100 + i} for i in range(4)]
    rows.insert(1, {"text": " ", "label": "a", "id": "empty", "mrn": 0})  # skipped: file row 1
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    for f in (train, test):
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = DecSelfMaskConfig(
        classification={"train_file": str(train), "test_file": str(test)},
        tasks=[{"task": "by-id"}, {"task": "by-mrn", "id_column": "mrn"}, {"task": "no-ids", "id_column": "absent"}])
    by_id, by_mrn, none = [load_task_data(c) for c in config.task_configs()]
    assert by_id.test.rows == [0, 2, 3, 4] and by_id.test.ids == ["p0", "p1", "p2", "p3"]
    assert by_mrn.test.ids == [100, 101, 102, 103] and all(type(i) is int for i in by_mrn.test.ids)
    assert none.test.ids == none.test.rows == [0, 2, 3, 4]
    assert by_id.train.ids == ["p0", "p1", "p2", "p3"]


def test_task_names_cannot_escape_the_output_folder(tmp_path):
    from axolotl_decselfmask.io.files import safe_filename

    for name in ["../../etc/passwd", "/abs/path", "a/../../b", "..", "ok-name_1"]:
        target = (tmp_path / f"predictions-{safe_filename(name)}.jsonl").resolve()
        assert target.parent == tmp_path.resolve(), name
    assert safe_filename("ok-name_1") == "ok-name_1"


def test_forget_metrics_updates_the_mean_and_removes_an_empty_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_metrics(tmp_path, "a", {"macro_f1": 0.2, "accuracy": 0.5, "n_test": 4})
    write_metrics(tmp_path, "b", {"macro_f1": 0.6, "accuracy": 0.7, "n_test": 4})
    assert json.loads(path.read_text())["macro_f1_mean"] == pytest.approx(0.4)
    forget_metrics(tmp_path, "a")
    metrics = json.loads(path.read_text())
    assert list(metrics["tasks"]) == ["b"] and metrics["macro_f1_mean"] == pytest.approx(0.6)
    forget_metrics(tmp_path, "missing")  # nothing to do
    forget_metrics(tmp_path, "b")
    assert not path.exists()
