"""Axolotl dataset type ``axolotl_decselfmask.masked_reconstruction``.

In a recipe::

    datasets:
      - path: notes.jsonl          # jsonl, csv, parquet or a saved HF dataset
        type: axolotl_decselfmask.masked_reconstruction
        text_column: text

Axolotl loads the file and hands the rows to :meth:`MaskedReconstructionStrategy.wrap_dataset`,
which computes self-relevance with the recipe's model (or ``decselfmask.relevance.model``),
selects spans, builds one masked-reconstruction example per span and tokenises them with
labels on the answer only (``train_on_inputs: true`` trains on the whole example).
``axolotl preprocess`` runs this once and both Axolotl and this plugin cache the result.
"""

from __future__ import annotations

import logging

from axolotl.prompt_tokenizers import DatasetWrappingStrategy
from datasets import Dataset

from .args import DecSelfMaskConfig
from .inputs import InputError, clean_texts
from .precompute import run_precompute, text_token_budget, truncate_texts
from .prompts import ensure_chat_template, reconstruction_messages, tokenize_for_training

LOG = logging.getLogger(__name__)


def plugin_config(cfg) -> DecSelfMaskConfig:
    """The validated ``decselfmask:`` block of an Axolotl config."""
    block = cfg.get("decselfmask") or {}
    if hasattr(block, "to_dict"):
        block = block.to_dict()
    return DecSelfMaskConfig(**block)


def relevance_model_path(cfg, config: DecSelfMaskConfig) -> str:
    return config.relevance.model or cfg.base_model


class MaskedReconstructionStrategy(DatasetWrappingStrategy):
    def __init__(self, tokenizer, cfg, ds_cfg):
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.ds_cfg = ds_cfg or {}
        self.config = plugin_config(cfg)

    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs) -> Dataset:
        cfg, config, tokenizer = self.cfg, self.config, self.tokenizer
        path = self.ds_cfg.get("path", "<dataset>")
        column = self.ds_cfg.get("text_column") or "text"
        if column not in dataset.column_names:
            raise InputError(
                f"{path}: no column {column!r} (set by the dataset's text_column); the file has "
                f"{dataset.column_names}."
            )
        texts, _, report = clean_texts(dataset[column], path, column)
        if config.max_texts:
            texts = texts[: config.max_texts]
        ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
        budget = text_token_budget(tokenizer, config, cfg.sequence_len)
        texts, report.truncated = truncate_texts(tokenizer, texts, budget)
        LOG.info("decselfmask: %s", report.summary(str(path)))
        clashes = sum(config.masking.mask_token in t for t in texts)
        if clashes:
            LOG.warning(
                "decselfmask: the mask token %r already occurs in %d texts; choose another "
                "decselfmask.masking.mask_token if that is not intended.",
                config.masking.mask_token, clashes,
            )
        if config.relevance.dtype == "auto" and cfg.bf16 is True:
            config.relevance.dtype = "bfloat16"  # follow the recipe's precision
        result = run_precompute(
            texts, config, tokenizer, relevance_model_path(cfg, config), config.cache_dir,
            trust_remote_code=bool(cfg.trust_remote_code),
        )
        print(f"decselfmask: {len(result.examples)} masked examples from {result.n_texts} texts "
              f"({report.truncated} truncated, {len(report.skipped_empty)} empty skipped, "
              f"{result.n_without_spans} without spans); readable copy: {result.directory / 'examples.jsonl'}")
        rows = [
            tokenize_for_training(
                tokenizer,
                reconstruction_messages(ex["masked_text"], ex["answer"], config.masking.system_prompt),
                train_on_inputs=bool(cfg.train_on_inputs),
            )
            for ex in result.examples
        ]
        return Dataset.from_list(rows)


def load(tokenizer, cfg, ds_cfg=None):
    """Entry point Axolotl calls for ``type: axolotl_decselfmask.masked_reconstruction``."""
    return MaskedReconstructionStrategy(tokenizer, cfg, ds_cfg)
