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
from dataclasses import dataclass
from pathlib import Path

from axolotl.prompt_tokenizers import DatasetWrappingStrategy
from datasets import Dataset

from .args import DecSelfMaskConfig
from .inputs import (InputError, TextReport, clean_texts, dataset_text_column, overlapping_rows, read_table,
                     require_column)
from .precompute import run_precompute, text_token_budget, truncate_texts
from .prompts import ensure_chat_template, reconstruction_messages, tokenize_for_training
from .stage1_budget import apply_token_budget, write_stage1_stats

LOG = logging.getLogger(__name__)

DATASET_TYPE = "axolotl_decselfmask.masked_reconstruction"


def plugin_config(cfg) -> DecSelfMaskConfig:
    """The validated ``decselfmask:`` block of an Axolotl config."""
    block = cfg.get("decselfmask") or {}
    if hasattr(block, "to_dict"):
        block = block.to_dict()
    return DecSelfMaskConfig(**block)


def relevance_model_path(cfg, config: DecSelfMaskConfig) -> str:
    return config.relevance.model or cfg.base_model


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


class MaskedReconstructionStrategy(PoolStrategy):
    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs) -> Dataset:
        cfg, config, tokenizer = self.cfg, self.config, self.tokenizer
        path, column = self.text_column(dataset)
        pool = prepare_pool(dataset[column], cfg, config, tokenizer, path, column)
        result = run_precompute(
            pool.texts, config, tokenizer, relevance_model_path(cfg, config), config.cache_dir,
            trust_remote_code=bool(cfg.trust_remote_code),
        )
        where = (f"; readable copy: {result.directory / 'examples.jsonl'}" if config.masking.write_jsonl
                 else "; no readable copy (masking.write_jsonl: false)")
        print(f"decselfmask: {len(result.examples)} masked examples from {result.n_texts} texts "
              f"({pool.report.truncated} truncated to {pool.budget} tokens, {len(pool.report.skipped_empty)} empty "
              f"skipped, {pool.with_mask} skipped for containing the mask string, {result.n_without_spans} without "
              f"spans, {result.n_bad_relevance} with zero or non-finite relevance){where}")
        rows = [
            tokenize_for_training(
                tokenizer,
                reconstruction_messages(ex["masked_text"], ex["answer"], config.masking.system_prompt),
                train_on_inputs=bool(cfg.train_on_inputs),
            )
            for ex in result.examples
        ]
        rows, stats = apply_token_budget(rows, config.stage1_token_budget, f"{DATASET_TYPE}, {path}")
        kept_texts = {ex["text_index"] for ex in result.examples[: len(rows)]}
        write_stage1_stats(cfg.output_dir, {"dataset_type": DATASET_TYPE, **stats, "texts": len(kept_texts),
                                            "pool_texts": result.n_texts})
        return Dataset.from_list(rows)


@dataclass
class PreparedPool:
    texts: list[str]
    report: TextReport
    budget: int
    with_mask: int


def prepare_pool(values, cfg, config: DecSelfMaskConfig, tokenizer, path, column) -> PreparedPool:
    """The unlabelled texts as the precompute sees them: cleaned, checked against the test
    file and the mask string, cut to ``max_texts``, truncated to the token budget.

    Also sets ``config.relevance.dtype`` from the recipe's precision when it is ``auto``.
    """
    texts, report, with_mask = clean_pool(values, config, path, column, skip=_without_mask_string)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    check_mask_token(tokenizer, config)
    budget = text_token_budget(tokenizer, config, cfg.sequence_len)
    texts, report.truncated = truncate_texts(tokenizer, texts, budget)
    LOG.info("decselfmask: %s", report.summary(str(path)))
    if config.relevance.dtype == "auto" and isinstance(cfg.bf16, bool):
        config.relevance.dtype = "bfloat16" if cfg.bf16 else "float32"  # the recipe's precision (the plugin resolved auto)
    return PreparedPool(texts, report, budget, with_mask)


def clean_pool(values, config: DecSelfMaskConfig, path, column, skip=None) -> tuple[list[str], TextReport, int]:
    """The unlabelled texts before any tokenizer work, shared by both stage-1 dataset types:
    non-empty, checked against the test file, filtered by ``skip(texts, config) -> (kept,
    n_skipped)`` if given, then cut to ``decselfmask.max_texts``. Returns the texts, the report
    and the number ``skip`` removed."""
    texts, _, report = clean_texts(values, path, column)
    texts = _without_test_texts(texts, config, path)
    n_skipped = 0
    if skip is not None:
        texts, n_skipped = skip(texts, config)
    if config.max_texts:
        texts = texts[: config.max_texts]
    return texts, report, n_skipped


def _without_test_texts(texts: list[str], config: DecSelfMaskConfig, path) -> list[str]:
    """Refuse (or drop, if configured) pool texts that are also test texts of any task."""
    if not config.classification.enabled:
        return texts
    drop: set[int] = set()
    tables: dict[str, list[dict]] = {}  # tasks often share a test file (seeds): read each file once

    def table(path: str, key: str) -> list[dict]:
        if path not in tables:
            tables[path] = read_table(path, key)
        return tables[path]

    for c in config.task_configs():
        if c.train_file and Path(c.train_file).exists():
            train_rows = table(c.train_file, "decselfmask.classification.train_file")
            if c.text_column in train_rows[0]:
                shared = overlapping_rows(texts, [str(r[c.text_column]) for r in train_rows])
                if shared:
                    LOG.info("decselfmask: %d unlabelled texts are also labelled training texts of %s (allowed: "
                             "stage 1 never sees their labels)", len({i for i, _ in shared}), c.task)
        if not c.test_file:
            continue
        test_rows = table(c.test_file, "decselfmask.classification.test_file")
        require_column(test_rows, c.text_column, c.test_file, "decselfmask.classification.text_column")
        test_texts = [str(r[c.text_column]) for r in test_rows if isinstance(r[c.text_column], str)]
        pairs = overlapping_rows(texts, test_texts)
        if not pairs:
            continue
        if not config.drop_test_texts_from_pool:
            shown = ", ".join(f"pool text {i} = test row {j}" for i, j in pairs[:5])
            raise InputError(
                f"{path}: {len(pairs)} unlabelled texts also appear in the test file {c.test_file} "
                f"({shown}). Test rows must never be in the pool: remove them, or set "
                "decselfmask.drop_test_texts_from_pool: true to drop them."
            )
        drop |= {i for i, _ in pairs}
        LOG.warning("decselfmask: dropped %d pool texts that also appear in %s", len({i for i, _ in pairs}),
                    c.test_file)
    return [t for i, t in enumerate(texts) if i not in drop] if drop else texts


def _without_mask_string(texts: list[str], config: DecSelfMaskConfig) -> tuple[list[str], int]:
    """Texts that already contain the mask string would make ambiguous examples: skip them."""
    mask = config.masking.mask_token
    kept = [t for t in texts if mask not in t]
    if not kept:
        raise InputError(
            f"every unlabelled text contains the mask string {mask!r}; choose another "
            "decselfmask.masking.mask_token."
        )
    if len(kept) < len(texts):
        LOG.warning("decselfmask: %d texts contain the mask string %r and are skipped; choose another "
                    "decselfmask.masking.mask_token to keep them", len(texts) - len(kept), mask)
    return kept, len(texts) - len(kept)


def check_mask_token(tokenizer, config: DecSelfMaskConfig) -> None:
    """The mask string must survive tokenisation (and be one token when added as one)."""
    mask = config.masking.mask_token
    ids = tokenizer(mask, add_special_tokens=False)["input_ids"]
    if config.masking.add_mask_token and len(ids) != 1:
        raise InputError(
            f"decselfmask.masking.mask_token {mask!r} is not one token of the tokenizer ({len(ids)} tokens). "
            f"Add it to the recipe's `tokens: [{mask!r}]` (the plugin does this for you when "
            "masking.add_mask_token is true, unless the tokenizer rejects it)."
        )
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids and mask != tokenizer.unk_token:
        raise InputError(
            f"decselfmask.masking.mask_token {mask!r} contains characters the tokenizer maps to its unknown "
            "token; choose a mask string made of ordinary characters."
        )
    if tokenizer.decode(ids).strip() != mask.strip():
        raise InputError(
            f"decselfmask.masking.mask_token {mask!r} does not survive tokenisation "
            f"(it decodes as {tokenizer.decode(ids)!r}); choose another mask string."
        )


def load(tokenizer, cfg, ds_cfg=None):
    """Entry point Axolotl calls for ``type: axolotl_decselfmask.masked_reconstruction``."""
    return MaskedReconstructionStrategy(tokenizer, cfg, ds_cfg)
