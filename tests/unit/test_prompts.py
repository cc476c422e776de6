"""Prompt layout and label masking, on the real SmolLM2 tokenizer and a template-less one."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from axolotl_decselfmask.prompts import (
    FALLBACK_CHAT_TEMPLATE,
    ChatTemplateError,
    classification_messages,
    ensure_chat_template,
    reconstruction_messages,
    relevance_messages,
    render,
    tokenize_for_training,
)
from axolotl_decselfmask.relevance import build_relevance_prompt

TEXT = "A 71-year-old man with dilated cardiomyopathy received a pacemaker, and recovered."


def test_reconstruction_labels_cover_answer_and_end_of_turn_only(smollm_tok):
    msgs = reconstruction_messages("A man with <mask> received a pacemaker.", "dilated cardiomyopathy",
                                   "Fill in the masked part of the following text.")
    out = tokenize_for_training(smollm_tok, msgs)
    assert len(out["input_ids"]) == len(out["labels"]) == len(out["attention_mask"])
    trained = [t for t, l in zip(out["input_ids"], out["labels"]) if l != -100]
    assert smollm_tok.decode(trained) == "dilated cardiomyopathy<|im_end|>"
    # the masked prompt and system turn are not trained on
    first = out["labels"].index(next(l for l in out["labels"] if l != -100))
    prompt = smollm_tok.decode(out["input_ids"][:first])
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "Fill in the masked part of the following text." in prompt
    assert "<mask>" in prompt and "dilated" not in prompt
    # labels are a suffix of the ids
    assert trained == out["input_ids"][first:]


def test_train_on_inputs_labels_everything(smollm_tok):
    msgs = reconstruction_messages("x <mask> z", "y", "sys")
    out = tokenize_for_training(smollm_tok, msgs, train_on_inputs=True)
    assert out["labels"] == out["input_ids"]


def test_classification_prompt_lists_options_and_answers_label(smollm_tok):
    labels = ["neoplasms", "cardiovascular diseases"]
    msgs = classification_messages(TEXT, "Which category?", labels, "Answer.", answer="cardiovascular diseases")
    turns = render(smollm_tok, msgs)
    assert TEXT in turns.prompt and "- neoplasms\n- cardiovascular diseases" in turns.prompt
    assert turns.answer == "cardiovascular diseases<|im_end|>"


def test_relevance_prompt_positions(smollm_tok):
    item = "Presence of pacemaker"
    p = build_relevance_prompt(smollm_tok, TEXT, item, "Which finding does the text describe?")
    ids = p.input_ids
    # text tokens reproduce the text, item tokens reproduce the item, item follows the text
    assert "".join(TEXT[s:e] for s, e in p.offsets) == TEXT
    assert smollm_tok.decode([ids[i] for i in p.item_positions]) == item
    assert max(p.text_positions) < min(p.item_positions)
    assert p.item_positions == list(range(p.item_positions[0], p.item_positions[-1] + 1))
    rendered = smollm_tok.decode(ids)
    assert rendered.index(TEXT) < rendered.index("Which finding") < rendered.rindex(item)
    assert relevance_messages(TEXT, item, "Q")[1] == {"role": "assistant", "content": item}


def _template_less_tokenizer():
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TEXT, "Fill in the masked part.", "neoplasms cardiovascular"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="[UNK]")


def test_fallback_template_when_tokenizer_has_none():
    tok = _template_less_tokenizer()
    with pytest.raises(ChatTemplateError, match="no chat template"):
        ensure_chat_template(tok, allow_fallback=False, where="tiny-base")
    ensure_chat_template(tok, allow_fallback=True)
    assert tok.chat_template == FALLBACK_CHAT_TEMPLATE
    out = tokenize_for_training(tok, reconstruction_messages("a <mask> b", "pacemaker", "Fill in."))
    trained = [t for t, l in zip(out["input_ids"], out["labels"]) if l != -100]
    assert tok.decode(trained) == "pacemaker</s>"
    p = build_relevance_prompt(tok, TEXT, "pacemaker", "Which?")
    assert tok.decode([p.input_ids[i] for i in p.item_positions]).strip() == "pacemaker"


def test_no_template_no_eos_is_a_clear_error():
    tok = _template_less_tokenizer()
    tok.eos_token = None
    with pytest.raises(ChatTemplateError, match="chat_template"):
        ensure_chat_template(tok, allow_fallback=True)


NO_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def test_template_without_system_role_gets_it_folded_into_the_user_turn(smollm_tok):
    import copy

    tok = copy.deepcopy(smollm_tok)
    tok.chat_template = NO_SYSTEM_TEMPLATE
    msgs = reconstruction_messages("A man with <mask> received a pacemaker.", "cardiomyopathy", "Fill in.")
    turns = render(tok, msgs)
    assert turns.prompt.startswith("<start_of_turn>user\nFill in.\n\nA man with <mask>")
    assert turns.answer == "cardiomyopathy<end_of_turn>"


def test_template_that_moves_the_system_turn_to_the_last_user_turn(smollm_tok):
    """Mistral v0.3's template writes the system text into the LAST user turn only, so the
    prompt without the answer is not a prefix of the whole: the system turn is folded."""
    import copy
    from pathlib import Path

    import axolotl

    template = (Path(axolotl.__file__).parent / "utils/chat_templates/templates/mistral_v2v3.jinja").read_text()
    tok = copy.deepcopy(smollm_tok)
    tok.chat_template = template
    msgs = reconstruction_messages("The <mask> was implanted.", "pacemaker", "Fill in the masked part.")
    turns = render(tok, msgs)
    assert turns.prompt.count("Fill in the masked part.") == 1
    assert turns.prompt.index("Fill in the masked part.") < turns.prompt.index("The <mask> was implanted.")
    assert turns.answer.lstrip().startswith("pacemaker")
    ids = tokenize_for_training(tok, msgs)
    answer = [t for t, label in zip(ids["input_ids"], ids["labels"]) if label != -100]
    assert tok.decode(answer).lstrip().startswith("pacemaker")
