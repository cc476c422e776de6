"""Probing the frozen SmolLM2 on real abstracts: the features and the classifier."""

import json
import random

import pytest
import torch
from conftest import DATA

from axolotl_decselfmask.args import ProbingConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage1.pool import truncate_texts
from axolotl_decselfmask.stage2.metrics import macro_f1
from axolotl_decselfmask.stage2.probing import (
    probe,
    prompt_features,
    prompt_ids,
    train_probe,
)
from axolotl_decselfmask.stage2.scoring import _question_ids

LABELS = ["neoplasms", "digestive system diseases", "nervous system diseases",
          "cardiovascular diseases", "general pathological conditions"]
QUESTION = "Which category does the text above belong to?"
SYSTEM = "Answer with one of the options."


def _balanced(name, per_class):
    out, seen = [], {}
    for row in map(json.loads, (DATA / name).read_text().splitlines()):
        if seen.get(row["label"], 0) < per_class:
            out.append(row)
            seen[row["label"]] = seen.get(row["label"], 0) + 1
    return out


def test_prompt_is_the_evaluation_prompt(smollm_tok):
    text = _balanced("abstracts_test.jsonl", 1)[0]["text"]
    ids = prompt_ids(smollm_tok, text, LABELS, QUESTION, SYSTEM)
    prefix, rests, _ = _question_ids(smollm_tok, text, [QUESTION], LABELS, SYSTEM)
    assert ids == prefix + rests[0]  # the prompt the option scores follow
    assert smollm_tok.decode(ids).endswith("<|im_start|>assistant\n")  # the answer is not part of it


def test_feature_is_the_last_real_token_whatever_the_padding(smollm_tok, smollm_model):
    texts = ["Chest pain.", _balanced("abstracts_test.jsonl", 1)[0]["text"][:600], "Colon cancer in a 60 year old."]
    batched = prompt_features(smollm_model, smollm_tok, texts, LABELS, QUESTION, SYSTEM, batch_size=3, progress=False)
    alone = prompt_features(smollm_model, smollm_tok, texts, LABELS, QUESTION, SYSTEM, batch_size=1, progress=False)
    assert batched.dtype == torch.float32 and batched.shape == (3, smollm_model.config.hidden_size)
    with torch.no_grad():  # the plain, unpadded forward pass of each prompt
        direct = torch.stack([
            smollm_model(input_ids=torch.tensor([prompt_ids(smollm_tok, t, LABELS, QUESTION, SYSTEM)]),
                         output_hidden_states=True).hidden_states[-1][0, -1]
            for t in texts])
    torch.testing.assert_close(alone, direct, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batched, direct, atol=1e-3, rtol=1e-3)  # the short prompts were left-padded
    # a wrong position (the token before the last) would differ by far more than the tolerance
    with torch.no_grad():
        before = smollm_model(input_ids=torch.tensor([prompt_ids(smollm_tok, texts[0], LABELS, QUESTION, SYSTEM)]),
                              output_hidden_states=True).hidden_states[-1][0, -2]
    assert (before - direct[0]).abs().max() > 0.1


@pytest.fixture(scope="module")
def abstracts_features(smollm_tok, smollm_model):
    """80 training (16 per class) and 40 test (8 per class) abstracts, cut to 128 tokens."""
    train = _balanced("abstracts_train.jsonl", 16)
    test = _balanced("abstracts_test.jsonl", 8)
    texts, _ = truncate_texts(smollm_tok, [r["text"] for r in train + test], 128)
    feats = prompt_features(smollm_model, smollm_tok, texts, LABELS, QUESTION, SYSTEM, batch_size=8, progress=False)
    index = {label: i for i, label in enumerate(LABELS)}
    return (feats[: len(train)], [index[r["label"]] for r in train],
            feats[len(train):], [r["label"] for r in test])


def _f1(pred_idx, gold):
    return macro_f1(gold, [LABELS[i] for i in pred_idx], LABELS)


@pytest.mark.slow  # 120 real-model features: minutes on an AVX2 CPU (make test-slow)
def test_probe_beats_chance_and_shuffled_labels(abstracts_features):
    train_x, train_y, test_x, gold = abstracts_features
    assert len(train_y) == 80 and len(gold) == 40
    settings = ProbingConfig()
    pred = train_probe(train_x, train_y, test_x, len(LABELS), settings, seed=0)
    # Chance level: 5 balanced classes give a Macro F1 of about 0.2. Measured here: 0.44 (seeds 0-4: 0.42-0.49).
    real = _f1(pred, gold)
    assert real >= 0.3, real
    assert train_probe(train_x, train_y, test_x, len(LABELS), settings, seed=0) == pred  # deterministic
    shuffled = list(train_y)
    random.Random(0).shuffle(shuffled)
    pred_shuffled = train_probe(train_x, shuffled, test_x, len(LABELS), settings, seed=0)
    assert pred_shuffled != pred
    assert _f1(pred_shuffled, gold) < real - 0.1  # measured: 0.16 (seeds 0-4: 0.11-0.21)


def test_probe_end_to_end_leaves_the_model_as_it_was(smollm_tok, smollm_model):
    train = _balanced("abstracts_train.jsonl", 2)
    test = _balanced("abstracts_test.jsonl", 1)
    cut = lambda rows: truncate_texts(smollm_tok, [r["text"] for r in rows], 48)[0]  # noqa: E731
    smollm_model.train()
    before = {n: p.detach().clone() for n, p in smollm_model.named_parameters() if "layers.0." in n}
    result = probe(smollm_model, smollm_tok, cut(train), [r["label"] for r in train], cut(test),
                   [r["label"] for r in test], LABELS, QUESTION, SYSTEM, ProbingConfig(epochs=20), seed=0,
                   progress=False)
    assert smollm_model.training  # restored
    smollm_model.eval()
    assert set(result) == {"macro_f1", "accuracy", "n_train", "n_test"}
    assert result["n_train"] == 10 and result["n_test"] == 5
    assert 0.0 <= result["macro_f1"] <= 1.0 and result["accuracy"] in {i / 5 for i in range(6)}
    assert all(p.grad is None for p in smollm_model.parameters())
    for name, p in smollm_model.named_parameters():
        if name in before:
            assert torch.equal(p, before[name])  # frozen


def test_labels_outside_the_options_are_named(smollm_tok, smollm_model):
    with pytest.raises(InputError, match=r"training labels \['cancer'\] are not among the label options"):
        probe(smollm_model, smollm_tok, ["a", "b"], ["neoplasms", "cancer"], ["c"], ["neoplasms"], LABELS,
              QUESTION, SYSTEM, ProbingConfig(), seed=0, progress=False)


def test_feature_cache_gives_the_same_probe_and_skips_known_texts(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage2 import probing

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    labels = ["yes", "no"]
    train = [f"Patient {i} has {'a pacemaker' if i % 2 else 'no device'}." for i in range(8)]
    train_y = ["yes" if i % 2 else "no" for i in range(8)]
    test, test_y = train[:4], train_y[:4]
    settings = ProbingConfig(epochs=20)
    plain = probing.probe(model, tok, train, train_y, test, test_y, labels, "Q?", "S.", settings, 0, False)
    cache: dict = {}
    first = probing.probe(model, tok, train, train_y, test, test_y, labels, "Q?", "S.", settings, 0, False,
                          feature_cache=cache)
    assert first == plain and len(cache) == 8  # the test texts are among the train texts: 8 distinct prompts
    seen = []
    original = probing.prompt_features

    def counting(model, tokenizer, texts, *args, **kwargs):
        seen.extend(texts)
        return original(model, tokenizer, texts, *args, **kwargs)

    probing.prompt_features = counting
    try:
        again = probing.probe(model, tok, train[:6] + ["A new note."], train_y[:6] + ["no"], test, test_y, labels,
                              "Q?", "S.", settings, 0, False, feature_cache=cache)
    finally:
        probing.prompt_features = original
    assert seen == ["A new note."]
    assert set(again) == {"macro_f1", "accuracy", "n_train", "n_test"} and again["n_train"] == 7
