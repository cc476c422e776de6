"""Label new notes with a trained run: ``axolotl decselfmask predict RECIPE NOTES --out FILE``.

Every task of the recipe labels every note of NOTES with the run's own classifier, loaded as the
evaluation uses it: stage 1 (the stage-2 adapter's base) with the joint stage-2 LoRA
(``<output_dir>/stage2``), the task's own LoRA (``stage2/<task>``, ``classification.joint:
false``), a head on the frozen stage-1 model (``stage2/heads/<task>``, ``method: head``), or the
stage-1 model alone (``classification.train: false``). The options are scored as in the
evaluation (:class:`.scoring.Scorer`: summed log-probabilities, or a head's
log-probabilities), on the same prompt, with texts cut to the same length; the label is the
task's fitted decision, read from ``stage2/calibration-<task>.json`` (written by the evaluation,
with or without a test file), so no labelled or test file is read.

Output, by the extension of ``--out``: ``.jsonl`` (one object a line) or ``.csv`` (``scores`` as a
JSON list), one row per (note, task), in the notes' order: ``id`` (the notes' id column,
``classification.id_column``, else the 0-based row), ``task``, ``label``, ``scores`` (one value per
option in the order of the task's labels, as in ``predictions-<task>.jsonl``; a non-finite score
is null).

A multi-label task (:mod:`.multilabel`, trained as one yes/no question per label) is labelled as
its evaluation labels its test notes: each note's text cut once for all its labels, every label
question scored on the note's shared prompt prefix (:func:`.scoring.score_questions`; a head
per label with ``method: head``), and each label decided by its own saved decision
(``stage2/calibration-<task>_<label>.json``, listed in ``stage2/multilabel-<task>.json``). Its
row's ``label`` is the predicted label set, in the order of the task's labels (a list in JSON
Lines; in CSV the labels joined by the task's ``label_separator``, as a labelled file holds
them), and ``scores`` maps each label to its answers' scores (``label_answers`` order), as
``predictions-<task>.jsonl`` has them.

``--most-uncertain N``: per task, the N notes with the smallest margin between the two highest
posteriors of the decision (the calibrated posteriors, whose argmax is the label): those the
classifier is least sure of, the first to label by hand. For a multi-label task a note's margin
is its least certain label's (the smallest over its labels of the margin between the label's
yes and no posteriors): the note with one label decision closest to a tie comes first, whatever
its other labels. Written to ``<out stem>-most-uncertain<suffix>`` (or ``--uncertain-out``) with
``task``, ``rank``, ``id``, ``label``, ``margin`` and ``posteriors`` (per label for a
multi-label task, which also names that label in ``uncertain_label``), and their ids printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from axolotl_decselfmask.args import (
    ClassificationConfig,
    DecSelfMaskConfig,
    plugin_config,
)
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.files import atomic_write_jsonl, atomic_write_text, file_sha256, safe_filename
from axolotl_decselfmask.io.labelled import read_ids
from axolotl_decselfmask.io.tables import clean_texts, read_table, require_column
from axolotl_decselfmask.stage2 import outputs
from axolotl_decselfmask.stage2.calibration import Calibration, calibration_from_record
from axolotl_decselfmask.stage2.multilabel import label_set_decisions
from axolotl_decselfmask.stage2.scoring import Scorer, score_questions
from axolotl_decselfmask.stage2.task_prompt import (
    label_question,
    task_prompt,
    task_prompt_for,
    truncate_for,
)
from axolotl_decselfmask.stage2.tasks import TaskData, TaskPrompt

LOG = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".jsonl", ".csv")
NOTES_KEY = "NOTES"


@dataclass
class SavedTask:
    """One task of a trained run as predict uses it, found and checked before any model work: a task
    with one label per note and its saved decision, or a multi-label task, whose ``parts`` are its
    label questions (one SavedTask per label, task ``<task>/<label>``, its answers as options and its
    own saved decision)."""

    index: int
    settings: ClassificationConfig  # the task as the recipe names it (a label question's: its own)
    record: dict  # the saved decision (or, for a run older than it, metrics.json's entry); multi-label: its record
    folder: Path  # the stage-2 folder of the task's classifier
    kind: str  # lora, head or none (classification.train: false)
    calibration: Calibration | None = None  # the decision (one label per note)
    parts: list[SavedTask] = field(default_factory=list)  # multi-label: in the order of label_set
    label_set: list[str] | None = None  # multi-label: the labels
    answers: list[str] | None = None  # multi-label: label_answers, the first means the note has the label

    @property
    def multi_label(self) -> bool:
        return self.label_set is not None

    @property
    def labels(self) -> list[str]:
        return list(self.label_set) if self.multi_label else list(self.calibration.options)


@dataclass
class TaskNotes:
    """The notes one task labels: the non-empty texts of its text column, their rows and ids."""

    texts: list[str]
    rows: list[int]
    ids: list


#: Axolotl's default ``sequence_len`` (axolotl 0.19), for a recipe that leaves it out
AXOLOTL_SEQUENCE_LEN = 512


def read_recipe(path: str | Path):
    """The recipe as predict needs it: its YAML with the ``protocol`` preset's Axolotl keys, as the
    plugin's ``register()`` sets them. Not Axolotl's ``load_cfg``: that starts a run (it replaces
    ``output_dir/debug.log``, the training run's log) and takes seconds to validate."""
    import yaml
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.protocol import apply_recipe_preset

    path = Path(path)
    if not path.is_file():
        raise InputError(f"RECIPE: file {str(path)!r} does not exist.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"RECIPE: {path} is not valid YAML ({exc}).") from exc
    if not isinstance(raw, dict) or not raw.get("output_dir") or not raw.get("base_model"):
        raise InputError(f"RECIPE: {path} is not the recipe of a run (it needs base_model and output_dir).")
    raw.setdefault("sequence_len", AXOLOTL_SEQUENCE_LEN)
    raw["decselfmask"] = dict(raw.get("decselfmask") or {})
    apply_recipe_preset(raw, raw["decselfmask"])
    return DictDefault(raw)


def output_path(path: str | Path, what: str = "--out") -> Path:
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"{what} {str(path)!r}: the output is written by its extension, one of "
                         f"{' or '.join(OUTPUT_SUFFIXES)}.")
    return path


# ------------------------------------------------------------------------------ what the run left


def trained_tasks(cfg, config: DecSelfMaskConfig) -> list[SavedTask]:
    """Every task's classifier and saved decision (a multi-label task's: one per label), checked;
    an InputError naming what is missing."""
    if not config.classification.enabled:
        raise InputError("decselfmask.classification.enabled is false: this recipe trains no classifier to "
                         "predict with.")
    out = Path(cfg.output_dir)
    shared = config.classification
    together = not shared.train or shared.joint  # as run_stage2 groups the tasks (a multi-label task's labels: one)
    kind = shared.method if shared.train else "none"
    tasks: list = []
    for n, c in enumerate(config.task_configs()):
        group = outputs.classifier_dir(out, None if together else c.task)
        subs = saved_label_tasks(out, c)
        if subs is not None:
            tasks.append(_saved_label_set(out, n, c, subs, group, kind))
            continue
        if c.multi_label is True and outputs.calibration_path(out, c.task).is_file():
            raise InputError(
                f"decselfmask [{c.task}]: the recipe sets multi_label: true, but the run trained the task with one "
                f"label per note ({outputs.calibration_path(out, c.task)}): restore the setting, or train again.")
        tasks.append(_saved_task(out, n, c, group, kind))
    return tasks


def _saved_task(out: Path, n: int, c: ClassificationConfig, group: Path, kind: str,
                answers: list[str] | None = None) -> SavedTask:
    """One (sub-)task's classifier and decision, checked. ``answers``: the recipe's
    ``label_answers`` that a multi-label sub-task's options must be (else its ``labels``)."""
    weights = _require_classifier(group, kind, c.task)
    calibration, record = _saved_decision(out, c, answers is None)
    expected, what = (answers, "label_answers") if answers is not None else (c.labels, "labels")
    if expected and list(expected) != list(calibration.options):
        raise InputError(
            f"decselfmask [{c.task}]: the recipe's {what} {list(expected)} differ from the options the classifier "
            f"was trained and calibrated with {list(calibration.options)}: restore them or train again.")
    recorded = record.get("weights_sha256")
    if weights is not None and recorded and file_sha256(weights) != recorded:
        raise InputError(
            f"decselfmask [{c.task}]: {weights} changed after its decision was fitted ({record.get('path')}): a "
            "stage 2 stopped before its evaluation? Run `axolotl train` again.")
    return SavedTask(n, c, record, group, kind, calibration)


def saved_label_tasks(output_dir, c: ClassificationConfig) -> list[ClassificationConfig] | None:
    """The label questions of a trained multi-label task ``c`` as its evaluation saved them
    (:func:`.outputs.read_label_set_record`): one setting per label, task ``<task>/<label>``, the
    answers as its labels and the label's question; None when ``c`` was not trained as a
    multi-label task."""
    record = outputs.read_label_set_record(output_dir, c.task)
    if record is None:
        return None
    return [c.model_copy(update={"task": record["sub_tasks"][y], "labels": list(record["answers"]),
                                 "question": record["questions"][y]}) for y in record["labels"]]


def _saved_label_set(out: Path, n: int, c: ClassificationConfig, subs: list[ClassificationConfig], group: Path,
                     kind: str) -> SavedTask:
    """A multi-label task's labels (:func:`saved_label_tasks`), each checked as a task."""
    where = outputs.label_set_record_path(out, c.task)
    record = outputs.read_label_set_record(out, c.task)
    if c.multi_label is False:
        raise InputError(
            f"decselfmask [{c.task}]: the recipe sets multi_label: false, but the run trained the task as a "
            f"multi-label task ({where}): restore the setting, or train again.")
    label_set = list(record["labels"])
    if c.labels and list(c.labels) != label_set:
        raise InputError(
            f"decselfmask [{c.task}]: the recipe's labels {list(c.labels)} differ from the labels the classifier was "
            f"trained and calibrated with {label_set} ({where}): restore them or train again.")
    answers = [a.strip() for a in c.label_answers]
    parts = [_saved_task(out, n, s, group, kind, answers) for s in subs]
    return SavedTask(n, c, dict(record, path=str(where)), group, kind, parts=parts, label_set=label_set,
                     answers=answers)


def _require_classifier(group: Path, kind: str, task: str) -> Path | None:
    """The weights file of the task's classifier (None: the stage-1 model alone)."""
    if kind == "none":
        return None
    if kind == "head":
        from axolotl_decselfmask.stage2.head import HeadClassifier

        needed = list(reversed(HeadClassifier.paths(outputs.heads_dir(group), safe_filename(task))))
    else:
        needed = [group / "adapter_config.json", group / "adapter_model.safetensors"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        what = "classification head" if kind == "head" else "stage-2 adapter"
        raise InputError(
            f"decselfmask [{task}]: no {what} in {needed[0].parent} ({', '.join(missing)} missing): stage 2 has not "
            "finished for this recipe's output_dir. Run `axolotl train RECIPE` first.")
    return needed[1]


def _saved_decision(out: Path, c: ClassificationConfig, whole_task: bool = True) -> tuple[Calibration, dict]:
    """The task's decision as the evaluation fitted it: its calibration file, else (a run from
    before those files) the calibration recorded in ``metrics.json`` (rounded to 6 digits).
    ``whole_task``: ``c`` is a task of the recipe (not one label of a multi-label task)."""
    path = outputs.calibration_path(out, c.task)
    if path.is_file():
        record = outputs.read_calibration(out, c.task)
        return calibration_from_record(record, path), dict(record, path=str(path))
    entry = ((outputs.read_metrics(out) or {}).get("tasks") or {}).get(c.task) or {}
    if isinstance(entry.get("calibration"), dict) and entry.get("labels"):
        metrics = outputs.metrics_path(out)
        LOG.warning("decselfmask [%s]: no %s; using the decision recorded in %s (rounded)", c.task, path, metrics.name)
        return Calibration.from_dict(entry["calibration"], entry["labels"]), {"path": str(metrics)}
    also = ("" if c.multi_label is False or not whole_task
            else f" (nor, for a multi-label task, {outputs.label_set_record_path(out, c.task)})")
    raise InputError(
        f"decselfmask [{c.task}]: no saved decision {path}{also}: stage 2 and its calibration have not finished for "
        "this recipe's output_dir (the file is written at their end). Run `axolotl train RECIPE` first.")


# ------------------------------------------------------------------------------------ the notes


def read_notes(path: str, tasks: list) -> list[TaskNotes]:
    """Each task's notes of ``path`` (jsonl, csv, ... as the labelled files): its text column (an
    error naming the file and the column when missing), empty texts skipped and counted, ids
    from its id column (else the row numbers)."""
    rows = read_table(path, NOTES_KEY)
    out = []
    for t in tasks:
        column = t.settings.text_column
        require_column(rows, column, path, f"decselfmask.classification.text_column of task {t.settings.task}")
        texts, kept, report = clean_texts([r.get(column) for r in rows], path, column)
        if report.skipped_empty:
            LOG.warning("decselfmask predict: %s", report.summary(path))
        out.append(TaskNotes(texts, kept, read_ids(rows, kept, t.settings.id_column, path)))
    return out


# ---------------------------------------------------------------------------------- the scoring


def score_notes(cfg, config: DecSelfMaskConfig, tasks: list, notes: list[TaskNotes],
                progress: bool = True) -> list[np.ndarray]:
    """Each task's option scores of its notes, shape (notes, options) (a multi-label task's:
    (notes, labels, answers)), one model per stage-2 folder."""
    from axolotl_decselfmask.hardware import recipe_precision
    from axolotl_decselfmask.prompts import ensure_chat_template
    from axolotl_decselfmask.stage2.model import load_tokenizer

    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    dtype = recipe_precision(cfg).torch_dtype()
    groups: dict[Path, list[SavedTask]] = {}
    for t in tasks:
        groups.setdefault(t.folder, []).append(t)
    scores: list = [None] * len(tasks)
    for members in groups.values():
        model = load_classifier(cfg, config, members[0], dtype)
        for t in members:
            if t.multi_label:
                scores[t.index] = _score_label_set(cfg, config, t, model, tokenizer, notes[t.index].texts, progress)
                continue
            prompt = _checked_prompt(config, t, tokenizer)
            max_length = t.record.get("max_length") or t.settings.max_length or cfg.sequence_len
            texts, n_cut = truncate_for(tokenizer, t.settings, t.labels, max_length, notes[t.index].texts, prompt)
            print(f"decselfmask predict [{t.settings.task}]: {len(texts)} notes, options {t.labels} ({n_cut} cut to fit "
                  f"{max_length} tokens)")
            scores[t.index] = _scorer(model, tokenizer, t, prompt, progress)(texts)
        del model
    return scores


def _scorer(model, tokenizer, t: SavedTask, prompt: TaskPrompt, progress: bool) -> Scorer:
    """The evaluation's :class:`.scoring.Scorer` of a (sub-)task: its options' scores, or its head's."""
    head = None
    if t.kind == "head":
        from axolotl_decselfmask.stage2.head import HeadClassifier

        head = HeadClassifier.load(outputs.heads_dir(t.folder), safe_filename(t.settings.task))
    return Scorer(model, tokenizer, t.labels, prompt, t.settings, progress, head, {})


def _score_label_set(cfg, config: DecSelfMaskConfig, t: SavedTask, model, tokenizer, texts: list[str],
                     progress: bool) -> np.ndarray:
    """A multi-label task's scores, shape (notes, labels, answers), as its evaluation makes them:
    each text cut once to fit the longest label question (:func:`.task_prompt.task_prompt_for`),
    the label questions scored on the note's shared prefix (:func:`.scoring.score_questions`),
    or each label's head."""
    prompts = [_checked_prompt(config, p, tokenizer, label_question(t.settings, y)) for p, y in zip(t.parts, t.label_set)]
    longest = task_prompt_for(config, t.index, tokenizer, TaskData(None, None, t.answers, t.label_set))
    max_length = t.parts[0].record.get("max_length") or t.settings.max_length or cfg.sequence_len
    texts, n_cut = truncate_for(tokenizer, t.settings, t.answers, max_length, texts, longest)
    print(f"decselfmask predict [{t.settings.task}]: {len(texts)} notes, multi-label: {len(t.label_set)} labels, answers "
          f"{t.answers} ({n_cut} cut to fit {max_length} tokens)")
    if t.kind == "head":
        return np.stack([_scorer(model, tokenizer, p, q, progress)(texts) for p, q in zip(t.parts, prompts)], axis=1)
    return score_questions(model, tokenizer, texts, [q.question for q in prompts], t.answers, prompts[0].system_prompt,
                           progress, t.settings.eval_batch_size, t.settings.option_chunk)


def _checked_prompt(config: DecSelfMaskConfig, t: SavedTask, tokenizer, question: str | None = None) -> TaskPrompt:
    """The task's prompt from the recipe (``question``: a multi-label task's question of one label);
    an error when it is not the one the decision was fitted on."""
    prompt = task_prompt(config, t.index, tokenizer, question)
    saved = (t.record.get("question"), t.record.get("system_prompt"))
    if saved[0] is not None and saved != (prompt.question, prompt.system_prompt):
        raise InputError(
            f"decselfmask [{t.settings.task}]: the recipe's classification prompt (question {prompt.question!r}) is not the "
            f"one the classifier was trained and calibrated with (question {saved[0]!r}, {t.record.get('path')}): "
            "restore it, or train again.")
    return prompt


def load_classifier(cfg, config: DecSelfMaskConfig, t: SavedTask, dtype):
    """The model that scores ``t``'s options, as the evaluation had it: the stage-2 LoRA merged into
    its base (the stage-1 model folder its adapter_config names), else the stage-1 model."""
    import torch

    from axolotl_decselfmask.stage2.model import (
        MERGED_DIR,
        load_model,
        stage1_model_folder,
    )

    if t.kind != "lora":
        folder, _ = stage1_model_folder(cfg, config, dtype)
        model = load_model(folder, cfg, dtype)
    else:
        from peft import PeftModel

        base = json.loads((t.folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        if not Path(base).exists():
            if Path(base).name == MERGED_DIR:  # output_dir moved, or the folder removed: output_dir's, made again
                base, _ = stage1_model_folder(cfg, config, dtype)
            elif Path(base).is_absolute():
                raise InputError(f"decselfmask [{t.settings.task}]: the base of the stage-2 adapter {t.folder}, {base}, is "
                                 "missing; put it back or train again.")
        model = PeftModel.from_pretrained(load_model(base, cfg, dtype), str(t.folder)).merge_and_unload()
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval()


# ---------------------------------------------------------------------------------- the results


def margins(post: np.ndarray) -> np.ndarray:
    """The difference of the two highest posteriors of each row (0: a tie, 1: certain)."""
    top = np.sort(np.asarray(post, dtype=np.float64), axis=1)
    return top[:, -1] - top[:, -2]


def _finite(values) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def write_rows(path: Path, rows: list[dict], separators: dict[str, str] | None = None) -> None:
    """``rows`` as JSON Lines, or as CSV (the columns of every row; list and dict values as JSON),
    by ``path``'s extension. ``separators``: per task, what joins a label set (a list ``label``)
    in CSV, as a labelled file holds it."""
    if path.suffix.lower() == ".jsonl":
        atomic_write_jsonl(path, rows)
        return
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["id", "task", "label", "scores"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    for row in rows:
        joined = (separators or {}).get(row.get("task"))
        if joined is not None and isinstance(row.get("label"), list):
            row = dict(row, label=joined.join(row["label"]))
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                         for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _task_results(t: SavedTask, n: TaskNotes, s: np.ndarray, most_uncertain: int | None):
    """(keyed rows, most uncertain rows, summary entry) of a single-label task."""
    pred, post = t.calibration.decide(s) if len(s) else (np.zeros(0, dtype=int), np.zeros((0, len(t.labels))))
    labels = [t.labels[i] for i in pred]
    keyed = [((row, t.index), {"id": i, "task": t.settings.task, "label": y, "scores": _finite(v)})
             for row, i, y, v in zip(n.rows, n.ids, labels, s)]
    entry: dict = {"labels": t.labels, "counts": {o: labels.count(o) for o in t.labels}}
    uncertain = []
    if most_uncertain:
        m = margins(post) if len(post) else np.zeros(0)
        order = np.argsort(m, kind="stable")[:most_uncertain]
        uncertain = [{"task": t.settings.task, "rank": r + 1, "id": n.ids[j], "label": labels[j],
                      "margin": float(m[j]), "posteriors": _finite(post[j])} for r, j in enumerate(order)]
        entry["most_uncertain"] = [n.ids[j] for j in order]
    return keyed, uncertain, entry


def _label_set_results(t: SavedTask, n: TaskNotes, s: np.ndarray, most_uncertain: int | None):
    """(keyed rows, most uncertain rows, summary entry) of a multi-label task: ``label`` the note's
    label set, ``scores`` per label; a note's margin is its least certain label's."""
    has, post = label_set_decisions([p.calibration for p in t.parts], s)
    sets = [[y for y, on in zip(t.label_set, row) if on] for row in has]
    keyed = [((row, t.index), {"id": i, "task": t.settings.task, "label": labels,
                               "scores": {y: _finite(v[j]) for j, y in enumerate(t.label_set)}})
             for row, i, labels, v in zip(n.rows, n.ids, sets, s)]
    entry: dict = {"labels": t.labels, "counts": {y: int(has[:, j].sum()) for j, y in enumerate(t.label_set)},
                   "multi_label": True}
    uncertain = []
    if most_uncertain:
        per_label = np.stack([margins(post[:, j]) for j in range(len(t.parts))], axis=1) if len(s) else np.zeros((0, 1))
        m, weakest = per_label.min(axis=1), per_label.argmin(axis=1)
        order = np.argsort(m, kind="stable")[:most_uncertain]
        uncertain = [{"task": t.settings.task, "rank": r + 1, "id": n.ids[j], "label": sets[j], "margin": float(m[j]),
                      "uncertain_label": t.label_set[weakest[j]],
                      "posteriors": {y: _finite(post[j, k]) for k, y in enumerate(t.label_set)}}
                     for r, j in enumerate(order)]
        entry["most_uncertain"] = [n.ids[j] for j in order]
    return keyed, uncertain, entry


def predict(cfg, notes: str, out: str | Path, most_uncertain: int | None = None,
            uncertain_out: str | Path | None = None, progress: bool = True) -> dict:
    """Label every note of ``notes`` for every task of the run of ``cfg`` (a validated recipe);
    write the rows to ``out`` (and the most uncertain notes, when asked). Returns a summary:
    ``out``, ``rows``, ``uncertain_out`` and, per task, ``labels``, ``counts`` (per label: the
    notes labelled with it) and ``most_uncertain`` (ids); ``multi_label`` for a multi-label task."""
    out = output_path(out)
    if most_uncertain is not None and most_uncertain < 1:
        raise InputError(f"--most-uncertain must be at least 1, got {most_uncertain}.")
    uncertain_path = None
    if most_uncertain:
        uncertain_path = output_path(uncertain_out or out.with_name(f"{out.stem}-most-uncertain{out.suffix}"),
                                     "--uncertain-out")
    config = plugin_config(cfg)
    tasks = trained_tasks(cfg, config)  # every check before a model is loaded
    task_notes = read_notes(notes, tasks)
    scores = score_notes(cfg, config, tasks, task_notes, progress)
    keyed, uncertain, summary = [], [], {}
    for t, n, s in zip(tasks, task_notes, scores):
        results = _label_set_results if t.multi_label else _task_results
        rows, most, summary[t.settings.task] = results(t, n, s, most_uncertain)
        keyed += rows
        uncertain += most
    rows = [row for _, row in sorted(keyed, key=lambda kv: kv[0])]
    separators = {t.settings.task: t.settings.label_separator for t in tasks if t.multi_label}
    write_rows(out, rows, separators)
    if uncertain_path is not None:
        write_rows(uncertain_path, uncertain, separators)
    return {"out": str(out), "rows": len(rows), "uncertain_out": str(uncertain_path) if uncertain_path else None,
            "tasks": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="axolotl decselfmask predict",
        description="Label every note of NOTES for every task of RECIPE with its trained classifier (after "
                    "`axolotl train RECIPE`); one row per (note, task): id, task, label, scores.")
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        output_path(args.out)
        if not Path(args.notes).exists():
            raise InputError(f"{NOTES_KEY}: file {args.notes!r} does not exist.")
        cfg = read_recipe(args.recipe)
        result = predict(cfg, args.notes, args.out, args.most_uncertain, args.uncertain_out, not args.no_progress)
    except InputError as exc:
        print(f"decselfmask predict: {exc}", file=sys.stderr)
        return 2
    for task, entry in result["tasks"].items():
        counts = ", ".join(f"{label}: {n}" for label, n in entry["counts"].items())
        print(f"decselfmask predict [{task}]: {counts}")
        if "most_uncertain" in entry:
            print(f"decselfmask predict [{task}]: most uncertain notes (ids): {entry['most_uncertain']}")
    print(f"decselfmask predict: {result['rows']} rows written to {result['out']}"
          + (f"; the most uncertain notes to {result['uncertain_out']}" if result["uncertain_out"] else ""))
    return 0
