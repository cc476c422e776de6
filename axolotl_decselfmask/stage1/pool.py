"""The unlabelled pool's rules, in one place: which texts of a pool file stage 1 uses and how they are cut."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.labelled import overlapping_rows, split_test_texts
from axolotl_decselfmask.io.tables import (
    TextReport,
    check_pool_file,
    clean_texts,
    dataset_text_column,
    read_table,
    require_column,
)
from axolotl_decselfmask.mask_token import resolve_mask_setting
from axolotl_decselfmask.prompts import (
    ensure_chat_template,
    reconstruction_messages,
    tokenize_for_training,
)
from axolotl_decselfmask.relevance.prompt import build_relevance_prompt

LOG = logging.getLogger(__name__)

# The `type:` of a `datasets:` entry that is an unlabelled pool (Axolotl imports the module of that name).
MASKED_RECONSTRUCTION_TYPE = "axolotl_decselfmask.masked_reconstruction"
CONTINUAL_PRETRAINING_TYPE = "axolotl_decselfmask.continual_pretraining"
POOL_TYPES = (MASKED_RECONSTRUCTION_TYPE, CONTINUAL_PRETRAINING_TYPE)


def uses_pool_dataset(cfg) -> bool:
    return any(isinstance(d, dict) and d.get("type") in POOL_TYPES for d in (cfg.get("datasets") or []))


def check_pool_datasets(cfg) -> None:
    """The recipe's pool files of the plugin's types, checked before stage 1 (the plugin's ``load_datasets``)."""
    for n, entry in enumerate(cfg.get("datasets") or []):
        if entry.get("type") in POOL_TYPES:
            check_pool_file(entry["path"], dataset_text_column(entry), f"datasets[{n}].path")
    if not uses_pool_dataset(cfg):
        LOG.warning("decselfmask: no dataset has type %s; stage 1 trains on the recipe's datasets as they are",
                    MASKED_RECONSTRUCTION_TYPE)


def relevance_model_path(cfg, config: DecSelfMaskConfig) -> str:
    return config.relevance.model or cfg.base_model


@dataclass
class PreparedPool:
    texts: list[str]
    report: TextReport
    budget: int
    with_mask: int


def prepare_pool(values, cfg, config: DecSelfMaskConfig, tokenizer, path, column) -> PreparedPool:
    """The unlabelled texts as the precompute sees them: cleaned, checked against the test
    file and the mask string, cut to ``max_texts``, truncated to the token budget.

    Also sets ``config.relevance.dtype`` from the recipe's precision when it is ``auto``, and
    ``config.masking.mask_token`` to the chosen token's text when it is ``auto`` (mask_token.py).
    """
    mask = resolve_mask_setting(tokenizer, config)
    texts, report, with_mask = clean_pool(values, config, path, column, skip=without_mask_string)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    check_mask_token(tokenizer, config, one_token=mask.one_token)
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
    texts = without_test_texts(texts, config, path)
    n_skipped = 0
    if skip is not None:
        texts, n_skipped = skip(texts, config)
    if config.max_texts:
        texts = texts[: config.max_texts]
    return texts, report, n_skipped


def without_test_texts(texts: list[str], config: DecSelfMaskConfig, path) -> list[str]:
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
        if c.test_fraction is not None and c.train_file:
            test_texts, test_name = split_test_texts(c, config.seed), f"{c.train_file} (test_fraction side)"
        elif c.test_file:
            test_rows = table(c.test_file, "decselfmask.classification.test_file")
            require_column(test_rows, c.text_column, c.test_file, "decselfmask.classification.text_column")
            test_texts = [str(r[c.text_column]) for r in test_rows if isinstance(r[c.text_column], str)]
            test_name = c.test_file
        else:
            continue
        pairs = overlapping_rows(texts, test_texts)
        if not pairs:
            continue
        if not config.drop_test_texts_from_pool:
            shown = ", ".join(f"pool text {i} = test row {j}" for i, j in pairs[:5])
            raise InputError(
                f"{path}: {len(pairs)} unlabelled texts also appear in the test file {test_name} "
                f"({shown}). Test rows must never be in the pool: remove them, or set "
                "decselfmask.drop_test_texts_from_pool: true to drop them."
            )
        drop |= {i for i, _ in pairs}
        LOG.warning("decselfmask: dropped %d pool texts that also appear in %s", len({i for i, _ in pairs}),
                    test_name)
    return [t for i, t in enumerate(texts) if i not in drop] if drop else texts


def without_mask_string(texts: list[str], config: DecSelfMaskConfig) -> tuple[list[str], int]:
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


def check_mask_token(tokenizer, config: DecSelfMaskConfig, one_token: bool | None = None) -> None:
    """The mask string must survive tokenisation, and be one token when it is meant to be one
    (``one_token``; default: ``masking.add_mask_token``)."""
    mask = config.masking.mask_token
    ids = tokenizer(mask, add_special_tokens=False)["input_ids"]
    if one_token and not config.masking.add_mask_token and len(ids) != 1:
        raise InputError(
            f"the mask token {mask!r} chosen for this tokenizer (decselfmask.masking.mask_token: auto) is "
            f"{len(ids)} tokens, not one: the tokenizer splits it (set an explicit masking.mask_token)."
        )
    if (config.masking.add_mask_token if one_token is None else one_token) and len(ids) != 1:
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


def text_token_budget(tokenizer, config: DecSelfMaskConfig, sequence_len: int) -> int:
    """How many tokens of a text fit: ``sequence_len`` minus the longest prompt's own tokens.

    The rule: a text is cut at a token boundary to this many tokens, so that both its
    relevance prompt (with the longest item) and its reconstruction example fit.
    """
    items = config.task_items() or ["x"]
    longest = max(items, key=lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    rel = len(build_relevance_prompt(tokenizer, "x", longest, config.relevance.lead_in,
                                     config.relevance.prompt_style).input_ids) - 1
    mask_len = len(tokenizer(config.masking.mask_token, add_special_tokens=False)["input_ids"])
    recon = len(
        tokenize_for_training(tokenizer, reconstruction_messages("x", "x", config.masking.system_prompt))["input_ids"]
    ) + (mask_len + 2) * config.masking.spans_per_example
    budget = sequence_len - max(rel, recon) - 4
    if budget < 16:
        raise InputError(
            f"sequence_len ({sequence_len}) leaves only {budget} tokens for a text after the "
            "prompt; raise sequence_len."
        )
    return budget


def truncate_texts(tokenizer, texts: list[str], budget: int) -> tuple[list[str], int]:
    out, n_cut = [], 0
    for text in texts:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) > budget:
            out.append(text[: enc["offset_mapping"][budget - 1][1]])
            n_cut += 1
        else:
            out.append(text)
    return out, n_cut


def read_pool_as_axolotl(entry, cfg, column: str) -> list:
    """The text column of a ``datasets:`` entry exactly as ``axolotl preprocess``/``train`` hand it to
    the dataset type: Axolotl's own loader (local files and folders, hub names, ``data_files``,
    ``name``), then its choice of ``split`` (default ``train``) and ``shards``. The precompute CLI
    reads the pool this way, so that the cache it fills is the one the training run looks up."""
    from axolotl.utils.data.shared import load_dataset_with_config
    from axolotl.utils.dict import DictDefault
    from datasets import DatasetDict, IterableDatasetDict

    entry = entry if isinstance(entry, DictDefault) else DictDefault(dict(entry))
    dataset = load_dataset_with_config(entry, cfg.get("hf_use_auth_token"))
    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        split = entry.get("split") or "train"
        if split not in dataset:
            raise InputError(f"{entry.get('path')}: no split {split!r} (it has {list(dataset)}); set the dataset's `split:`")
        dataset = dataset[split]
    if entry.get("shards"):
        dataset = dataset.shuffle(seed=cfg.get("seed")).shard(num_shards=entry["shards"],
                                                              index=entry.get("shards_idx") or 0)
    if column not in dataset.column_names:
        raise InputError(f"{entry.get('path')}: no column {column!r} (set by the dataset's text_column); "
                         f"the dataset has {dataset.column_names}.")
    return list(dataset[column])
