"""Label new notes with a trained run: ``python -m axolotl_decselfmask.predict RECIPE NOTES --out FILE``.

Every task of the recipe labels every note of NOTES with the run's own classifier, loaded as the
evaluation uses it: stage 1 (the stage-2 adapter's base) with the joint stage-2 LoRA
(``<output_dir>/stage2``), the task's own LoRA (``stage2/<task>``, ``classification.joint:
false``), a head on the frozen stage-1 model (``stage2/heads/<task>``, ``method: head``), or the
stage-1 model alone (``classification.train: false``). The options are scored as in the
evaluation (:class:`.evaluation.Scorer`: summed log-probabilities, or a head's
log-probabilities), on the same prompt, with texts cut to the same length; the label is the
task's fitted decision, read from ``stage2/calibration-<task>.json`` (written by the evaluation,
with or without a test file), so no labelled or test file is read.

Output, by the extension of ``--out``: ``.jsonl`` (one object a line) or ``.csv`` (``scores`` as a
JSON list), one row per (note, task), in the notes' order: ``id`` (the notes' id column,
``classification.id_column``, else the 0-based row), ``task``, ``label``, ``scores`` (one value per
option in the order of the task's labels, as in ``predictions-<task>.jsonl``; a non-finite score
is null).

``--most-uncertain N``: per task, the N notes with the smallest margin between the two highest
posteriors of the decision (the calibrated posteriors, whose argmax is the label): those the
classifier is least sure of, the first to label by hand. Written to ``<out stem>-most-uncertain
<suffix>`` (or ``--uncertain-out``) with ``task``, ``rank``, ``id``, ``label``, ``margin`` and
``posteriors``, and their ids printed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from axolotl_decselfmask.args import (
    ClassificationConfig,
    DecSelfMaskConfig,
    plugin_config,
)
from axolotl_decselfmask.io.files import (
    atomic_write_jsonl,
    atomic_write_text,
    file_sha256,
    read_json,
    safe_filename,
)
from axolotl_decselfmask.io.labelled import read_ids
from axolotl_decselfmask.io.tables import (
    InputError,
    clean_texts,
    read_table,
    require_column,
)
from axolotl_decselfmask.stage2.calibration import (
    Calibration,
    calibration_path,
    load_calibration,
)
from axolotl_decselfmask.stage2.data import (
    TaskData,
    TaskPrompt,
    task_prompt,
    truncate_for,
)
from axolotl_decselfmask.stage2.run import STAGE2_DIR

LOG = logging.getLogger(__name__)

OUTPUT_SUFFIXES = (".jsonl", ".csv")
NOTES_KEY = "NOTES"


@dataclass
class SavedTask:
    """One task of a trained run as predict uses it, found and checked before any model work."""

    index: int
    c: ClassificationConfig
    calibration: Calibration
    record: dict  # the calibration file (or, for a run older than it, metrics.json's entry)
    group: Path  # the stage-2 folder of the task's classifier
    kind: str  # lora, head or none (classification.train: false)

    @property
    def labels(self) -> list[str]:
        return list(self.calibration.options)


@dataclass
class ScoredTask:
    """What :class:`.evaluation.Scorer` reads of a task."""

    c: ClassificationConfig
    data: TaskData
    prompt: TaskPrompt


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
    """Every task's classifier and saved decision, checked; an InputError naming what is missing."""
    if not config.classification.enabled:
        raise InputError("decselfmask.classification.enabled is false: this recipe trains no classifier to "
                         "predict with.")
    out = Path(cfg.output_dir)
    shared = config.classification
    together = not shared.train or shared.joint  # as run_stage2 groups the tasks
    kind = shared.method if shared.train else "none"
    tasks = []
    for n, c in enumerate(config.task_configs()):
        group = out / STAGE2_DIR if together else out / STAGE2_DIR / safe_filename(c.task)
        weights = _require_classifier(group, kind, c.task)
        calibration, record = _saved_decision(out, c)
        if c.labels and list(c.labels) != list(calibration.options):
            raise InputError(
                f"decselfmask [{c.task}]: the recipe's labels {list(c.labels)} differ from the options the classifier "
                f"was trained and calibrated with {list(calibration.options)}: restore them or train again.")
        recorded = record.get("weights_sha256")
        if weights is not None and recorded and file_sha256(weights) != recorded:
            raise InputError(
                f"decselfmask [{c.task}]: {weights} changed after its decision was fitted ({record.get('path')}): a "
                "stage 2 stopped before its evaluation? Run `axolotl train` again.")
        tasks.append(SavedTask(n, c, calibration, record, group, kind))
    return tasks


def _require_classifier(group: Path, kind: str, task: str) -> Path | None:
    """The weights file of the task's classifier (None: the stage-1 model alone)."""
    if kind == "none":
        return None
    if kind == "head":
        needed = [group / "heads" / f"{safe_filename(task)}.json", group / "heads" / f"{safe_filename(task)}.safetensors"]
    else:
        needed = [group / "adapter_config.json", group / "adapter_model.safetensors"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        what = "classification head" if kind == "head" else "stage-2 adapter"
        raise InputError(
            f"decselfmask [{task}]: no {what} in {needed[0].parent} ({', '.join(missing)} missing): stage 2 has not "
            "finished for this recipe's output_dir. Run `axolotl train RECIPE` first.")
    return needed[1]


def _saved_decision(out: Path, c: ClassificationConfig) -> tuple[Calibration, dict]:
    """The task's decision as the evaluation fitted it: its calibration file, else (a run from
    before those files) the calibration recorded in ``metrics.json`` (rounded to 6 digits)."""
    path = calibration_path(out, c.task)
    if path.is_file():
        calibration, record = load_calibration(path)
        return calibration, dict(record, path=str(path))
    entry = ((read_json(out / "metrics.json") or {}).get("tasks") or {}).get(c.task) or {}
    if isinstance(entry.get("calibration"), dict) and entry.get("labels"):
        LOG.warning("decselfmask [%s]: no %s; using the decision recorded in metrics.json (rounded)", c.task, path)
        return Calibration.from_dict(entry["calibration"], entry["labels"]), {"path": str(out / "metrics.json")}
    raise InputError(
        f"decselfmask [{c.task}]: no saved decision {path}: stage 2 and its calibration have not finished for this "
        "recipe's output_dir (the file is written at their end). Run `axolotl train RECIPE` first.")


# ------------------------------------------------------------------------------------ the notes


def read_notes(path: str, tasks: list[SavedTask]) -> list[TaskNotes]:
    """Each task's notes of ``path`` (jsonl, csv, ... as the labelled files): its text column (an
    error naming the file and the column when missing), empty texts skipped and counted, ids
    from its id column (else the row numbers)."""
    rows = read_table(path, NOTES_KEY)
    out = []
    for t in tasks:
        column = t.c.text_column
        require_column(rows, column, path, f"decselfmask.classification.text_column of task {t.c.task}")
        texts, kept, report = clean_texts([r.get(column) for r in rows], path, column)
        if report.skipped_empty:
            LOG.warning("decselfmask predict: %s", report.summary(path))
        out.append(TaskNotes(texts, kept, read_ids(rows, kept, t.c.id_column, path)))
    return out


# ---------------------------------------------------------------------------------- the scoring


def score_notes(cfg, config: DecSelfMaskConfig, tasks: list[SavedTask], notes: list[TaskNotes],
                progress: bool = True) -> list[np.ndarray]:
    """Each task's option scores of its notes, shape (notes, options), one model per stage-2 folder."""
    from axolotl_decselfmask.hardware import recipe_precision
    from axolotl_decselfmask.prompts import ensure_chat_template
    from axolotl_decselfmask.stage2.evaluation import Scorer
    from axolotl_decselfmask.stage2.model import load_tokenizer

    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    dtype = recipe_precision(cfg).torch_dtype()
    groups: dict[Path, list[SavedTask]] = {}
    for t in tasks:
        groups.setdefault(t.group, []).append(t)
    scores: list = [None] * len(tasks)
    for members in groups.values():
        model = load_classifier(cfg, config, members[0], dtype)
        for t in members:
            prompt = _checked_prompt(config, t, tokenizer)
            max_length = t.record.get("max_length") or t.c.max_length or cfg.sequence_len
            texts, n_cut = truncate_for(tokenizer, t.c, t.labels, max_length, notes[t.index].texts, prompt)
            print(f"decselfmask predict [{t.c.task}]: {len(texts)} notes, options {t.labels} ({n_cut} cut to fit "
                  f"{max_length} tokens)")
            head = None
            if t.kind == "head":
                from axolotl_decselfmask.stage2.head import HeadClassifier

                head = HeadClassifier.load(t.group / "heads", safe_filename(t.c.task))
            scorer = Scorer(model, tokenizer, ScoredTask(t.c, TaskData(None, None, t.labels), prompt), progress,
                            head, {})
            scores[t.index] = scorer(texts)
        del model
    return scores


def _checked_prompt(config: DecSelfMaskConfig, t: SavedTask, tokenizer) -> TaskPrompt:
    """The task's prompt from the recipe; an error when it is not the one the decision was fitted on."""
    prompt = task_prompt(config, t.index, tokenizer)
    saved = (t.record.get("question"), t.record.get("system_prompt"))
    if saved[0] is not None and saved != (prompt.question, prompt.system_prompt):
        raise InputError(
            f"decselfmask [{t.c.task}]: the recipe's classification prompt (question {prompt.question!r}) is not the "
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

        base = json.loads((t.group / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        if not Path(base).exists():
            if Path(base).name == MERGED_DIR:  # output_dir moved, or the folder removed: output_dir's, made again
                base, _ = stage1_model_folder(cfg, config, dtype)
            elif Path(base).is_absolute():
                raise InputError(f"decselfmask [{t.c.task}]: the base of the stage-2 adapter {t.group}, {base}, is "
                                 "missing; put it back or train again.")
        model = PeftModel.from_pretrained(load_model(base, cfg, dtype), str(t.group)).merge_and_unload()
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


def write_rows(path: Path, rows: list[dict]) -> None:
    """``rows`` as JSON Lines, or as CSV with list values written as JSON, by ``path``'s extension."""
    if path.suffix.lower() == ".jsonl":
        atomic_write_jsonl(path, rows)
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["id", "task", "label", "scores"])
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                         for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def predict(cfg, notes: str, out: str | Path, most_uncertain: int | None = None,
            uncertain_out: str | Path | None = None, progress: bool = True) -> dict:
    """Label every note of ``notes`` for every task of the run of ``cfg`` (a validated recipe);
    write the rows to ``out`` (and the most uncertain notes, when asked). Returns a summary:
    ``out``, ``rows``, ``uncertain_out`` and, per task, ``labels``, ``counts`` and ``most_uncertain`` (ids)."""
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
        pred, post = t.calibration.decide(s) if len(s) else (np.zeros(0, dtype=int), np.zeros((0, len(t.labels))))
        labels = [t.labels[i] for i in pred]
        keyed += [((row, t.index), {"id": i, "task": t.c.task, "label": y, "scores": _finite(v)})
                  for row, i, y, v in zip(n.rows, n.ids, labels, s)]
        entry = {"labels": t.labels, "counts": {o: labels.count(o) for o in t.labels}}
        if most_uncertain:
            m = margins(post) if len(post) else np.zeros(0)
            order = np.argsort(m, kind="stable")[:most_uncertain]
            uncertain += [{"task": t.c.task, "rank": r + 1, "id": n.ids[j], "label": labels[j],
                           "margin": float(m[j]), "posteriors": _finite(post[j])} for r, j in enumerate(order)]
            entry["most_uncertain"] = [n.ids[j] for j in order]
        summary[t.c.task] = entry
    rows = [row for _, row in sorted(keyed, key=lambda kv: kv[0])]
    write_rows(out, rows)
    if uncertain_path is not None:
        write_rows(uncertain_path, uncertain)
    return {"out": str(out), "rows": len(rows), "uncertain_out": str(uncertain_path) if uncertain_path else None,
            "tasks": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m axolotl_decselfmask.predict",
        description="Label every note of NOTES for every task of RECIPE with its trained classifier (after "
                    "`axolotl train RECIPE`); one row per (note, task): id, task, label, scores.")
    parser.add_argument("recipe", help="the recipe the run was trained with")
    parser.add_argument("notes", help="the notes: .jsonl, .json, .csv, .tsv, .parquet or a save_to_disk folder, "
                                      "with the recipe's text column (and optionally its id column)")
    parser.add_argument("--out", required=True, help="the predictions file: .jsonl or .csv")
    parser.add_argument("--most-uncertain", type=int, metavar="N",
                        help="also list, per task, the N notes with the smallest margin between the two highest "
                             "calibrated posteriors (the first to label by hand)")
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
