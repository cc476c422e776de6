"""The evaluation of every task: its test file scored, the calibrated decision, ``metrics.json`` and
``predictions-<task>.jsonl``, and the decision kept (also without a test file) for :mod:`.predict`
(the files: :mod:`.outputs`).

A task's classifier is a :class:`.scoring.Scorer`: the generative model's option scores, or a
trained head's log-probabilities (``classification.method: head``, :mod:`.head`). The decision is
``classification.calibration``'s (:mod:`.calibration`), fitted on the labelled examples' scores
and, for the pool modes, on unlabelled pool notes' scores; the test file is read only to be scored
and compared, after the decision rule is fixed. A multi-label task is evaluated from its label
questions (:func:`evaluate_label_set`), each decided on its own, their decisions gathered by
:mod:`.multilabel`. With ``classification.scorer: string_match`` or ``both`` the test notes are
also scored as the authors' evaluation scores them (:func:`evaluate_string_match`), beside.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.prompts import classification_messages, tokenize_for_training
from axolotl_decselfmask.stage2 import outputs
from axolotl_decselfmask.stage2.calibration import calibrate, calibration_record
from axolotl_decselfmask.stage2.metrics import format_table, result_from_scores
from axolotl_decselfmask.stage2.multilabel import (
    label_table,
    multilabel_result,
    prediction_rows,
)
from axolotl_decselfmask.stage2.scoring import Scorer, SharedPrefixScorer
from axolotl_decselfmask.stage2.string_match import (
    answer_ids,
    answer_string,
    header_and_special,
    header_miss,
    header_start,
    score_strings,
    teacher_forced_argmax,
)
from axolotl_decselfmask.stage2.tasks import Task, task_groups

LOG = logging.getLogger(__name__)


def evaluate_task(cfg, config: DecSelfMaskConfig, task: Task, scorer: Scorer, pool_texts: list[str] | None = None) -> dict:
    """Score ``task``'s test texts and write its metrics and predictions.

    ``pool_texts``: unlabelled notes for the pool calibration modes, cut to the task's prompt.
    Returns the whole ``metrics.json`` (empty without a test file).
    """
    c, labels = task.settings, task.data.labels
    calibration = calibrate(task, scorer, pool_texts)  # fixed before the test file is scored
    saved = save_decision(cfg, task, calibration, scorer)
    if task.test_texts is None:
        LOG.warning("decselfmask: no classification.test_file or test_fraction for %s: no evaluation; its decision "
                    "(calibration %s) is saved to %s for predict", c.task, c.calibration, saved)
        return {}
    result = result_from_scores(scorer(task.test_texts), task.gold, labels, calibration)
    metrics = outputs.write_metrics(cfg.output_dir, c.task, result, extra=task.run_info)
    n = len(task.gold)
    outputs.write_predictions(cfg.output_dir, c.task, task.data.test.ids[:n], task.data.test.rows[:n], task.gold,
                              result["predictions"], result["scores"], labels)
    logged = {k: result[k] for k in ("macro_f1", "macro_f1_argmax", "accuracy")}
    if "probe_macro_f1" in task.run_info:
        logged["probe_macro_f1"] = task.run_info["probe_macro_f1"]
    log_metrics(cfg, c.task, logged)
    how = "a head on the frozen model" if scorer.head is not None else "constrained scoring of the label options"
    print(f"decselfmask evaluation [{c.task}] ({how}; decision: calibration {c.calibration}):")
    print(format_table(metrics))
    print(f"metrics written to {outputs.metrics_path(cfg.output_dir)}")
    return metrics


def save_decision(cfg, task: Task, calibration, scorer: Scorer) -> Path:
    """The task's fitted decision and how its scores are made, for predict
    (:func:`.outputs.write_calibration`): the options, the prompt, the classifier and its weights' sha256."""
    from axolotl_decselfmask.io.files import file_sha256

    weights = None
    if scorer.head is not None:
        weights = Path(task.run_info.get("stage2_head", "")).with_suffix(".safetensors")
    elif task.run_info.get("stage2_adapter"):
        weights = Path(task.run_info["stage2_adapter"]) / "adapter_model.safetensors"
    record = calibration_record(
        calibration, task=task.name, labels=list(task.data.labels),
        classifier="head" if scorer.head is not None else "lora" if weights else "none",
        weights=str(weights) if weights else None,
        weights_sha256=file_sha256(weights) if weights and weights.is_file() else None,
        question=task.prompt.question, system_prompt=task.prompt.system_prompt,
        prompt=task.prompt.style, max_length=task.max_length)
    return outputs.write_calibration(cfg.output_dir, task.name, record)


def save_label_set_decisions(cfg, parts: list[Task], scorers: list, calibrations: list) -> Path:
    """Each label's fitted decision (:func:`save_decision`, under ``<task>/<label>``), and the
    multi-label task's record of them (:func:`.outputs.write_label_set_record`), for predict."""
    task = parts[0].parent
    files = {t.label: str(save_decision(cfg, t, cal, s)) for t, s, cal in zip(parts, scorers, calibrations)}
    return outputs.write_label_set_record(cfg.output_dir, task.name, {
        "task": task.name, "labels": list(task.data.label_set), "answers": list(task.data.labels),
        "label_question": task.settings.label_question, "sub_tasks": {t.label: t.name for t in parts},
        "questions": {t.label: t.prompt.question for t in parts}, "calibrations": files})


def evaluate_label_set(cfg, config: DecSelfMaskConfig, parts: list[Task], scorers: list) -> dict:
    """Evaluate one multi-label task from its label questions ``parts`` and their scorers: each
    label's decision calibrated on its own before the test texts are scored, then one
    ``metrics.json`` entry under the task's name and ``predictions-<task>.jsonl``.
    Returns the whole ``metrics.json`` (empty without a test file)."""
    task = parts[0].parent
    calibrations = [calibrate(t, s, t.calibration_pool) for t, s in zip(parts, scorers)]  # no test text yet
    saved = save_label_set_decisions(cfg, parts, scorers, calibrations)
    if parts[0].test_texts is None:
        LOG.warning("decselfmask: no classification.test_file or test_fraction for %s: no evaluation; its decisions "
                    "(one per label) are saved, listed in %s, for predict", task.name, saved)
        return {}
    results = [result_from_scores(s(t.test_texts), t.gold, t.data.labels, cal)
               for t, s, cal in zip(parts, scorers, calibrations)]
    entry = multilabel_result(parts, results)
    metrics = outputs.write_metrics(cfg.output_dir, task.name, entry, extra=entry)  # every key of the entry
    outputs.write_prediction_rows(cfg.output_dir, task.name, prediction_rows(parts, results))
    log_metrics(cfg, task.name, {k: entry[k] for k in ("macro_f1", "micro_f1", "accuracy", "macro_f1_argmax")})
    print(f"decselfmask evaluation [{task.name}] (multi-label: {len(parts)} yes/no questions; decision: "
          f"calibration {task.settings.calibration}, fitted per label): Macro F1 over labels {entry['macro_f1']:.4f}, "
          f"micro F1 {entry['micro_f1']:.4f}")
    print(label_table(entry))
    print(format_table(metrics))
    return metrics


def evaluate_label_sets(cfg, config: DecSelfMaskConfig, tasks: list[Task], model, tokenizer, progress: bool,
                        heads: dict, features: dict) -> dict:
    """Evaluate every multi-label task among ``tasks`` (the label questions' scores on each note's
    shared prefix, or a head's per label). Returns the whole ``metrics.json`` ({} when none was written)."""
    metrics: dict = {}
    for _, parts in task_groups([t for t in tasks if t.parent is not None]):
        if heads:
            scorers = [Scorer.of(model, tokenizer, t, progress, heads.get(t.name), features) for t in parts]
        else:
            shared = SharedPrefixScorer(model, tokenizer, parts, progress)
            scorers = [shared.part(i) for i in range(len(parts))]
        metrics = evaluate_label_set(cfg, config, parts, scorers) or metrics
    return metrics


# ------------------------------------------------------------- the authors' string-match scorer

def string_match_rows(tokenizer, task: Task, answers: list[str], texts: list[str]) -> list[dict]:
    """Rows in the stage-2 training format (chat template, ``answers[i]`` + end of turn), every
    token labelled, as the authors' rows are (their labels are the input ids)."""
    return [tokenize_for_training(tokenizer, classification_messages(x, task.prompt.question, task.data.labels,
                                                                     task.prompt.system_prompt, answer=y),
                                  train_on_inputs=True) for x, y in zip(texts, answers)]


def option_rows(tokenizer, task: Task, texts: list[str]) -> list[dict]:
    """One row per option of ``task`` on the first of ``texts``: what an in-format answer's ids are."""
    return string_match_rows(tokenizer, task, task.data.labels, texts[:1] * len(task.data.labels))


def _read_answers(model, tokenizer, tasks: list[Task], batch_size: int) -> tuple[dict, dict]:
    """Each task's notes read as the authors' evaluation reads them: ``{task: [record per note]}``
    (``gold``, ``pred``: the answers' joined ids; ``answer``: the predicted answer's text;
    ``off_format``: the prediction is none of the task's options), and how they were read."""
    header, special, text, rule = header_and_special(tokenizer)
    rows, owner, valid, notes = [], [], {}, []
    for t in tasks:
        rows += string_match_rows(tokenizer, t, t.gold, t.test_texts)
        owner += [t.name] * len(t.gold)
        notes += list(t.test_texts)  # the rows of one note (tasks on the same test notes) share its prefix
        valid[t.name] = {answer_string(r["labels"], header, special) for r in option_rows(tokenizer, t, t.test_texts)}
    missing = sorted({owner[i] for i, r in enumerate(rows) if header_start(r["labels"], header) < 0})
    if missing:
        raise ValueError(f"string_match: the assistant header {text!r} (ids {header}) is not among the ids of the "
                         f"rendered rows of task(s) {missing}: the template tokenises it otherwise in context; "
                         "use classification.scorer: options with this template")
    was_training = model.training
    model.eval()
    predicted, gold = teacher_forced_argmax(model, tokenizer, rows, batch_size=batch_size, shift=False, groups=notes,
                                            row_chunk=min(t.settings.option_chunk for t in tasks))
    model.train(was_training)
    out: dict[str, list[dict]] = {}
    for p, g, task in zip(predicted, gold, owner):
        pred = answer_string(p, header, special)
        record = {"gold": answer_string(g, header, special), "pred": pred, "off_format": pred not in valid[task],
                  "answer": tokenizer.decode(answer_ids(p, header, special)), "header_found": header_start(p, header) >= 0}
        miss = header_miss(p, g, header)
        if miss is not None:  # why the whole sequence is the answer: the header token mispredicted, and as what
            record["header_miss"] = {"expected": tokenizer.decode([header[miss[0]]]),
                                     "predicted": tokenizer.decode([miss[1]])}
        out.setdefault(task, []).append(record)
    how = {"header": text, "header_ids": header, "header_rule": rule, "shift": False}
    return out, how


def _figures(notes: list[dict], how: dict) -> dict:
    """The string-match figures of ``notes``; ``off_format_no_header``: the share of notes whose predicted
    sequence holds no header (so the whole sequence is the answer), None where a note was scored before the
    records said (``header_found`` absent)."""
    s = score_strings([n["gold"] for n in notes], [n["pred"] for n in notes], ["all"] * len(notes),
                      [n["off_format"] for n in notes])
    found = [n.get("header_found") for n in notes]
    no_header = None if None in found else sum(not f for f in found) / len(found)
    return {"macro_f1": s.macro_f1, "micro_f1": s.micro_f1, "off_format": s.off_format,
            "off_format_no_header": no_header, "n": s.n, **how}


def _why_off(notes: list[dict]) -> str:
    """`` (k without the header: 'x' predicted for 'y' k times, ...)`` for the notes whose header is missing."""
    misses = Counter((n["header_miss"]["predicted"], n["header_miss"]["expected"]) for n in notes if "header_miss" in n)
    missing = sum(n.get("header_found") is False for n in notes)
    if not missing:
        return ""
    said = ", ".join(f"{p!r} predicted for {e!r} {k}x" for (p, e), k in misses.most_common(3))
    return f" ({missing} without the header" + (f": {said}" if said else "") + ")"


def evaluate_string_match(cfg, config: DecSelfMaskConfig, tasks: list[Task], model, tokenizer,
                          heads: dict) -> dict:
    """With ``classification.scorer: string_match`` or ``both``, after the option evaluation: the
    test notes of ``tasks`` scored as the authors' evaluation scores them (:mod:`.string_match`),
    into ``metrics.json`` beside the option figures (per task, and pooled over every task the
    output folder holds) and each note's answers into ``predictions-<task>.jsonl``
    (:func:`.outputs.add_string_match`). A multi-label task is read from its yes/no label questions,
    each note's answers kept per label. Returns the whole ``metrics.json`` ({} when nothing is scored)."""
    scored = [t for t in tasks if t.test_texts is not None]
    if config.classification.scorer == "options" or not scored:
        return {}
    if heads:
        LOG.warning("decselfmask: classification.scorer %s reads the generative model's answers; with method: head "
                    "there are none to read: only the head's figures are written", config.classification.scorer)
        return {}
    notes, how = _read_answers(model, tokenizer, scored, config.classification.eval_batch_size)
    print(f"decselfmask string_match: answers read after the assistant header {how['header']!r} (ids "
          f"{how['header_ids']}, {how['header_rule']} rule), the tokenizer's added tokens dropped"
          f"{' and the newline' if how['header_rule'] == 'chatml' else ''}; the argmax at each position, unshifted")
    for name, parts in task_groups(scored):
        if parts[0].parent is None:
            records = notes[name]
        else:
            records = [{"per_label": {p.label: notes[p.name][i] for p in parts}} for i in range(len(parts[0].gold))]
        flat = [r for p in parts for r in notes[p.name]]
        figures = _figures(flat, how)
        outputs.add_string_match(cfg.output_dir, name, figures, records)
        print(f"  [{name}] string-match Macro F1 {figures['macro_f1']:.4f}, off format "
              f"{sum(r['off_format'] for r in flat)}/{len(flat)}{_why_off(flat)}")
    every = outputs.string_match_notes(cfg.output_dir)  # every task scored so far (joint: false: other groups)
    per_task = {t: _figures(v, how)["macro_f1"] for t, v in every.items()}
    pooled = _figures([r for v in every.values() for r in v], how)
    pooled.update(mean_per_task_macro_f1=sum(per_task.values()) / len(per_task), n_tasks=len(per_task))
    print(f"decselfmask string_match pooled over {len(per_task)} task(s): Macro F1 {pooled['macro_f1']:.4f} "
          f"(mean of tasks {pooled['mean_per_task_macro_f1']:.4f}), off format {pooled['off_format']:.3f}"
          + (f" ({pooled['off_format_no_header']:.3f} without the header: the model, teacher-forced, does not predict "
             "it after the prompt, so its whole sequence is the answer; docs/method.md)"
             if pooled["off_format_no_header"] else ""))
    return outputs.write_string_match_pooled(cfg.output_dir, pooled)


def log_metrics(cfg, task: str, values: dict[str, float]) -> None:
    """The evaluation's metrics into the loggers the recipe configures (tensorboard under
    ``<output_dir>/runs/decselfmask``, and the active wandb run), as ``decselfmask/<task>/<name>``."""
    tags = {f"decselfmask/{task}/{k}": float(v) for k, v in values.items()}
    if cfg.use_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "runs" / "decselfmask"))
        for tag, value in tags.items():
            writer.add_scalar(tag, value, 0)
        writer.close()
    if cfg.use_wandb:
        try:
            import wandb
        except ImportError:
            return
        if wandb.run is not None:
            wandb.log(tags)
