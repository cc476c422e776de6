"""Chat prompts of the three DecSelfMask steps, and their tokenisation.

One function per prompt, all rendered with the tokenizer's own chat template:

- :func:`relevance_messages`: user = text + lead-in, assistant = the task item;
- :func:`reconstruction_messages`: system = fill-in instruction, user = masked text,
  assistant = the span(s);
- :func:`classification_messages`: system, user = text + question + options,
  assistant = the label (in the mask-fill format the question ends with the mask, see
  :func:`mask_fill_question`, and the system turn is the stage-1 one).

:func:`tokenize_for_training` turns a conversation into ``input_ids``/``labels`` with the
labels on the assistant answer only (its end-of-turn marker included).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

LOG = logging.getLogger(__name__)

# Used only when a tokenizer has no chat template of its own (base models such as
# Gemma 3 270M). ChatML layout; the end-of-turn string is the tokenizer's eos token.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The tokenizer cannot render chat prompts."""


def ensure_chat_template(tokenizer, allow_fallback: bool = True, where: str = "the model") -> None:
    """Give ``tokenizer`` a chat template if it has none (or raise a clear error)."""
    if getattr(tokenizer, "chat_template", None):
        return
    if not allow_fallback:
        raise ChatTemplateError(
            f"The tokenizer of {where} has no chat template. Set Axolotl's `chat_template:` "
            "key (for example `chat_template: chatml`), or allow the built-in fallback with "
            "`decselfmask.fallback_chat_template: true`."
        )
    if not tokenizer.eos_token:
        raise ChatTemplateError(
            f"The tokenizer of {where} has neither a chat template nor an eos token; "
            "set `chat_template:` and `special_tokens: {eos_token: ...}` in the recipe."
        )
    LOG.warning("The tokenizer of %s has no chat template; using a plain fallback template.", where)
    tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE


def relevance_messages(text: str, item: str, lead_in: str, style: str = "question") -> list[dict]:
    """The relevance prompt: user = the text and the lead-in, assistant = the item.

    ``question``: a blank line, then the lead-in (a question the item answers).
    ``completion``: a newline and a space, then the lead-in (a sentence the item completes), as
    in the authors' scripts, whose assistant turn also holds the item alone.
    """
    if style == "question":
        user = f"{text}\n\n{lead_in}"
    elif style == "completion":
        user = f"{text}\n {lead_in}"
    else:
        raise ValueError(f"relevance prompt style {style!r}: one of 'question', 'completion'")
    return [
        {"role": "user", "content": user},
        {"role": "assistant", "content": item},
    ]


def reconstruction_messages(masked_text: str, answer: str, system_prompt: str) -> list[dict]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": masked_text},
        {"role": "assistant", "content": answer},
    ]


def mask_fill_question(question: str, mask_text: str) -> str:
    """The mask-fill prompt's question: the question (or item), a question mark, then the mask
    (the authors' ``{item}? <MASK>``), for example ``Presence of pacemaker? <mask>``."""
    question = question.strip()
    if not question.endswith("?"):
        question += "?"
    return f"{question} {mask_text}"


def classification_user_turn(text: str, question: str, labels: list[str]) -> str:
    options = "\n".join(f"- {label}" for label in labels)
    return f"{text}\n\n{question}\nOptions:\n{options}"


def classification_messages(
    text: str, question: str, labels: list[str], system_prompt: str, answer: str | None = None
) -> list[dict]:
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": classification_user_turn(text, question, labels)},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


@dataclass
class RenderedTurns:
    """A conversation rendered to text, split at the start of the assistant answer."""

    prompt: str  # everything up to and including the assistant header
    answer: str  # the answer content and its end-of-turn marker


def render_conversation(tokenizer, messages: list[dict], **kwargs) -> str:
    """``apply_chat_template``, folding a system turn into the first user turn for templates
    that refuse the system role (Gemma 2, some Mistral templates)."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # noqa: BLE001 - jinja raises TemplateError from raise_exception()
        if messages[0]["role"] != "system" or "system" not in str(exc).lower():
            raise
        first = {"role": messages[1]["role"], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
        return tokenizer.apply_chat_template([first, *messages[2:]], tokenize=False, **kwargs)


def render(tokenizer, messages: list[dict]) -> RenderedTurns:
    """Render ``messages`` (last one the assistant's) as prompt + answer text.

    The answer ends with the template's end-of-turn marker, or the eos token when the
    template writes none, so the model learns to stop.
    """
    if messages[-1]["role"] != "assistant":
        raise ValueError("render() needs a conversation that ends with the assistant turn")
    prompt = render_conversation(tokenizer, messages[:-1], add_generation_prompt=True)
    full = render_conversation(tokenizer, messages)
    content = messages[-1]["content"]
    if not full.startswith(prompt) and messages[0]["role"] == "system":
        # Some templates (Mistral v0.3's) write the system turn into the last user turn only,
        # which moves it when the answer is added: fold it into the first user turn ourselves.
        messages = [{"role": messages[1]["role"], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"},
                    *messages[2:]]
        prompt = render_conversation(tokenizer, messages[:-1], add_generation_prompt=True)
        full = render_conversation(tokenizer, messages)
    if not full.startswith(prompt):
        raise ChatTemplateError(
            "The chat template renders the conversation differently with and without the "
            "assistant turn, so the answer cannot be located; set `chat_template:` in the recipe."
        )
    answer = full[len(prompt):].rstrip("\n ")
    if not answer.startswith(content):
        # Some templates strip or reformat content; keep what the template writes.
        LOG.debug("chat template reformats the assistant content")
    if answer == content and tokenizer.eos_token:
        answer += tokenizer.eos_token
    return RenderedTurns(prompt=prompt, answer=answer)


def tokenize_for_training(
    tokenizer, messages: list[dict], train_on_inputs: bool = False
) -> dict[str, list[int]]:
    """Token ids and labels of a conversation: labels on the answer only by default."""
    turns = render(tokenizer, messages)
    prompt_ids = tokenizer(turns.prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(turns.answer, add_special_tokens=False)["input_ids"]
    input_ids = prompt_ids + answer_ids
    if train_on_inputs:
        labels = list(input_ids)
    else:
        labels = [-100] * len(prompt_ids) + list(answer_ids)
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
