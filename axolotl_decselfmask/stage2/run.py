"""Stage 2: supervised classification fine-tuning with TRL, then the evaluation of every task.

Runs after stage 1 in the same ``axolotl train``. The stage-1 model, as one folder (see
:mod:`.model`), is the starting point. By default (``classification.joint: true``, the paper's
procedure) one fresh LoRA is trained with TRL's ``SFTTrainer`` (:mod:`.training`) on the labelled
examples of all tasks together, each example in its own task's prompt (question and options), and
saved to ``<output_dir>/stage2``; with ``joint: false`` each task gets its own LoRA in
``<output_dir>/stage2/<task>`` (:mod:`.outputs`). Each task is then scored on its own test file
(:mod:`.evaluation`) into ``<output_dir>/metrics.json`` and ``predictions-<task>.jsonl``; tasks of
one model whose test notes are the same (one test set shared by the tasks of a corpus) are scored
together, each note's prompt prefix once (:func:`.scoring.shared_test_scorers`).

Tasks with different seeds (a task's ``seed``: the comparison runner's seeds over one shared
stage 1) never share a classifier: the joint LoRA is one per seed, ``stage2/seed<k>``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.hardware import environment, recipe_precision
from axolotl_decselfmask.io.files import fingerprint
from axolotl_decselfmask.prompts import ensure_chat_template
from axolotl_decselfmask.stage1.checkpoints import stage1_weights_key
from axolotl_decselfmask.stage2 import outputs
from axolotl_decselfmask.stage2.calibration import POOL_MODES, calibration_pool_texts
from axolotl_decselfmask.stage2.data import load_any_task_data
from axolotl_decselfmask.stage2.evaluation import (
    evaluate_label_sets,
    evaluate_string_match,
    evaluate_task,
)
from axolotl_decselfmask.stage2.model import (
    classifier_after_training,
    load_model,
    load_tokenizer,
    stage1_model_folder,
)
from axolotl_decselfmask.stage2.multilabel import expand_tasks
from axolotl_decselfmask.stage2.scoring import Scorer, shared_test_scorers
from axolotl_decselfmask.stage2.task_prompt import (
    task_prompt_for,
    text_budget,
    truncate_for,
)
from axolotl_decselfmask.stage2.tasks import Task, task_groups
from axolotl_decselfmask.stage2.training import task_rows, train_classifier

LOG = logging.getLogger(__name__)


def check_inputs(cfg, config: DecSelfMaskConfig) -> None:
    """Before stage 1 (the plugin's ``load_datasets``): every task's files read and checked, and its
    classification prompt measured against its ``max_length``; a warning when the hub upload will
    find no token."""
    tokenizer = None
    for n, task in enumerate(config.task_configs()):
        data = load_any_task_data(task, cfg.output_dir, config.seed)  # a multi-label task too
        LOG.info("decselfmask [%s]: %s; labels %s", task.task, data.train.report.summary(task.train_file),
                 data.label_set if data.multi_label else data.labels)  # a label set's labels, not yes/no
        tokenizer = tokenizer or _prompt_tokenizer(cfg, config)
        text_budget(tokenizer, task, data.labels, task.max_length or cfg.sequence_len,
                    task_prompt_for(config, n, tokenizer, data))
    from axolotl_decselfmask.stage2.hub import token_warning

    warning = token_warning(config)
    if warning:
        LOG.warning(warning)


def _prompt_tokenizer(cfg, config: DecSelfMaskConfig):
    """The recipe's tokenizer as Axolotl loads it (chat_template, special tokens), with the
    plugin's fallback template: the classification prompt's length is measured with it."""
    from axolotl.loaders import load_tokenizer as axolotl_tokenizer

    tokenizer = axolotl_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    return tokenizer


def after_stage1(cfg, config: DecSelfMaskConfig) -> None:
    """What ``axolotl train`` runs once stage 1 is saved (the main process, once): stage 2 and the
    evaluation from a clean slate (what an earlier run wrote of each task is removed first), then
    the model card and the upload to ``decselfmask.hub_model_id``."""
    for task in config.task_configs():
        outputs.forget_results(cfg.output_dir, task.task)
    run_stage2(cfg, config)
    from axolotl_decselfmask.stage2.model_card import write_model_card

    write_model_card(cfg, config)  # README.md in output_dir; never raises
    from axolotl_decselfmask.stage2.hub import push_results

    push_results(cfg, config)  # stage 2, metrics, predictions, the card (nothing without hub_model_id)


def prepare_tasks(cfg, config: DecSelfMaskConfig, tokenizer) -> list[Task]:
    """Every task's files read and checked (before any model work), its prompt resolved, its
    texts cut to fit the prompt."""
    configs = config.task_configs()
    data = [load_any_task_data(c, cfg.output_dir, config.seed) for c in configs]
    tasks = []
    for n, (c, d) in enumerate(zip(configs, data)):
        prompt = task_prompt_for(config, n, tokenizer, d)
        max_length = c.max_length or cfg.sequence_len
        n_train = c.max_train_examples or len(d.train.texts)
        train_texts, n_cut = truncate_for(tokenizer, c, d.labels, max_length, d.train.texts[:n_train], prompt)
        print(f"decselfmask stage 2 [{c.task}]: {len(train_texts)} labelled examples, {len(d.labels)} labels, "
              f"{n_cut} texts truncated to fit {max_length} tokens ({prompt.style} prompt)")
        test_texts = gold = None
        if d.test is not None:
            test_texts = d.test.texts[: c.max_test_examples] if c.max_test_examples else d.test.texts
            gold = d.test.labels[: len(test_texts)]
            test_texts, _ = truncate_for(tokenizer, c, d.labels, max_length, test_texts, prompt)
        tasks.append(Task(c, d, prompt, max_length, train_texts, list(d.train.labels[:n_train]), test_texts, gold))
    if any(t.settings.calibration in POOL_MODES for t in tasks):  # the decision is fitted with or without a test file
        notes = calibration_pool_texts(cfg, config, max(t.settings.calibration_pool_texts for t in tasks))
        for t in tasks:
            if t.settings.calibration in POOL_MODES:
                t.calibration_pool, _ = truncate_for(tokenizer, t.settings, t.data.labels, t.max_length,
                                                     notes[: t.settings.calibration_pool_texts], t.prompt)
    for t in tasks:
        if t.settings.pseudo_labels.enabled:
            from axolotl_decselfmask.stage2.pseudo_labels import read_pool

            # never pseudo-label (and then train on) a test text
            pool = read_pool(t.settings.pseudo_labels, exclude_texts=t.data.test.texts if t.data.test else None)
            t.pool_texts, _ = truncate_for(tokenizer, t.settings, t.data.labels, t.max_length, pool, t.prompt)
    return expand_tasks(config, tasks, tokenizer)  # a multi-label task becomes one sub-task per label


def run_stage2(cfg, config: DecSelfMaskConfig, progress: bool = True) -> dict:
    """Stage 2 and the evaluation of every task (``decselfmask.tasks``, else ``classification``).

    Every task's files are checked before any model work. Returns the metrics dict.
    """
    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    tasks = prepare_tasks(cfg, config, tokenizer)
    precision = recipe_precision(cfg)
    dtype = precision.torch_dtype()
    folder, source = stage1_model_folder(cfg, config, dtype)
    if Path(folder).exists():  # absolute: the stage-2 adapter names it as its base, loadable from anywhere
        folder = str(Path(folder).resolve())
    print(f"decselfmask stage 2: starting from {source}")
    joint = config.classification.joint and config.classification.train
    together = joint or not config.classification.train  # untrained: one model scores every task
    start = starting_key(cfg, config, folder)
    for t in tasks:
        t.run_info.update(stage1=config.stage1, labels=t.data.labels, n_train=len(t.train_texts),
                          trained=t.settings.train, prompt=t.prompt.style, environment=environment(precision),
                          stage2_joint=joint, stage1_model=folder, stage2_seed=task_seed(t, config.seed))
    if not config.classification.train:
        return _run_group(cfg, config, tasks, tokenizer, folder, dtype, outputs.classifier_dir(cfg.output_dir),
                          "joint", progress, config.seed, start)
    metrics: dict = {}
    if together:  # one LoRA for every task of a seed; seeds never share one
        seeds = seed_groups(tasks, config.seed)
        for seed, group in seeds:
            name = "joint" if len(seeds) == 1 else f"seed{seed}"
            out_dir = outputs.classifier_dir(cfg.output_dir, None if len(seeds) == 1 else name)
            metrics = _run_group(cfg, config, group, tokenizer, folder, dtype, out_dir, name, progress, seed, start)
        return metrics
    for name, group in task_groups(tasks):  # a multi-label task's labels share one LoRA
        out_dir = outputs.classifier_dir(cfg.output_dir, name)
        metrics = _run_group(cfg, config, group, tokenizer, folder, dtype, out_dir, name, progress,
                             task_seed(group[0], config.seed), start)
    return metrics


def task_seed(task: Task, seed: int) -> int:
    """The seed of ``task``'s stage 2: its own ``seed``, else ``decselfmask.seed``."""
    return task.settings.seed if task.settings.seed is not None else seed


def seed_groups(tasks: list[Task], seed: int) -> list[tuple[int, list[Task]]]:
    """``(seed, tasks)`` of the joint stage 2: the tasks of each seed together, in order."""
    groups: dict[int, list[Task]] = {}
    for t in tasks:
        groups.setdefault(task_seed(t, seed), []).append(t)
    return list(groups.items())


def starting_key(cfg, config: DecSelfMaskConfig, folder: str) -> str:
    """The key of the weights stage 2 starts from, which its checkpoints are kept under: the
    stage-1 weights of the completion record (:func:`.stage1.checkpoints.stage1_weights_key`),
    or with stage 1 off the starting folder."""
    key = stage1_weights_key(cfg.output_dir) if config.stage1 else None
    return key or fingerprint("no stage 1", str(folder))


def _run_group(cfg, config: DecSelfMaskConfig, tasks: list[Task], tokenizer, folder: str, dtype, out_dir: Path,
               name: str, progress: bool, seed: int | None = None, start: str | None = None) -> dict:
    """Probe (optional), train one classifier on ``tasks`` together (a LoRA, or a head per task with
    ``method: head``; nothing with ``train: false``), evaluate each task. ``seed``: the classifier's
    (default ``decselfmask.seed``); ``start``: the key of the starting weights (:func:`starting_key`)."""
    seed = config.seed if seed is None else seed
    model = load_model(folder, cfg, dtype)
    features: dict = {}  # hidden states of the (frozen) starting model, shared by probing and heads
    settings = config.classification if len(tasks) > 1 else tasks[0].settings
    if config.probing.enabled or (settings.train and settings.method == "head"):
        from axolotl_decselfmask.stage2.shared_features import prefetch_features, task_feature_requests

        # tasks on the same test notes: each note's prompt prefix once for all of them
        prefetch_features(model, tokenizer, task_feature_requests(config, tasks, tokenizer), features,
                          settings.eval_batch_size, progress, settings.option_chunk)
    if config.probing.enabled:
        from axolotl_decselfmask.stage2.probing import probe_tasks

        probe_tasks(config, tasks, model, tokenizer, progress, features)
    heads: dict = {}
    if settings.train and settings.method == "head":
        from axolotl_decselfmask.stage2.head import train_task_head

        if settings.early_stopping.enabled:
            LOG.warning("decselfmask: classification.early_stopping chooses a stage-2 LoRA's epochs; with method: "
                        "head it is not used (the head's decision is fitted on out-of-fold scores, head.folds)")

        heads = {t.name: train_task_head(seed, t, model, tokenizer, outputs.heads_dir(out_dir), progress,
                                         features) for t in tasks}
    elif settings.train:
        model = _train_lora(cfg, settings, seed, start, tasks, model, tokenizer, folder, dtype, out_dir, name,
                            progress)
    metrics = evaluate_label_sets(cfg, config, tasks, model, tokenizer, progress, heads, features)  # multi-label
    # tasks with the same test notes (and options, prompt): one prefix per note for all of them
    shared = {} if heads else shared_test_scorers(model, tokenizer, tasks, progress)
    for t in tasks:
        if t.parent is None:
            scorer = shared.get(t.name) or Scorer.of(model, tokenizer, t, progress, heads.get(t.name), features)
            metrics = evaluate_task(cfg, config, t, scorer, t.calibration_pool) or metrics
    return evaluate_string_match(cfg, config, tasks, model, tokenizer, heads) or metrics  # scorer: string_match


def _train_lora(cfg, settings, seed: int, start: str, tasks: list[Task], model, tokenizer, folder: str, dtype,
                out_dir: Path, name: str, progress: bool):
    """One LoRA on every task's rows (then again with pseudo-labels, when asked); the merged model."""
    rows = [r for t in tasks for r in task_rows(tokenizer, t)]
    max_length = max(t.max_length for t in tasks)
    if settings.early_stopping.enabled:  # the epochs chosen on held-out labelled notes (stage2/epochs.py)
        from axolotl_decselfmask.stage2.epochs import search_epochs

        chosen, trainer, _ = search_epochs(cfg, settings, seed, start, tasks, model, tokenizer, max_length, out_dir,
                                           name, progress)
        settings = settings.model_copy(update={"num_epochs": float(chosen)})
        if settings.early_stopping.final == "retrain":  # a fresh LoRA on every labelled note
            del trainer, model
            model = load_model(folder, cfg, dtype)
            trainer = train_classifier(cfg, settings, seed, model, tokenizer, rows, max_length, out_dir, progress,
                                       name, start)
    else:
        trainer = train_classifier(cfg, settings, seed, model, tokenizer, rows, max_length, out_dir, progress, name,
                                   start)
    if any(t.pool_texts is not None for t in tasks):
        from axolotl_decselfmask.stage2.pseudo_labels import pseudo_label_rows

        rows = rows + pseudo_label_rows(tasks, classifier_after_training(cfg, trainer, out_dir, dtype, "pseudo-labels"),
                                        tokenizer, progress)
        del trainer, model
        model = load_model(folder, cfg, dtype)
        trainer = train_classifier(cfg, settings, seed, model, tokenizer, rows, max_length, out_dir,
                                   progress, name, start)
    for t in tasks:
        t.run_info["stage2_adapter"] = str(out_dir)
    return classifier_after_training(cfg, trainer, out_dir, dtype)  # saved already; as predict loads it
