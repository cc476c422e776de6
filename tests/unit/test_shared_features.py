"""Features of tasks that share their test notes, each note's prompt prefix run once
(stage2/shared_features.py): the same features as one prompt per (task, note), for the chat and the raw
prompt, at the last token and at the mask; and the requests built for a run's probing heads and head
classifier are exactly the features those read, so that nothing of the test notes is computed twice."""

from pathlib import Path

import pytest
import torch
from helpers import shared_test_tasks

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.stage2.probing import feature_key, mask_token_id, prompt_features
from axolotl_decselfmask.stage2.shared_features import (
    prefetch_features,
    shared_prompt_features,
    task_feature_requests,
)

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def loaded(tiny_llama, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage2.run import prepare_tasks

    tmp = tmp_path_factory.mktemp("shared-features")
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    tok.add_special_tokens({"additional_special_tokens": ["<mask>"]})  # one token, as stage 1 leaves it
    model.resize_token_embeddings(len(tok))
    config, cfg = shared_test_tasks(tmp, "mask_fill", 256)
    tasks = prepare_tasks(cfg("x"), config, tok)
    return tok, model, config, cfg, tasks[:3]  # the three tasks on the same test notes


@pytest.mark.parametrize("prompt, position, chunk", [("chat", "last", 8), ("raw", "last", 8), ("chat", "mask", 8),
                                                     ("raw", "mask", 8), ("chat", "last", 2), ("raw", "mask", 1)])
def test_shared_prefix_features_are_those_of_one_prompt_per_question(loaded, prompt, position, chunk):
    """chunk: the questions that run on one copy of the prefixes' cache (2: chunks of 2 and 1 questions)."""
    tok, model, _, _, tasks = loaded
    mask_id = mask_token_id(tok, tasks[0].prompt.mask_text) if position == "mask" else None
    if position == "mask":
        assert mask_id is not None and all(t.prompt.question.endswith("<mask>") for t in tasks)
    texts, questions = tasks[0].test_texts, [t.prompt.question for t in tasks]
    labels, system = tasks[0].data.labels, tasks[0].prompt.system_prompt
    shared = shared_prompt_features(model, tok, texts, questions, labels, system, position, mask_id, prompt,
                                    batch_size=4, progress=False, question_chunk=chunk)  # 6 notes, padded batches
    assert shared.shape == (len(texts), len(questions), model.config.hidden_size)
    for j, q in enumerate(questions):
        one = prompt_features(model, tok, texts, labels, q, system, batch_size=4, progress=False, position=position,
                              mask_id=mask_id, prompt=prompt)
        torch.testing.assert_close(shared[:, j], one, rtol=RTOL, atol=ATOL)
    assert not torch.allclose(shared[:, 0], shared[:, 1])  # the questions do change the features


def _count_forwards(model):
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls, handle


def test_a_run_s_requests_are_what_probing_and_the_head_read(loaded):
    """After the prefetch, probing (both heads) and a head classifier compute features of their labelled
    notes only: every test-note feature they read is in the cache already, and equal to a fresh one."""
    from axolotl_decselfmask.stage2.head import train_task_head
    from axolotl_decselfmask.stage2.probing import probe_tasks
    from axolotl_decselfmask.stage2.scoring import Scorer

    tok, model, config, cfg, tasks = loaded
    config = DecSelfMaskConfig(**{**config.model_dump(), "probing": {"enabled": True, "heads": ["package", "authors"],
                                                                      "authors_head": {"epochs": 2}},
                                  "classification": {**config.classification.model_dump(), "train": True,
                                                     "method": "head", "head": {"style": "authors", "epochs": 2}}})
    from axolotl_decselfmask.stage2.run import prepare_tasks

    tasks = prepare_tasks(cfg("y"), config, tok)[:3]
    features: dict = {}
    requests = task_feature_requests(config, tasks, tok)
    assert len(requests) == 3 * 3  # per task: probing's two heads and the classifier
    computed = prefetch_features(model, tok, requests, features, batch_size=4, progress=False)
    # the package probe (chat prompt) and the authors' head (raw prompt; probing's and the classifier's alike)
    assert computed == 2 * len(tasks[0].test_texts) * 3
    test_keys = set(features)
    calls, handle = _count_forwards(model)
    try:
        probe_tasks(config, tasks, model, tok, False, features)
        heads = {t.name: train_task_head(0, t, model, tok, Path(cfg("y").output_dir) / "heads", False, features)
                 for t in tasks}
        for t in tasks:
            Scorer.of(model, tok, t, False, heads[t.name], features)(t.test_texts)
    finally:
        handle.remove()
    train_texts = {x for t in tasks for x in t.train_texts}
    new = set(features) - test_keys
    assert new and all(k[0] in train_texts for k in new)  # only labelled notes were computed now
    assert len(calls) > 0
    # and the prefetched features are the ones a fresh computation gives
    for k in list(test_keys)[:6]:
        text, labels, question, system, position, mask_id = k[:6]
        prompt = k[6] if len(k) > 6 else "chat"
        fresh = prompt_features(model, tok, [text], list(labels), question, system, progress=False, position=position,
                                mask_id=mask_id, prompt=prompt)[0]
        torch.testing.assert_close(features[k], fresh, rtol=RTOL, atol=ATOL)
        assert feature_key(text, list(labels), question, system, position, mask_id, prompt) == k


def test_no_question_or_no_text_gives_an_empty_result(loaded):
    tok, model, _, _, tasks = loaded
    t = tasks[0]
    args = (t.data.labels, t.prompt.system_prompt)
    assert shared_prompt_features(model, tok, t.test_texts, [], *args).shape == (len(t.test_texts), 0, 32)
    assert shared_prompt_features(model, tok, [], [t.prompt.question], *args).shape == (0, 1, 32)
    with pytest.raises(ValueError, match="question_chunk"):
        shared_prompt_features(model, tok, t.test_texts, [t.prompt.question], *args, question_chunk=0)


def test_a_text_one_question_asks_for_is_left_to_the_per_task_call(loaded):
    tok, model, config, _, tasks = loaded
    t = tasks[0]
    from axolotl_decselfmask.stage2.shared_features import FeatureRequest

    one = FeatureRequest(t.test_texts, t.data.labels, t.prompt.question, t.prompt.system_prompt, "last", None, "chat")
    features: dict = {}
    assert prefetch_features(model, tok, [one], features, progress=False) == 0 and features == {}
