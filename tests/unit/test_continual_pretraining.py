"""The baseline stage-1 dataset type: next-token prediction on the raw unlabelled texts."""

import json

import pytest
from axolotl.utils.dict import DictDefault
from conftest import DATA
from datasets import Dataset

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage1.budget import STATS_FILE
from axolotl_decselfmask.stage1.continual_pretraining import DATASET_TYPE, load


def _texts(name, n):
    return [json.loads(line)["text"] for line in (DATA / name).read_text().splitlines()][:n]


def _cfg(tmp_path, **block):
    return DictDefault({"base_model": "not-loaded", "sequence_len": 128, "output_dir": str(tmp_path / "out"),
                        "decselfmask": {"cache_dir": str(tmp_path / "cache"), **block}})


def _wrap(tok, cfg, rows, ds_cfg=None):
    return load(tok, cfg, DictDefault(ds_cfg or {"path": "pool.jsonl"})).wrap_dataset(Dataset.from_list(rows))


def test_rows_are_the_raw_texts_then_eos_with_loss_on_every_token(tmp_path, smollm_tok):
    texts = _texts("abstracts_unlabelled.jsonl", 6)
    rows = [{"text": t} for t in texts[:3]] + [{"text": "  "}] + [{"text": t} for t in texts[3:]]
    ds = _wrap(smollm_tok, _cfg(tmp_path), rows)
    assert len(ds) == 6  # the whitespace-only row is skipped
    n_cut = 0
    for text, ids, mask, labels in zip(texts, ds["input_ids"], ds["attention_mask"], ds["labels"]):
        assert labels == ids and mask == [1] * len(ids)
        assert len(ids) <= 128 and ids[-1] == smollm_tok.eos_token_id
        assert smollm_tok.eos_token_id not in ids[:-1]
        body = smollm_tok.decode(ids[:-1])
        assert text.startswith(body) and len(body) > 100  # the raw text, no chat prompt around it
        n_cut += body != text
    assert n_cut >= 1  # some abstracts are longer than 128 tokens and were cut
    stats = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    assert stats == {**stats, "dataset_type": DATASET_TYPE, "examples": 6, "texts": 6, "pool_texts": 6,
                     "budget": None, "tokens": sum(len(i) for i in ds["input_ids"])}
    assert stats["supervised_tokens"] == stats["tokens"]


def test_max_texts_and_budget(tmp_path, smollm_tok):
    rows = [{"text": t} for t in _texts("abstracts_unlabelled.jsonl", 8)]
    full = _wrap(smollm_tok, _cfg(tmp_path, max_texts=5), rows)
    assert len(full) == 5
    lengths = [len(i) for i in full["input_ids"]]
    cut = _wrap(smollm_tok, _cfg(tmp_path, max_texts=5, stage1_token_budget=sum(lengths[:3])), rows)
    assert cut["input_ids"] == full["input_ids"][:3]
    stats = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    assert stats["examples"] == 3 and stats["tokens"] == sum(lengths[:3]) and stats["pool_texts"] == 5


def test_test_texts_in_the_pool_are_refused(tmp_path, smollm_tok):
    test_rows = [json.loads(line) for line in (DATA / "abstracts_test.jsonl").read_text().splitlines()][:3]
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    rows = [{"text": t} for t in _texts("abstracts_unlabelled.jsonl", 3)] + [{"text": test_rows[1]["text"]}]
    cfg = _cfg(tmp_path, classification={"test_file": str(test_file)})
    with pytest.raises(InputError, match=r"also appear in the test file .*test.jsonl.*drop_test_texts_from_pool"):
        _wrap(smollm_tok, cfg, rows)
    cfg = _cfg(tmp_path, classification={"test_file": str(test_file)}, drop_test_texts_from_pool=True)
    assert len(_wrap(smollm_tok, cfg, rows)) == 3


def test_bad_inputs_are_named(tmp_path, smollm_tok):
    with pytest.raises(InputError, match=r"pool.jsonl: no column 'note'.*\['text'\]"):
        _wrap(smollm_tok, _cfg(tmp_path), [{"text": "x"}], {"path": "pool.jsonl", "text_column": "note"})
    with pytest.raises(InputError, match="every text"):
        _wrap(smollm_tok, _cfg(tmp_path), [{"text": " "}])
    cfg = _cfg(tmp_path)
    cfg.sequence_len = 10
    with pytest.raises(InputError, match="raise sequence_len"):
        _wrap(smollm_tok, cfg, [{"text": "A note about a pacemaker."}])
