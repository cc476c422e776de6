"""Axolotl dataset type ``axolotl_decselfmask.continual_pretraining``: the baseline stage 1.

Continual pretraining: next-token prediction on the unlabelled texts, with no masking. In a recipe::

    datasets:
      - path: notes.jsonl
        type: axolotl_decselfmask.continual_pretraining
        text_column: text

``decselfmask.continual_pretraining.form`` chooses the rows:

- ``raw`` (the default): no relevance. Each text, cut at a token boundary to fit
  ``sequence_len``, followed by the eos token; no chat template; one row a text.
- ``authors``: the rows of the authors' continual-pretraining baseline (their first commit,
  ``src/training/dataset.py``, training type ``continual_pretraining_crf``): the
  masked-reconstruction examples of ``axolotl_decselfmask.masked_reconstruction`` (the same
  relevance, spans and cache), each with its spans put back (:func:`spans_put_back`), as the
  user turn after an empty system turn in the chat template, eos appended where the rendering
  does not end with it. One row per masked example: a text comes back once per span.

In both the pool is prepared as for masked reconstruction (empty texts skipped, texts that are
also test texts refused, ``decselfmask.max_texts``), the loss is on every token
(``labels = input_ids``), and ``decselfmask.stage1_token_budget`` keeps the leading rows within
the same token budget as the masked-reconstruction run it is compared with. What was kept is
written to ``<output_dir>/decselfmask_stage1_data.json``.
"""

from __future__ import annotations

import copy
import logging

from datasets import Dataset

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.prompts import ensure_chat_template, render_conversation
from axolotl_decselfmask.stage1.budget import apply_token_budget, write_stage1_stats
from axolotl_decselfmask.stage1.examples import mask_text, unmask
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


def spans_put_back(example: dict, texts: list[str], mask_token: str) -> str:
    """A masked example's text with its spans put back: each mask replaced by the span it hides (read
    from the pool text the example was made from, whose spans must give its masked text)."""
    text = texts[example["text_index"]]
    spans = [tuple(s) for s in example["spans"]]
    if mask_text(text, spans, mask_token) != example["masked_text"]:
        raise ValueError(f"decselfmask: the masked example of text {example['text_index']} does not come from that "
                         "pool text (a cache of other texts?); delete decselfmask.cache_dir's examples-* folders")
    return unmask(example["masked_text"], [text[s:e] for s, e in spans], mask_token)


def authors_row(tokenizer, text: str, max_length: int | None = None) -> dict[str, list[int]]:
    """One row of the authors' form: ``text`` as the user turn after an empty system turn, in the chat
    template (no generation prompt), eos appended unless the rendering ends with it; labels on every
    token; at most ``max_length`` tokens (the last one eos)."""
    rendered = render_conversation(tokenizer, [{"role": "system", "content": ""}, {"role": "user", "content": text}])
    if tokenizer.eos_token and not rendered.endswith(tokenizer.eos_token):
        rendered += tokenizer.eos_token
    ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    if max_length is not None and len(ids) > max_length:
        ids = ids[: max_length - 1] + [tokenizer.eos_token_id]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}


class ContinualPretrainingStrategy(PoolStrategy):
    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs) -> Dataset:
        cfg, tokenizer = self.cfg, self.tokenizer
        if tokenizer.eos_token_id is None:
            raise InputError(
                f"the tokenizer of {cfg.base_model} has no eos token, which ends each continual-pretraining "
                "text; set `special_tokens: {eos_token: ...}` in the recipe."
            )
        if self.config.continual_pretraining.form == "authors":
            return self._authors_rows(dataset)
        return self._raw_rows(dataset)

    def _raw_rows(self, dataset) -> Dataset:
        cfg, config, tokenizer = self.cfg, self.config, self.tokenizer
        path, column = self.text_column(dataset)
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
        write_stage1_stats(cfg.output_dir, {"dataset_type": DATASET_TYPE, "form": "raw", **stats, "texts": len(rows),
                                            "pool_texts": len(texts)})
        return Dataset.from_list(rows)

    def _authors_rows(self, dataset) -> Dataset:
        """The masked-reconstruction examples (the precompute, its cache shared with that dataset type),
        each with its spans put back, in the authors' chat form."""
        tokenizer, config, length = self.tokenizer, self.config, int(self.cfg.sequence_len)
        ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(self.cfg.base_model))

        def row_of(pool):
            def row(ex: dict) -> dict:
                return authors_row(tokenizer, spans_put_back(ex, pool.texts, config.masking.mask_token), length)
            return row

        # the masks are made with a copy, which may get the added mask token: the rows hold no mask, and the
        # recipe's tokenizer (and so the model's vocabulary) stays as Axolotl set it
        path, result, row = self.masked_examples(dataset, row_of, copy.deepcopy(tokenizer))
        print(f"decselfmask: {len(result.examples)} continual-pretraining examples in the authors' form (each "
              "masked example with its spans put back, chat template, loss on every token)")
        return self.budgeted_rows(result, row, DATASET_TYPE, path, extra={"form": "authors"})


def load(tokenizer, cfg, ds_cfg=None):
    """Entry point Axolotl calls for ``type: axolotl_decselfmask.continual_pretraining``."""
    return ContinualPretrainingStrategy(tokenizer, cfg, ds_cfg)
