"""The synthetic-labels baseline: the stage-2 model labels unlabelled texts.

Each pool text is scored as the evaluation scores a test text (constrained scoring: the
summed log-probability of each label option as the answer, :func:`.scoring.score_options`);
a softmax over the options gives the confidence of the best one. Labels with a confidence of
at least ``pseudo_labels.min_confidence`` are kept, at most ``pseudo_labels.max_per_label`` per
label (the most confident), in the pool's order.
"""

from __future__ import annotations

import logging

import numpy as np

from axolotl_decselfmask.args import PseudoLabelConfig
from axolotl_decselfmask.io.labelled import overlapping_rows
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.tables import (
    clean_texts,
    read_table,
    require_column,
)
from axolotl_decselfmask.stage2.scoring import OPTION_CHUNK, score_options
from axolotl_decselfmask.stage2.tasks import Task
from axolotl_decselfmask.stage2.training import task_rows

LOG = logging.getLogger(__name__)

KEY = "decselfmask.classification.pseudo_labels"


def read_pool(settings: PseudoLabelConfig, exclude_texts: list[str] | None = None) -> list[str]:
    """The first ``max_texts`` non-empty texts of ``pseudo_labels.pool_file``.

    Texts equal (up to whitespace and case) to one of ``exclude_texts`` (e.g. the test texts,
    which must never be labelled and trained on) are dropped before the cut, and counted.
    """
    if not settings.pool_file:
        raise InputError(
            f"{KEY}.pool_file is not set: name the unlabelled texts to pseudo-label (jsonl, csv, parquet or a "
            f"saved HF dataset), or set {KEY}.enabled: false."
        )
    rows = read_table(settings.pool_file, f"{KEY}.pool_file")
    require_column(rows, settings.text_column, settings.pool_file, f"{KEY}.text_column")
    texts, _, report = clean_texts([r[settings.text_column] for r in rows], settings.pool_file,
                                   settings.text_column)
    if exclude_texts:
        drop = {i for i, _ in overlapping_rows(texts, list(exclude_texts))}
        if drop:
            LOG.warning("decselfmask pseudo-labels: dropped %d texts of %s that are also test texts",
                        len(drop), settings.pool_file)
            texts = [t for i, t in enumerate(texts) if i not in drop]
    if not texts:
        raise InputError(f"{KEY}.pool_file: {settings.pool_file} has no text left to label "
                         "(every text is empty or also a test text).")
    LOG.info("decselfmask pseudo-labels: %s", report.summary(str(settings.pool_file)))
    return texts[: settings.max_texts]


def softmax_confidence(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best option and its probability among the options, from summed log-probabilities."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    best = probs.argmax(axis=1)
    return best, probs[np.arange(len(best)), best]


def select(texts: list[str], best: np.ndarray, confidence: np.ndarray, labels: list[str],
           settings: PseudoLabelConfig) -> list[dict]:
    """Confident labels, at most ``max_per_label`` per label (most confident; ties: pool order),
    returned in pool order."""
    keep: list[int] = []
    for j in range(len(labels)):
        candidates = [i for i in range(len(texts)) if best[i] == j and confidence[i] >= settings.min_confidence]
        candidates.sort(key=lambda i: (-confidence[i], i))
        keep.extend(candidates[: settings.max_per_label])
    return [{"text": texts[i], "label": labels[int(best[i])], "confidence": float(confidence[i])}
            for i in sorted(keep)]


def pseudo_label(model, tokenizer, pool_texts: list[str], labels: list[str], question: str, system_prompt: str,
                 settings: PseudoLabelConfig, progress: bool = True, option_chunk: int = OPTION_CHUNK) -> list[dict]:
    """Pseudo-labels of ``pool_texts``: a list of ``{text, label, confidence}`` in pool order."""
    if len(labels) < 2:
        raise ValueError("pseudo-labelling needs at least 2 label options")
    if not pool_texts:
        return []
    scores = score_options(model, tokenizer, list(pool_texts), labels, question, system_prompt, progress,
                           option_chunk=option_chunk)
    best, confidence = softmax_confidence(scores)
    chosen = select(list(pool_texts), best, confidence, labels, settings)
    counts = {label: sum(1 for r in chosen if r["label"] == label) for label in labels}
    print(f"decselfmask pseudo-labels: {len(chosen)} of {len(pool_texts)} texts kept (confidence >= "
          f"{settings.min_confidence}, at most {settings.max_per_label} per label): {counts}")
    return chosen


def pseudo_label_rows(tasks: list[Task], model, tokenizer, progress: bool) -> list[dict]:
    """Training rows of the confident pseudo-labels of each task's pool (``pool_texts``), by the
    classifier ``model``; each task's count in its ``run_info``."""
    rows = []
    for t in tasks:
        if t.pool_texts is None:
            continue
        added = pseudo_label(model, tokenizer, t.pool_texts, t.data.labels, t.prompt.question,
                             t.prompt.system_prompt, t.settings.pseudo_labels, progress, t.settings.option_chunk)
        print(f"decselfmask pseudo-labels [{t.name}]: {len(added)} of {len(t.pool_texts)} pool texts labelled "
              f"with confidence >= {t.settings.pseudo_labels.min_confidence}; training again on gold + pseudo-labels")
        t.run_info["n_pseudo"] = len(added)
        rows += task_rows(tokenizer, t, [a["text"] for a in added], [a["label"] for a in added])
    return rows
