"""Stage 2: supervised classification fine-tuning with TRL, then the evaluation of every task.

Runs after stage 1 in the same ``axolotl train``. The stage-1 model, as one folder (see
:mod:`.model`), is the starting point. By default (``classification.joint: true``, the paper's
procedure) one fresh LoRA is trained with TRL's ``SFTTrainer`` on the labelled examples of all
tasks together, each example in its own task's prompt (question and options), and saved to
``<output_dir>/stage2``; with ``joint: false`` each task gets its own LoRA in
``<output_dir>/stage2/<task>``. Each task is then scored on its own test file
(:mod:`.scoring`) into ``<output_dir>/metrics.json`` and ``predictions-<task>.jsonl``; tasks of
one model whose test notes are the same (one test set shared by the tasks of a corpus) are scored
together, each note's prompt prefix once (:func:`.multilabel.shared_test_scorers`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.hardware import environment, recipe_precision
from axolotl_decselfmask.io.files import safe_filename
from axolotl_decselfmask.prompts import ensure_chat_template
from axolotl_decselfmask.stage2.calibration import POOL_MODES, calibration_pool_texts
from axolotl_decselfmask.stage2.data import (
    TaskData,
    TaskPrompt,
    truncate_for,
)
from axolotl_decselfmask.stage2.evaluation import Scorer, evaluate_task
from axolotl_decselfmask.stage2.model import (
    load_model,
    load_tokenizer,
    stage1_model_folder,
)
from axolotl_decselfmask.stage2.multilabel import (
    MultiLabelPart,
    evaluate_groups,
    expand_tasks,
    load_any_task_data,
    shared_test_scorers,
    task_groups,
    task_prompt_for,
)
from axolotl_decselfmask.stage2.training import train_classifier, training_rows

LOG = logging.getLogger(__name__)

STAGE2_DIR = "stage2"


@dataclass
class Task:
    """One task, read, checked and truncated, ready for training and evaluation."""

    c: ClassificationConfig
    data: TaskData
    prompt: TaskPrompt
    max_length: int
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str] | None
    gold: list[str] | None
    pool_texts: list[str] | None = None  # pseudo-labels' pool
    calibration_pool: list[str] | None = None  # unlabelled notes of the pool calibration modes
    extra: dict = field(default_factory=dict)
    multi_label: MultiLabelPart | None = None  # a sub-task of a multi-label task (stage2/multilabel.py)

    def rows(self, tokenizer, texts=None, labels=None) -> list[dict]:
        return training_rows(tokenizer, texts if texts is not None else self.train_texts,
                             labels if labels is not None else self.train_labels, self.data.labels,
                             self.prompt.question, self.prompt.system_prompt, self.c.train_on_inputs)


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
    if any(t.c.calibration in POOL_MODES for t in tasks):  # the decision is fitted with or without a test file
        notes = calibration_pool_texts(cfg, config, max(t.c.calibration_pool_texts for t in tasks))
        for t in tasks:
            if t.c.calibration in POOL_MODES:
                t.calibration_pool, _ = truncate_for(tokenizer, t.c, t.data.labels, t.max_length,
                                                     notes[: t.c.calibration_pool_texts], t.prompt)
    for t in tasks:
        if t.c.pseudo_labels.enabled:
            from axolotl_decselfmask.stage2.pseudo_labels import read_pool

            # never pseudo-label (and then train on) a test text
            pool = read_pool(t.c.pseudo_labels, exclude_texts=t.data.test.texts if t.data.test else None)
            t.pool_texts, _ = truncate_for(tokenizer, t.c, t.data.labels, t.max_length, pool, t.prompt)
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
    for t in tasks:
        t.extra.update(stage1=config.stage1, labels=t.data.labels, n_train=len(t.train_texts), trained=t.c.train,
                       prompt=t.prompt.style, environment=environment(precision),
                       stage2_joint=joint, stage1_model=folder)
    out = Path(cfg.output_dir) / STAGE2_DIR
    if together:
        return _run_group(cfg, config, tasks, tokenizer, folder, dtype, out, "joint", progress)
    metrics: dict = {}
    for name, group in task_groups(tasks):  # a multi-label task's labels share one LoRA
        metrics = _run_group(cfg, config, group, tokenizer, folder, dtype, out / safe_filename(name), name, progress)
    return metrics


def _run_group(cfg, config: DecSelfMaskConfig, tasks: list[Task], tokenizer, folder: str, dtype, out_dir: Path,
               name: str, progress: bool) -> dict:
    """Probe (optional), train one classifier on ``tasks`` together (a LoRA, or a head per task with
    ``method: head``; nothing with ``train: false``), evaluate each task."""
    model = load_model(folder, cfg, dtype)
    features: dict = {}  # hidden states of the (frozen) starting model, shared by probing and heads
    if config.probing.enabled:
        _probe(config, tasks, model, tokenizer, progress, features)
    settings = config.classification if len(tasks) > 1 else tasks[0].c
    heads: dict = {}
    if settings.train and settings.method == "head":
        heads = {t.c.task: _train_head(config, t, model, tokenizer, out_dir / "heads", progress, features)
                 for t in tasks}
    elif settings.train:
        model = _train_lora(cfg, config, settings, tasks, model, tokenizer, folder, dtype, out_dir, name, progress)
    metrics = evaluate_groups(cfg, config, tasks, model, tokenizer, progress, heads, features)  # multi-label
    # tasks with the same test notes (and options, prompt): one prefix per note for all of them
    shared = {} if heads else shared_test_scorers(model, tokenizer, tasks, progress)
    for t in tasks:
        if t.multi_label is None:
            scorer = shared.get(t.c.task) or Scorer(model, tokenizer, t, progress, heads.get(t.c.task), features)
            metrics = evaluate_task(cfg, config, t, scorer, t.calibration_pool) or metrics
    return metrics


def _train_lora(cfg, config: DecSelfMaskConfig, settings, tasks: list[Task], model, tokenizer, folder: str, dtype,
                out_dir: Path, name: str, progress: bool):
    """One LoRA on every task's rows (then again with pseudo-labels, when asked); the merged model."""
    rows = [r for t in tasks for r in t.rows(tokenizer)]
    max_length = max(t.max_length for t in tasks)
    trainer = train_classifier(cfg, settings, config.seed, model, tokenizer, rows, max_length, out_dir, progress, name)
    if any(t.pool_texts is not None for t in tasks):
        rows = rows + _pseudo_rows(tasks, trainer.model.merge_and_unload(), tokenizer, progress)
        del trainer, model
        model = load_model(folder, cfg, dtype)
        trainer = train_classifier(cfg, settings, config.seed, model, tokenizer, rows, max_length, out_dir,
                                   progress, name)
    for t in tasks:
        t.extra["stage2_adapter"] = str(out_dir)
    return trainer.model.merge_and_unload()  # saved already; merged, the evaluation runs faster


def _train_head(config: DecSelfMaskConfig, t: Task, model, tokenizer, folder: Path, progress: bool, features: dict):
    """A head on the frozen model's hidden states of the task's labelled examples, saved in ``folder``."""
    from axolotl_decselfmask.stage2.head import fit_head

    head = fit_head(model, tokenizer, t.train_texts, t.train_labels, t.data.labels, t.prompt.question,
                    t.prompt.system_prompt, t.c.head, config.seed, mask_id=_mask_id(tokenizer, t.prompt),
                    progress=progress, batch_size=t.c.eval_batch_size, feature_cache=features)
    path = head.save(folder, safe_filename(t.c.task))
    t.extra.update(stage2_head=str(path), head_position=head.position)
    print(f"decselfmask stage 2 [{t.c.task}]: head trained on {len(t.train_texts)} examples (hidden state at the "
          f"{head.position} token), saved to {path}")
    return head


def _mask_id(tokenizer, prompt: TaskPrompt) -> int | None:
    """The mask's token id when the prompt has a one-token mask, else None."""
    if prompt.mask_text is None:
        return None
    ids = tokenizer(prompt.mask_text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def _pseudo_rows(tasks: list[Task], model, tokenizer, progress: bool) -> list[dict]:
    """Training rows of the confident pseudo-labels of each task's pool, by the classifier ``model``."""
    from axolotl_decselfmask.stage2.pseudo_labels import pseudo_label

    rows = []
    for t in tasks:
        if t.pool_texts is None:
            continue
        added = pseudo_label(model, tokenizer, t.pool_texts, t.data.labels, t.prompt.question,
                             t.prompt.system_prompt, t.c.pseudo_labels, progress, t.c.option_chunk)
        print(f"decselfmask pseudo-labels [{t.c.task}]: {len(added)} of {len(t.pool_texts)} pool texts labelled "
              f"with confidence >= {t.c.pseudo_labels.min_confidence}; training again on gold + pseudo-labels")
        t.extra["n_pseudo"] = len(added)
        rows += t.rows(tokenizer, [a["text"] for a in added], [a["label"] for a in added])
    return rows


def _probe(config: DecSelfMaskConfig, tasks: list[Task], model, tokenizer, progress: bool, features: dict) -> None:
    """Probing of the frozen starting model, per task, into each task's metrics."""
    from axolotl_decselfmask.stage2.probing import probe

    for t in tasks:
        if t.test_texts is None:
            continue
        probed = probe(model, tokenizer, t.train_texts, t.train_labels, t.test_texts, t.gold, t.data.labels,
                       t.prompt.question, t.prompt.system_prompt, config.probing, config.seed, progress,
                       feature_cache=features)
        t.extra.update(probe_macro_f1=probed["macro_f1"], probe_accuracy=probed["accuracy"])
        print(f"decselfmask probing [{t.c.task}]: Macro F1 {probed['macro_f1']:.4f} (frozen model, last-token "
              f"hidden state, {config.probing.hidden_size}-unit classifier)")
