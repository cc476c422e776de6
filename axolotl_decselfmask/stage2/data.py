"""Reading a task's labelled files for stage 2, before any model work: one label per note
(:func:`load_task_data`) or a set of labels per note (:func:`load_multilabel_data`,
``classification.multi_label``: a JSON list, or labels joined by ``classification.label_separator``;
``auto`` detects either). Errors name the file, the row or the key."""

from __future__ import annotations

import logging

from axolotl_decselfmask.args import ClassificationConfig, check_test_source
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.label_sets import is_multi_label, label_set_rows, strata
from axolotl_decselfmask.io.labelled import (
    LabelledData,
    label_options,
    overlapping_rows,
    read_ids,
    read_labelled,
    split_labelled,
)
from axolotl_decselfmask.stage2.tasks import TaskData

LOG = logging.getLogger(__name__)


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


def read_label_sets(path: str, c: ClassificationConfig, options: list[str] | None, key: str) -> LabelledData:
    """A multi-label file: its texts, and as ``labels`` each kept row's label set (a list).

    A label not among ``options`` (when given) is an error naming the file and the row
    (:func:`.io.label_sets.label_set_rows`)."""
    rows, texts, kept, sets, report = label_set_rows(path, c, options, key)
    return LabelledData(texts, sets, kept, report, read_ids(rows, kept, c.id_column, path))


def _split(train: LabelledData, c: ClassificationConfig, seed: int, output_dir) -> tuple[LabelledData, LabelledData]:
    """``test_fraction`` of a multi-label file: :func:`.io.labelled.split_labelled` stratified by
    :func:`strata` (saved and reused as any split), the label sets put back."""
    sets = dict(zip(train.rows, train.labels))
    keyed = LabelledData(train.texts, strata(train.labels), train.rows, train.report, train.ids)
    sides = split_labelled(keyed, c, seed, output_dir)
    return tuple(LabelledData(x.texts, [sets[r] for r in x.rows], x.rows, x.report, x.ids) for x in sides)


def load_multilabel_data(c: ClassificationConfig, output_dir=None, seed: int = 0) -> TaskData:
    """Read and check a multi-label task's files (no model needed); with ``test_fraction`` the
    training file is split in two (stratified by :func:`strata`, seeded by ``seed``, kept in
    ``output_dir``)."""
    train = read_label_sets(c.train_file, c, c.labels or None, "decselfmask.classification.train_file")
    flat = [(row, label) for row, labels in zip(train.rows, train.labels) for label in labels]
    pairs = LabelledData([""] * len(flat), [label for _, label in flat], [row for row, _ in flat], train.report)
    label_set = label_options(pairs, c.labels or None, c.train_file)
    test = None
    if c.test_fraction is not None:
        train, test = _split(train, c, seed, output_dir)
    elif c.test_file:
        test = read_label_sets(c.test_file, c, label_set, "decselfmask.classification.test_file")
        leaks = overlapping_rows(train.texts, test.texts)
        if leaks:
            LOG.warning("decselfmask: %d texts of %s also appear in %s: the test score is optimistic; remove them "
                        "from one of the files", len(leaks), c.train_file, c.test_file)
    answers = [a.strip() for a in c.label_answers]
    for label in label_set:
        if all(label in s for s in train.labels):
            LOG.warning("decselfmask [%s]: every training note has the label %r: its question is never "
                        "answered %r in training", c.task, label, answers[1])
    return TaskData(train, test, answers, label_set)


def load_any_task_data(c: ClassificationConfig, *args, **kwargs) -> TaskData:
    """:func:`load_multilabel_data` for a multi-label task (:func:`.io.label_sets.is_multi_label`),
    else :func:`load_task_data` (with ``args``)."""
    if c.train_file and is_multi_label(c):
        return load_multilabel_data(c, *args, **kwargs)
    return load_task_data(c, *args, **kwargs)
