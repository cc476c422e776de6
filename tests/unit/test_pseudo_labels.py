"""Pseudo-labels: the real SmolLM2 labels real abstracts; the pool file's errors."""

import json

import numpy as np
import pytest
from conftest import DATA

from axolotl_decselfmask.args import PseudoLabelConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage1.pool import truncate_texts
from axolotl_decselfmask.stage2.pseudo_labels import (
    pseudo_label,
    read_pool,
    select,
    softmax_confidence,
)
from axolotl_decselfmask.stage2.scoring import score_options

LABELS = ["neoplasms", "digestive system diseases", "nervous system diseases",
          "cardiovascular diseases", "general pathological conditions"]
QUESTION = "Which category does the text above belong to?"
SYSTEM = "Answer with one of the options."
POOL = DATA / "abstracts_unlabelled.jsonl"


@pytest.fixture(scope="module")
def pool_texts(smollm_tok):
    texts = [json.loads(line)["text"] for line in POOL.read_text().splitlines()][:8]
    return truncate_texts(smollm_tok, texts, 64)[0]


@pytest.fixture(scope="module")
def pool_scores(smollm_model, smollm_tok, pool_texts):
    return score_options(smollm_model, smollm_tok, pool_texts, LABELS, QUESTION, SYSTEM, progress=False)


def test_every_text_labelled_without_thresholds(smollm_model, smollm_tok, pool_texts, pool_scores):
    settings = PseudoLabelConfig(min_confidence=0.0, max_per_label=100)
    out = pseudo_label(smollm_model, smollm_tok, pool_texts, LABELS, QUESTION, SYSTEM, settings, progress=False)
    assert [r["text"] for r in out] == pool_texts  # all kept, in pool order
    probs = np.exp(pool_scores - pool_scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for row, p in zip(out, probs):
        assert set(row) == {"text", "label", "confidence"}
        assert row["label"] in LABELS and row["label"] == LABELS[int(p.argmax())]
        assert 1 / len(LABELS) <= row["confidence"] <= 1.0
        assert row["confidence"] == pytest.approx(p.max(), abs=1e-6)


def test_threshold_and_cap_on_the_real_model(smollm_model, smollm_tok, pool_texts, pool_scores):
    best, conf = softmax_confidence(pool_scores)
    threshold = float(np.median(conf))
    settings = PseudoLabelConfig(min_confidence=threshold, max_per_label=1)
    out = pseudo_label(smollm_model, smollm_tok, pool_texts, LABELS, QUESTION, SYSTEM, settings, progress=False)
    assert out, "the median confidence keeps at least one text"
    assert all(r["confidence"] >= threshold for r in out)
    labels = [r["label"] for r in out]
    assert len(labels) == len(set(labels))  # at most one per label
    for row in out:  # ... and it is the most confident confident text of its label
        same = [c for b, c in zip(best, conf) if LABELS[b] == row["label"]]
        assert row["confidence"] == pytest.approx(max(same), abs=1e-6)
    expected = {LABELS[b] for b, c in zip(best, conf) if c >= threshold}
    assert set(labels) == expected
    assert len(out) < int((conf >= threshold).sum())  # the cap removed confident texts
    positions = [pool_texts.index(r["text"]) for r in out]
    assert positions == sorted(positions)


def test_select_rules_on_known_confidences():
    texts = ["t0", "t1", "t2", "t3", "t4", "t5"]
    best = np.array([0, 0, 1, 0, 1, 0])
    conf = np.array([0.7, 0.9, 0.55, 0.9, 0.8, 0.61])
    out = select(texts, best, conf, ["a", "b"], PseudoLabelConfig(min_confidence=0.6, max_per_label=2))
    # label a: t1 and t3 (0.9, tie kept in pool order) beat t0 (0.7) and t5 (0.61); label b: t4 only (t2 < 0.6)
    assert [(r["text"], r["label"]) for r in out] == [("t1", "a"), ("t3", "a"), ("t4", "b")]
    assert select(texts, best, conf, ["a", "b"], PseudoLabelConfig(min_confidence=0.95)) == []


def test_softmax_confidence():
    best, conf = softmax_confidence(np.array([[0.0, np.log(3.0)], [-1000.0, -1001.0]]))
    assert best.tolist() == [1, 0]
    assert conf == pytest.approx([0.75, 1 / (1 + np.exp(-1.0))])


def test_read_pool_cut_and_exclusion(tmp_path):
    rows = [json.loads(line) for line in POOL.read_text().splitlines()][:6]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2] + [{"text": "  "}] + rows[2:]))
    texts = [r["text"] for r in rows]
    assert read_pool(PseudoLabelConfig(pool_file=str(path), max_texts=4)) == texts[:4]
    kept = read_pool(PseudoLabelConfig(pool_file=str(path), max_texts=4), exclude_texts=[texts[1].upper()])
    assert kept == [texts[0], texts[2], texts[3], texts[4]]


def test_read_pool_errors_name_the_key(tmp_path):
    with pytest.raises(InputError, match=r"decselfmask.classification.pseudo_labels.pool_file is not set"):
        read_pool(PseudoLabelConfig(enabled=True))
    with pytest.raises(InputError, match=r"pseudo_labels.pool_file: file '.*missing.jsonl' does not exist"):
        read_pool(PseudoLabelConfig(pool_file=str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "notes.jsonl"
    bad.write_text(json.dumps({"note": "a text"}) + "\n")
    with pytest.raises(InputError, match=r"notes.jsonl: no column 'text' \(set by decselfmask.classification"
                                         r".pseudo_labels.text_column\); the file has \['note'\]"):
        read_pool(PseudoLabelConfig(pool_file=str(bad)))
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"pseudo_labels.pool_file: .*latin.jsonl, line 1.*not UTF-8"):
        read_pool(PseudoLabelConfig(pool_file=str(latin)))
