"""Build the bundled few-label example splits from ``medical_abstracts.csv.gz``.

Run from the repository root (or anywhere; paths are relative to this file)::

    python examples/data/make_splits.py

Input (beside this script): ``medical_abstracts.csv.gz``, the 2,888-row test split of the
Medical Abstracts text-classification corpus (Schopf et al., NLPIR 2022; CC BY-SA 3.0, see
``LICENSE-medical_abstracts.md``). Columns: ``text``, ``label_id``, ``label``.

Outputs (beside this script), JSON Lines, UTF-8, one object per line with keys
``id`` (int, 0-based row index in the CSV), ``text`` (str), ``label`` (str, class name from the
CSV's ``label`` column), sorted by ``id``:

* ``abstracts_test.jsonl``        -- fixed stratified test split, 40 rows per class (200).
* ``abstracts_train.jsonl``       -- labelled few-shot split, 32 rows per class (160).
* ``abstracts_unlabelled.jsonl``  -- 300-row unlabelled pool. ``label`` is kept for reference
  and analysis only; methods must treat these rows as unlabelled.

The three files are pairwise disjoint by row and by text.

Procedure (deterministic; pandas + standard library only):

1. Read the CSV; strip surrounding whitespace from every text (every source text carries a
   trailing space). Nothing else in the text or labels is changed.
2. Drop rows whose stripped text is empty.
3. Drop *every* row whose stripped text occurs more than once. In this corpus each repeated
   abstract appears under different labels (multi-label abstracts exported once per label),
   so keeping one copy would pick a label arbitrarily.
4. Shuffle the remaining rows once with ``DataFrame.sample(frac=1, random_state=SEED)``
   (``SEED = 0``). Within each class, in shuffled order, the first 40 rows form the test
   split and the next 32 the train split.
5. The unlabelled pool is drawn from the rows left over: 300 rows allocated to classes in
   proportion to their left-over counts (largest-remainder rounding, ties by class name), and
   within each class the next rows in the same shuffled order.
6. Each file is written to a temporary file in this directory and moved into place with
   ``os.replace`` so a reader never sees a partial file.

A summary (rows dropped, rows per class per split) is printed; assertions check the counts,
the label set and disjointness.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

SEED = 0
N_TEST_PER_CLASS = 40
N_TRAIN_PER_CLASS = 32
N_UNLABELLED = 300

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "medical_abstracts.csv.gz"
OUTPUTS = {
    "test": HERE / "abstracts_test.jsonl",
    "train": HERE / "abstracts_train.jsonl",
    "unlabelled": HERE / "abstracts_unlabelled.jsonl",
}
EXPECTED_LABELS = {
    "neoplasms",
    "digestive system diseases",
    "nervous system diseases",
    "cardiovascular diseases",
    "general pathological conditions",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_clean(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, keep_default_na=False)
    df = pd.DataFrame(
        {
            "id": raw.index.astype(int),
            "text": raw["text"].astype(str).str.strip(),
            "label": raw["label"].astype(str),
        }
    )
    n_raw = len(df)

    empty = df["text"] == ""
    df = df[~empty]

    dup = df["text"].duplicated(keep=False)
    n_dup_texts = df.loc[dup, "text"].nunique()
    n_conflicting = int((df[dup].groupby("text")["label"].nunique() > 1).sum())
    df = df[~dup].reset_index(drop=True)

    print(f"source: {path.name} (sha256 {sha256(path)})")
    print(f"rows read:                       {n_raw}")
    print(f"dropped, empty text:             {int(empty.sum())}")
    print(
        f"dropped, duplicate text:         {int(dup.sum())} rows "
        f"({n_dup_texts} distinct texts, {n_conflicting} of them with conflicting labels)"
    )
    print(f"rows kept for splitting:         {len(df)}")
    return df


def allocate(counts: pd.Series, total: int) -> dict[str, int]:
    """Largest-remainder proportional allocation of ``total`` over ``counts``."""
    counts = counts.sort_index()
    quota = counts / counts.sum() * total
    alloc = quota.astype(int)
    remainder = (quota - alloc).sort_index()
    order = sorted(remainder.index, key=lambda k: (-remainder[k], k))
    for k in order[: total - int(alloc.sum())]:
        alloc[k] += 1
    assert int(alloc.sum()) == total and (alloc <= counts).all()
    return {k: int(v) for k, v in alloc.items()}


def split(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    shuffled = df.sample(frac=1, random_state=SEED).reset_index(drop=True)
    rank = shuffled.groupby("label").cumcount()

    n_labelled = N_TEST_PER_CLASS + N_TRAIN_PER_CLASS
    small = shuffled["label"].value_counts()
    assert (small >= n_labelled).all(), f"class too small for the splits: {small.to_dict()}"

    test = shuffled[rank < N_TEST_PER_CLASS]
    train = shuffled[(rank >= N_TEST_PER_CLASS) & (rank < n_labelled)]
    rest = shuffled[rank >= n_labelled]

    quota = allocate(rest["label"].value_counts(), N_UNLABELLED)
    rest_rank = rest.groupby("label").cumcount()
    unlabelled = rest[rest_rank < rest["label"].map(quota)]

    return {
        name: part.sort_values("id").reset_index(drop=True)
        for name, part in (("test", test), ("train", train), ("unlabelled", unlabelled))
    }


def write_jsonl_atomic(frame: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for row in frame.itertuples(index=False):
                obj = {"id": int(row.id), "text": row.text, "label": row.label}
                f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check(parts: dict[str, pd.DataFrame]) -> None:
    for name, part in parts.items():
        assert set(part["label"]) == EXPECTED_LABELS, (name, set(part["label"]))
        assert part["text"].str.len().gt(0).all(), name
        assert not part["text"].duplicated().any(), name
    for cls, n in parts["test"]["label"].value_counts().items():
        assert n == N_TEST_PER_CLASS, ("test", cls, n)
    for cls, n in parts["train"]["label"].value_counts().items():
        assert n == N_TRAIN_PER_CLASS, ("train", cls, n)
    assert len(parts["unlabelled"]) == N_UNLABELLED
    names = list(parts)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(parts[a]["id"]) & set(parts[b]["id"]), (a, b, "ids")
            assert not set(parts[a]["text"]) & set(parts[b]["text"]), (a, b, "texts")


def main() -> None:
    df = load_clean(SOURCE)
    assert set(df["label"]) == EXPECTED_LABELS, set(df["label"])
    parts = split(df)
    check(parts)

    for name, part in parts.items():
        write_jsonl_atomic(part, OUTPUTS[name])

    long = pd.concat(
        [p[["label"]].assign(split=name) for name, p in parts.items()], ignore_index=True
    )
    table = pd.crosstab(long["label"], long["split"])[list(parts)]
    table.columns.name = None
    table.loc["total"] = table.sum()
    print()
    print(f"rows per class per split (seed {SEED}):")
    print(table.to_string())
    print()
    for name, path in OUTPUTS.items():
        print(f"wrote {path.name}: {len(parts[name])} rows, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
