"""decselfmask.stage1_token_budget: the exact cut, the statistics file, and both dataset types."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from axolotl.utils.dict import DictDefault
from conftest import DATA
from datasets import Dataset, load_from_disk

from axolotl_decselfmask.stage1.budget import (
    STATS_FILE,
    apply_token_budget,
    write_stage1_stats,
)


def _row(n, supervised=None):
    supervised = n if supervised is None else supervised
    return {"input_ids": list(range(n)), "attention_mask": [1] * n,
            "labels": [-100] * (n - supervised) + list(range(supervised))}


def test_budget_keeps_leading_rows_exactly_up_to_the_budget(capsys):
    rows = [_row(5, 2), _row(7, 7), _row(3, 1), _row(10), _row(1)]
    kept, stats = apply_token_budget(rows, 15, "unit")
    assert kept == rows[:3]  # 5 + 7 + 3 = 15 is within; the 10-token row would exceed
    assert stats["examples"] == 3 and stats["tokens"] == 15 and stats["supervised_tokens"] == 10
    assert stats["available_examples"] == 5 and stats["available_tokens"] == 26
    assert stats["budget"] == 15 and stats["at_equal_budget"] is True
    kept, stats = apply_token_budget(rows, 14, "unit")
    assert [len(r["input_ids"]) for r in kept] == [5, 7] and stats["tokens"] == 12
    # the cut is at the first row that does not fit: a later, shorter row is not taken instead
    kept, _ = apply_token_budget([_row(5), _row(20), _row(1)], 10, "unit")
    assert [len(r["input_ids"]) for r in kept] == [5]
    assert "2 of 5 examples, 12 of 26 tokens" in capsys.readouterr().out


def test_no_budget_keeps_everything_and_a_short_pool_is_reported(capsys):
    rows = [_row(4), _row(6)]
    kept, stats = apply_token_budget(rows, None, "unit")
    assert kept == rows and stats["tokens"] == 10 and stats["budget"] is None and stats["at_equal_budget"]
    kept, stats = apply_token_budget(rows, 1000, "pool.jsonl")
    assert kept == rows and stats["at_equal_budget"] is False
    out = capsys.readouterr().out
    assert "only 10 tokens, fewer than decselfmask.stage1_token_budget (1000)" in out
    assert "NOT at the equal token budget" in out


def test_budget_below_the_first_row_is_an_error():
    with pytest.raises(ValueError, match=r"no example fits decselfmask.stage1_token_budget \(3\).*5 tokens"):
        apply_token_budget([_row(5)], 3, "unit")


def test_stats_file_is_written_atomically(tmp_path):
    stats = {"dataset_type": "x", "examples": 2, "tokens": 10, "supervised_tokens": 4, "budget": 12, "texts": 1}
    path = write_stage1_stats(tmp_path / "out", stats)
    assert path == tmp_path / "out" / STATS_FILE
    assert json.loads(path.read_text()) == stats
    assert [p.name for p in (tmp_path / "out").iterdir()] == [STATS_FILE]  # no temporary file left
    with pytest.raises(ValueError, match="texts"):
        write_stage1_stats(tmp_path, {k: v for k, v in stats.items() if k != "texts"})


def _abstracts(n):
    return [json.loads(line) for line in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()][:n]


def test_masked_reconstruction_applies_the_budget(tmp_path, tiny_llama, smollm_tok):
    from axolotl_decselfmask.stage1.masked_reconstruction import DATASET_TYPE, load

    cfg = DictDefault({
        "base_model": str(tiny_llama), "sequence_len": 192, "output_dir": str(tmp_path / "out"),
        "decselfmask": {"items": ["neoplasms", "nervous system diseases"], "cache_dir": str(tmp_path / "cache"),
                        "relevance": {"batch_size": 4, "device": "cpu", "dtype": "float32"},
                        "spans": {"rescale_after_smoothing": True},
                        "classification": {"enabled": False}},
    })
    ds = Dataset.from_list([{"text": r["text"]} for r in _abstracts(4)])
    full = load(smollm_tok, cfg, DictDefault({"path": "pool.jsonl"})).wrap_dataset(ds)
    lengths = [len(ids) for ids in full["input_ids"]]
    assert len(lengths) >= 3
    budget = sum(lengths[:2]) + 1  # the third example does not fit
    cfg["decselfmask"]["stage1_token_budget"] = budget
    cut = load(smollm_tok, cfg, DictDefault({"path": "pool.jsonl"})).wrap_dataset(ds)
    assert cut["input_ids"] == full["input_ids"][:2]
    stats = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    assert stats["dataset_type"] == DATASET_TYPE
    assert stats["examples"] == 2 and stats["tokens"] == budget - 1 and stats["budget"] == budget
    assert stats["supervised_tokens"] == sum(sum(t != -100 for t in lab) for lab in cut["labels"])
    assert 1 <= stats["texts"] <= 2 and stats["pool_texts"] == 4


# --- end to end: `axolotl preprocess` with the continual-pretraining type -------------------------

def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_preprocess_continual_pretraining_within_budget(tmp_path, tiny_llama):
    from helpers import base_recipe, data_rows

    write_rows(tmp_path / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=10))
    write_rows(tmp_path / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    write_rows(tmp_path / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=2))
    recipe = base_recipe(tmp_path, tiny_llama)
    recipe["datasets"][0]["type"] = "axolotl_decselfmask.continual_pretraining"
    recipe["sequence_len"] = 128
    recipe["decselfmask"]["stage1_token_budget"] = 500
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), "preprocess", str(path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "continual-pretraining examples" in log and "self-relevance" not in log

    stats = json.loads((tmp_path / "out" / STATS_FILE).read_text())
    assert stats["dataset_type"] == "axolotl_decselfmask.continual_pretraining"
    assert stats["budget"] == 500 and stats["pool_texts"] == 10
    # the rows the type builds: 10 texts cut to 127 tokens + eos (lengths 128, 111, 128, 94, 128, ...)
    from transformers import AutoTokenizer

    from axolotl_decselfmask.stage1.continual_pretraining import tokenize_text
    from axolotl_decselfmask.stage1.pool import truncate_texts

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    texts, _ = truncate_texts(tok, [r["text"] for r in data_rows("abstracts_unlabelled.jsonl", n=10)], 127)
    lengths = [len(tokenize_text(tok, t, 128)["input_ids"]) for t in texts]
    n = stats["examples"]
    assert 1 <= n < 10 and stats["texts"] == n
    assert stats["tokens"] == sum(lengths[:n]) <= 500 < sum(lengths[: n + 1])  # the cut is exact
    assert stats["supervised_tokens"] == stats["tokens"] and stats["available_tokens"] == sum(lengths)

    saved = [p.parent for p in (tmp_path / "prepared").rglob("dataset_info.json")]
    assert len(saved) == 1, saved
    prepared = load_from_disk(str(saved[0]))
    assert len(prepared) == n
    assert sum(len(ids) for ids in prepared["input_ids"]) == stats["tokens"] <= 500
    assert all(ids == lab for ids, lab in zip(prepared["input_ids"], prepared["labels"]))
