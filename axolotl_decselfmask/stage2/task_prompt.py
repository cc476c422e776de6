"""Building the prompts of tasks and of the yes/no questions of multi-label tasks, and cutting
texts to fit them.

A task's prompt (:class:`.tasks.TaskPrompt`) is its system prompt and question (``prompt:
options``), or the paper's mask-fill prompt: the stage-1 system prompt, and the question followed
by the mask. A multi-label task asks one question per label (``label_question`` with the label in
it); its texts are cut once, for its longest label question, so that every question fits the same
text (:func:`task_prompt_for`).
"""

from __future__ import annotations

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.prompts import (
    classification_messages,
    mask_fill_question,
    tokenize_for_training,
)
from axolotl_decselfmask.stage1.pool import truncate_texts
from axolotl_decselfmask.stage2.tasks import TaskData, TaskPrompt


def mask_text_for(tokenizer, config: DecSelfMaskConfig) -> str:
    """The text of the mask of stage 1, which the mask-fill prompt reuses (one token where the
    plugin chose it: :mod:`axolotl_decselfmask.mask_token`)."""
    mask = config.masking.mask_token
    if mask != "auto":
        return mask
    from axolotl_decselfmask.mask_token import choose_mask_token

    # add=True: a tokenizer that lacks the added mask (stage 1 off) gets it with the id the
    # starting model's row has (stage2/model.py), so that the prompt holds it as one token
    return choose_mask_token(tokenizer, add=True).text


def task_prompt(config: DecSelfMaskConfig, index: int, tokenizer, question: str | None = None) -> TaskPrompt:
    """Task ``index``'s prompt strings. ``options``: its system prompt and question. ``mask_fill``
    (the paper's): the stage-1 system prompt, and the question (or the task's item, where the task
    lists exactly one) followed by the mask. ``question``: asked instead (a multi-label task's
    question for one label, :mod:`.multilabel`)."""
    c = config.task_configs()[index]
    if c.prompt != "mask_fill":
        return TaskPrompt(question or c.question, c.system_prompt)
    items = config.tasks[index].items if config.tasks else []
    subject = question or (items[0] if len(items) == 1 else c.question)
    mask = mask_text_for(tokenizer, config)
    return TaskPrompt(mask_fill_question(subject, mask), config.masking.system_prompt, "mask_fill", mask)


def label_question(c: ClassificationConfig, label: str) -> str:
    """The question of one label: ``label_question`` with ``{label}`` replaced."""
    return c.label_question.replace("{label}", label)


def task_prompt_for(config: DecSelfMaskConfig, index: int, tokenizer, data: TaskData) -> TaskPrompt:
    """The prompt a task's texts are cut for: :func:`task_prompt`, or for a multi-label
    task the prompt of its longest label question (so every question fits the same text)."""
    if not data.multi_label:
        return task_prompt(config, index, tokenizer)
    c = config.task_configs()[index]
    prompts = [task_prompt(config, index, tokenizer, label_question(c, y)) for y in data.label_set]
    return max(prompts, key=lambda p: len(tokenizer(p.question, add_special_tokens=False)["input_ids"]))


#: the fewest tokens of a text a classification prompt must leave room for
MIN_TEXT_TOKENS = 16


def text_budget(tokenizer, c: ClassificationConfig, labels: list[str], max_length: int,
                prompt: TaskPrompt | None = None) -> int:
    """Tokens left for the text in a classification prompt of ``max_length`` tokens (with the
    longest label as the answer); an InputError says what to raise when that is too few."""
    prompt = prompt or TaskPrompt(c.question, c.system_prompt)
    longest = max(labels, key=lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    overhead = len(tokenize_for_training(
        tokenizer, classification_messages("x", prompt.question, labels, prompt.system_prompt,
                                           answer=longest))["input_ids"])
    budget = max_length - overhead - 2
    if budget < MIN_TEXT_TOKENS:
        need = overhead + 2 + MIN_TEXT_TOKENS
        fix = (f"raise decselfmask.classification.max_length ({max_length}) to at least {need}" if c.max_length else
               f"classification.max_length defaults to sequence_len ({max_length}): raise sequence_len, or set "
               f"decselfmask.classification.max_length, to at least {need}")
        raise InputError(
            f"decselfmask [{c.task}]: the classification prompt (system prompt, question, {len(labels)} options and "
            f"the longest label as the answer) takes {overhead + 2} tokens, which leaves {max(budget, 0)} of "
            f"{max_length} for the text; a text needs at least {MIN_TEXT_TOKENS}. {fix} (or shorten the question, "
            "the system prompt or the labels)."
        )
    return budget


def truncate_for(tokenizer, c: ClassificationConfig, labels: list[str], max_length: int, texts: list[str],
                 prompt: TaskPrompt | None = None):
    """Cut texts at a token boundary so prompt, text and longest label fit ``max_length``."""
    return truncate_texts(tokenizer, texts, text_budget(tokenizer, c, labels, max_length, prompt))
