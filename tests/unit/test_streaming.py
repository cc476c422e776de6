"""The pool is read in chunks: the same values as reading the whole table, never more than
one chunk of rows held, and memory that does not grow with the other columns or the rows."""

import gzip
import json
import math
import tracemalloc

import pandas as pd
import pytest

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.tables import iter_column, read_table

N = 300
CHUNK = 64


def _texts():
    out = []
    for i in range(N):
        if i % 50 == 7:
            out.append("")
        elif i % 50 == 11:
            out.append("  ")
        elif i % 3 == 0:
            out.append(f'Note {i}: "quoted", commas, a tab\there, ünïcödé — and\na second line.')
        else:
            out.append(f"Patient {i} has type {i % 2 + 1} diabetes treated with metformin.")
    return out


def _normal(values):
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pools")
    texts = _texts()
    rows = [{"id": i, "text": t, "meta": "m" * (i % 7)} for i, t in enumerate(texts)]
    rows[5]["text"] = None  # a null
    del rows[9]["text"]  # a row without the column
    paths = {}
    paths["jsonl"] = folder / "pool.jsonl"
    paths["jsonl"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" + ("\n" if r["id"] == 3 else "")
                                      for r in rows), encoding="utf-8")
    paths["jsonl.gz"] = folder / "pool.jsonl.gz"
    paths["jsonl.gz"].write_bytes(gzip.compress(paths["jsonl"].read_bytes()))
    frame = pd.DataFrame([{"id": i, "text": t, "meta": "m" * (i % 7)} for i, t in enumerate(texts)])
    paths["csv"] = folder / "pool.csv"
    frame.to_csv(paths["csv"], index=False)
    paths["tsv"] = folder / "pool.tsv"
    frame.assign(text=[t.replace("\t", " ").replace("\n", " ") for t in texts]).to_csv(paths["tsv"], sep="\t",
                                                                                       index=False)
    paths["parquet"] = folder / "pool.parquet"
    frame.to_parquet(paths["parquet"], row_group_size=50)
    paths["json"] = folder / "pool.json"
    paths["json"].write_text(json.dumps(rows[:70]), encoding="utf-8")
    return paths


@pytest.mark.parametrize("kind", ["jsonl", "jsonl.gz", "csv", "tsv", "parquet", "json"])
def test_chunks_hold_at_most_chunk_rows_and_equal_the_whole_table(pools, kind):
    path = pools[kind]
    chunks = list(iter_column(path, "text", "datasets[].path", chunk_rows=CHUNK))
    whole = [r.get("text") for r in read_table(path, "datasets[].path")]
    assert len(whole) > CHUNK  # the file is larger than one chunk
    assert all(1 <= len(c) <= CHUNK for c in chunks)
    assert len(chunks) == math.ceil(len(whole) / CHUNK)
    assert _normal([v for c in chunks for v in c]) == _normal(whole)
    assert _normal(read_pool_column(str(path), "text", chunk_rows=CHUNK)) == _normal(whole)


def test_a_missing_column_reads_as_nothing_like_the_whole_table(pools):
    for kind in ("jsonl", "csv", "parquet"):
        got = [v for c in iter_column(pools[kind], "body", "k", chunk_rows=CHUNK) for v in c]
        assert got == [None] * N


def _wide_pool(path, rows):
    blob = "x" * 40_000
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(rows):
            handle.write(json.dumps({"text": f"note {i}", "scan": blob}) + "\n")
    return path


def _peak(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_pool(tmp_path):
    """jsonl pools whose rows carry a 40 kB column besides a short text (6 MB and 24 MB):
    streaming the text column peaks at the same few MB for both (one chunk of rows and the
    1 MB blocks of the UTF-8 check), reading the table whole holds all of it."""
    small = _wide_pool(tmp_path / "small.jsonl", 150)
    big = _wide_pool(tmp_path / "big.jsonl", 600)
    values_small, peak_small = _peak(lambda: read_pool_column(str(small), "text", chunk_rows=16))
    values_big, peak_big = _peak(lambda: read_pool_column(str(big), "text", chunk_rows=16))
    assert values_big == [f"note {i}" for i in range(600)] and values_small == values_big[:150]
    assert peak_big < peak_small + 200_000, (peak_small, peak_big)  # 4x the rows, the same peak
    assert peak_big < big.stat().st_size / 5
    whole, whole_peak = _peak(lambda: [r["text"] for r in read_table(big, "k")])
    assert whole == values_big
    assert whole_peak > big.stat().st_size / 2  # what streaming avoids


def test_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        list(iter_column(tmp_path / "nope.jsonl", "text", "datasets[].path"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="has no rows"):
        list(iter_column(empty, "text", "datasets[].path"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(InputError, match="line 2"):
        list(iter_column(bad, "text", "datasets[].path"))
    with pytest.raises(InputError, match="cannot read"):
        list(iter_column(tmp_path / "x.xlsx" if (tmp_path / "x.xlsx").write_text("x") else None, "text", "k"))


def read_pool_column(path: str, column: str, chunk_rows: int) -> list:
    values: list = []
    for chunk in iter_column(path, column, "datasets[].path", chunk_rows):
        values.extend(chunk)
    return values
