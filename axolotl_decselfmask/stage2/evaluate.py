"""Score a trained run again, without training: ``axolotl decselfmask evaluate RECIPE [LABELLED_FILE] --out DIR``.

Every task of the run (``--task``: one) is scored with its classifier and its saved decision, as
:mod:`.saved_run` finds them (nothing is fitted again), into ``DIR/metrics.json`` of the same shape
as the run's (each task's entry as the evaluation writes it, :mod:`.evaluation`, with
``evaluated_file`` added), ``DIR/predictions-<task>.jsonl``, and beside them a confusion matrix and a
reliability diagram per task (:mod:`.figures`; :mod:`.outputs` names every file).

Without LABELLED_FILE each task's own test side is scored (``classification.test_file``, or the
run's saved ``test_fraction`` split) with the recipe's settings, texts cut as the run cut them: its
figures are the run's ``metrics.json``'s. With LABELLED_FILE (the recipe's text and label columns,
labels among the run's) every row of that file is scored (``max_test_examples`` does not apply);
for a recipe with several tasks ``--task`` says which task the file's labels are for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from axolotl_decselfmask.args import DecSelfMaskConfig, plugin_config
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2 import figures, outputs
from axolotl_decselfmask.stage2.data import load_any_task_data
from axolotl_decselfmask.stage2.metrics import format_table, result_from_scores
from axolotl_decselfmask.stage2.multilabel import expand_tasks, multilabel_result, prediction_rows
from axolotl_decselfmask.stage2.saved_run import (
    SavedTask,
    load_classifier,
    load_head,
    read_recipe,
    trained_tasks,
    with_batch_size,
)
from axolotl_decselfmask.stage2.scoring import Scorer, SharedPrefixScorer, shared_test_scorers
from axolotl_decselfmask.stage2.task_prompt import task_prompt_for, truncate_for
from axolotl_decselfmask.stage2.tasks import Task, task_groups

LABELLED_KEY = "LABELLED_FILE"


def chosen_tasks(saved: list[SavedTask], task: str | None, labelled: str | None) -> list[SavedTask]:
    """The tasks to score: ``task`` (an error naming the run's tasks when it has none of that name),
    else all; a labelled file for a recipe with several tasks needs ``task``."""
    names = [t.settings.task for t in saved]
    if task is not None:
        if task not in names:
            raise InputError(f"--task {task!r}: the recipe has no such task; its tasks are {names}.")
        return [t for t in saved if t.settings.task == task]
    if labelled is not None and len(saved) > 1:
        raise InputError(f"{LABELLED_KEY}: the recipe has {len(saved)} tasks ({', '.join(names)}): say with --task "
                         "which task the file's labels are for.")
    return saved


def _task(cfg, config: DecSelfMaskConfig, t: SavedTask, labelled: str | None, tokenizer) -> Task:
    """Task ``t`` read and cut as the run's evaluation had it, its test side the run's or ``labelled``."""
    c = t.settings
    if labelled is not None:
        c = c.model_copy(update={"test_file": str(labelled), "test_fraction": None, "max_test_examples": None})
    elif not c.test_file and c.test_fraction is None:
        raise InputError(f"decselfmask [{c.task}]: the recipe has no classification.test_file or test_fraction, so "
                         f"there is nothing of its own to score: give a {LABELLED_KEY}.")
    data = load_any_task_data(c, cfg.output_dir, config.seed)
    prompt = task_prompt_for(config, t.index, tokenizer, data)
    record = t.parts[0].record if t.multi_label else t.record
    max_length = record.get("max_length") or c.max_length or cfg.sequence_len
    texts = data.test.texts[: c.max_test_examples] if c.max_test_examples else data.test.texts
    gold = data.test.labels[: len(texts)]
    texts, n_cut = truncate_for(tokenizer, c, data.labels, max_length, texts, prompt)
    print(f"decselfmask evaluate [{c.task}]: {len(texts)} labelled notes of {c.test_file or 'its test_fraction split'}"
          f" ({n_cut} cut to fit {max_length} tokens)")
    return Task(c, data, prompt, max_length, [], [], texts, gold)


def prepare(cfg, config: DecSelfMaskConfig, chosen: list[SavedTask], labelled: str | None, tokenizer) -> list[Task]:
    """The chosen tasks read and cut, a multi-label task replaced by its label questions."""
    placeholder = SimpleNamespace(data=SimpleNamespace(multi_label=False))  # expand_tasks counts the recipe's tasks
    by_index = {t.index: _task(cfg, config, t, labelled, tokenizer) for t in chosen}
    every = [by_index.get(n, placeholder) for n in range(max(by_index) + 1)]
    return [t for t in expand_tasks(config, every, tokenizer) if t is not placeholder]


def _decisions(saved: list[SavedTask]) -> dict:
    """Each (sub-)task's saved decision, by name."""
    return {s.settings.task: s.calibration for t in saved for s in ([*t.parts] or [t])}


def _run_entry(cfg, name: str) -> dict:
    return ((outputs.read_metrics(cfg.output_dir) or {}).get("tasks") or {}).get(name) or {}


def _single(cfg, out: Path, t: Task, scorer, calibration, evaluated: str) -> tuple[dict, dict]:
    """A single-label task scored: its metrics.json entry written (the run's other keys kept), and
    what its pictures show."""
    result = result_from_scores(scorer(t.test_texts), t.gold, t.data.labels, calibration)
    kept = set(outputs.REQUIRED_KEYS) | set(outputs.OPTIONAL_KEYS)
    extra = {k: v for k, v in _run_entry(cfg, t.name).items() if k not in kept}
    extra["evaluated_file"] = evaluated
    metrics = outputs.write_metrics(out, t.name, result, extra=extra)
    n = len(t.gold)
    outputs.write_predictions(out, t.name, t.data.test.ids[:n], t.data.test.rows[:n], t.gold, result["predictions"],
                              result["scores"], t.data.labels)
    post = calibration.decide(result["scores"])[1] if n else np.zeros((0, len(t.data.labels)))
    picture = {"matrices": [(t.name, t.data.labels, result["confusion_matrix"]["matrix"])],
               "confidence": post.max(axis=1) if n else [],
               "correct": [p == g for p, g in zip(result["predictions"], t.gold)]}
    return metrics, picture


def _label_set(cfg, out: Path, parts: list[Task], scorers: list, decisions: dict, evaluated: str) -> tuple[dict, dict]:
    """A multi-label task scored from its label questions (as :func:`.evaluation.evaluate_label_set`,
    with the saved decisions)."""
    group = parts[0].parent
    results = [result_from_scores(s(t.test_texts), t.gold, t.data.labels, decisions[t.name])
               for t, s in zip(parts, scorers)]
    entry = multilabel_result(parts, results)
    run = _run_entry(cfg, group.name)
    for k, v in run.items():
        entry.setdefault(k, v)
    for y, per_label in entry["per_label"].items():
        for k, v in ((run.get("per_label") or {}).get(y) or {}).items():
            per_label.setdefault(k, v)
    entry["evaluated_file"] = evaluated
    metrics = outputs.write_metrics(out, group.name, entry, extra=entry)
    outputs.write_prediction_rows(out, group.name, prediction_rows(parts, results))
    posts = [decisions[t.name].decide(r["scores"])[1] for t, r in zip(parts, results) if len(r["scores"])]
    picture = {"matrices": [(t.label, t.data.labels, r["confusion_matrix"]["matrix"]) for t, r in zip(parts, results)],
               "confidence": np.concatenate([p.max(axis=1) for p in posts]) if posts else [],
               "correct": [p == g for t, r in zip(parts, results) for p, g in zip(r["predictions"], t.gold)]}
    return metrics, picture


def _score_group(cfg, config, out: Path, saved: list[SavedTask], tasks: list[Task], tokenizer, dtype,
                 evaluated: str, progress: bool) -> tuple[dict, dict]:
    """The tasks of one classifier scored with their saved decisions (shared prefixes as in the run)."""
    model = load_classifier(cfg, config, saved[0], dtype, "evaluate")
    decisions = _decisions(saved)
    heads = {s.settings.task: load_head(s) for t in saved for s in ([*t.parts] or [t])} if saved[0].kind == "head" else {}
    metrics, pictures = {}, {}
    features: dict = {}  # heads on the same test notes: each note's prompt prefix once (stage2/shared_features.py)
    if heads:
        from axolotl_decselfmask.stage2.shared_features import FeatureRequest, prefetch_features

        wanted = [FeatureRequest(t.test_texts, h.labels, t.prompt.question, t.prompt.system_prompt, h.position,
                                 h.mask_id, h.settings.prompt)
                  for t in tasks if t.test_texts and (h := heads.get(t.name)) is not None]
        prefetch_features(model, tokenizer, wanted, features, min(t.settings.eval_batch_size for t in tasks),
                          progress, min(t.settings.option_chunk for t in tasks))
    for name, parts in task_groups([t for t in tasks if t.parent is not None]):
        if heads:
            scorers = [Scorer.of(model, tokenizer, t, progress, heads[t.name], features) for t in parts]
        else:
            shared = SharedPrefixScorer(model, tokenizer, parts, progress)
            scorers = [shared.part(i) for i in range(len(parts))]
        metrics, pictures[name] = _label_set(cfg, out, parts, scorers, decisions, evaluated)
    singles = [t for t in tasks if t.parent is None]
    shared = {} if heads else shared_test_scorers(model, tokenizer, singles, progress)
    for t in singles:
        scorer = shared.get(t.name) or Scorer.of(model, tokenizer, t, progress, heads.get(t.name), features)
        metrics, pictures[t.name] = _single(cfg, out, t, scorer, decisions[t.name], evaluated)
    del model
    return metrics, pictures


def evaluate(cfg, out: str | Path, labelled: str | None = None, task: str | None = None, progress: bool = True,
             batch_size: int | None = None) -> dict:
    """Score the run of ``cfg`` (a recipe, :func:`.saved_run.read_recipe`) on its test sides, or on
    ``labelled``, with its saved decisions; write ``out/metrics.json``, the predictions and the
    pictures. Returns ``{"metrics": ..., "figures": [paths]}``."""
    from axolotl_decselfmask.hardware import recipe_precision
    from axolotl_decselfmask.prompts import ensure_chat_template
    from axolotl_decselfmask.stage2.model import load_tokenizer

    out = Path(out)
    if out.resolve() == Path(cfg.output_dir).resolve():
        raise InputError(f"--out {out}: that is the run's output_dir; evaluate writes its own metrics.json, beside "
                         "the run's, not over it: choose another folder.")
    if labelled is not None and not Path(labelled).exists():
        raise InputError(f"{LABELLED_KEY}: file {str(labelled)!r} does not exist.")
    config = plugin_config(cfg)
    chosen = chosen_tasks(with_batch_size(trained_tasks(cfg, config), batch_size), task, labelled)
    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    tasks = prepare(cfg, config, chosen, labelled, tokenizer)  # every file read and checked before a model loads
    out.mkdir(parents=True, exist_ok=True)
    outputs.forget_metrics(out)
    evaluated = str(labelled) if labelled is not None else "the recipe's test side"
    dtype = recipe_precision(cfg).torch_dtype()
    groups: dict[Path, list[SavedTask]] = {}
    for t in chosen:
        groups.setdefault(t.folder, []).append(t)
    metrics, pictures = {}, {}
    for members in groups.values():
        names = {t.settings.task for t in members}
        mine = [t for t in tasks if t.group in names]
        found, drawn = _score_group(cfg, config, out, members, mine, tokenizer, dtype, evaluated, progress)
        metrics, pictures = found or metrics, pictures | drawn
    return {"metrics": metrics, "figures": draw(out, pictures)}


def draw(out: Path, pictures: dict) -> list[str]:
    """Each task's confusion matrix and reliability diagram, when matplotlib is installed."""
    if not figures.can_draw():
        print(figures.missing_message())
        return []
    drawn = []
    for name, p in pictures.items():
        confusion, reliable = outputs.figure_paths(out, name)
        figures.draw_confusion(confusion, f"{name}: confusion matrix (rows gold, columns predicted)", p["matrices"])
        figures.draw_reliability(reliable, f"{name}: reliability", figures.reliability(p["confidence"], p["correct"]))
        drawn += [str(confusion), str(reliable)]
    return drawn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="axolotl decselfmask evaluate",
        description="Score a trained run with its saved decisions, without training: on each task's own test side "
                    "(reproducing the run's metrics.json), or on every row of LABELLED_FILE. Writes OUT/metrics.json, "
                    "the predictions, and per task a confusion matrix and a reliability diagram (PNG).")
    parser.add_argument("recipe", help="the recipe the run was trained with")
    parser.add_argument("labelled", nargs="?", metavar="LABELLED_FILE",
                        help="a labelled file with the recipe's text and label columns (default: each task's own "
                             "test_file or test_fraction split)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder of metrics.json and the pictures")
    parser.add_argument("--task", help="the task to score (needed with LABELLED_FILE when the recipe has several)")
    parser.add_argument("--batch-size", type=int, metavar="N",
                        help="notes scored together (default: the recipe's classification.eval_batch_size)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        cfg = read_recipe(args.recipe)
        result = evaluate(cfg, args.out, args.labelled, args.task, not args.no_progress, args.batch_size)
    except InputError as exc:
        print(f"decselfmask evaluate: {exc}", file=sys.stderr)
        return 2
    if result["metrics"]:
        print(format_table(result["metrics"]))
    print(f"decselfmask evaluate: {outputs.metrics_path(args.out)}"
          + (f" and {len(result['figures'])} pictures beside it" if result["figures"] else ""))
    return 0
