"""What a trained run left, as ``predict`` and ``evaluate`` use it: the recipe read without starting
a run, every task's classifier and saved decision found and checked before any model work
(:func:`trained_tasks`), and the classifier loaded as the evaluation had it (:func:`load_classifier`).

A task's classifier is the joint stage-2 LoRA (``<output_dir>/stage2``), the task's own LoRA
(``stage2/<task>``, ``classification.joint: false``), a head on the frozen stage-1 model
(``stage2/heads/<task>``, ``method: head``), or the stage-1 model alone (``classification.train:
false``); its decision is ``stage2/calibration-<task>.json`` (a multi-label task's: one per label,
listed in ``stage2/multilabel-<task>.json``), written by the evaluation (:mod:`.outputs` names the
files).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.files import file_sha256, safe_filename
from axolotl_decselfmask.stage2 import outputs
from axolotl_decselfmask.stage2.calibration import Calibration, calibration_from_record
from axolotl_decselfmask.stage2.task_prompt import task_prompt
from axolotl_decselfmask.stage2.tasks import TaskPrompt

LOG = logging.getLogger(__name__)


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


def checked_prompt(config: DecSelfMaskConfig, t: SavedTask, tokenizer, question: str | None = None) -> TaskPrompt:
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


def load_classifier(cfg, config: DecSelfMaskConfig, t: SavedTask, dtype, what: str = "predict"):
    """The model that scores ``t``'s options, as the evaluation had it: a stage-2 LoRA by
    :func:`.model.load_classifier_model` (merged into its base; QLoRA, unmerged on the 4-bit base),
    else the stage-1 model. ``what`` names the command in the line saying what was loaded."""
    import torch

    from axolotl_decselfmask.stage2 import quantized
    from axolotl_decselfmask.stage2.model import load_classifier_model, load_model, stage1_model_folder

    if t.kind != "lora":
        folder, _ = stage1_model_folder(cfg, config, dtype)
        model = load_model(folder, cfg, dtype, what)
    else:
        model = load_classifier_model(cfg, config, t.folder, dtype, what)
    if torch.cuda.is_available() and not quantized.uses_4bit(cfg):  # a 4-bit model is placed on the GPU as it loads
        model = model.to("cuda")
    return model.eval()


def load_head(t: SavedTask):
    """The trained head of a (sub-)task with ``method: head`` (None for any other classifier)."""
    if t.kind != "head":
        return None
    from axolotl_decselfmask.stage2.head import HeadClassifier

    return HeadClassifier.load(outputs.heads_dir(t.folder), safe_filename(t.settings.task))


def with_batch_size(tasks: list[SavedTask], batch_size: int | None) -> list[SavedTask]:
    """``tasks`` scoring ``batch_size`` notes at a time (``classification.eval_batch_size``; None: the recipe's)."""
    if batch_size is None:
        return tasks
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}.")
    for t in tasks:
        for s in [t, *t.parts]:
            s.settings = s.settings.model_copy(update={"eval_batch_size": batch_size})
    return tasks
