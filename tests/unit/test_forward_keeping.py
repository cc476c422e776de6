"""A forward without ``logits_to_keep`` (a remote-code model, a hand-made one) gets the same scores, features and
relevance as transformers' own, through :func:`axolotl_decselfmask.compat.forward_keeping`."""

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.compat import forward_keeping, takes_logits_to_keep

TEXTS = ["Tumour growth in the colon.", "A long note. " * 6 + "Seizures.", "Short."]
LABELS = ["yes", "no", "a much longer option name"]


class Strict(torch.nn.Module):
    """The model behind a forward that names its arguments and has no ``logits_to_keep`` nor ``**kwargs``."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def prepare_inputs_for_generation(self, *args, **kwargs):  # a remote-code causal LM has it; PEFT reads it
        return self.inner.prepare_inputs_for_generation(*args, **kwargs)

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None, output_attentions=None,
                return_dict=None):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                          use_cache=use_cache, output_hidden_states=output_hidden_states,
                          output_attentions=output_attentions)


class Dropping(Strict):
    """A forward that takes ``**kwargs`` and drops them, ``logits_to_keep`` included: every position's logits."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_hidden_states=None, output_attentions=None, **kwargs):
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               output_hidden_states=output_hidden_states, output_attentions=output_attentions)


@pytest.fixture(scope="module")
def pair(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float64).eval().requires_grad_(False)
    return model, Strict(model), AutoTokenizer.from_pretrained(tiny_llama)


def test_the_stand_in_cannot_take_the_argument(pair):
    model, strict, tok = pair
    assert takes_logits_to_keep(model) and not takes_logits_to_keep(strict)
    assert takes_logits_to_keep(Dropping(model))  # **kwargs: it may take it (its logits' width then tells)
    with pytest.raises(TypeError):
        strict(input_ids=torch.tensor([[1, 2]]), logits_to_keep=1)


@pytest.mark.parametrize("keep", [1, 3, 0, [0, 2, 5], [4], [1, 2, 3], "reversed"])
def test_the_kept_logits_are_the_same_either_way(pair, keep):
    model, strict, tok = pair
    ids = torch.tensor(tok(["one two three four five six", "seven eight nine ten eleven twelve"])["input_ids"])
    whole = model(input_ids=ids).logits
    models = (model, strict, Dropping(model))
    if keep == "reversed":  # as many positions as the sequence has, not in order: still those positions, except for
        keep = list(range(ids.shape[1]))[::-1]  # a forward that drops the argument (its width is then the same)
        models = models[:2]
    index = keep if isinstance(keep, int) else torch.tensor(keep)
    expected = whole if keep == 0 else whole[:, -keep:] if isinstance(keep, int) else whole[:, index]
    for m in models:
        got = forward_keeping(m, index, input_ids=ids).logits
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected)


def test_a_peft_wrapper_is_judged_by_the_model_it_wraps(pair):
    """PEFT's forward takes ``**kwargs`` and hands them on: over a forward without the argument it would fail."""
    from peft import LoraConfig, get_peft_model

    model, strict, tok = pair
    wrapped = get_peft_model(Strict(copy.deepcopy(model)), LoraConfig(r=2, target_modules=["q_proj"],
                                                                      task_type="CAUSAL_LM"))
    assert not takes_logits_to_keep(wrapped)
    with pytest.raises(TypeError):
        wrapped(input_ids=torch.tensor([[1, 2]]), logits_to_keep=1)
    assert takes_logits_to_keep(get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"],
                                                                                task_type="CAUSAL_LM")))
    from axolotl_decselfmask.stage2.scoring import score_options

    real = score_options(model, tok, TEXTS, LABELS, "Which?", "Answer.", progress=False, batch_size=2)
    through = score_options(wrapped, tok, TEXTS, LABELS, "Which?", "Answer.", progress=False, batch_size=2)
    np.testing.assert_allclose(through, real, rtol=1e-9, atol=1e-9)  # a new LoRA adds zero


def test_the_string_match_reads_the_same_answers_without_the_argument(pair):
    from axolotl_decselfmask.stage2.string_match import teacher_forced_argmax

    model, strict, tok = pair
    rows = []
    for text, answer in zip(TEXTS, LABELS):
        prompt, full = tok(text + " Answer:")["input_ids"], tok(text + " Answer: " + answer)["input_ids"]
        rows.append({"input_ids": full, "labels": [-100] * len(prompt) + full[len(prompt):]})
    for shift in (True, False):
        real = teacher_forced_argmax(model, tok, rows, batch_size=2, shift=shift)
        assert real[0][0] and any(p != g for p, g in zip(*real))  # a random model: answers to read, some wrong
        for m in (strict, Dropping(model)):
            assert teacher_forced_argmax(m, tok, rows, batch_size=2, shift=shift) == real


def test_option_scores_are_the_same_without_the_argument(pair):
    from axolotl_decselfmask.stage2.scoring import score_options

    model, strict, tok = pair
    real = score_options(model, tok, TEXTS, LABELS, "Which?", "Answer.", progress=False, batch_size=2)
    stand_in = score_options(strict, tok, TEXTS, LABELS, "Which?", "Answer.", progress=False, batch_size=2)
    assert np.isfinite(real).all() and real.std() > 0
    np.testing.assert_allclose(stand_in, real, rtol=1e-9, atol=1e-9)


def test_head_features_are_the_same_without_the_argument(pair):
    from axolotl_decselfmask.stage2.probing import prompt_features
    from axolotl_decselfmask.stage2.shared_features import shared_prompt_features

    model, strict, tok = pair
    questions = ["Which?", "Which finding?"]
    one = [prompt_features(m, tok, TEXTS, LABELS, questions[0], "Answer.", batch_size=2, progress=False)
           for m in (model, strict)]
    torch.testing.assert_close(one[1], one[0])
    shared = [shared_prompt_features(m, tok, TEXTS, questions, LABELS, "Answer.", "last", None, "chat",
                                     batch_size=2, progress=False) for m in (model, strict)]
    torch.testing.assert_close(shared[1], shared[0])
    assert not torch.allclose(shared[0][:, 0], shared[0][:, 1])


def test_relevance_is_the_same_without_the_argument(pair):
    from axolotl_decselfmask.relevance import build_relevance_prompt, compute_relevance
    from axolotl_decselfmask.relevance.methods import GradientXInput

    model, strict, tok = pair
    prompts = [build_relevance_prompt(tok, t, item, "Which finding does the text above describe?")
               for t, item in [(TEXTS[0], "tumour"), (TEXTS[1], "seizures"), (TEXTS[1], "fever")]]
    real = compute_relevance(GradientXInput(model, tok), prompts, batch_size=3)
    stand_in = compute_relevance(GradientXInput(strict, tok), prompts, batch_size=3)
    for a, b in zip(real, stand_in):
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9)
