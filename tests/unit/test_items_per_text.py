"""``decselfmask.items_per_text``: N random items per note (the authors' ``keep_n_sequences_per_note``),
every pool note covered, seeded; ``all`` or -1 for every item; a bad value names the key."""

import json

import pytest
from conftest import DATA
from pydantic import ValidationError
from transformers import AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskArgs, DecSelfMaskConfig
from axolotl_decselfmask.stage1.precompute import run_precompute, shard_plan

ITEMS = ["neoplasms", "digestive system diseases", "nervous system diseases", "cardiovascular diseases",
         "general pathological conditions"]


def _plan(n_texts, per_text, seed=0, items=ITEMS):
    pairs, _ = shard_plan(n_texts, DecSelfMaskConfig(items=items, items_per_text=per_text, seed=seed))
    by_text: dict[int, list[str]] = {}
    for i, item in pairs:
        by_text.setdefault(i, []).append(item)
    return by_text


@pytest.mark.parametrize("n", [1, 2, 4])
def test_n_distinct_random_items_for_every_note(n):
    plan = _plan(200, n)
    assert sorted(plan) == list(range(200))  # every note, none left out
    for items in plan.values():
        assert len(items) == n == len(set(items)) and set(items) <= set(ITEMS)
    # drawn at random: notes differ in their items, and every item is drawn for some note
    assert len({tuple(v) for v in plan.values()}) > 1 and {i for v in plan.values() for i in v} == set(ITEMS)
    assert plan == _plan(200, n)  # the same seed, the same draw
    assert plan != _plan(200, n, seed=1)


def test_n_at_least_the_items_is_every_item_as_all_and_minus_one():
    every = {i: list(ITEMS) for i in range(30)}
    assert _plan(30, 9) == _plan(30, 5) == _plan(30, "all") == _plan(30, -1) == every


@pytest.mark.parametrize("value, kept", [(1, 1), (9, 9), ("all", "all"), (-1, "all"), ("-1", "all"), ("3", 3),
                                         (4.0, 4)])
def test_accepted_values(value, kept):
    assert DecSelfMaskConfig(items=ITEMS, items_per_text=value).items_per_text == kept


@pytest.mark.parametrize("value", [0, -2, "some", "", True, 2.5, None, [3]])
def test_bad_values_name_the_key(value):
    with pytest.raises(ValidationError, match=r"decselfmask\.items_per_text: .* not a number of items per note"):
        DecSelfMaskArgs(decselfmask={"items": ITEMS, "items_per_text": value})


def test_minus_one_shares_the_cache_key_of_all():
    from axolotl_decselfmask.stage1.cache import relevance_key

    tok = type("Tok", (), {"chat_template": "t"})()
    keys = {relevance_key(DecSelfMaskConfig(items=ITEMS, items_per_text=v, relevance={"fast_backward": False}),
                          "no-such-model", tok, "fp") for v in ("all", -1)}
    assert len(keys) == 1


def test_precompute_scores_n_items_of_every_note(tmp_path, tiny_llama):
    texts = [json.loads(line)["text"][:200] for line in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()][:6]
    config = DecSelfMaskConfig(items=ITEMS[:3], items_per_text=2,
                               relevance={"method": "grad_x_input", "shard_size": 4, "dtype": "float32"},
                               spans={"rescale_after_smoothing": True})
    run_precompute(texts, config, AutoTokenizer.from_pretrained(tiny_llama), str(tiny_llama), tmp_path, progress=False)
    pairs = [tuple(p) for part in sorted(tmp_path.glob("relevance-*/part-*.json"))
             for p in json.loads(part.read_text())["pairs"]]
    assert len(pairs) == 12 == len(set(pairs))
    assert sorted({i for i, _ in pairs}) == list(range(6))
    assert all(sum(1 for i, _ in pairs if i == t) == 2 for t in range(6))
    assert pairs == list(shard_plan(6, config)[0])
