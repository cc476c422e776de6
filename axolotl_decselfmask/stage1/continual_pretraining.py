"""Axolotl dataset type ``axolotl_decselfmask.continual_pretraining``: the baseline stage 1.

Continual pretraining: next-token prediction on the raw unlabelled texts, with no relevance
and no masking. In a recipe::

    datasets:
      - path: notes.jsonl
        type: axolotl_decselfmask.continual_pretraining
        text_column: text

The pool is prepared as for ``axolotl_decselfmask.masked_reconstruction`` (empty texts
skipped, texts that are also test texts refused, ``decselfmask.max_texts``), each text is cut
at a token boundary to fit ``sequence_len`` and followed by the eos token, the loss is on
every token (``labels = input_ids``), and ``decselfmask.stage1_token_budget`` keeps the
leading rows within the same token budget as the masked-reconstruction run it is compared
with. What was kept is written to ``<output_dir>/decselfmask_stage1_data.json``.
"""

from __future__ import annotations

import logging

from datasets import Dataset

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage1.budget import apply_token_budget, write_stage1_stats
from axolotl_decselfmask.stage1.masked_reconstruction import PoolStrategy
from axolotl_decselfmask.stage1.pool import (
    CONTINUAL_PRETRAINING_TYPE,
    clean_pool,
    truncate_texts,
)

LOG = logging.getLogger(__name__)

DATASET_TYPE = CONTINUAL_PRETRAINING_TYPE


def _special_overhead(tokenizer) -> int:
    """Tokens the tokenizer adds around a text (a bos token, typically)."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    return len(with_special) - len(without)


def tokenize_text(tokenizer, text: str, max_length: int | None = None) -> dict[str, list[int]]:
    """One next-token-prediction row: the text's tokens (with the tokenizer's own special
    tokens, e.g. bos) followed by eos, at most ``max_length`` tokens; labels on every token."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if ids and ids[-1] == tokenizer.eos_token_id:
        ids.pop()
    if max_length is not None:
        ids = ids[: max_length - 1]
    ids.append(tokenizer.eos_token_id)
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}


class ContinualPretrainingStrategy(PoolStrategy):
    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs) -> Dataset:
        cfg, config, tokenizer = self.cfg, self.config, self.tokenizer
        path, column = self.text_column(dataset)
        if tokenizer.eos_token_id is None:
            raise InputError(
                f"the tokenizer of {cfg.base_model} has no eos token, which ends each continual-pretraining "
                "text; set `special_tokens: {eos_token: ...}` in the recipe."
            )
        texts, report, _ = clean_pool(dataset[column], config, path, column)
        budget = int(cfg.sequence_len) - _special_overhead(tokenizer) - 1
        if budget < 16:
            raise InputError(
                f"sequence_len ({cfg.sequence_len}) leaves only {budget} tokens for a text; raise sequence_len."
            )
        texts, report.truncated = truncate_texts(tokenizer, texts, budget)
        LOG.info("decselfmask: %s", report.summary(str(path)))
        rows = [tokenize_text(tokenizer, t, int(cfg.sequence_len)) for t in texts]
        print(f"decselfmask: {len(rows)} continual-pretraining examples (next-token prediction on the raw texts) "
              f"from {report.n_rows} rows ({len(report.skipped_empty)} empty skipped, {report.truncated} "
              f"truncated to {budget} tokens)")
        rows, stats = apply_token_budget(rows, config.stage1_token_budget, f"{DATASET_TYPE}, {path}")
        write_stage1_stats(cfg.output_dir, {"dataset_type": DATASET_TYPE, **stats, "texts": len(rows),
                                            "pool_texts": len(texts)})
        return Dataset.from_list(rows)


def load(tokenizer, cfg, ds_cfg=None):
    """Entry point Axolotl calls for ``type: axolotl_decselfmask.continual_pretraining``."""
    return ContinualPretrainingStrategy(tokenizer, cfg, ds_cfg)
