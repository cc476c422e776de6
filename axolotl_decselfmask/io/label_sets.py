"""Label sets: a label column with several labels per row (a list, or labels joined by a
separator), as a multi-label task reads it (:mod:`.stage2.multilabel`), and the strata of its
stratified ``test_fraction`` split. Reads files only through :mod:`.tables`, so that
:mod:`.labelled` can split such a file too."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.tables import (
    clean_texts,
    read_table,
    require_column,
)

if TYPE_CHECKING:
    from axolotl_decselfmask.args import ClassificationConfig


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _as_label(value, where: str) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (list, tuple, dict)) or _is_missing(value):
        raise InputError(f"{where}: a label list holds {value!r}; write each label as text.")
    return str(value).strip()


def parse_label_set(value, separator: str = ";", where: str = "label") -> list[str]:
    """The labels of one cell, each once, in their order: a list (JSON Lines, Parquet), a text
    holding a JSON list (``["a", "b"]``), or a text of labels joined by ``separator`` (spaces
    around each dropped). An empty cell, ``[]`` or a missing value is the empty set. ``where``
    (file and row) is named in errors."""
    if _is_missing(value):
        return []
    if isinstance(value, np.ndarray):
        value = value.tolist()  # a Parquet list column
    elif isinstance(value, np.generic):
        value = value.item()  # a numpy scalar
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                value = json.loads(text)
            except ValueError:
                value = text
        if isinstance(value, str):
            value = text.split(separator)
    if not isinstance(value, (list, tuple)):
        value = [value]
    labels = [_as_label(v, where) for v in value]
    return list(dict.fromkeys(label for label in labels if label))


def _looks_like_list(value) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return True
    if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
        try:
            return isinstance(json.loads(value.strip()), list)
        except ValueError:
            return False
    return False


def detect_multi_label(values, separator: str, options: list[str] | None = None) -> bool:
    """``multi_label: auto``: whether a label column holds label sets: a list, or a text with
    ``separator`` in it (unless one of the recipe's ``options`` contains the separator)."""
    if options and any(separator in o for o in options):
        return False
    return any(_looks_like_list(v) or (isinstance(v, str) and separator in v) for v in values)


def is_multi_label(c: ClassificationConfig) -> bool:
    """Whether task ``c`` is multi-label: ``multi_label`` as set, or for ``auto`` what the label
    column of its training file holds (:func:`detect_multi_label`)."""
    if c.multi_label != "auto":
        return bool(c.multi_label)
    if not c.train_file:
        return False
    rows = read_table(c.train_file, "decselfmask.classification.train_file")
    if not rows or c.label_column not in rows[0]:
        return False  # read_labelled names the missing column
    return detect_multi_label([r[c.label_column] for r in rows], c.label_separator, c.labels or None)


def label_set_rows(path: str, c, options: list[str] | None, key: str):
    """``(rows, texts, kept, sets, report)`` of a multi-label file (``c`` a
    :class:`.args.ClassificationConfig`): its table, the non-empty texts, their row numbers, each
    kept row's label set; a label not among ``options`` (when given) is an error naming the file
    and the row."""
    rows = read_table(path, key)
    section = key.rsplit(".", 1)[0]
    require_column(rows, c.text_column, path, section + ".text_column")
    require_column(rows, c.label_column, path, section + ".label_column")
    texts, kept, report = clean_texts([r[c.text_column] for r in rows], path, c.text_column)
    sets = [parse_label_set(rows[r][c.label_column], c.label_separator, f"{path}, row {r}") for r in kept]
    if options:
        allowed = set(options)
        for row, labels in zip(kept, sets):
            for label in labels:
                if label not in allowed:
                    auto = (f" The column is read as several labels per note (multi_label: auto found lists or "
                            f"{c.label_separator!r} in it); set multi_label: false if it holds one label per note."
                            if c.multi_label == "auto" else "")
                    raise InputError(
                        f"{path}, row {row}: label {label!r} (column {c.label_column!r}) is not among the task's "
                        f"labels {list(options)} (decselfmask.classification.labels, or those of the training file "
                        f"when it is empty). Add it to the labels or fix the row.{auto}")
    return rows, texts, kept, sets, report


def strata(label_sets: list[list[str]]) -> list[str]:
    """Each note's stratum for a stratified split: its rarest label (ties: the first in sorted
    order), or ``(none)`` for a note without a label."""
    counts: dict[str, int] = {}
    for s in label_sets:
        for y in s:
            counts[y] = counts.get(y, 0) + 1
    return [min(s, key=lambda y: (counts[y], y)) if s else "(none)" for s in label_sets]
