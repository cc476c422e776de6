"""The classification head (classification.method: head) on the frozen SmolLM2 and real abstracts:
features at the mask token, training, scores, files."""

import json

import numpy as np
import pytest
import torch
from helpers import data_rows

from axolotl_decselfmask.args import ClassificationConfig, HeadConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.head import (
    HeadClassifier,
    fit_head,
    head_scores,
    resolve_position,
)
from axolotl_decselfmask.stage2.probing import (
    cached_features,
    prompt_features,
    prompt_ids,
    train_probe,
)

MASK = "<empty_output>"  # an added special token of SmolLM2 that its chat template does not use
LABELS = ["neoplasms", "cardiovascular diseases"]
QUESTION = f"Which category does the text above belong to? {MASK}"
PLAIN_QUESTION = "Which category does the text above belong to?"
SYSTEM = "Fill in the masked part of the following text."
SETTINGS = HeadConfig(epochs=100)


@pytest.fixture(scope="module")
def mask_id(smollm_tok):
    ids = smollm_tok(MASK, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1 and ids[0] in smollm_tok.added_tokens_decoder and MASK not in smollm_tok.chat_template
    return ids[0]


@pytest.fixture(scope="module")
def train_set():
    """4 abstracts of each of two labels, cut to their first 30 words."""
    rows = [r for r in data_rows("abstracts_train.jsonl", per_class=4) if r["label"] in LABELS]
    return [" ".join(r["text"].split()[:30]) for r in rows], [r["label"] for r in rows]


def _direct(model, ids):
    """The final-layer hidden states of one unpadded prompt, (tokens, hidden)."""
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]


def test_mask_position_reads_the_mask_tokens_hidden_state(smollm_tok, smollm_model, mask_id, train_set):
    texts = train_set[0][:3]
    batched = prompt_features(smollm_model, smollm_tok, texts, LABELS, QUESTION, SYSTEM, batch_size=3,
                              progress=False, position="mask", mask_id=mask_id)
    assert batched.dtype == torch.float32 and batched.shape == (3, smollm_model.config.hidden_size)
    for text, feature in zip(texts, batched):
        ids = prompt_ids(smollm_tok, text, LABELS, QUESTION, SYSTEM)
        index = ids.index(mask_id)
        assert ids.count(mask_id) == 1 and index < len(ids) - 5  # the mask sits before the options
        assert smollm_tok.decode(ids[index + 1:]).startswith("\nOptions:")
        direct = _direct(smollm_model, ids)
        torch.testing.assert_close(feature, direct[index], atol=1e-3, rtol=1e-3)
        # the last prompt token (the probe's position) and the token before the mask are far away
        assert (feature - direct[-1]).abs().max() > 0.1
        assert (feature - direct[index - 1]).abs().max() > 0.1


def test_features_do_not_depend_on_the_batch(smollm_tok, smollm_model, mask_id, train_set):
    texts = train_set[0]
    target = texts[2]
    alone = prompt_features(smollm_model, smollm_tok, [target], LABELS, QUESTION, SYSTEM, batch_size=1,
                            progress=False, position="mask", mask_id=mask_id)[0]
    # with short and long neighbours, so the target is left-padded in one batch and not in another
    short = prompt_features(smollm_model, smollm_tok, [target, "Chest pain."], LABELS, QUESTION, SYSTEM,
                            batch_size=2, progress=False, position="mask", mask_id=mask_id)[0]
    long = prompt_features(smollm_model, smollm_tok, [texts[0] + " " + texts[1], target], LABELS, QUESTION,
                           SYSTEM, batch_size=2, progress=False, position="mask", mask_id=mask_id)[1]
    torch.testing.assert_close(short, alone, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(long, alone, atol=1e-3, rtol=1e-3)


def test_a_prompt_without_the_mask_is_a_clear_error(smollm_tok, smollm_model, mask_id):
    with pytest.raises(InputError, match=r"text 1 of 1 has no mask token \(id \d+, '<empty_output>'\).*position: last"):
        prompt_features(smollm_model, smollm_tok, ["Chest pain."], LABELS, PLAIN_QUESTION, SYSTEM,
                        progress=False, position="mask", mask_id=mask_id)
    assert resolve_position(smollm_tok, "auto", mask_id, LABELS, QUESTION, SYSTEM) == "mask"
    assert resolve_position(smollm_tok, "auto", mask_id, LABELS, PLAIN_QUESTION, SYSTEM) == "last"
    assert resolve_position(smollm_tok, "auto", None, LABELS, QUESTION, SYSTEM) == "last"
    assert resolve_position(smollm_tok, "last", mask_id, LABELS, QUESTION, SYSTEM) == "last"
    with pytest.raises(InputError, match="position: mask needs the mask token"):
        resolve_position(smollm_tok, "mask", None, LABELS, QUESTION, SYSTEM)


def test_head_learns_its_training_examples(smollm_tok, smollm_model, mask_id, train_set):
    texts, gold = train_set
    smollm_model.train()
    cache: dict = {}
    head = fit_head(smollm_model, smollm_tok, texts, gold, LABELS, QUESTION, SYSTEM, SETTINGS, seed=0,
                    mask_id=mask_id, progress=False, feature_cache=cache)
    assert smollm_model.training and all(p.grad is None for p in smollm_model.parameters())  # restored, untouched
    smollm_model.eval()
    assert head.position == "mask" and head.mask_id == mask_id and head.labels == LABELS and head.n_train == 8
    assert len(cache) == 8
    scores = head_scores(smollm_model, smollm_tok, head, texts, progress=False, feature_cache=cache)
    assert len(cache) == 8  # the training features were reused
    assert scores.shape == (8, 2) and scores.dtype == np.float64
    np.testing.assert_allclose(np.logaddexp.reduce(scores, axis=1), 0.0, atol=1e-9)  # log-softmax rows
    accuracy = np.mean([LABELS[i] == g for i, g in zip(scores.argmax(1), gold)])
    assert accuracy > 0.75, accuracy  # chance: 0.5 (4 + 4 examples)
    # the same classifier as the probe's, on the same features
    feats = cached_features(smollm_model, smollm_tok, texts, LABELS, QUESTION, SYSTEM, "mask", mask_id,
                            feature_cache=cache)
    y = [LABELS.index(g) for g in gold]
    assert train_probe(feats, y, feats, 2, SETTINGS, seed=0) == scores.argmax(1).tolist()
    # seeded: the same head again; another seed, another initialisation
    again = HeadClassifier.fit(feats, gold, LABELS, SETTINGS, seed=0, position="mask", mask_id=mask_id)
    np.testing.assert_array_equal(again.log_probs(feats), scores)
    assert not np.array_equal(HeadClassifier.fit(feats, gold, LABELS, SETTINGS, seed=1).log_probs(feats), scores)
    with pytest.raises(InputError, match=r"classification head: training labels \['cancer'\] are not among"):
        HeadClassifier.fit(feats[:2], ["neoplasms", "cancer"], LABELS, SETTINGS, seed=0)


def test_save_and_load_give_the_same_scores(tmp_path, smollm_tok, smollm_model, mask_id, train_set):
    texts, gold = train_set
    head = fit_head(smollm_model, smollm_tok, texts[:4], gold[:4], LABELS, QUESTION, SYSTEM,
                    HeadConfig(epochs=20, hidden_size=16), seed=3, mask_id=mask_id, progress=False)
    meta = head.save(tmp_path / "heads", "abstracts")
    assert meta == tmp_path / "heads" / "abstracts.json" and (tmp_path / "heads" / "abstracts.safetensors").is_file()
    info = json.loads(meta.read_text())
    assert info["labels"] == LABELS and info["position"] == "mask" and info["mask_id"] == mask_id
    assert info["question"] == QUESTION and info["settings"]["hidden_size"] == 16
    assert len(info["mean"]) == len(info["std"]) == smollm_model.config.hidden_size
    loaded = HeadClassifier.load(tmp_path / "heads", "abstracts")
    feats = cached_features(smollm_model, smollm_tok, texts, LABELS, QUESTION, SYSTEM, "mask", mask_id)
    np.testing.assert_array_equal(loaded.log_probs(feats), head.log_probs(feats))
    # the loaded head reads its own prompt and position: no training data or settings needed
    np.testing.assert_array_equal(head_scores(smollm_model, smollm_tok, loaded, texts[4:], progress=False),
                                  head.log_probs(feats[4:]))
    with pytest.raises(InputError, match=r"no classification head at .*other\.json"):
        HeadClassifier.load(tmp_path / "heads", "other")
    with pytest.raises(ValueError, match="features have 3 dimensions"):
        loaded.log_probs(np.zeros((1, 3)))


def test_settings_keys():
    c = ClassificationConfig()
    assert c.method == "lora" and c.head == HeadConfig()
    assert (c.head.hidden_size, c.head.epochs, c.head.learning_rate, c.head.weight_decay, c.head.position) == (
        256, 200, 1e-3, 1e-2, "auto")
    assert ClassificationConfig(method="head", head={"position": "mask"}).head.position == "mask"
    with pytest.raises(ValueError, match="method"):
        ClassificationConfig(method="probe")
    with pytest.raises(ValueError, match="position"):
        HeadConfig(position="first")
