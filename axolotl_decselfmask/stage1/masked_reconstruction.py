"""Axolotl dataset type ``axolotl_decselfmask.masked_reconstruction``.

In a recipe::

    datasets:
      - path: notes.jsonl          # jsonl, csv, parquet or a saved HF dataset
        type: axolotl_decselfmask.masked_reconstruction
        text_column: text

Axolotl loads the file and hands the rows to :meth:`MaskedReconstructionStrategy.wrap_dataset`,
which computes self-relevance with the recipe's model (or ``decselfmask.relevance.model``),
selects spans, builds one masked-reconstruction example per span and tokenises them with
labels on the answer only (Axolotl's ``train_on_inputs: true``: labels on every token of the
example, the system turn, the masked text and the template's own tokens included).
``axolotl preprocess`` runs this once and both Axolotl and this plugin cache the result.
"""

from __future__ import annotations

import logging

from axolotl.prompt_tokenizers import DatasetWrappingStrategy
from datasets import Dataset

from axolotl_decselfmask.args import plugin_config
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.tables import (
    dataset_text_column,
)
from axolotl_decselfmask.prompts import (
    reconstruction_messages,
    tokenize_for_training,
)
from axolotl_decselfmask.stage1.budget import apply_token_budget, write_stage1_stats
from axolotl_decselfmask.stage1.pool import (
    MASKED_RECONSTRUCTION_TYPE,
    prepare_pool,
    relevance_model_path,
)
from axolotl_decselfmask.stage1.precompute import run_precompute

LOG = logging.getLogger(__name__)

DATASET_TYPE = MASKED_RECONSTRUCTION_TYPE




class PoolStrategy(DatasetWrappingStrategy):
    """What the plugin's dataset types share: the recipe, the ``decselfmask:`` block, the pool's
    text column (checked)."""

    def __init__(self, tokenizer, cfg, ds_cfg):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.ds_cfg = ds_cfg or {}
        self.config = plugin_config(cfg)

    def text_column(self, dataset) -> tuple[str, str]:
        """(path, column) of the pool; a missing column is an error naming both."""
        path = self.ds_cfg.get("path", "<dataset>")
        column = dataset_text_column(self.ds_cfg)
        if column not in dataset.column_names:
            raise InputError(
                f"{path}: no column {column!r} (set by the dataset's text_column); the file has "
                f"{dataset.column_names}."
            )
        return path, column

    def masked_examples(self, dataset, row_of, tokenizer=None):
        """The pool of ``dataset`` and its masked examples (the precompute, cached), and ``row(example)``,
        the tokenised training row of an example (``row_of(pool)``): with a stage-1 budget, relevance stops
        at the shard whose rows pass it (the rows the budget keeps). Prints what the pool gave.
        ``tokenizer``: the one the pool is prepared with (it gets the mask token), default the recipe's."""
        cfg, config, tokenizer = self.cfg, self.config, tokenizer or self.tokenizer
        path, column = self.text_column(dataset)
        pool = prepare_pool(dataset[column], cfg, config, tokenizer, path, column)
        row = row_of(pool)
        result = run_precompute(
            pool.texts, config, tokenizer, relevance_model_path(cfg, config), config.cache_dir,
            trust_remote_code=bool(cfg.trust_remote_code), token_budget=config.stage1_token_budget,
            example_tokens=lambda ex: len(row(ex)["input_ids"]),
        )
        where = (f"; readable copy: {result.directory / 'examples.jsonl'}" if config.masking.write_jsonl
                 else "; no readable copy (masking.write_jsonl: false)")
        print(f"decselfmask: {len(result.examples)} masked examples from {result.n_texts} texts "
              f"({pool.report.truncated} truncated to {pool.budget} tokens, {len(pool.report.skipped_empty)} empty "
              f"skipped, {pool.with_mask} skipped for containing the mask string, {result.n_without_spans} without "
              f"spans, {result.n_bad_relevance} with zero or non-finite relevance){where}")
        return path, result, row

    def budgeted_rows(self, result, row, dataset_type: str, path, extra: dict | None = None) -> Dataset:
        """The rows of ``result``'s examples within the stage-1 budget, their statistics written."""
        config = self.config
        rows, stats = apply_token_budget([row(ex) for ex in result.examples], config.stage1_token_budget,
                                         f"{dataset_type}, {path}")
        kept_texts = {ex["text_index"] for ex in result.examples[: len(rows)]}
        write_stage1_stats(self.cfg.output_dir, {"dataset_type": dataset_type, **stats, "texts": len(kept_texts),
                                                 "pool_texts": result.n_texts, "relevance_partial": result.partial,
                                                 "pairs_scored": result.n_pairs_scored,
                                                 # the model card names this run's examples by it (cache.py's layout)
                                                 "examples_dir": (str(result.directory) if config.masking.write_jsonl
                                                                  else None), **(extra or {})})
        return Dataset.from_list(rows)


class MaskedReconstructionStrategy(PoolStrategy):
    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs) -> Dataset:
        cfg, config, tokenizer = self.cfg, self.config, self.tokenizer

        def row(ex: dict) -> dict:
            # the loss on the answer, or on every token (the prompt's too) with Axolotl's train_on_inputs: true
            return tokenize_for_training(tokenizer, reconstruction_messages(ex["masked_text"], ex["answer"],
                                                                            config.masking.system_prompt),
                                         train_on_inputs=bool(cfg.train_on_inputs))

        path, result, row = self.masked_examples(dataset, lambda pool: row)
        return self.budgeted_rows(result, row, DATASET_TYPE, path)


def load(tokenizer, cfg, ds_cfg=None):
    """Entry point Axolotl calls for ``type: axolotl_decselfmask.masked_reconstruction``."""
    return MaskedReconstructionStrategy(tokenizer, cfg, ds_cfg)
