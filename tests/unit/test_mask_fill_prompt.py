"""The mask-fill classification prompt (`classification.prompt: mask_fill`): the stage-1 system turn,
the question or the task's one item with a question mark, then the one-token mask."""

from transformers import AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.mask_token import ADDED_MASK_TEXT
from axolotl_decselfmask.prompts import classification_messages, mask_fill_question, render
from axolotl_decselfmask.stage2.task_prompt import task_prompt


def test_question_mark_then_mask():
    assert mask_fill_question("Presence of pacemaker", "<m>") == "Presence of pacemaker? <m>"
    assert mask_fill_question(" Is it cancer? ", "<m>") == "Is it cancer? <m>"


def test_one_token_even_when_stage1_never_added_it(smollm_path):
    """Stage 1 off: the base tokenizer lacks the added mask; the prompt still holds it as one id, the
    id the base model's added row gets (the next one)."""
    tok = AutoTokenizer.from_pretrained(str(smollm_path))
    n = len(tok)
    config = DecSelfMaskConfig(stage1=False, tasks=[
        {"task": "pacemaker", "labels": ["yes", "no"], "items": ["Presence of pacemaker"]},
        {"task": "kind", "labels": ["a", "b"], "question": "Which kind of note is it"}],
        classification={"prompt": "mask_fill", "system_prompt": "unused in mask_fill"})
    first, second = task_prompt(config, 0, tok), task_prompt(config, 1, tok)
    assert first.question == f"Presence of pacemaker? {ADDED_MASK_TEXT}" and first.style == "mask_fill"
    assert second.question == f"Which kind of note is it? {ADDED_MASK_TEXT}"
    assert first.system_prompt == config.masking.system_prompt  # the stage-1 instruction
    assert tok.convert_tokens_to_ids(ADDED_MASK_TEXT) == n and len(tok) == n + 1  # added once
    text = render(tok, classification_messages("A note.", first.question, ["yes", "no"], first.system_prompt,
                                               answer="yes")).prompt
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(n) == 1
    assert config.masking.system_prompt in text and "unused in mask_fill" not in text


def test_options_prompt_is_unchanged(smollm_path):
    tok = AutoTokenizer.from_pretrained(str(smollm_path))
    config = DecSelfMaskConfig(classification={"question": "Which one?", "system_prompt": "Answer."})
    prompt = task_prompt(config, 0, tok)
    assert (prompt.question, prompt.system_prompt, prompt.style, prompt.mask_text) == ("Which one?", "Answer.",
                                                                                     "options", None)
