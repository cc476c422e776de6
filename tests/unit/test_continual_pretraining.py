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


def _authors(tmp_path, model, out, **block):
    from transformers import AutoTokenizer

    from axolotl_decselfmask.stage1.masked_reconstruction import load as load_masked

    texts = [t[:300] for t in _texts("abstracts_unlabelled.jsonl", 5)]
    common = {"items": ["neoplasms", "cardiovascular diseases"], "items_per_text": "all",
              "relevance": {"method": "grad_x_input", "dtype": "float32"}, "spans": {"rescale_after_smoothing": True},
              **block}
    cfg = DictDefault({"base_model": str(model), "sequence_len": 256, "bf16": False,
                       "output_dir": str(tmp_path / out), "decselfmask": {"cache_dir": str(tmp_path / "cache"), **common}})
    cpt = DictDefault({**cfg, "decselfmask": {**cfg["decselfmask"], "continual_pretraining": {"form": "authors"}}})
    rows = [{"text": t} for t in texts]
    tok = AutoTokenizer.from_pretrained(model)
    masked = load_masked(tok, cfg, DictDefault({"path": "pool.jsonl"})).wrap_dataset(Dataset.from_list(rows))
    scored = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("relevance-*/part-*.json")}
    fresh = AutoTokenizer.from_pretrained(model)
    ds = load(fresh, cpt, DictDefault({"path": "pool.jsonl"})).wrap_dataset(Dataset.from_list(rows))
    assert len(fresh) == len(tok) - 1  # the mask token went to a copy, not to the recipe's tokenizer
    # the masked-reconstruction cache served it: no relevance computed again
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("relevance-*/part-*.json")} == scored
    examples = [json.loads(line) for ex_dir in (tmp_path / "cache").glob("examples-*")
                for line in (ex_dir / "examples.jsonl").read_text().splitlines()]
    return tok, texts, examples, masked, ds


def test_authors_form_is_the_masked_rows_with_the_spans_put_back(tmp_path, tiny_llama):
    tok, texts, examples, masked, ds = _authors(tmp_path, tiny_llama, "o")
    mask = "<|decselfmask_mask|>"
    assert len(ds) == len(examples) == len(masked) > len(texts)  # one row per masked example
    for ex, ids, labels in zip(examples, ds["input_ids"], ds["labels"]):
        assert labels == ids  # the loss on every token
        assert tok.convert_tokens_to_ids(mask) not in ids and ids[-1] == tok.eos_token_id
        rendered = tok.decode(ids)
        filled = ex["masked_text"]
        for s, e in ex["spans"]:
            filled = filled.replace(mask, texts[ex["text_index"]][s:e], 1)
        assert filled == texts[ex["text_index"]] and filled != ex["masked_text"]
        # SmolLM2's chat template: an empty system turn, the text as the user turn, then eos
        assert rendered == f"<|im_start|>system\n<|im_end|>\n<|im_start|>user\n{filled}<|im_end|>\n<|im_end|>"
    stats = json.loads((tmp_path / "o" / STATS_FILE).read_text())
    assert stats == {**stats, "dataset_type": DATASET_TYPE, "form": "authors", "examples": len(ds),
                     "texts": len({ex["text_index"] for ex in examples}), "pool_texts": len(texts),
                     "supervised_tokens": stats["tokens"]}


def test_authors_form_keeps_the_budget(tmp_path, tiny_llama):
    _, _, _, _, full = _authors(tmp_path, tiny_llama, "o1")
    lengths = [len(i) for i in full["input_ids"]]
    _, _, _, _, cut = _authors(tmp_path, tiny_llama, "o2", stage1_token_budget=sum(lengths[:3]) + 1)
    assert cut["input_ids"] == full["input_ids"][:3]


def test_a_bad_form_names_the_key():
    from pydantic import ValidationError

    from axolotl_decselfmask.args import DecSelfMaskArgs

    with pytest.raises(ValidationError, match=r"continual_pretraining\.form"):
        DecSelfMaskArgs(decselfmask={"continual_pretraining": {"form": "chat"}})


def test_the_experiments_method_in_the_authors_form(tmp_path):
    import yaml
    from conftest import SMOLLM
    from helpers import write_corpus

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.tools.experiments.data import build_data
    from axolotl_decselfmask.tools.experiments.grid import load_grid
    from axolotl_decselfmask.tools.experiments.methods import (
        DEFAULT_METHODS,
        STAGE1_METHODS,
        _flat,
        definition_problems,
    )
    from axolotl_decselfmask.tools.experiments.runner import plan

    corpus = write_corpus(tmp_path / "corpus.csv.gz", "abstracts_test.jsonl")
    methods = ["continual_pretraining", "continual_pretraining_authors", "decselfmask"]
    grid = {"model": str(SMOLLM), "methods": methods, "seeds": [0], "labelled_per_task": 4, "test_per_task": 4,
            "pool_size": 4, "corpora": [{"name": "abstracts", "file": str(corpus), "tasks": [
                {"name": "neoplasms", "label_column": "label", "positive": "neoplasms", "question": "Neoplasms?"}]}]}
    (tmp_path / "grid.yml").write_text(yaml.safe_dump(grid))
    g = load_grid(tmp_path / "grid.yml")
    recipes = {r["method"]: r["recipe"] for r in plan(g, tmp_path / "out", build_data(g, tmp_path / "out"))}
    ignore = ("output_dir", "dataset_prepared_path", "decselfmask.tasks")
    assert not definition_problems(recipes, ignore=ignore), definition_problems(recipes, ignore=ignore)
    flat = {m: _flat({k: v for k, v in r.items() if k not in ignore}) for m, r in recipes.items()}
    a, raw = flat["continual_pretraining_authors"], flat["continual_pretraining"]
    assert sorted(k for k in set(a) | set(raw) if a.get(k) != raw.get(k)) == ["decselfmask.continual_pretraining.form"]
    configs = {m: DecSelfMaskConfig(**r["decselfmask"]) for m, r in recipes.items()}
    assert configs["continual_pretraining_authors"].continual_pretraining.form == "authors"
    assert configs["continual_pretraining"].continual_pretraining.form == "raw"
    # decselfmask's relevance, spans, masking and cache: the same masked rows
    for block in ("relevance", "spans", "masking"):
        assert getattr(configs["continual_pretraining_authors"], block) == getattr(configs["decselfmask"], block)
    assert configs["continual_pretraining_authors"].cache_dir == configs["decselfmask"].cache_dir
    assert "continual_pretraining_authors" in STAGE1_METHODS and "continual_pretraining_authors" not in DEFAULT_METHODS
