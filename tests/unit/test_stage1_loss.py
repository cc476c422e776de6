"""Stage 1's loss: on the answer by default, on every token of the masked-reconstruction rows (the system
turn, the masked text, the template's tokens) with Axolotl's ``train_on_inputs: true``, as the authors'
``calculate_loss_on_prompt=True``."""

import json

from axolotl.utils.dict import DictDefault
from conftest import DATA
from datasets import Dataset
from transformers import AutoTokenizer

from axolotl_decselfmask.stage1.budget import STATS_FILE
from axolotl_decselfmask.stage1.masked_reconstruction import load

POOL = [json.loads(line)["text"][:300] for line in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()][:4]
ITEMS = ["neoplasms", "cardiovascular diseases"]


def _rows(tmp_path, model, out: str, train_on_inputs):
    cfg = {"base_model": str(model), "sequence_len": 256, "bf16": False, "output_dir": str(tmp_path / out),
           "decselfmask": {"items": ITEMS, "items_per_text": "all", "cache_dir": str(tmp_path / "cache"),
                           "relevance": {"method": "grad_x_input", "dtype": "float32"},
                           "spans": {"rescale_after_smoothing": True}}}
    if train_on_inputs is not None:
        cfg["train_on_inputs"] = train_on_inputs
    tok = AutoTokenizer.from_pretrained(model)
    ds = load(tok, DictDefault(cfg), DictDefault({"path": "pool.jsonl"})).wrap_dataset(
        Dataset.from_list([{"text": t} for t in POOL]))
    return tok, ds.to_list(), json.loads((tmp_path / out / STATS_FILE).read_text())


def _supervised(row) -> int:
    return sum(1 for t in row["labels"] if t != -100)


def test_train_on_inputs_puts_the_loss_on_every_token(tmp_path, tiny_llama):
    tok, answer_only, stats_a = _rows(tmp_path, tiny_llama, "a", None)
    _, every, stats_e = _rows(tmp_path, tiny_llama, "e", True)
    assert len(every) == len(answer_only) > 3
    for a, e in zip(answer_only, every):
        assert a["input_ids"] == e["input_ids"]  # the same rows, only the labels differ
        assert _supervised(e) == len(e["input_ids"]) and e["labels"] == e["input_ids"]
        # answer only: the span and the end-of-turn marker, a short tail of the row
        n = _supervised(a)
        assert 1 < n < len(a["input_ids"]) // 3
        assert a["labels"][:-n] == [-100] * (len(a["labels"]) - n) and a["labels"][-n:] == a["input_ids"][-n:]
        prompt = tok.decode(e["labels"][:-n])  # the prompt's tokens carry labels too
        assert "Fill in the masked part" in prompt and "<|im_start|>user" in prompt and "<|im_start|>system" in prompt
    assert stats_e["supervised_tokens"] == stats_e["tokens"] == sum(len(r["input_ids"]) for r in every)
    assert stats_a["supervised_tokens"] == sum(_supervised(r) for r in answer_only) < stats_a["tokens"] // 3
    _, off, _ = _rows(tmp_path, tiny_llama, "f", False)
    assert off == answer_only
