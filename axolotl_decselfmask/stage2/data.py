"""A task's labelled data for stage 2: read and checked before any model work, texts cut to fit the prompt."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from axolotl_decselfmask.args import (
    ClassificationConfig,
    DecSelfMaskConfig,
    check_test_source,
)
from axolotl_decselfmask.io.labelled import (
    LabelledData,
    label_options,
    overlapping_rows,
    read_labelled,
    split_labelled,
)
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.prompts import (
    classification_messages,
    mask_fill_question,
    tokenize_for_training,
)
from axolotl_decselfmask.stage1.pool import truncate_texts

LOG = logging.getLogger(__name__)


@dataclass
class TaskData:
    train: LabelledData
    test: LabelledData | None
    labels: list[str]


@dataclass(frozen=True)
class TaskPrompt:
    """The strings a task's classification prompt is built from, as resolved for its format."""

    question: str
    system_prompt: str
    style: str = "options"
    mask_text: str | None = None


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


def load_task_data(c: ClassificationConfig, output_dir=None, seed: int = 0) -> TaskData:
    """Read and check the labelled files (no model needed): errors name file, row or key.

    With ``c.test_fraction`` the train file is split in two (:func:`.io.labelled.split_labelled`,
    seeded by ``seed``, the split kept in ``output_dir`` when given).
    """
    if not c.train_file:
        raise InputError("decselfmask.classification.train_file is not set (or set classification.enabled: false).")
    try:
        check_test_source(c)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    train = read_labelled(c.train_file, c.text_column, c.label_column, c.labels or None,
                          "decselfmask.classification.train_file", c.id_column)
    labels = label_options(train, c.labels or None, c.train_file)
    test = None
    if c.test_fraction is not None:
        train, test = split_labelled(train, c, seed, output_dir)
    elif c.test_file:
        test = read_labelled(c.test_file, c.text_column, c.label_column, labels,
                             "decselfmask.classification.test_file", c.id_column)
    if test is not None:
        leaks = overlapping_rows(train.texts, test.texts)
        if leaks:
            shown = ", ".join(f"train row {train.rows[i]} = test row {test.rows[j]}" for i, j in leaks[:5])
            LOG.warning("decselfmask: %d texts of %s also appear in %s (%s): the test score is optimistic; "
                        "remove them from one of the files", len(leaks), c.train_file, c.test_file or "its test side",
                        shown)
    return TaskData(train, test, labels)


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
