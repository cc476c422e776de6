"""Reading the user's texts and labels, with clear errors before any model work."""

from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

# InputError lives in axolotl_decselfmask.errors; it was defined here before, and stays importable
# from here for code that catches it by that path
from axolotl_decselfmask.errors import InputError

LOG = logging.getLogger(__name__)


def table_suffix(path: Path) -> str:
    """The file's format suffix, lower case, with ``.gz`` kept (``.jsonl.gz``, ``.csv``, ``.parquet``)."""
    name = path.name.lower()
    for ext in (".jsonl.gz", ".json.gz", ".csv.gz", ".tsv.gz", ".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def check_utf8(path: str | os.PathLike, key: str) -> None:
    """Raise an InputError naming the line and byte if ``path`` is not valid UTF-8 (streamed)."""
    import codecs
    import gzip

    p = Path(path)
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, offset = 1, 0
    with opener(p, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = offset + exc.start
                line += chunk[: exc.start].count(b"\n")
                raise InputError(
                    f"{key}: {p}, line {line} (byte {bad}): byte 0x{chunk[exc.start]:02x} is not UTF-8. "
                    "Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
                ) from None
            line += chunk.count(b"\n")
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{key}: {p} ends inside a UTF-8 character (truncated file?).") from None


def read_table(path: str | os.PathLike, key: str) -> list[dict]:
    """Rows of a jsonl/json/csv/tsv (optionally .gz), parquet file or saved HF dataset folder.

    ``key`` is the recipe key that named the file; it appears in every error.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{key}: file {str(p)!r} does not exist (working directory: {os.getcwd()}).")
    if p.is_dir():
        from datasets import load_from_disk

        try:
            ds = load_from_disk(str(p))
        except Exception as exc:  # noqa: BLE001 - reported with the key
            raise InputError(f"{key}: {p} is a folder but not a saved Hugging Face dataset ({exc}).") from exc
        if hasattr(ds, "keys"):  # DatasetDict
            split = "train" if "train" in ds else next(iter(ds.keys()))
            ds = ds[split]
        return ds.to_list()
    if p.stat().st_size == 0:  # pandas would say "No columns to parse from file"
        raise InputError(f"{key}: {p} is empty (0 bytes): it needs a header or rows with a text column. "
                         "Check that the file was written completely, or name another file.")
    ext = table_suffix(p)
    import pandas as pd

    if ext != ".parquet":
        check_utf8(p, key)

    try:
        if ext in (".jsonl", ".jsonl.gz") or ext in (".json", ".json.gz") and is_json_lines(p):
            check_json_lines(p, key)  # names the line; pandas would not
            frame = pd.read_json(p, lines=True, dtype=False, encoding="utf-8-sig")
        elif ext in (".json", ".json.gz"):
            check_json_document(p, key)
            frame = pd.read_json(p, dtype=False, encoding="utf-8-sig")
        elif ext in (".csv", ".csv.gz"):
            frame = pd.read_csv(p, dtype=str, keep_default_na=False)
        elif ext in (".tsv", ".tsv.gz"):
            frame = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
        elif ext == ".parquet":
            frame = pd.read_parquet(p)
        else:
            raise InputError(
                f"{key}: cannot read {p}: use .jsonl, .json, .csv, .tsv (optionally .gz), "
                ".parquet, or a folder saved with datasets.save_to_disk."
            )
    except InputError:
        raise
    except UnicodeDecodeError as exc:
        raise InputError(f"{key}: {p} is not valid UTF-8 ({exc}).") from exc
    except pd.errors.EmptyDataError as exc:  # blank lines only, or an empty .gz
        raise InputError(f"{key}: {p} has no header and no rows (only blank lines). Check that the file was "
                         "written completely, or name another file.") from exc
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{key}: cannot parse {p}: {exc}") from exc
    if len(frame) == 0:
        raise InputError(f"{key}: {p} has no rows.")
    return frame.to_dict(orient="records")


#: rows read at a time by :func:`iter_column`
CHUNK_ROWS = 10_000


def iter_column(path: str | os.PathLike, column: str, key: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[list]:
    """The values of one column of a table file, ``chunk_rows`` rows at a time.

    The streaming counterpart of ``[r.get(column) for r in read_table(path, key)]``, with the
    same values: jsonl and csv/tsv (optionally .gz) are read line by line, parquet by record
    batches of that one column, a saved HF dataset (memory-mapped) by slices. Only the
    current chunk is held, and no other column. A JSON array file (``.json`` that is not
    json lines) cannot be streamed and is read whole. The same errors as :func:`read_table`.
    """
    import csv
    import gzip

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    p = Path(path)
    if not p.exists():
        raise InputError(f"{key}: file {str(p)!r} does not exist (working directory: {os.getcwd()}).")
    ext = "" if p.is_dir() else table_suffix(p)
    if p.is_dir() or ext in (".json", ".json.gz") and not is_json_lines(p):
        rows = read_table(p, key)
        for start in range(0, len(rows), chunk_rows):
            yield [r.get(column) for r in rows[start : start + chunk_rows]]
        return
    if ext == ".parquet":
        import pyarrow.parquet as pq

        try:
            handle = pq.ParquetFile(p)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{key}: cannot parse {p}: {exc}") from exc
        if handle.metadata.num_rows == 0:
            raise InputError(f"{key}: {p} has no rows.")
        if column not in handle.schema_arrow.names:
            yield from ([None] * n for n in _chunk_sizes(handle.metadata.num_rows, chunk_rows))
            return
        for batch in handle.iter_batches(batch_size=chunk_rows, columns=[column]):
            yield batch.column(0).to_pandas().tolist()
        return
    if ext not in (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".tsv", ".tsv.gz"):
        raise InputError(
            f"{key}: cannot read {p}: use .jsonl, .json, .csv, .tsv (optionally .gz), "
            ".parquet, or a folder saved with datasets.save_to_disk."
        )
    check_utf8(p, key)
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    n_rows, chunk = 0, []
    with opener(p, "rt", encoding="utf-8-sig", newline="" if ext.startswith((".csv", ".tsv")) else None) as handle:
        if ext.startswith((".csv", ".tsv")):
            reader = csv.reader(handle, delimiter="\t" if ext.startswith(".tsv") else ",")
            header = next(reader, None)
            where = header.index(column) if header and column in header else None
            rows = ((row[where] if where is not None and where < len(row) else None) for row in reader if row)
        else:
            rows = (_json_row(line, p, key, n).get(column) for n, line in enumerate(handle, 1) if line.strip())
        for value in rows:
            chunk.append(value)
            n_rows += 1
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
    if chunk:
        yield chunk
    if n_rows == 0:
        raise InputError(f"{key}: {p} has no rows.")


def _chunk_sizes(total: int, size: int) -> Iterator[int]:
    for start in range(0, total, size):
        yield min(size, total - start)


def is_json_lines(path: Path) -> bool:
    """Whether a .json file holds one object a line (else it is one JSON document)."""
    import gzip
    import json

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def _json_row(line: str, path: Path, key: str, number: int) -> dict:
    import json

    try:
        row = json.loads(line.rstrip("\r\n"))
    except ValueError as exc:
        why = _json_why(exc) if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InputError(
            f"{key}: {path}, line {number} is not valid JSON ({why}). Fix or remove that line: JSON Lines "
            "holds one complete object a line."
        ) from exc
    if not isinstance(row, dict):
        raise InputError(
            f"{key}: {path}, line {number} is not a JSON object (it holds {type(row).__name__}); JSON Lines "
            'holds one object a line, e.g. {"text": "..."}.'
        )
    return row


def _json_why(exc) -> str:
    """``Expecting ',' delimiter at column 12`` from a JSONDecodeError (its own text counts lines
    and characters of the parsed string, not of the file)."""
    return f"{exc.msg.removesuffix(' at')} at column {exc.colno}"


def open_text(path: Path):
    """A text handle on a (possibly gzipped) UTF-8 file, without its byte-order mark if it has one."""
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    return opener(path, "rt", encoding="utf-8-sig")


def check_json_lines(path: str | os.PathLike, key: str) -> list[str]:
    """Parse every line of a JSON Lines file: an InputError names the first line that is not a
    JSON object. Returns the first object's keys (the columns)."""
    p = Path(path)
    columns = None
    with open_text(p) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                row = _json_row(line, p, key, number)
                columns = list(row) if columns is None else columns
    if columns is None:
        raise InputError(f"{key}: {p} has no rows.")
    return columns


def check_json_document(path: str | os.PathLike, key: str) -> None:
    """Parse a JSON file that is one document (an array of objects): an InputError names the
    line and column of a syntax error."""
    import json

    p = Path(path)
    with open_text(p) as handle:
        try:
            json.load(handle)
        except json.JSONDecodeError as exc:
            raise InputError(f"{key}: {p}, line {exc.lineno} is not valid JSON ({_json_why(exc)}).") from exc


def require_column(rows: list[dict], column: str, path: str, key: str) -> None:
    columns = list(rows[0].keys()) if rows else []
    if column not in columns:
        close = difflib.get_close_matches(column, [str(c) for c in columns], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise InputError(
            f"{path}: no column {column!r} (set by {key}); the file has {columns}.{hint}"
        )


@dataclass
class TextReport:
    """What happened to the texts of one file."""

    n_rows: int = 0
    skipped_empty: list[int] = field(default_factory=list)  # row numbers (0-based)
    truncated: int = 0

    def summary(self, name: str) -> str:
        out = f"{name}: {self.n_rows} rows"
        if self.skipped_empty:
            out += f", {len(self.skipped_empty)} empty or whitespace-only texts skipped (rows {self.skipped_empty[:5]}{'...' if len(self.skipped_empty) > 5 else ''})"
        if self.truncated:
            out += f", {self.truncated} texts truncated to fit sequence_len"
        return out


def clean_texts(values: list, path: str, column: str) -> tuple[list[str], list[int], TextReport]:
    """Non-empty texts and their row numbers; empty ones are skipped and counted.

    Raises when every text is empty or a value is not text.
    """
    report = TextReport(n_rows=len(values))
    texts, rows = [], []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and value != value):
            report.skipped_empty.append(row)
            continue
        if not isinstance(value, str):
            raise InputError(f"{path}, row {row}: column {column!r} holds {type(value).__name__} {value!r}, not text.")
        if not value.strip():
            report.skipped_empty.append(row)
            continue
        texts.append(value)
        rows.append(row)
    if not texts:
        raise InputError(f"{path}: every text in column {column!r} is empty or whitespace.")
    return texts, rows, report


def check_pool_file(path: str, text_column: str, key: str) -> None:
    """Cheap checks of an unlabelled-pool file before Axolotl loads it: exists, a format Axolotl
    can load, UTF-8, valid JSON on every line (JSON Lines), the column.

    Streams the file for UTF-8 and, for JSON, parses it (Axolotl's loader would stop at a bad
    line with ``DatasetGenerationError`` and no line number); a CSV's header is read for the
    column. A byte-order mark is ignored, as Axolotl's loader ignores it. A folder that is not a
    saved HF dataset (Axolotl then reads its data files, e.g. JSONL shards) has each of its data
    files checked the same way, each error naming the file and line. A path that is not local (a
    hub dataset name) is left to Axolotl.
    """
    p = Path(path)
    if not p.exists():
        if "/" in path and not path.startswith((".", "/")) and not Path(path).suffix:
            return  # looks like a hub dataset name
        raise InputError(f"{key}: file {path!r} does not exist (working directory: {os.getcwd()}).")
    if p.is_dir():
        from datasets import load_from_disk

        try:
            ds = load_from_disk(str(p))
        except Exception:  # noqa: BLE001 - not a saved dataset: Axolotl reads the folder's data files
            for shard in pool_folder_files(p):
                _check_pool_columns(shard, _pool_file_columns(shard, key), text_column, key)
            return
        columns = ds.column_names if not hasattr(ds, "keys") else next(iter(ds.values())).column_names
    else:
        columns = _pool_file_columns(p, key)
    _check_pool_columns(p, columns, text_column, key)


#: the data files ``datasets.load_dataset(folder)`` reads from a folder (Axolotl's loader for a
#: folder that is not a saved dataset)
POOL_FOLDER_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


def pool_folder_files(folder: Path) -> list[Path]:
    """The data files of a pool folder, in name order (hidden and ``_``-prefixed ones skipped, as
    ``datasets`` skips them)."""
    return sorted(f for f in folder.rglob("*") if f.is_file() and table_suffix(f) in POOL_FOLDER_SUFFIXES
                  and not any(part.startswith((".", "_")) for part in f.relative_to(folder).parts))


def _pool_file_columns(p: Path, key: str) -> list[str] | None:
    """The columns of one pool file, after its checks; None for a JSON array file (Axolotl reads it,
    and the dataset type checks the column)."""
    import csv

    ext = table_suffix(p)
    if ext.startswith(".tsv"):
        raise InputError(
            f"{key}: {p} is a TSV file, and Axolotl loads the unlabelled pool with the `datasets` library, "
            "which has no TSV loader (ds_type csv splits on commas; without ds_type a .tsv path is read "
            "as JSON). Convert it to CSV or JSON Lines (docs/troubleshooting.md has a one-line command)."
        )
    if ext == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(p).names
    check_utf8(p, key)
    if ext.startswith(".csv"):
        with open_text(p) as handle:
            return next(csv.reader(handle), [])
    if ext.startswith(".jsonl") or is_json_lines(p):
        return check_json_lines(p, key)
    check_json_document(p, key)
    return None


def _check_pool_columns(p: Path, columns: list[str] | None, text_column: str, key: str) -> None:
    if columns is None or text_column in columns:
        return
    close = difflib.get_close_matches(text_column, [str(c) for c in columns], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise InputError(f"{p}: no column {text_column!r} (set by {key}); the file has {columns}.{hint}")


def dataset_text_column(entry) -> str:
    """The text column of a ``datasets:`` entry of this plugin's types.

    Axolotl's dataset schema has no ``text_column`` and drops it during validation; the plugin
    copies it into Axolotl's ``field`` key before validation (see ``DecSelfMaskPlugin.register``).
    """
    get = entry.get if hasattr(entry, "get") else (lambda k: getattr(entry, k, None))
    return get("text_column") or get("field") or "text"
