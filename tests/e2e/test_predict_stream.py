"""``predict`` over a file in chunks, written in shards as it goes (a tiny random Llama trained by
``run_stage2`` as the plugin runs it, stage 1 off, real abstracts; two tasks on the same notes, so
their prompt prefixes are shared): killed with SIGKILL after its first shard and run again, it
writes every note exactly once and keeps the shards it had; its labels are the evaluation's
decisions; and the reader and the shard writer hold one chunk whatever the file's size."""

import contextlib
import copy
import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from helpers import LABELS, base_recipe, data_rows, write_rows

BIN = Path(sys.executable).parent
CHUNK = 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.run import run_stage2

    tmp = tmp_path_factory.mktemp("predict_stream")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    test = data_rows("abstracts_test.jsonl", per_class=2)
    write_rows(tmp / "test.jsonl", test)
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["decselfmask"]["classification"].update(batch_size=4, max_steps=1)
    recipe["decselfmask"]["tasks"] = [{"task": "abstracts"},
                                      {"task": "topic", "question": "Which topic is the text above about?"}]
    with contextlib.redirect_stdout(io.StringIO()):
        run_stage2(DictDefault(copy.deepcopy(recipe)), DecSelfMaskConfig(**recipe["decselfmask"]), progress=False)
    (tmp / "recipe.yml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    # the test notes first (the evaluation's decisions are known for them), then many more
    filler = data_rows("abstracts_unlabelled.jsonl")
    notes = [{"id": f"test-{r['id']}", "text": r["text"]} for r in test]
    notes += [{"id": f"n{i}", "text": filler[i % len(filler)]["text"][: 80 + i % 50]} for i in range(300)]
    write_rows(tmp / "notes.jsonl", notes)
    return tmp, recipe, test, notes


def _env():
    return dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")


def _predict_args(tmp, out, *more):
    return [str(BIN / "axolotl"), "decselfmask", "predict", str(tmp / "recipe.yml"), str(tmp / "notes.jsonl"),
            "--out", str(out), "--chunk-size", str(CHUNK), "--batch-size", "1", "--no-progress", *more]


def _kill_after_first_shard(args, parts: Path, timeout=600):
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not list(parts.glob("part-*.jsonl")):
        assert proc.poll() is None, f"predict ended before its first shard: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no shard in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return proc.returncode


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_killed_part_way_and_run_again_it_writes_every_note_once_and_keeps_its_shards(trained):
    tmp, recipe, test, notes = trained
    out = tmp / "labels.jsonl"
    parts = tmp / "labels.jsonl.parts"
    assert _kill_after_first_shard(_predict_args(tmp, out), parts) == -signal.SIGKILL
    assert not out.exists()  # killed part way: no output, only shards
    kept = sorted(parts.glob("part-*.jsonl"))
    assert kept and len(kept) < -(-len(notes) // CHUNK)
    headers = [json.loads(p.read_text(encoding="utf-8").splitlines()[0]) for p in kept]
    already = sum(h["notes"] for h in headers)
    # mark the shards on disk: a run that made them again would write its own labels instead
    for p in kept:
        lines = p.read_text(encoding="utf-8").splitlines()
        marked = [lines[0]] + [json.dumps(dict(r, out=dict(r["out"], kept=True))) for r in map(json.loads, lines[1:])]
        p.write_text("\n".join(marked) + "\n", encoding="utf-8")
    proc = subprocess.run(_predict_args(tmp, out), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert f"resuming: {already} notes already written ({len(kept)} shards" in proc.stdout
    rows = _rows(out)
    assert [(r["id"], r["task"]) for r in rows] == [(n["id"], t) for n in notes for t in ("abstracts", "topic")]
    kept_rows = {(r["id"], r["task"]) for r in rows if r.get("kept")}
    first = {n["id"] for n in notes[: already]}
    assert kept_rows == {(i, t) for i in first for t in ("abstracts", "topic")}  # not scored again
    assert not parts.exists()  # the shards go once the output is whole
    # the same as one run from the start, in one chunk
    whole = tmp / "whole.jsonl"
    subprocess.run(_predict_args(tmp, whole)[:-5] + ["--chunk-size", "1000", "--no-progress"], env=_env(),
                   check=True, capture_output=True, timeout=900)
    assert [(r["id"], r["task"], r["label"]) for r in rows] == [(r["id"], r["task"], r["label"]) for r in _rows(whole)]
    for mine, theirs in zip(rows, _rows(whole)):
        assert mine["scores"] == pytest.approx(theirs["scores"], abs=1e-4)


def test_the_labels_are_the_evaluations_decisions(trained):
    tmp, recipe, test, notes = trained
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.stage2.predict import predict

    cfg = DictDefault(copy.deepcopy(recipe))
    with contextlib.redirect_stdout(io.StringIO()):
        summary = predict(cfg, str(tmp / "notes.jsonl"), tmp / "decisions.csv", progress=False, chunk_rows=3,
                          batch_size=2, most_uncertain=2)
    assert summary["notes"] == len(notes) and summary["resumed"] == 0
    import csv

    with open(tmp / "decisions.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for task in ("abstracts", "topic"):
        evaluated = _rows(Path(cfg.output_dir) / f"predictions-{task}.jsonl")
        mine = [r for r in rows if r["task"] == task][: len(test)]
        assert [r["label"] for r in mine] == [p["pred"] for p in evaluated]
        for r, p in zip(mine, evaluated):
            assert json.loads(r["scores"]) == pytest.approx(p["scores"], abs=1e-4) and len(p["scores"]) == len(LABELS)
        assert sum(summary["tasks"][task]["counts"].values()) == len(notes)
    uncertain = list(csv.DictReader(open(tmp / "decisions-most-uncertain.csv", encoding="utf-8")))
    assert [(u["task"], u["rank"]) for u in uncertain] == [("abstracts", "1"), ("abstracts", "2"), ("topic", "1"),
                                                           ("topic", "2")]


def test_a_different_run_is_refused_and_restart_starts_again(trained, tmp_path):
    from axolotl_decselfmask.errors import InputError
    from axolotl_decselfmask.io.shards import ShardedOutput

    out = tmp_path / "o.jsonl"
    ShardedOutput(out, {"chunk_rows": 4}).open()
    with pytest.raises(InputError, match=r"another run of this command \(chunk_rows differ\).*--restart"):
        ShardedOutput(out, {"chunk_rows": 5}).open()
    assert ShardedOutput(out, {"chunk_rows": 5}).open(restart=True) == {}


# ------------------------------------------------------------------- memory: the reader and the writer

def _notes_file(path: Path, n: int, kind: str) -> Path:
    text = ("Patient admitted with chest pain radiating to the left arm; troponin raised, "
            "ECG shows ST elevation in the inferior leads. ") * 2
    rows = [{"note_id": f"n{i}", "note": f"{i} {text}"} for i in range(n)]
    if kind == "jsonl":
        write_rows(path, rows)
    elif kind == "csv":
        import pandas as pd

        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(path, row_group_size=500)
    return path


def _peak_through_reader_and_writer(path: Path, out: Path, chunk_rows: int) -> tuple[int, int]:
    """Peak Python allocations of reading ``path`` in chunks and writing each chunk as a shard,
    then the whole output from the shards; and how many rows the output has."""
    from axolotl_decselfmask.io.notes import NotesFile
    from axolotl_decselfmask.io.shards import ShardedOutput

    notes = NotesFile(path)
    shards = ShardedOutput(out, {"notes": str(path)})
    shards.open()
    tracemalloc.start()
    n_chunks = 0
    for chunk in notes.chunks(["note", "note_id"], chunk_rows):
        records = [{"row": r, "out": {"id": i, "task": "t", "label": "x", "scores": [len(t) * -0.01, -1.0]}}
                   for r, i, t in zip(chunk.rows, chunk.columns["note_id"], chunk.columns["note"])]
        shards.write(chunk.index, {"notes": len(records), "rows": len(records)}, records)
        n_chunks = chunk.index + 1
    headers = shards.wait(n_chunks, 10)
    shards.finish(headers, (r["out"] for r in shards.records(n_chunks)), {})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, sum(1 for _ in open(out, encoding="utf-8")) - (1 if out.suffix == ".csv" else 0)


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_memory_does_not_grow_with_the_file(tmp_path, kind):
    chunk_rows = 500
    small = _notes_file(tmp_path / f"small.{kind}", 2 * chunk_rows, kind)
    large = _notes_file(tmp_path / f"large.{kind}", 20 * chunk_rows, kind)
    peak_small, n_small = _peak_through_reader_and_writer(small, tmp_path / "small-out.jsonl", chunk_rows)
    peak_large, n_large = _peak_through_reader_and_writer(large, tmp_path / "large-out.csv", chunk_rows)
    assert (n_small, n_large) == (2 * chunk_rows, 20 * chunk_rows)
    # ten times the notes: the same peak, within noise (what grows with the file would be ten times larger)
    assert peak_large < 1.5 * peak_small + 256 * 1024, (peak_small, peak_large)


def test_an_empty_notes_file_is_named_in_one_plain_line(tmp_path):
    from axolotl_decselfmask.errors import InputError
    from axolotl_decselfmask.io.notes import NotesFile

    for name in ("empty.csv", "empty.jsonl"):
        (tmp_path / name).write_text("\n")
        with pytest.raises(InputError, match=rf"NOTES: .*{name} is empty: it holds no notes"):
            NotesFile(tmp_path / name)
    (tmp_path / "header.csv").write_text("note_id,note\n")
    with pytest.raises(InputError, match=r"header.csv has no rows"):
        list(NotesFile(tmp_path / "header.csv").chunks(["note"]))


def test_two_processes_under_torchrun_write_what_one_writes(trained):
    tmp, recipe, test, notes = trained
    one, two = tmp / "one.jsonl", tmp / "two.jsonl"
    subprocess.run(_predict_args(tmp, one), env=_env(), check=True, capture_output=True, timeout=900)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--no-python",
               *_predict_args(tmp, two)]
    proc = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert proc.stdout.count("rows written to") == 1  # the main process writes the output, once
    mine, theirs = _rows(two), _rows(one)
    assert [(r["id"], r["task"], r["label"]) for r in mine] == [(r["id"], r["task"], r["label"]) for r in theirs]
    for a, b in zip(mine, theirs):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)
