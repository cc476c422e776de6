"""Output written in shards as it is made, so that a run that stops resumes where it stopped.

``predict --out labels.jsonl`` writes chunk ``i`` of the notes to ``labels.jsonl.parts/part-<i>.jsonl``
(a temporary file, then ``os.replace``: a shard on disk is whole, or absent), each process its own
chunks. The folder's ``plan.json`` (written before any shard) says what the shards are of (the notes
file, its size, the chunk size, the tasks): a run finds the shards of the same plan and does not make
them again; a different plan is refused before any work. Once every shard is on disk the main process
writes ``manifest.json`` (the shards and their counts), then the output itself, the shards' rows in
order, through a temporary file and a rename; then the folder goes.

A shard is JSON Lines: a header ``{"chunk", "notes", "rows", "skipped", "cut"}``, then one record per
output row: ``{"row", "out", "margin", "posteriors"[, "uncertain_label"]}`` (``out`` is the row
written to the output; the rest ranks the most uncertain notes).
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path
from typing import Iterable, Iterator

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.files import atomic_open, atomic_write_json, atomic_write_text, read_json

PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
PARTS_SUFFIX = ".parts"
#: the columns of every output row, in this order
OUTPUT_COLUMNS = ["id", "task", "label", "scores"]


def parts_dir(out: Path) -> Path:
    """``<out>.parts``: the shards of ``out`` while it is being made."""
    return out.with_name(out.name + PARTS_SUFFIX)


def part_path(folder: Path, chunk: int) -> Path:
    return folder / f"part-{chunk:06d}.jsonl"


class ShardedOutput:
    """The shards of one output file (see the module's text)."""

    def __init__(self, out: Path, plan: dict):
        self.out, self.plan, self.folder = Path(out), dict(plan), parts_dir(Path(out))

    def open(self, rank: int = 0, restart: bool = False, timeout_s: float = 600.0) -> dict[int, dict]:
        """Start or resume: the main process (``rank`` 0) writes the plan, the others wait for it; a
        plan that is not this one is refused (``restart``: the old shards are removed first, by the
        main process). Returns the headers of the shards already on disk, by chunk."""
        if rank == 0:
            if restart and self.folder.exists():
                shutil.rmtree(self.folder)
            saved = read_json(self.folder / PLAN_FILE)
            if saved is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.folder / PLAN_FILE, self.plan)
                saved = self.plan
        else:
            saved = _wait_for(lambda: read_json(self.folder / PLAN_FILE), timeout_s,
                              f"{self.folder / PLAN_FILE} (written by the main process)")
        if saved != self.plan:
            changed = sorted(k for k in set(saved) | set(self.plan) if saved.get(k) != self.plan.get(k))
            raise InputError(
                f"{self.folder} holds the shards of another run of this command ({', '.join(changed)} differ): pass "
                f"--restart to remove them and start again, or another --out.")
        return self.done()

    def done(self) -> dict[int, dict]:
        """The header of every shard on disk, by chunk."""
        found = {}
        for path in sorted(self.folder.glob("part-*.jsonl")):
            with open(path, encoding="utf-8") as handle:
                header = json.loads(handle.readline())
            found[header["chunk"]] = header
        return found

    def write(self, chunk: int, header: dict, records: Iterable[dict]) -> Path:
        """Shard ``chunk``, atomically: a temporary file in the folder, then a rename."""
        path = part_path(self.folder, chunk)
        lines = [json.dumps(dict(header, chunk=chunk), ensure_ascii=False)]
        lines += [json.dumps(r, ensure_ascii=False) for r in records]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    def wait(self, n_chunks: int, timeout_s: float) -> dict[int, dict]:
        """Every shard's header, once shards 0 to ``n_chunks - 1`` are all on disk (other processes
        write theirs)."""
        def complete():
            found = self.done()
            return found if all(i in found for i in range(n_chunks)) else None

        return _wait_for(complete, timeout_s, f"the shards of {self.folder} (written by the other processes)")

    def records(self, n_chunks: int) -> Iterator[dict]:
        """Every record of every shard, in chunk order, one shard read at a time."""
        for chunk in range(n_chunks):
            with open(part_path(self.folder, chunk), encoding="utf-8") as handle:
                handle.readline()
                for line in handle:
                    yield json.loads(line)

    def finish(self, headers: dict[int, dict], rows: Iterable[dict], separators: dict[str, str]) -> None:
        """The manifest, then the output (``rows``, streamed, atomically), then the shards removed."""
        atomic_write_json(self.folder / MANIFEST_FILE, {
            "plan": self.plan, "chunks": len(headers), "notes": sum(h["notes"] for h in headers.values()),
            "rows": sum(h["rows"] for h in headers.values()),
            "parts": [part_path(self.folder, i).name for i in sorted(headers)]})
        write_rows_streamed(self.out, rows, separators)
        shutil.rmtree(self.folder, ignore_errors=True)


def _wait_for(probe, timeout_s: float, what: str, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while (found := probe()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"decselfmask: {what} did not appear in {timeout_s:.0f} s; did another process "
                               "fail? Run the command again: it resumes from the shards on disk.")
        time.sleep(poll_s)
    return found


# ------------------------------------------------------------------------------ the output rows

def _csv_cells(row: dict, separators: dict[str, str] | None) -> dict:
    joined = (separators or {}).get(row.get("task"))
    if joined is not None and isinstance(row.get("label"), list):
        row = dict(row, label=joined.join(row["label"]))
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v) for k, v in row.items()}


def write_rows(path: Path, rows: list[dict], separators: dict[str, str] | None = None) -> None:
    """``rows`` as JSON Lines, or as CSV (the columns of every row; list and dict values as JSON),
    by ``path``'s extension, atomically. ``separators``: per task, what joins a label set (a list
    ``label``) in CSV, as a labelled file holds it."""
    columns = list(dict.fromkeys(k for row in rows for k in row)) or OUTPUT_COLUMNS
    write_rows_streamed(path, rows, separators, columns)


def write_rows_streamed(path: Path, rows: Iterable[dict], separators: dict[str, str] | None = None,
                        columns: list[str] | None = None) -> None:
    """:func:`write_rows` for rows given one at a time (CSV columns: ``columns``, else
    :data:`OUTPUT_COLUMNS`), never all in memory: a temporary file beside ``path``, then a rename."""
    path = Path(path)
    with atomic_open(path, newline="") as handle:
        if path.suffix.lower() == ".jsonl":
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(handle, fieldnames=columns or OUTPUT_COLUMNS, restval="")
            writer.writeheader()
            for row in rows:
                writer.writerow(_csv_cells(row, separators))

