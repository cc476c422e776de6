"""Label new notes with a trained run: ``axolotl decselfmask predict RECIPE NOTES --out FILE``.

Every task of the recipe labels every note of NOTES with the run's own classifier and saved
decision (:mod:`.saved_run`: found and checked before any model work), scored as the evaluation
scores its test notes (:mod:`.note_labels`), so no labelled or test file is read.

NOTES is read a chunk at a time (``--chunk-size`` notes, :mod:`..io.notes`: constant memory
whatever its size), and each chunk's rows are written to a shard as soon as they are made
(:mod:`..io.shards`: ``<out>.parts/part-<chunk>.jsonl``, atomically). A run that stops (a crash,
``kill -9``) and is started again with the same arguments finds its shards, says how many notes they
hold, and scores only the others. With ``accelerate launch`` or ``torchrun`` (``RANK`` and
``WORLD_SIZE`` set), process ``r`` labels the chunks ``i`` with ``i % WORLD_SIZE == r``, each its own
shards, and the main process writes ``--out`` once every shard is there. ``--out`` is the final,
complete output, written last (a temporary file, then a rename).

Output, by the extension of ``--out``: ``.jsonl`` (one object a line) or ``.csv`` (``scores`` as a
JSON list), one row per (note, task), in the notes' order: ``id`` (the notes' id column,
``classification.id_column``, else the 0-based row), ``task``, ``label``, ``scores`` (one value per
option in the order of the task's labels, as in ``predictions-<task>.jsonl``; a non-finite score
is null). A multi-label task's ``label`` is the predicted label set, in the order of the task's labels
(a list in JSON Lines; in CSV the labels joined by the task's ``label_separator``), and ``scores``
maps each label to its answers' scores (``label_answers`` order).

``--most-uncertain N``: per task, the N notes with the smallest margin between the two highest
posteriors of the decision (for a multi-label task, of its least certain label), the first to label
by hand, written to ``<out stem>-most-uncertain<suffix>`` (or ``--uncertain-out``) with ``task``,
``rank``, ``id``, ``label``, ``margin`` and ``posteriors`` (per label for a multi-label task, which
also names that label in ``uncertain_label``), and their ids printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from axolotl_decselfmask.args import plugin_config
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.notes import CHUNK_ROWS, NotesFile
from axolotl_decselfmask.io.shards import ShardedOutput, write_rows
from axolotl_decselfmask.io.tables import clean_texts
from axolotl_decselfmask.stage2.note_labels import (  # noqa: F401 - the names predict always had
    NoteLabeller,
    Tally,
    TaskNotes,
    label_set_records,
    margins,
    task_records,
    uncertain_row,
)
from axolotl_decselfmask.stage2.saved_run import (  # noqa: F401 - the names predict always had
    SavedTask,
    read_recipe,
    saved_label_tasks,
    trained_tasks,
    with_batch_size,
)

OUTPUT_SUFFIXES = (".jsonl", ".csv")
NOTES_KEY = "NOTES"
#: seconds the main process waits for the other processes' shards
WAIT_TIMEOUT_S = 7 * 24 * 3600


def output_path(path: str | Path, what: str = "--out") -> Path:
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"{what} {str(path)!r}: the output is written by its extension, one of "
                         f"{' or '.join(OUTPUT_SUFFIXES)}.")
    return path


def read_notes(path: str, tasks: list) -> list[TaskNotes]:
    """Each task's notes of ``path`` read whole (a small file; :func:`predict` streams): its text
    column (an error naming the file and the column when missing), empty texts skipped, ids from
    its id column (else the row numbers)."""
    from axolotl_decselfmask.io.labelled import read_ids
    from axolotl_decselfmask.io.tables import read_table, require_column

    rows = read_table(path, NOTES_KEY)
    out = []
    for t in tasks:
        column = t.settings.text_column
        require_column(rows, column, path, f"decselfmask.classification.text_column of task {t.settings.task}")
        texts, kept, _ = clean_texts([r.get(column) for r in rows], path, column)
        out.append(TaskNotes(texts, kept, read_ids(rows, kept, t.settings.id_column, path)))
    return out


def _results(t: SavedTask, n: TaskNotes, s, most_uncertain: int | None):
    """(keyed rows, most uncertain rows, summary entry) of one task's notes, all in memory."""
    records = label_set_records(t, n, s) if t.multi_label else task_records(t, n, s)
    tally = Tally([t], most_uncertain)
    keyed = [((r["row"], t.index), tally.add(r)) for r in records]
    return keyed, tally.uncertain(t.settings.task) if most_uncertain else [], tally.summary()[t.settings.task]


_task_results = _label_set_results = _results


def _world() -> tuple[int, int]:
    """This process's rank and the number of processes (``accelerate launch`` / torchrun set them)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _use_local_device(world: int) -> None:
    """With several processes on a machine with GPUs, each process uses its own (``LOCAL_RANK``)."""
    import torch

    if world > 1 and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def _plan(notes: NotesFile, tasks: list[SavedTask], chunk_rows: int, cfg) -> dict:
    """What the shards are of: a run with another plan does not reuse them."""
    stat = notes.path.stat()
    return {"notes": str(notes.path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "chunk_rows": chunk_rows, "output_dir": str(Path(cfg.output_dir).resolve()),
            "tasks": [t.settings.task for t in tasks]}


def predict(cfg, notes: str, out: str | Path, most_uncertain: int | None = None,
            uncertain_out: str | Path | None = None, progress: bool = True, batch_size: int | None = None,
            chunk_rows: int = CHUNK_ROWS, restart: bool = False, wait_timeout: float = WAIT_TIMEOUT_S) -> dict:
    """Label every note of ``notes`` for every task of the run of ``cfg`` (a validated recipe), in
    chunks, resuming from the shards of an earlier run of the same command; write the rows to
    ``out`` (and the most uncertain notes, when asked). Returns a summary: ``out``, ``rows``,
    ``notes``, ``resumed`` (notes already written when it started), ``uncertain_out`` and, per task,
    ``labels``, ``counts`` (per label: the notes labelled with it) and ``most_uncertain`` (ids);
    ``multi_label`` for a multi-label task. A process other than the main one returns after its
    shards, with ``out`` None."""
    out = output_path(out)
    if most_uncertain is not None and most_uncertain < 1:
        raise InputError(f"--most-uncertain must be at least 1, got {most_uncertain}.")
    if chunk_rows < 1:
        raise InputError(f"--chunk-size must be at least 1, got {chunk_rows}.")
    uncertain_path = None
    if most_uncertain:
        uncertain_path = output_path(uncertain_out or out.with_name(f"{out.stem}-most-uncertain{out.suffix}"),
                                     "--uncertain-out")
    config = plugin_config(cfg)
    tasks = with_batch_size(trained_tasks(cfg, config), batch_size)  # every check before a model is loaded
    notes_file = NotesFile(notes, NOTES_KEY)
    for t in tasks:
        notes_file.require(t.settings.text_column, f"decselfmask.classification.text_column of task {t.settings.task}")
    rank, world = _world()
    shards = ShardedOutput(out, _plan(notes_file, tasks, chunk_rows, cfg))
    done = shards.open(rank, restart)
    resumed = sum(h["notes"] for h in done.values())
    if done and rank == 0:
        print(f"decselfmask predict: resuming: {resumed} notes already written ({len(done)} shards in "
              f"{shards.folder}); they are not scored again")
    n_chunks = _label_chunks(cfg, config, tasks, notes_file, shards, set(done), chunk_rows, progress, (rank, world))
    if rank != 0:
        return {"out": None, "rows": 0, "notes": 0, "resumed": resumed, "uncertain_out": None, "tasks": {}}
    headers = shards.wait(n_chunks, wait_timeout)
    return _assemble(shards, headers, tasks, n_chunks, most_uncertain, uncertain_path) | {"resumed": resumed}


def _label_chunks(cfg, config, tasks: list[SavedTask], notes_file: NotesFile, shards: ShardedOutput, done: set[int],
                  chunk_rows: int, progress: bool, where: tuple[int, int]) -> int:
    """This process's chunks labelled and written, those already on disk skipped (the model is
    loaded only when a chunk needs it); returns the number of chunks of the file."""
    from tqdm.auto import tqdm

    rank, world = where
    total = notes_file.count()
    mine = sum(min(chunk_rows, total - s) for s in range(rank * chunk_rows, total, world * chunk_rows))
    columns = [c for t in tasks for c in (t.settings.text_column, t.settings.id_column) if c]
    id_columns = {c for c in columns if c in notes_file.columns}
    bar = tqdm(total=mine, desc="predict" if world == 1 else f"predict (process {rank + 1}/{world})", unit="note",
               disable=not progress or (world > 1 and rank != 0), smoothing=0.1, dynamic_ncols=True)
    labeller, n_chunks = None, 0
    for chunk in notes_file.chunks(columns, chunk_rows):
        n_chunks = chunk.index + 1
        if chunk.index % world != rank:
            continue
        if chunk.index in done:
            bar.update(len(chunk))
            continue
        if labeller is None:
            _use_local_device(world)
            labeller = NoteLabeller(cfg, config, tasks)
        header, records = labeller.records(chunk, notes_file.path, id_columns)
        shards.write(chunk.index, header, records)
        bar.update(len(chunk))
    bar.close()
    return n_chunks


def _assemble(shards: ShardedOutput, headers: dict, tasks: list[SavedTask], n_chunks: int,
              most_uncertain: int | None, uncertain_path: Path | None) -> dict:
    """The output from the shards (streamed), the most uncertain notes, and the summary."""
    import logging

    for t in tasks:
        skipped = sum(h["skipped"][t.settings.task] for h in headers.values())
        cut = sum(h["cut"][t.settings.task] for h in headers.values())
        print(f"decselfmask predict [{t.settings.task}]: {sum(h['size'] for h in headers.values()) - skipped} notes, "
              f"options {t.labels} ({cut} cut to fit {t.record.get('max_length') or 'the recipe length'} tokens)")
        if skipped:
            logging.getLogger(__name__).warning("decselfmask predict [%s]: %d empty or whitespace-only notes of %s "
                                                "skipped", t.settings.task, skipped, shards.plan["notes"])
    rows = sum(h["rows"] for h in headers.values())
    if not rows:
        raise InputError(f"{NOTES_KEY}: {shards.plan['notes']}: every note is empty or whitespace (the text "
                         f"column of each task).")
    tally = Tally(tasks, most_uncertain)
    separators = {t.settings.task: t.settings.label_separator for t in tasks if t.multi_label}
    shards.finish(headers, (tally.add(r) for r in shards.records(n_chunks)), separators)
    if uncertain_path is not None:
        write_rows(uncertain_path, [u for t in tasks for u in tally.uncertain(t.settings.task)], separators)
    return {"out": str(shards.out), "rows": rows, "notes": sum(h["notes"] for h in headers.values()),
            "uncertain_out": str(uncertain_path) if uncertain_path else None, "tasks": tally.summary()}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="axolotl decselfmask predict",
        description="Label every note of NOTES for every task of RECIPE with its trained classifier (after "
                    "`axolotl train RECIPE`); one row per (note, task): id, task, label, scores. NOTES is read in "
                    "chunks and written in shards as it goes: run the same command again after an interruption "
                    "and it resumes. Under `accelerate launch` or `torchrun` the processes share the notes.")
    parser.add_argument("recipe", help="the recipe the run was trained with")
    parser.add_argument("notes", help="the notes: .jsonl, .json, .csv, .tsv, .parquet or a save_to_disk folder, "
                                      "with the recipe's text column (and optionally its id column)")
    parser.add_argument("--out", required=True, help="the predictions file: .jsonl or .csv")
    parser.add_argument("--most-uncertain", type=int, metavar="N",
                        help="also list, per task, the N notes with the smallest margin between the two highest "
                             "calibrated posteriors (a multi-label task: of their least certain label), the first "
                             "to label by hand")
    parser.add_argument("--uncertain-out", metavar="FILE",
                        help="where --most-uncertain writes (default: OUT's name with -most-uncertain)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="notes scored together (default: the recipe's classification.eval_batch_size)")
    parser.add_argument("--chunk-size", type=int, default=CHUNK_ROWS, metavar="N",
                        help=f"notes read and written per shard (default {CHUNK_ROWS}): the most a crash loses")
    parser.add_argument("--restart", action="store_true",
                        help="remove the shards of an earlier, unfinished run of this --out and start again")
    parser.add_argument("--wait-timeout", type=float, default=WAIT_TIMEOUT_S, metavar="SECONDS",
                        help="how long the main process waits for the other processes' shards")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        output_path(args.out)
        if not Path(args.notes).exists():
            raise InputError(f"{NOTES_KEY}: file {args.notes!r} does not exist.")
        cfg = read_recipe(args.recipe)
        result = predict(cfg, args.notes, args.out, args.most_uncertain, args.uncertain_out, not args.no_progress,
                         args.batch_size, args.chunk_size, args.restart, args.wait_timeout)
    except InputError as exc:
        print(f"decselfmask predict: {exc}", file=sys.stderr)
        return 2
    if result["out"] is None:  # another process than the main one: its shards are written
        return 0
    for task, entry in result["tasks"].items():
        counts = ", ".join(f"{label}: {n}" for label, n in entry["counts"].items())
        print(f"decselfmask predict [{task}]: {counts}")
        if "most_uncertain" in entry:
            print(f"decselfmask predict [{task}]: most uncertain notes (ids): {entry['most_uncertain']}")
    print(f"decselfmask predict: {result['rows']} rows written to {result['out']}"
          + (f"; the most uncertain notes to {result['uncertain_out']}" if result["uncertain_out"] else ""))
    return 0
