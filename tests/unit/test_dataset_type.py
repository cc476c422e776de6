"""The dataset type's own checks, which run before any model is loaded."""

import pytest
from axolotl.utils.dict import DictDefault
from datasets import Dataset

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage1.masked_reconstruction import load


def _cfg(tmp_path, model="does-not-exist"):
    return DictDefault({"base_model": model, "sequence_len": 256, "decselfmask": {
        "items": ["a"], "cache_dir": str(tmp_path)}})


def test_missing_text_column_is_named_before_model_work(tmp_path, smollm_tok):
    strategy = load(smollm_tok, _cfg(tmp_path), DictDefault({"path": "pool.jsonl", "text_column": "note"}))
    with pytest.raises(InputError, match=r"pool.jsonl: no column 'note'.*\['text'\]"):
        strategy.wrap_dataset(Dataset.from_list([{"text": "x"}]))


def test_all_empty_texts_is_an_error(tmp_path, smollm_tok):
    strategy = load(smollm_tok, _cfg(tmp_path), DictDefault({"path": "pool.jsonl"}))
    with pytest.raises(InputError, match="every text"):
        strategy.wrap_dataset(Dataset.from_list([{"text": " "}, {"text": ""}]))


def test_sequence_len_too_small_for_prompt(tmp_path, smollm_tok):
    cfg = _cfg(tmp_path)
    cfg.sequence_len = 40
    strategy = load(smollm_tok, cfg, DictDefault({"path": "pool.jsonl"}))
    with pytest.raises(ValueError, match="raise sequence_len"):
        strategy.wrap_dataset(Dataset.from_list([{"text": "A note about a pacemaker."}]))
