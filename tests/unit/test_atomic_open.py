"""io.files.atomic_open, the one atomic writer behind atomic_write_text and predict's streamed output:
a file on disk is the old one or the whole new one, never a part, and no temporary file stays behind."""

from __future__ import annotations

import csv
import json

import pytest

from axolotl_decselfmask.io.files import atomic_open, atomic_write_text
from axolotl_decselfmask.io.shards import write_rows_streamed


def test_an_error_inside_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out" / "labels.jsonl"
    atomic_write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(path) as handle:
            handle.write("half of the new\n")
            raise RuntimeError("killed")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["labels.jsonl"]


def test_streamed_rows_replace_the_file_whole(tmp_path):
    rows = [{"id": "n1", "task": "t", "label": ["a", "b"]}, {"id": "n2", "task": "t", "label": ["c"]}]
    out_csv, out_jsonl = tmp_path / "labels.csv", tmp_path / "labels.jsonl"
    write_rows_streamed(out_csv, iter(rows), separators={"t": "|"}, columns=["id", "task", "label"])
    write_rows_streamed(out_jsonl, iter(rows))
    with open(out_csv, newline="", encoding="utf-8") as handle:
        assert list(csv.DictReader(handle)) == [{"id": "n1", "task": "t", "label": "a|b"},
                                                {"id": "n2", "task": "t", "label": "c"}]
    assert "\r\r" not in out_csv.read_bytes().decode()
    assert [json.loads(line) for line in out_jsonl.read_text().splitlines()] == rows

    def broken():
        yield {"id": "n3", "task": "t", "label": ["a"]}
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        write_rows_streamed(out_jsonl, broken())
    assert [json.loads(line) for line in out_jsonl.read_text().splitlines()] == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "labels.jsonl"]
