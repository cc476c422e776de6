"""Stage 2: supervised classification fine-tuning with TRL, then the evaluation.

Runs after stage 1 in the same ``axolotl train``: the stage-1 weights in ``output_dir``
(a LoRA adapter, merged into the base model, or a full model) are the starting point; a
fresh LoRA (the paper: r 32, alpha 64, lr 3e-4) is trained on the labelled examples with
TRL's ``SFTTrainer``, loss on the label only, and saved to ``<output_dir>/stage2``. The
test file is then scored (see :mod:`.evaluation`) and ``<output_dir>/metrics.json`` written.
"""

from __future__ import annotations

import logging
from pathlib import Path

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.hardware import environment, recipe_precision
from axolotl_decselfmask.io.files import safe_filename
from axolotl_decselfmask.prompts import (
    ensure_chat_template,
)
from axolotl_decselfmask.stage2.data import TaskData, load_task_data, truncate_for
from axolotl_decselfmask.stage2.metrics import (
    dump_predictions,
    format_table,
    write_metrics,
)
from axolotl_decselfmask.stage2.model import load_stage1_model, load_tokenizer
from axolotl_decselfmask.stage2.scoring import evaluate
from axolotl_decselfmask.stage2.training import train_classifier

LOG = logging.getLogger(__name__)

STAGE2_DIR = "stage2"














def run_stage2(cfg, config: DecSelfMaskConfig, progress: bool = True) -> dict:
    """Stage 2 and the evaluation of every task (``decselfmask.tasks``, else ``classification``).

    Every task's files are checked before any model work. Each task starts from the same
    stage-1 model (reloaded), gets its own LoRA and its own entry in ``metrics.json``.
    Returns the metrics dict.
    """
    tasks = config.task_configs()
    data = [load_task_data(c) for c in tasks]
    pool = None
    if any(c.pseudo_labels.enabled for c in tasks):
        from axolotl_decselfmask.stage2.pseudo_labels import read_pool

        # never pseudo-label (and then train on) a test text
        pool = {c.task: read_pool(c.pseudo_labels, exclude_texts=d.test.texts if d.test else None)
                for c, d in zip(tasks, data) if c.pseudo_labels.enabled}
    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    metrics: dict = {}
    features: dict = {}  # probing features of the (same) stage-1 model, shared by the tasks
    for c, d in zip(tasks, data):
        out_dir = Path(cfg.output_dir) / STAGE2_DIR
        if config.tasks:
            out_dir = out_dir / safe_filename(c.task)
        metrics = run_task(cfg, config, c, d, tokenizer, out_dir, (pool or {}).get(c.task), progress, features)
    return metrics


def run_task(cfg, config: DecSelfMaskConfig, c: ClassificationConfig, data: TaskData, tokenizer,
             out_dir: Path, pool_texts: list[str] | None, progress: bool = True,
             feature_cache: dict | None = None) -> dict:
    """Probe (optional), train the classifier (unless ``train: false``), evaluate one task."""
    max_length = c.max_length or cfg.sequence_len
    train_texts, n_cut = truncate_for(tokenizer, c, data.labels, max_length, data.train.texts)
    print(f"decselfmask stage 2 [{c.task}]: {len(train_texts)} labelled examples, {len(data.labels)} labels, "
          f"{n_cut} texts truncated to fit {max_length} tokens")
    test_texts = gold = None
    if data.test is not None:
        test_texts = data.test.texts[: c.max_test_examples] if c.max_test_examples else data.test.texts
        gold = data.test.labels[: len(test_texts)]
        test_texts, _ = truncate_for(tokenizer, c, data.labels, max_length, test_texts)

    precision = recipe_precision(cfg)
    dtype = precision.torch_dtype()
    model, source = load_stage1_model(cfg, config, dtype)
    print(f"decselfmask stage 2 [{c.task}]: starting from {source}")
    extra = {"stage1": config.stage1, "labels": data.labels, "n_train": len(train_texts), "trained": c.train,
             "environment": environment(precision)}

    if config.probing.enabled and test_texts is not None:
        from axolotl_decselfmask.stage2.probing import probe

        probed = probe(model, tokenizer, train_texts, data.train.labels, test_texts, gold, data.labels,
                       c.question, c.system_prompt, config.probing, config.seed, progress,
                       feature_cache=feature_cache)
        extra.update(probe_macro_f1=probed["macro_f1"], probe_accuracy=probed["accuracy"])
        print(f"decselfmask probing [{c.task}]: Macro F1 {probed['macro_f1']:.4f} (frozen model, last-token "
              f"hidden state, {config.probing.hidden_size}-unit classifier)")

    trainer = None
    if c.train:
        texts, labels = list(train_texts), list(data.train.labels)
        if c.pseudo_labels.enabled:
            from axolotl_decselfmask.stage2.pseudo_labels import pseudo_label

            trainer = train_classifier(cfg, config, c, model, tokenizer, texts, labels, data.labels, max_length, out_dir, progress)
            pool_texts, _ = truncate_for(tokenizer, c, data.labels, max_length, pool_texts or [])
            added = pseudo_label(trainer.model.merge_and_unload(), tokenizer, pool_texts, data.labels, c.question, c.system_prompt,
                                 c.pseudo_labels, progress, c.option_chunk)
            print(f"decselfmask pseudo-labels [{c.task}]: {len(added)} of {len(pool_texts)} pool texts labelled "
                  f"with confidence >= {c.pseudo_labels.min_confidence}; training again on gold + pseudo-labels")
            extra["n_pseudo"] = len(added)
            texts += [a["text"] for a in added]
            labels += [a["label"] for a in added]
            del trainer, model
            model, _ = load_stage1_model(cfg, config, dtype)
        trainer = train_classifier(cfg, config, c, model, tokenizer, texts, labels, data.labels, max_length, out_dir, progress)
        model = trainer.model.merge_and_unload()  # saved already; merged, the evaluation runs faster

    if test_texts is None:
        LOG.warning("decselfmask: no classification.test_file for %s; skipping the evaluation", c.task)
        return {}
    result = evaluate(model, tokenizer, test_texts, gold, data.labels, c.question, c.system_prompt, progress,
                      c.eval_batch_size, c.option_chunk)
    metrics = write_metrics(Path(cfg.output_dir) / "metrics.json", c.task, result, extra=extra)
    dump_predictions(Path(cfg.output_dir) / f"predictions-{safe_filename(c.task)}.jsonl",
                     data.test.rows[: len(gold)], gold, result["predictions"])
    logged = {"macro_f1": result["macro_f1"], "accuracy": result["accuracy"]}
    if "probe_macro_f1" in extra:
        logged["probe_macro_f1"] = extra["probe_macro_f1"]
    log_metrics(cfg, c.task, logged)
    print(f"decselfmask evaluation [{c.task}] (constrained scoring of the label options):")
    print(format_table(metrics))
    print(f"metrics written to {Path(cfg.output_dir) / 'metrics.json'}")
    return metrics




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






