"""The stage-1 precompute stops at the token budget: relevance only for the (text, item) pairs whose
examples the budget keeps, and the trained rows those of a full precompute with the same budget."""

import json

from axolotl.utils.dict import DictDefault
from conftest import DATA
from datasets import Dataset
from transformers import AutoTokenizer

from axolotl_decselfmask.stage1.budget import STATS_FILE, apply_token_budget
from axolotl_decselfmask.stage1.masked_reconstruction import load

POOL = [json.loads(line)["text"][:300] for line in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()][:8]
ITEMS = ["neoplasms", "digestive system diseases", "cardiovascular diseases"]
N_PAIRS = len(POOL) * len(ITEMS)  # items_per_text: all


def _rows(tmp_path, model, cache: str, budget: int | None, out: str):
    cfg = DictDefault({
        "base_model": str(model), "sequence_len": 256, "bf16": False, "output_dir": str(tmp_path / out),
        "decselfmask": {"items": ITEMS, "items_per_text": "all", "cache_dir": str(tmp_path / cache),
                        "stage1_token_budget": budget,
                        "relevance": {"method": "grad_x_input", "shard_size": 2, "dtype": "float32"},
                        "spans": {"rescale_after_smoothing": True}}})
    ds = load(AutoTokenizer.from_pretrained(model), cfg, DictDefault({"path": "pool.jsonl"})).wrap_dataset(
        Dataset.from_list([{"text": t} for t in POOL]))
    stats = json.loads((tmp_path / out / STATS_FILE).read_text())
    return ds.to_list(), stats


def _scored(tmp_path, cache: str) -> int:
    """(text, item) pairs whose relevance is in the cache."""
    return sum(len(json.loads(p.read_text())["pairs"]) for p in (tmp_path / cache).glob("relevance-*/part-*.json"))


def test_precompute_stops_at_the_budget_with_the_same_examples(tmp_path, tiny_llama):
    full, full_stats = _rows(tmp_path, tiny_llama, "full", None, "o1")
    assert _scored(tmp_path, "full") == N_PAIRS and not full_stats["relevance_partial"]
    budget = sum(len(r["input_ids"]) for r in full[:5]) + 1  # 5 examples, the 6th does not fit
    assert len(full) > 12  # the pool's examples go far past the budget
    expected, _ = apply_token_budget(full, budget, "full precompute")
    assert len(expected) == 5

    rows, stats = _rows(tmp_path, tiny_llama, "budget", budget, "o2")
    assert rows == expected  # the trained rows: those of the full precompute with the same budget
    scored = _scored(tmp_path, "budget")
    assert scored < N_PAIRS and stats["pairs_scored"] == scored and stats["relevance_partial"]
    assert (stats["examples"], stats["tokens"]) == (5, budget - 1)

    # the partial cache serves the same budget again (nothing scored), and a smaller one
    again, _ = _rows(tmp_path, tiny_llama, "budget", budget, "o3")
    assert again == expected and _scored(tmp_path, "budget") == scored
    smaller, _ = _rows(tmp_path, tiny_llama, "budget", budget - 40, "o4")
    assert smaller == apply_token_budget(full, budget - 40, "full")[0] and _scored(tmp_path, "budget") == scored
    # ... but not a run without a budget: it resumes at the first missing shard and scores the rest
    rest, rest_stats = _rows(tmp_path, tiny_llama, "budget", None, "o5")
    assert rest == full and _scored(tmp_path, "budget") == N_PAIRS and not rest_stats["relevance_partial"]
