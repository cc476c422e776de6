"""The data of a grid: every task's fixed stratified test split (or, with ``test_notes``, one test
set per corpus shared by its tasks), a labelled sample per seed, and one unlabelled pool per
corpus that never holds a test row of any of its tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from axolotl_decselfmask.io.files import atomic_write_jsonl
from axolotl_decselfmask.tools.experiments.grid import CorpusSpec, Grid, TaskSpec


def _read_corpus(c: CorpusSpec, max_chars: int | None) -> list[dict]:
    from axolotl_decselfmask.io.tables import read_table

    rows = read_table(c.file, f"corpora[{c.name}].file")
    needed = {c.text_column, *(t.label_column for t in c.tasks)}
    missing = needed - set(rows[0])
    if missing:
        raise SystemExit(f"{c.file}: no column(s) {sorted(missing)} (corpus {c.name}); it has {sorted(rows[0])}")
    out = []
    for i, r in enumerate(rows):
        text = r.get(c.text_column)
        if not isinstance(text, str) or not text.strip():
            continue
        text = " ".join(text.split())
        out.append({**r, c.text_column: text[:max_chars] if max_chars else text, "_row": i})
    return out


def _label(row: dict, t: TaskSpec) -> str | None:
    """The row's label for task ``t``, or None for an empty cell (a missing value, or only
    whitespace): such a row is no labelled or test example of the task (it may be in the pool)."""
    value = row.get(t.label_column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(int(value)) if isinstance(value, (bool, np.bool_, int, np.integer)) or (
        isinstance(value, float) and value.is_integer()) else str(value).strip()
    if not value:
        return None
    if t.positive is None:
        return value
    return "yes" if value == str(t.positive) else "no"


def _balanced_take(pools: dict[str, list], labels: list[str], n: int) -> dict[str, int]:
    """How many of each class: as equal as the classes allow."""
    take = {y: 0 for y in labels}
    left = min(n, sum(len(v) for v in pools.values()))
    while left:
        open_ = [y for y in labels if take[y] < len(pools[y])]
        for y in open_[:left] if len(open_) > left else open_:
            take[y] += 1
            left -= 1
            if not left:
                break
    return take


def _proportional_take(pools: dict[str, list], labels: list[str], n: int) -> dict[str, int]:
    """How many of each class: proportional to the classes (largest remainders)."""
    total = sum(len(v) for v in pools.values())
    take = {y: int(np.floor(n * len(pools[y]) / total)) for y in labels}
    order = sorted(labels, key=lambda y: -(n * len(pools[y]) / total - take[y]))
    for y in order[: n - sum(take.values())]:
        take[y] += 1
    return take


def _stratified(indices_by_label: dict[str, list[int]], n: int, rng: np.random.Generator, balanced: bool) -> list[int]:
    """``n`` indices: proportional to the classes (test) or as equal as the classes allow (labelled)."""
    labels = sorted(indices_by_label)
    pools = {y: list(rng.permutation(indices_by_label[y])) for y in labels}
    take = (_balanced_take if balanced else _proportional_take)(pools, labels, n)
    chosen = [i for y in labels for i in pools[y][: take[y]]]
    return sorted(int(i) for i in chosen)


def _by_label(rows: list[dict], c: CorpusSpec, t: TaskSpec) -> dict[str, list[int]]:
    """Row indices of each label of task ``t`` (rows without a label left out)."""
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if (y := _label(r, t)) is not None:
            by.setdefault(y, []).append(i)
    if t.positive is None:
        by = {y: v for y, v in by.items() if len(v) >= t.min_class_rows}
    if len(by) < 2:
        raise SystemExit(f"{c.file}: task {t.name} has fewer than 2 classes in column {t.label_column}")
    if t.positive is not None and "yes" not in by:
        raise SystemExit(f"{c.file}: task {t.name}: no row has {t.label_column} == {t.positive!r}")
    return by


def _label_sets(rows: list[dict], c: CorpusSpec, t: TaskSpec) -> tuple[dict[str, list[int]], dict[int, list[str]],
                                                                      list[str]]:
    """A multi-label task: its strata (each row under its rarest label, or ``(none)``), every row's
    label set (labels with fewer than ``min_class_rows`` rows left out) and the label set."""
    from axolotl_decselfmask.io.label_sets import parse_label_set, strata

    sets = {i: parse_label_set(r.get(t.label_column), t.label_separator, f"{c.file}, row {r['_row']}")
            for i, r in enumerate(rows)}
    counts: dict[str, int] = {}
    for s in sets.values():
        for y in s:
            counts[y] = counts.get(y, 0) + 1
    labels = sorted(y for y, n in counts.items() if n >= t.min_class_rows)
    if len(labels) < 2:
        raise SystemExit(f"{c.file}: task {t.name} has fewer than 2 labels with {t.min_class_rows} rows in column "
                         f"{t.label_column}")
    kept = set(labels)
    sets = {i: [y for y in s if y in kept] for i, s in sets.items()}
    by: dict[str, list[int]] = {}
    for i, key in zip(sets, strata(list(sets.values()))):
        by.setdefault(key, []).append(i)
    return by, sets, labels


def _write_rows(path: Path, rows: list[dict], picked: list[int], text: str, y_of: dict | None = None) -> None:
    atomic_write_jsonl(path, [{"text": rows[i][text], **({"label": y_of[i]} if y_of is not None else {}),
                               "row": rows[i]["_row"]} for i in picked])


def _write_task(grid: Grid, folder: Path, rows: list[dict], text: str, t: TaskSpec, split: dict,
                test_union: set) -> dict:
    """The test split and the labelled sample of every seed of one task; returns their description."""
    y_of = split.get("sets") or {i: y for y, v in split["by"].items() for i in v}  # multi_label: label sets
    _write_rows(folder / f"test-{t.name}.jsonl", rows, split["test"], text, y_of)
    trainable = {y: [i for i in v if i not in test_union] for y, v in split["by"].items()}
    seeds = {}
    for seed in grid.seeds:
        pick = _stratified(trainable, grid.labelled_per_task, np.random.default_rng([grid.split_seed, seed]),
                           balanced=True)
        seeds[seed] = str(folder / f"train-{t.name}-seed{seed}.jsonl")
        _write_rows(Path(seeds[seed]), rows, pick, text, y_of)
    info = {
        "labels": split["labels"], "test": str(folder / f"test-{t.name}.jsonl"), "n_test": len(split["test"]),
        "train": seeds, "question": t.question, "multi_label": t.multi_label,
        "items": t.items or ([t.positive] if t.positive is not None else split["labels"]),
    }
    if grid.test_notes is not None:  # the shared test set: the task's positives in it
        test = set(split["test"])
        info["test_positives"] = {y: sum(i in test for i in v) for y, v in _classes(split).items()}
    return info


def _classes(split: dict) -> dict[str, list[int]]:
    """Row indices of each class of a task (multi_label: of each label kept)."""
    if split["sets"] is None:
        return split["by"]
    return {y: [i for i, s in split["sets"].items() if y in s] for y in split["labels"]}


def _labelled_reserve(grid: Grid, split: dict) -> int:
    """Rows of each class (label) a task keeps outside the test set for its balanced labelled sample."""
    return -(-grid.labelled_per_task // len(split["labels"]))


def _shared_test(grid: Grid, c: CorpusSpec, rows: list[dict], splits: dict, rng: np.random.Generator) -> list[int]:
    """``test_notes``: the corpus' one test set (row indices): ``test_notes`` rows at random, then for
    each task's positive label (each class of a multi-class task, each label of a multi_label one),
    from the rarest in the corpus, random rows with it added until ``test_min_positives`` are in. A
    row is not added where it would leave a class of any task fewer rows outside the test set than
    its balanced labelled sample needs (:func:`_labelled_reserve`)."""
    where = f"corpora[{c.name}] ({c.file})"
    if grid.test_notes > len(rows):
        raise SystemExit(f"{where}: test_notes {grid.test_notes} is more than the corpus' {len(rows)} rows with a "
                         "text; lower test_notes")
    test = {int(i) for i in rng.permutation(len(rows))[: grid.test_notes]}
    classes = {(k, y): v for k, t in enumerate(c.tasks) for y, v in _classes(splits[t.name]).items()}
    keep = {(k, y): _labelled_reserve(grid, splits[t.name]) for k, t in enumerate(c.tasks) for y in
            splits[t.name]["labels"]}
    member: dict[int, list] = {}
    for key, v in classes.items():
        for i in v:
            member.setdefault(i, []).append(key)
    left = {key: sum(i not in test for i in v) for key, v in classes.items()}
    for key, v in classes.items():
        if left[key] < keep[key]:
            raise SystemExit(f"{where}: task {c.tasks[key[0]].name}: the {grid.test_notes} random test rows "
                             f"(test_notes) leave {left[key]} rows of label {key[1]!r} outside them, and "
                             f"labelled_per_task {grid.labelled_per_task} needs {keep[key]}; lower test_notes")
    targets = sorted((len(v), k, y) for (k, y), v in classes.items() if c.tasks[k].positive is None or y == "yes")
    for _, k, y in targets:
        need = grid.test_min_positives - sum(i in test for i in classes[k, y])
        for i in rng.permutation([i for i in classes[k, y] if i not in test]).tolist() if need > 0 else []:
            if need == 0:
                break
            if all(left[m] > keep[m] for m in member[i]):
                test.add(int(i))
                need -= 1
                for m in member[i]:
                    left[m] -= 1
        if need > 0:
            raise SystemExit(f"{where}: task {c.tasks[k].name}: label {y!r} has {len(classes[k, y])} rows; "
                             f"test_min_positives {grid.test_min_positives} of them in the shared test set would "
                             f"leave fewer outside it than labelled_per_task {grid.labelled_per_task} needs "
                             f"({keep[k, y]} of each label, of this and the other tasks); lower test_min_positives "
                             "or labelled_per_task, or drop the task")
    return sorted(test)


def _write_corpus(grid: Grid, c: CorpusSpec, out: Path) -> dict:
    folder = out / "data" / c.name
    rows = _read_corpus(c, grid.max_text_chars)
    rng = np.random.default_rng(grid.split_seed)
    splits, test_union = {}, set()
    for t in c.tasks:
        by, sets, labels = _label_sets(rows, c, t) if t.multi_label else (_by_label(rows, c, t), None, None)
        splits[t.name] = {"by": by, "labels": labels or sorted(by), "sets": sets}
        if grid.test_notes is None:  # a stratified split per task
            splits[t.name]["test"] = _stratified(by, grid.test_per_task, rng, balanced=False)
            test_union |= set(splits[t.name]["test"])
    if grid.test_notes is not None:  # one test set for every task: a task's file holds its labelled rows of it
        shared = _shared_test(grid, c, rows, splits, rng)
        test_union = set(shared)
        for t in c.tasks:
            s = splits[t.name]
            labelled = set(s["sets"]) if s["sets"] is not None else {i for v in s["by"].values() for i in v}
            s["test"] = [i for i in shared if i in labelled]
    pool = [int(i) for i in rng.permutation(len(rows)) if i not in test_union][: grid.pool_size]
    _write_rows(folder / "pool.jsonl", rows, pool, c.text_column)
    info = {"pool": str(folder / "pool.jsonl"), "n_pool": len(pool), "n_rows": len(rows), "tasks": {}}
    if grid.test_notes is not None:
        info.update(test_shared=True, n_test=len(test_union), test_notes=grid.test_notes,
                    test_min_positives=grid.test_min_positives)
    for t in c.tasks:
        info["tasks"][t.name] = _write_task(grid, folder, rows, c.text_column, t, splits[t.name], test_union)
    return info


def build_data(grid: Grid, out: Path) -> dict:
    """Write every corpus' test splits, labelled samples and pool; returns their description."""
    return {c.name: _write_corpus(grid, c, out) for c in grid.corpora}
