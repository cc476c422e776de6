"""Labelled files: texts and labels checked against the label options, texts shared by two files,
and the ``test_fraction`` split of one file (made, and kept in ``split-<task>.json``, here)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.files import atomic_write_json, file_sha256, read_json, safe_filename
from axolotl_decselfmask.io.tables import (
    TextReport,
    clean_texts,
    read_table,
    require_column,
)

LOG = logging.getLogger(__name__)


@dataclass
class LabelledData:
    """A labelled file's kept rows: ``rows`` are their 0-based row numbers in the file, ``ids``
    the values of its id column (None where a row has none), or the row numbers without one."""

    texts: list[str]
    labels: list[str]
    rows: list[int]
    report: TextReport
    ids: list | None = None

    def __post_init__(self) -> None:
        if self.ids is None:
            self.ids = list(self.rows)


def _id_value(value):
    """An id as JSON writes it: text, an integer (1.0 -> 1), a number, or None when missing."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy scalars
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def read_ids(rows: list[dict], kept: list[int], id_column: str | None, path: str) -> list:
    """The id column's values of the ``kept`` rows, or the row numbers when the file has no such column."""
    if not id_column or not rows or id_column not in rows[0]:
        return list(kept)
    ids = [_id_value(rows[r].get(id_column)) for r in kept]
    missing = [r for r, i in zip(kept, ids) if i is None or (isinstance(i, str) and not i.strip())]
    if missing:
        LOG.warning("decselfmask: %s: %d rows have no %r (rows %s); their id in the predictions is null",
                    path, len(missing), id_column, missing[:5])
    return ids


def read_labelled(path: str, text_column: str, label_column: str, options: list[str] | None, key: str,
                  id_column: str | None = None) -> LabelledData:
    """Texts and labels of a labelled file, checked against the label options; ``id_column``: the
    column of the rows' ids (used when the file has it, see :class:`LabelledData`)."""
    rows = read_table(path, key)
    require_column(rows, text_column, path, key.rsplit(".", 1)[0] + ".text_column")
    require_column(rows, label_column, path, key.rsplit(".", 1)[0] + ".label_column")
    texts, kept, report = clean_texts([r[text_column] for r in rows], path, text_column)
    kinds: dict[str, list[int]] = {}
    for row in kept:
        value = rows[row][label_column]
        if value is not None and not (isinstance(value, float) and value != value):
            kind = "text" if isinstance(value, str) else "bool" if isinstance(value, bool) else "number"
            kinds.setdefault(kind, []).append(row)
    if len(kinds) > 1:
        detail = "; ".join(f"{k} in rows {v[:5]}" for k, v in kinds.items())
        raise InputError(
            f"{path}: column {label_column!r} mixes value types ({detail}). Write every label the "
            "same way (for example all as text) so that 1, '1' and true cannot be confused."
        )
    labels = []
    for row in kept:
        value = rows[row][label_column]
        if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
            raise InputError(f"{path}, row {row}: empty label in column {label_column!r}.")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        labels.append(str(value).strip())
    if options:
        for row, label in zip(kept, labels):
            if label not in options:
                raise InputError(
                    f"{path}, row {row}: label {label!r} is not among decselfmask.classification.labels "
                    f"{options}. Add it to the options or fix the row."
                )
    return LabelledData(texts, labels, kept, report, read_ids(rows, kept, id_column, path))


def label_options(train: LabelledData, options: list[str] | None, path: str) -> list[str]:
    """The label options: the recipe's, or the sorted distinct training labels (at least 2).

    Without options, labels that differ only in case or spacing are refused (they would become
    separate classes); with options, an option no training row has is warned about.
    """
    present = set(train.labels)
    if not options:
        _refuse_near_duplicates(train, path)
    chosen = list(options) if options else sorted(present)
    if len(present) < 2:
        raise InputError(
            f"{path}: the training labels have {len(present)} class ({sorted(present)}); "
            "classification needs at least 2."
        )
    for label in chosen:
        if label not in present:
            LOG.warning("decselfmask: label %r of decselfmask.classification.labels has no rows in %s: stage 2 "
                        "never trains on it (it can still be predicted). Add examples of it or drop it.",
                        label, path)
    return chosen


def _refuse_near_duplicates(train: LabelledData, path: str) -> None:
    spellings: dict[str, dict[str, list[int]]] = {}
    for row, label in zip(train.rows, train.labels):
        spellings.setdefault(_match_key(label), {}).setdefault(label, []).append(row)
    for found in spellings.values():
        if len(found) > 1:
            (a, rows_a), (b, rows_b) = list(found.items())[:2]
            raise InputError(
                f"{path}: the labels {a!r} (rows {rows_a[:5]}) and {b!r} (rows {rows_b[:5]}) differ only in case "
                "or spacing; with decselfmask.classification.labels empty they would become two classes. Write "
                "them the same way, or list the options in decselfmask.classification.labels."
            )


def _match_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def overlapping_rows(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Pairs (index in a, index in b) of texts equal up to whitespace and case."""
    index: dict[str, list[int]] = {}
    for j, text in enumerate(b):
        index.setdefault(_match_key(text), []).append(j)
    return [(i, j) for i, text in enumerate(a) for j in index.get(_match_key(text), [])]


# ---------------------------------------------------------------- one labelled file, split in two

SPLIT_FORMAT = "decselfmask-split"
#: the file of a task's split in ``output_dir`` (:mod:`..stage2.outputs` lists it with stage 2's results)
SPLIT_FILE = "split-{}.json"


def split_path(output_dir, task: str) -> Path:
    """``<output_dir>/split-<task>.json``: the rows of each side of a ``test_fraction`` split."""
    return Path(output_dir) / SPLIT_FILE.format(safe_filename(task))


def read_split(output_dir, task: str):
    """The saved ``test_fraction`` split of ``task`` (as read; None when missing)."""
    return read_json(split_path(output_dir, task))


def write_split(output_dir, task: str, record: dict) -> Path:
    """``record`` as ``task``'s split file, atomically."""
    path = split_path(output_dir, task)
    atomic_write_json(path, record)
    return path


def stratified_split(labels: list[str], fraction: float, seed: int, where: str) -> tuple[list[int], list[int]]:
    """Positions (into ``labels``) of the training and the test side, both sorted.

    Each label keeps its share: ``round(n_label * fraction)`` of its rows go to the test side, at
    least one and never all of them (so every label is on both sides); which ones is a seeded
    permutation per label (``numpy.random.default_rng(seed)``, labels in sorted order). A label
    with fewer than 2 rows cannot be on both sides: an :class:`InputError` naming it.
    """
    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise InputError(f"{where}: test_fraction must be between 0 and 1 (exclusive), got {fraction}.")
    by: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by.setdefault(label, []).append(i)
    few = {y: len(v) for y, v in sorted(by.items()) if len(v) < 2}
    if few:
        raise InputError(
            f"{where}: test_fraction {fraction} needs at least 2 rows of every label to put one on each side; "
            f"{', '.join(f'{y!r} has {n}' for y, n in few.items())}. Add rows of it, drop it, or give a separate "
            "classification.test_file instead.")
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for label in sorted(by):
        rows = by[label]
        n_test = min(max(int(round(len(rows) * fraction)), 1), len(rows) - 1)
        test.extend(int(rows[j]) for j in rng.permutation(len(rows))[:n_test])
    chosen = set(test)
    return [i for i in range(len(labels)) if i not in chosen], sorted(test)


def subset(data: LabelledData, positions: list[int]) -> LabelledData:
    """The rows of ``data`` at ``positions`` (same report)."""
    return LabelledData([data.texts[i] for i in positions], [data.labels[i] for i in positions],
                        [data.rows[i] for i in positions], data.report, [data.ids[i] for i in positions])


def _split_key(path: str, c, seed: int) -> dict:
    p = Path(path)
    return {"train_file": str(path), "sha256": file_sha256(p) if p.is_file() else None,
            "test_fraction": c.test_fraction, "seed": seed, "text_column": c.text_column,
            "label_column": c.label_column}


def split_labelled(data: LabelledData, c, seed: int, output_dir=None) -> tuple[LabelledData, LabelledData]:
    """(train, test) of one labelled file by ``c.test_fraction`` (a :class:`.args.ClassificationConfig`).

    With ``output_dir`` the split is kept in :func:`split_path`: a split saved there for the same
    file contents, fraction, seed and columns is used as it is (a rerun trains and tests on the
    same rows); otherwise it is made by :func:`stratified_split` and written (by the main process),
    with a warning when it replaces one made from other contents or settings.
    """
    from axolotl_decselfmask.io.distributed import is_main_process

    where = f"decselfmask [{c.task}] {c.train_file}"
    key = _split_key(c.train_file, c, seed)
    path = split_path(output_dir, c.task) if output_dir else None
    saved = read_split(output_dir, c.task) if path is not None else None
    position = {row: i for i, row in enumerate(data.rows)}
    if isinstance(saved, dict) and saved.get("format") == SPLIT_FORMAT and saved.get("key") == key:
        test_rows = saved.get("test_rows") or []
        if all(r in position for r in test_rows) and len(test_rows) < len(data.rows):
            test = sorted(position[r] for r in test_rows)
            chosen = set(test)
            return subset(data, [i for i in range(len(data.rows)) if i not in chosen]), subset(data, test)
    train, test = stratified_split(data.labels, c.test_fraction, seed, where)
    if path is not None and is_main_process():
        if isinstance(saved, dict):
            LOG.warning("decselfmask [%s]: %s was made from other contents of %s or other settings; a new split "
                        "replaces it", c.task, path, c.train_file)
        write_split(output_dir, c.task, {
            "format": SPLIT_FORMAT, "key": key, "task": c.task,
            "train_rows": [data.rows[i] for i in train], "test_rows": [data.rows[i] for i in test],
            "counts": {y: [sum(data.labels[i] == y for i in train), sum(data.labels[i] == y for i in test)]
                       for y in sorted(set(data.labels))},
        })
    LOG.info("decselfmask [%s]: test_fraction %s of %s: %d training and %d test rows (stratified, seed %d)%s",
             c.task, c.test_fraction, c.train_file, len(train), len(test), seed, f", saved to {path}" if path else "")
    return subset(data, train), subset(data, test)


def split_test_texts(c, seed: int, output_dir=None) -> list[str]:
    """The texts of the test side of ``c``'s ``test_fraction`` split, as stage 2 reads and splits
    ``c.train_file`` (for the checks that keep test texts out of the unlabelled pool); a
    multi-label file is stratified by its rows' label sets (:func:`.label_sets.strata`), as
    :mod:`.stage2.multilabel` splits it."""
    from axolotl_decselfmask.io.label_sets import is_multi_label, label_set_rows, strata

    if is_multi_label(c):
        _, texts, kept, sets, report = label_set_rows(c.train_file, c, c.labels or None,
                                                      "decselfmask.classification.train_file")
        data = LabelledData(texts, strata(sets), kept, report)
    else:
        data = read_labelled(c.train_file, c.text_column, c.label_column, c.labels or None,
                             "decselfmask.classification.train_file", c.id_column)
    return split_labelled(data, c, seed, output_dir)[1].texts
