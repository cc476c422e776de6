"""Reading a notes file in chunks, in constant memory whatever its size (``predict``).

:class:`NotesFile` reads a table file a chunk of rows at a time, only the columns asked for:
JSON Lines and CSV/TSV (optionally .gz) with pandas' ``chunksize`` (the values :func:`.tables.read_table`
gives: CSV cells as text, JSON values as written), parquet by pyarrow's ``iter_batches``. A JSON
array file and a saved Hugging Face dataset folder cannot be read in pieces by pandas: they are read
whole and then cut into chunks. Chunk ``i`` holds rows ``i * chunk_rows`` to ``(i + 1) * chunk_rows``
(0-based, the file's rows), whatever else happens, so a run that stops can resume at a chunk.

:meth:`NotesFile.count` is cheap (a count of line ends, parquet's metadata): it sizes the progress
bar, nothing else depends on it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.tables import (
    check_json_lines,
    check_utf8,
    is_json_lines,
    open_text,
    read_table,
    table_suffix,
)

#: rows of the notes file read (and written to one output shard) at a time
CHUNK_ROWS = 1000

_LINES = (".jsonl", ".jsonl.gz")
_JSON = (".json", ".json.gz")
_DELIMITED = {".csv": ",", ".csv.gz": ",", ".tsv": "\t", ".tsv.gz": "\t"}
FORMATS = ("use .jsonl, .json, .csv, .tsv (optionally .gz), .parquet, or a folder saved with "
           "datasets.save_to_disk")


@dataclass
class NotesChunk:
    """Chunk ``index`` of a notes file: its first row's number and, per column asked for, its values
    (None where a row has no such key)."""

    index: int
    start: int
    columns: dict[str, list]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    @property
    def rows(self) -> range:
        return range(self.start, self.start + len(self))


class NotesFile:
    """A notes file, checked when opened: it exists, is in a format read here, is UTF-8 and valid
    JSON Lines (every line parsed, streamed, so that an error names its line), and is not empty."""

    def __init__(self, path: str | os.PathLike, key: str = "NOTES"):
        self.path, self.key = Path(path), key
        p = self.path
        if not p.exists():
            raise InputError(f"{key}: file {str(p)!r} does not exist (working directory: {os.getcwd()}).")
        self.ext = "" if p.is_dir() else table_suffix(p)
        known = (*_LINES, *_JSON, *_DELIMITED, ".parquet")
        if not p.is_dir() and self.ext not in known:
            raise InputError(f"{key}: cannot read {p}: {FORMATS}.")
        if self.ext in _JSON and is_json_lines(p):
            self.ext = ".jsonl.gz" if self.ext.endswith(".gz") else ".jsonl"
        self.whole = p.is_dir() or self.ext in _JSON  # read whole, then cut
        if not p.is_dir() and self.ext != ".parquet":
            self._check_text_file()
        self._columns: list[str] | None = None

    def _check_text_file(self) -> None:
        p = self.path
        check_utf8(p, self.key)
        with open_text(p) as handle:
            if not any(line.strip() for line in handle):
                raise InputError(f"{self.key}: {p} is empty: it holds no notes (not even a header line).")
        if self.ext in _LINES:
            check_json_lines(p, self.key)  # names the first line that is not a JSON object; pandas would not

    @property
    def columns(self) -> list[str]:
        """The file's columns (a JSON Lines file's: its first object's keys)."""
        if self._columns is None:
            self._columns = self._read_columns()
        return self._columns

    def _read_columns(self) -> list[str]:
        import csv

        if self.whole:
            return list(read_table(self.path, self.key)[0])
        if self.ext == ".parquet":
            return list(self._parquet().schema_arrow.names)
        if self.ext in _LINES:
            return check_json_lines(self.path, self.key)
        with open_text(self.path) as handle:
            return next(csv.reader(handle, delimiter=_DELIMITED[self.ext]), [])

    def require(self, column: str, what: str) -> None:
        """An InputError naming the file, the column and the setting ``what`` when the file lacks it."""
        if column not in self.columns:
            close = difflib.get_close_matches(column, [str(c) for c in self.columns], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InputError(f"{self.path}: no column {column!r} (set by {what}); the file has {self.columns}.{hint}")

    def count(self) -> int:
        """About how many rows the file holds, cheaply: parquet's metadata, a count of line ends
        (a CSV cell with a line break counts twice), or the length of a file read whole."""
        if self.ext == ".parquet":
            return self._parquet().metadata.num_rows
        if self.whole:
            return len(read_table(self.path, self.key))
        import gzip

        opener = gzip.open if self.path.name.lower().endswith(".gz") else open
        lines, last = 0, b"\n"
        with opener(self.path, "rb") as handle:
            while block := handle.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        lines += last != b"\n"
        return max(0, lines - (1 if self.ext in _DELIMITED else 0))

    def chunks(self, columns: list[str], chunk_rows: int = CHUNK_ROWS) -> Iterator[NotesChunk]:
        """The file's rows ``chunk_rows`` at a time, only ``columns`` (a column the file lacks: None)."""
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        wanted = list(dict.fromkeys(columns))
        start = 0
        for index, values in enumerate(self._blocks(wanted, chunk_rows)):
            chunk = NotesChunk(index, start, values)
            start += len(chunk)
            yield chunk
        if start == 0:
            raise InputError(f"{self.key}: {self.path} has no rows.")

    def _blocks(self, wanted: list[str], chunk_rows: int) -> Iterator[dict[str, list]]:
        if self.whole:
            rows = read_table(self.path, self.key)
            for s in range(0, len(rows), chunk_rows):
                yield {c: [r.get(c) for r in rows[s: s + chunk_rows]] for c in wanted}
        elif self.ext == ".parquet":
            present = [c for c in wanted if c in self.columns]
            for batch in self._parquet().iter_batches(batch_size=chunk_rows, columns=present or None):
                n = batch.num_rows
                yield {c: batch.column(present.index(c)).to_pylist() if c in present else [None] * n for c in wanted}
        else:
            yield from self._pandas_blocks(wanted, chunk_rows)

    def _pandas_blocks(self, wanted: list[str], chunk_rows: int) -> Iterator[dict[str, list]]:
        import pandas as pd

        try:
            if self.ext in _LINES:
                reader = pd.read_json(self.path, lines=True, dtype=False, encoding="utf-8-sig", chunksize=chunk_rows)
            else:
                present = [c for c in wanted if c in self.columns]
                reader = pd.read_csv(self.path, sep=_DELIMITED[self.ext], dtype=str, keep_default_na=False,
                                     usecols=present or None, chunksize=chunk_rows)
            with reader:
                for frame in reader:
                    yield {c: _values(frame[c]) if c in frame.columns else [None] * len(frame) for c in wanted}
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported with the key
            raise InputError(f"{self.key}: cannot parse {self.path}: {exc}") from exc

    def _parquet(self):
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{self.key}: cannot parse {self.path}: {exc}") from exc


def _values(series) -> list:
    """A pandas column as Python values, as ``DataFrame.to_dict(orient="records")`` gives them."""
    return series.astype(object).where(series.notna(), None).tolist()
