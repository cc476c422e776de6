"""The evaluation of one task: its test file scored, the calibrated decision, ``metrics.json``,
``predictions-<task>.jsonl``, and the decision kept in ``stage2/calibration-<task>.json`` (also
without a test file) for :mod:`.predict`.

A task's classifier is a :class:`Scorer`: the generative model's option scores (summed
log-probabilities of each option as the answer, :func:`.scoring.score_options`), or a trained
head's log-probabilities (``classification.method: head``, :mod:`.head`). The decision is
``classification.calibration``'s (:mod:`.calibration`), fitted on the labelled examples' scores
and, for the pool modes, on unlabelled pool notes' scores; the test file is read only to be
scored and compared, after the decision rule is fixed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.io.files import safe_filename
from axolotl_decselfmask.stage2.calibration import (
    POOL_MODES,
    calibration_path,
    fit_from_config,
    save_calibration,
)
from axolotl_decselfmask.stage2.metrics import (
    dump_predictions,
    format_table,
    result_from_scores,
    write_metrics,
)
from axolotl_decselfmask.stage2.scoring import score_options

LOG = logging.getLogger(__name__)


class Scorer:
    """Scores of a task's options for texts: the generative model's, or a head's."""

    def __init__(self, model, tokenizer, task, progress: bool = True, head=None, feature_cache: dict | None = None):
        self.model, self.tokenizer, self.task, self.progress = model, tokenizer, task, progress
        self.head, self.feature_cache = head, feature_cache

    def __call__(self, texts: list[str]) -> np.ndarray:
        t = self.task
        if not texts:
            return np.zeros((0, len(t.data.labels)))
        if self.head is not None:
            from axolotl_decselfmask.stage2.head import head_scores

            return head_scores(self.model, self.tokenizer, self.head, texts, t.prompt.question,
                               t.prompt.system_prompt, self.progress, t.c.eval_batch_size, self.feature_cache)
        return score_options(self.model, self.tokenizer, texts, t.data.labels, t.prompt.question,
                             t.prompt.system_prompt, self.progress, t.c.eval_batch_size, t.c.option_chunk)


def calibrate(task, scorer: Scorer, pool_texts: list[str] | None):
    """The task's decision rule from its labelled examples (and pool notes for the pool modes)."""
    c = task.c
    labelled = scorer(task.train_texts) if c.calibration != "none" else None
    pool = scorer(pool_texts or []) if c.calibration in POOL_MODES else None
    return fit_from_config(c, task.data.labels, labelled, task.train_labels if labelled is not None else None, pool)


def evaluate_task(cfg, config: DecSelfMaskConfig, task, scorer: Scorer, pool_texts: list[str] | None = None) -> dict:
    """Score ``task``'s test texts and write its metrics and predictions.

    ``task`` is a :class:`.run.Task`; ``pool_texts``: unlabelled notes for the pool calibration
    modes, cut to the task's prompt. Returns the whole ``metrics.json`` (empty without a test file).
    """
    c, labels = task.c, task.data.labels
    calibration = calibrate(task, scorer, pool_texts)  # fixed before the test file is scored
    saved = save_decision(cfg, task, calibration, scorer)
    if task.test_texts is None:
        LOG.warning("decselfmask: no classification.test_file or test_fraction for %s: no evaluation; its decision "
                    "(calibration %s) is saved to %s for predict", c.task, c.calibration, saved)
        return {}
    result = result_from_scores(scorer(task.test_texts), task.gold, labels, calibration)
    out = Path(cfg.output_dir)
    metrics = write_metrics(out / "metrics.json", c.task, result, extra=task.extra)
    n = len(task.gold)
    dump_predictions(out / f"predictions-{safe_filename(c.task)}.jsonl", task.data.test.ids[:n],
                     task.data.test.rows[:n], task.gold, result["predictions"], result["scores"], labels)
    logged = {k: result[k] for k in ("macro_f1", "macro_f1_argmax", "accuracy")}
    if "probe_macro_f1" in task.extra:
        logged["probe_macro_f1"] = task.extra["probe_macro_f1"]
    log_metrics(cfg, c.task, logged)
    how = "a head on the frozen model" if scorer.head is not None else "constrained scoring of the label options"
    print(f"decselfmask evaluation [{c.task}] ({how}; decision: calibration {c.calibration}):")
    print(format_table(metrics))
    print(f"metrics written to {out / 'metrics.json'}")
    return metrics


def save_decision(cfg, task, calibration, scorer: Scorer) -> Path:
    """The task's fitted decision and how its scores are made, for ``python -m axolotl_decselfmask.predict``
    (:func:`.calibration.calibration_path`): the options, the prompt, the classifier and its weights' sha256."""
    from axolotl_decselfmask.io.files import file_sha256

    weights = None
    if scorer.head is not None:
        weights = Path(task.extra.get("stage2_head", "")).with_suffix(".safetensors")
    elif task.extra.get("stage2_adapter"):
        weights = Path(task.extra["stage2_adapter"]) / "adapter_model.safetensors"
    path = calibration_path(cfg.output_dir, task.c.task)
    save_calibration(path, calibration, task=task.c.task, labels=list(task.data.labels),
                     classifier="head" if scorer.head is not None else "lora" if weights else "none",
                     weights=str(weights) if weights else None,
                     weights_sha256=file_sha256(weights) if weights and weights.is_file() else None,
                     question=task.prompt.question, system_prompt=task.prompt.system_prompt,
                     prompt=task.prompt.style, max_length=task.max_length)
    return path


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
