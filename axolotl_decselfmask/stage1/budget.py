"""The stage-1 token budget: the same number of training tokens for every stage-1 method.

``decselfmask.stage1_token_budget: N`` keeps the tokenised stage-1 rows, in their order,
while their summed length (``len(input_ids)``) stays within ``N``; the first row that would
exceed it ends the data. Both stage-1 dataset types (masked reconstruction and continual
pretraining) apply it and record what they kept in ``<output_dir>/decselfmask_stage1_data.json``,
so that a comparison can show that the methods saw the same number of tokens.
"""

from __future__ import annotations

import logging
from pathlib import Path

from axolotl_decselfmask.io.files import atomic_write_json

LOG = logging.getLogger(__name__)

STATS_FILE = "decselfmask_stage1_data.json"
BUDGET_KEY = "decselfmask.stage1_token_budget"


def _supervised(row: dict) -> int:
    labels = row.get("labels")
    if labels is None:
        return len(row["input_ids"])
    return sum(1 for t in labels if t != -100)


def apply_token_budget(rows: list[dict], budget: int | None, where: str) -> tuple[list[dict], dict]:
    """The leading rows whose summed ``len(input_ids)`` is at most ``budget`` (None: all rows).

    Returns the kept rows and their statistics: ``examples``, ``tokens``, ``supervised_tokens``
    (labels other than -100), ``budget``, ``available_examples``, ``available_tokens`` and
    ``at_equal_budget`` (False when the pool gives fewer tokens than the budget). ``where``
    names the data in the messages (e.g. the dataset type and file).
    """
    if budget is not None and budget < 1:
        raise ValueError(f"{BUDGET_KEY} must be at least 1, got {budget}")
    available_tokens = sum(len(r["input_ids"]) for r in rows)
    kept, tokens = [], 0
    for row in rows:
        n = len(row["input_ids"])
        if budget is not None and tokens + n > budget:
            break
        kept.append(row)
        tokens += n
    stats = {
        "examples": len(kept),
        "tokens": tokens,
        "supervised_tokens": sum(_supervised(r) for r in kept),
        "budget": budget,
        "available_examples": len(rows),
        "available_tokens": available_tokens,
        "at_equal_budget": budget is None or available_tokens >= budget,
    }
    summary = (f"{stats['examples']} of {len(rows)} examples, {tokens} of {available_tokens} tokens "
               f"({stats['supervised_tokens']} supervised)")
    if budget is None:
        message = f"decselfmask stage 1 ({where}): {summary}; no {BUDGET_KEY}, all examples kept"
        print(message)
        LOG.info(message)
    elif available_tokens < budget:
        message = (f"decselfmask stage 1 ({where}): the pool gives only {available_tokens} tokens, fewer than "
                   f"{BUDGET_KEY} ({budget}); all {len(rows)} examples kept. This run is NOT at the equal "
                   "token budget: add unlabelled texts (or raise decselfmask.max_texts), or lower the budget "
                   "for every method compared.")
        print(message)
        LOG.warning(message)
    else:
        message = f"decselfmask stage 1 ({where}): {summary} kept within {BUDGET_KEY} {budget}"
        print(message)
        LOG.info(message)
    if rows and not kept:
        raise ValueError(
            f"decselfmask stage 1 ({where}): no example fits {BUDGET_KEY} ({budget}); the first example "
            f"alone has {len(rows[0]['input_ids'])} tokens. Raise the budget."
        )
    return kept, stats


def write_stage1_stats(output_dir, stats: dict) -> Path | None:
    """Write ``stats`` to ``<output_dir>/decselfmask_stage1_data.json`` (atomically); returns the path
    (None, and nothing written, when ``output_dir`` is not set).

    ``stats`` holds at least ``dataset_type``, ``examples``, ``tokens``, ``supervised_tokens``,
    ``budget`` and ``texts``.
    """
    missing = [k for k in ("dataset_type", "examples", "tokens", "supervised_tokens", "budget", "texts")
               if k not in stats]
    if missing:
        raise ValueError(f"stage-1 statistics lack {missing}")
    if not output_dir:
        LOG.warning("decselfmask: no output_dir, so the stage-1 data statistics are not written: %s", stats)
        return None
    path = Path(output_dir) / STATS_FILE
    atomic_write_json(path, stats)
    LOG.info("decselfmask: stage-1 data statistics written to %s", path)
    return path
