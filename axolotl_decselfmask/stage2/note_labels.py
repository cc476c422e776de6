"""Labelling notes with a trained run, a chunk at a time: each task's notes of a chunk, scored as the
evaluation scores its test notes and decided by its saved decision (``predict``).

Scores: a task's options by :class:`.scoring.Scorer` (summed log-probabilities, or a head's), on the
task's prompt, with texts cut to the same length as in the evaluation; single-label tasks of one
classifier that read the same column, with the same options, system prompt and prompt style, are
scored together, each note's prompt prefix once (:class:`.scoring.SharedPrefixScorer`, as
:func:`.scoring.shared_test_scorers` groups them in the evaluation); a multi-label task's label
questions likewise on each note's shared prefix (:func:`.scoring.score_questions`), each label
decided by its own saved decision.

Each (note, task) gives one record: ``row`` (the note's row), ``out`` (the output row: ``id``,
``task``, ``label``, ``scores``), ``margin`` and ``posteriors`` (of the decision; a multi-label
task's per label, with ``uncertain_label``, its least certain label), from which the most uncertain
notes are ranked (:class:`Tally`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.labelled import read_ids
from axolotl_decselfmask.io.notes import NotesChunk
from axolotl_decselfmask.stage2.multilabel import label_set_decisions
from axolotl_decselfmask.stage2.saved_run import SavedTask, checked_prompt, load_classifier, load_head
from axolotl_decselfmask.stage2.scoring import Scorer, SharedPrefixScorer, score_questions
from axolotl_decselfmask.stage2.task_prompt import label_question, task_prompt_for, truncate_for
from axolotl_decselfmask.stage2.tasks import Task, TaskData


@dataclass
class TaskNotes:
    """The notes one task labels: the non-empty texts of its text column, their rows and ids."""

    texts: list[str]
    rows: list[int]
    ids: list


def chunk_notes(chunk: NotesChunk, t: SavedTask, path, id_in_file: bool) -> tuple[TaskNotes, int]:
    """Task ``t``'s notes of ``chunk`` and how many of its rows were empty (skipped); a value that is
    not text is an error naming the file and the row."""
    column = t.settings.text_column
    texts, kept = [], []
    for j, value in enumerate(chunk.columns[column]):
        if value is None or (isinstance(value, float) and value != value):
            continue
        if not isinstance(value, str):
            raise InputError(f"{path}, row {chunk.start + j}: column {column!r} holds {type(value).__name__} "
                             f"{value!r}, not text.")
        if value.strip():
            texts.append(value)
            kept.append(j)
    rows = [chunk.start + j for j in kept]
    if id_in_file:
        id_column = t.settings.id_column
        ids = read_ids([{id_column: v} for v in chunk.columns[id_column]], kept, id_column, str(path))
    else:
        ids = list(rows)
    return TaskNotes(texts, rows, ids), len(chunk) - len(kept)


def margins(post: np.ndarray) -> np.ndarray:
    """The difference of the two highest posteriors of each row (0: a tie, 1: certain)."""
    top = np.sort(np.asarray(post, dtype=np.float64), axis=1)
    return top[:, -1] - top[:, -2]


def _finite(values) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


# ----------------------------------------------------------------------------------- the records

def task_records(t: SavedTask, n: TaskNotes, s: np.ndarray) -> list[dict]:
    """One record per note of a single-label task (see the module's text)."""
    if not len(s):
        return []
    pred, post = t.calibration.decide(s)
    m = margins(post)
    return [{"row": row, "out": {"id": i, "task": t.settings.task, "label": t.labels[k], "scores": _finite(v)},
             "margin": float(mj), "posteriors": _finite(p)}
            for row, i, k, v, mj, p in zip(n.rows, n.ids, pred, s, m, post)]


def label_set_records(t: SavedTask, n: TaskNotes, s: np.ndarray) -> list[dict]:
    """One record per note of a multi-label task: ``label`` its label set (in the order of the task's
    labels), ``scores`` per label; its margin is its least certain label's."""
    if not len(s):
        return []
    has, post = label_set_decisions([p.calibration for p in t.parts], s)
    per_label = np.stack([margins(post[:, j]) for j in range(len(t.parts))], axis=1)
    records = []
    for j, (row, i) in enumerate(zip(n.rows, n.ids)):
        labels = [y for y, on in zip(t.label_set, has[j]) if on]
        weakest = int(per_label[j].argmin())
        records.append({"row": row, "out": {"id": i, "task": t.settings.task, "label": labels,
                                            "scores": {y: _finite(s[j, k]) for k, y in enumerate(t.label_set)}},
                        "margin": float(per_label[j, weakest]), "uncertain_label": t.label_set[weakest],
                        "posteriors": {y: _finite(post[j, k]) for k, y in enumerate(t.label_set)}})
    return records


def uncertain_row(record: dict, rank: int) -> dict:
    """A row of the most uncertain notes' file from a record."""
    out = record["out"]
    row = {"task": out["task"], "rank": rank, "id": out["id"], "label": out["label"], "margin": record["margin"]}
    if "uncertain_label" in record:
        row["uncertain_label"] = record["uncertain_label"]
    row["posteriors"] = record["posteriors"]
    return row


class Tally:
    """Per task, the counts of each label and the ``most_uncertain`` notes with the smallest margin
    (ties: the first in the file), from records given one at a time, in the order of the notes."""

    def __init__(self, tasks: list[SavedTask], most_uncertain: int | None):
        self.tasks = {t.settings.task: t for t in tasks}
        self.counts = {name: dict.fromkeys(t.labels, 0) for name, t in self.tasks.items()}
        self.most_uncertain, self.seen = most_uncertain or 0, 0
        self.heaps: dict[str, list] = {name: [] for name in self.tasks}

    def add(self, record: dict) -> dict:
        out = record["out"]
        labels = out["label"] if isinstance(out["label"], list) else [out["label"]]
        for y in labels:
            self.counts[out["task"]][y] += 1
        if self.most_uncertain:
            self.seen += 1
            item = (-record["margin"], -self.seen, record)
            heap = self.heaps[out["task"]]
            if len(heap) < self.most_uncertain:
                heapq.heappush(heap, item)
            elif item[:2] > heap[0][:2]:
                heapq.heapreplace(heap, item)
        return out

    def uncertain(self, task: str) -> list[dict]:
        order = sorted(self.heaps[task], key=lambda item: (-item[0], -item[1]))
        return [uncertain_row(record, r + 1) for r, (_, _, record) in enumerate(order)]

    def summary(self) -> dict:
        entries = {}
        for name, t in self.tasks.items():
            entry: dict = {"labels": t.labels, "counts": self.counts[name]}
            if t.multi_label:
                entry["multi_label"] = True
            if self.most_uncertain:
                entry["most_uncertain"] = [u["id"] for u in self.uncertain(name)]
            entries[name] = entry
        return entries


# ----------------------------------------------------------------------------------- the scoring

class NoteLabeller:
    """Every task's classifier, prompt and text length, loaded once; :meth:`records` labels a chunk."""

    def __init__(self, cfg, config: DecSelfMaskConfig, tasks: list[SavedTask]):
        from axolotl_decselfmask.hardware import recipe_precision
        from axolotl_decselfmask.prompts import ensure_chat_template
        from axolotl_decselfmask.stage2.model import load_tokenizer

        self.cfg, self.config, self.tasks = cfg, config, tasks
        self.tokenizer = load_tokenizer(cfg)
        ensure_chat_template(self.tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
        dtype = recipe_precision(cfg).torch_dtype()
        self.models: dict[Path, object] = {}
        for t in tasks:
            if t.folder not in self.models:
                self.models[t.folder] = load_classifier(cfg, config, t, dtype)
        self.prompts = {t.index: self._prompts(t) for t in tasks}
        self.heads = {s.settings.task: load_head(s) for t in tasks for s in ([*t.parts] or [t])}

    def _prompts(self, t: SavedTask) -> list:
        """The task's prompt (a multi-label task's: one per label, then the longest, which cuts its texts)."""
        if not t.multi_label:
            return [checked_prompt(self.config, t, self.tokenizer)]
        prompts = [checked_prompt(self.config, p, self.tokenizer, label_question(t.settings, y))
                   for p, y in zip(t.parts, t.label_set)]
        longest = task_prompt_for(self.config, t.index, self.tokenizer, TaskData(None, None, t.answers, t.label_set))
        return [*prompts, longest]

    def max_length(self, t: SavedTask) -> int:
        record = t.parts[0].record if t.multi_label else t.record
        return record.get("max_length") or t.settings.max_length or self.cfg.sequence_len

    def cut(self, t: SavedTask, texts: list[str]) -> tuple[list[str], int]:
        """The texts cut as the evaluation cut them, and how many were cut."""
        options = t.answers if t.multi_label else t.labels
        return truncate_for(self.tokenizer, t.settings, options, self.max_length(t), texts, self.prompts[t.index][-1])

    def scores(self, notes: list[TaskNotes]) -> tuple[list[np.ndarray], dict[str, int]]:
        """Each task's scores of its notes, shape (notes, options) (multi-label: (notes, labels, answers)),
        and per task how many texts were cut to fit."""
        cut_texts, cut = {}, {}
        for t in self.tasks:
            cut_texts[t.index], cut[t.settings.task] = self.cut(t, notes[t.index].texts)
        scores: list = [None] * len(self.tasks)
        features = self._head_features(cut_texts)
        for group in self._sharing_groups():
            if len(group) > 1 and all(cut_texts[t.index] for t in group):
                self._score_shared(group, cut_texts, scores)
                continue
            for t in group:
                scores[t.index] = self._score(t, cut_texts[t.index], features.get(t.folder, {}))
        return scores, cut

    def _head_features(self, cut_texts: dict) -> dict:
        """Per classifier folder, the features its heads will read of this chunk's notes where several heads
        read the same notes (each note's prompt prefix once: :mod:`.shared_features`), for their scorers."""
        from axolotl_decselfmask.stage2.shared_features import FeatureRequest, prefetch_features

        requests: dict = {}
        for t in self.tasks:
            if t.kind != "head" or not cut_texts[t.index]:
                continue
            pairs = zip(t.parts, self.prompts[t.index][:-1]) if t.multi_label else [(t, self.prompts[t.index][0])]
            for part, prompt in pairs:
                head = self.heads.get(part.settings.task)
                if head is not None:
                    requests.setdefault(t.folder, []).append(FeatureRequest(
                        cut_texts[t.index], head.labels, prompt.question, prompt.system_prompt, head.position,
                        head.mask_id, head.settings.prompt))
        features: dict = {}
        for folder, wanted in requests.items():
            features[folder] = {}
            mine = [t.settings for t in self.tasks if t.folder == folder]
            prefetch_features(self.models[folder], self.tokenizer, wanted, features[folder],
                              min(s.eval_batch_size for s in mine), False, min(s.option_chunk for s in mine))
        return features

    def _sharing_groups(self) -> list[list[SavedTask]]:
        """Tasks scored on one prompt prefix per note: single-label tasks of one (generative) classifier
        with the same notes (column), options, system prompt and prompt style; every other task alone."""
        groups: dict[tuple, list] = {}
        for t in self.tasks:
            p = self.prompts[t.index][0]
            key = (("alone", t.index) if t.multi_label or t.kind == "head" else
                   (t.folder, t.settings.text_column, tuple(t.labels), p.system_prompt, p.style, p.mask_text,
                    t.settings.eval_batch_size, t.settings.option_chunk))
            groups.setdefault(key, []).append(t)
        return list(groups.values())

    def _score_shared(self, group: list[SavedTask], cut_texts: dict, scores: list) -> None:
        parts = [Task(t.settings, TaskData(None, None, t.labels), self.prompts[t.index][0], self.max_length(t),
                      [], [], cut_texts[t.index], None) for t in group]
        shared = SharedPrefixScorer(self.models[group[0].folder], self.tokenizer, parts, False,
                                    texts=[cut_texts[t.index] for t in group])
        for i, t in enumerate(group):
            scores[t.index] = shared.part(i)(cut_texts[t.index])

    def _score(self, t: SavedTask, texts: list[str], features: dict | None = None) -> np.ndarray:
        model = self.models[t.folder]
        if not t.multi_label:
            return self._scorer(t, self.prompts[t.index][0], features)(texts)
        prompts = self.prompts[t.index][:-1]
        if t.kind == "head":
            if not texts:
                return np.zeros((0, len(t.parts), len(t.answers)))
            return np.stack([self._scorer(p, q, features)(texts) for p, q in zip(t.parts, prompts)], axis=1)
        return score_questions(model, self.tokenizer, texts, [q.question for q in prompts], t.answers,
                               prompts[0].system_prompt, False, t.settings.eval_batch_size, t.settings.option_chunk)

    def _scorer(self, t: SavedTask, prompt, features: dict | None = None) -> Scorer:
        """The evaluation's :class:`.scoring.Scorer` of a (sub-)task: its options' scores, or its head's
        (reading ``features``, the chunk's prefetched ones, where it has them)."""
        return Scorer(self.models[t.folder], self.tokenizer, t.labels, prompt, t.settings, False,
                      self.heads.get(t.settings.task), {} if features is None else features)

    def records(self, chunk: NotesChunk, path, id_columns: set[str]) -> tuple[dict, list[dict]]:
        """A chunk's shard: its header (``size``, ``notes``, ``rows``, ``skipped``, ``cut`` per task) and
        its records, in the order of the notes, each note's tasks in the recipe's order."""
        notes, skipped = [], {}
        for t in self.tasks:
            n, skipped[t.settings.task] = chunk_notes(chunk, t, path, t.settings.id_column in id_columns)
            notes.append(n)
        scores, cut = self.scores(notes)
        keyed = []
        for t, n, s in zip(self.tasks, notes, scores):
            made = label_set_records(t, n, s) if t.multi_label else task_records(t, n, s)
            keyed += [((r["row"], t.index), r) for r in made]
        records = [r for _, r in sorted(keyed, key=lambda kv: kv[0])]
        header = {"size": len(chunk), "notes": len({r["row"] for r in records}), "rows": len(records),
                  "skipped": skipped, "cut": cut}
        return header, records
