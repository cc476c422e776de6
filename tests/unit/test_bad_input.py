"""Bad input: a clear message before expensive work, or a counted, reported skip."""

import gzip
import json

import numpy as np
import pytest
import torch
from axolotl.utils.dict import DictDefault
from conftest import DATA
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.labelled import read_labelled
from axolotl_decselfmask.io.tables import read_table
from axolotl_decselfmask.relevance import build_relevance_prompt
from axolotl_decselfmask.relevance.methods import GradientXInput
from axolotl_decselfmask.stage1.masked_reconstruction import load
from axolotl_decselfmask.stage1.pool import truncate_texts
from axolotl_decselfmask.stage1.precompute import run_precompute

POOL = [json.loads(l)["text"] for l in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()]
TEST = [json.loads(l)["text"] for l in (DATA / "abstracts_test.jsonl").read_text().splitlines()]


def test_non_utf8_bytes_name_line_and_byte(tmp_path):
    good = "text,label\nalpha,x\n".encode()
    (tmp_path / "a.csv").write_bytes(good + "b\xe9ta,y\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"a.csv, line 3 .*byte 0xe9 is not UTF-8"):
        read_table(tmp_path / "a.csv", "decselfmask.classification.train_file")
    with gzip.open(tmp_path / "a.jsonl.gz", "wb") as f:
        f.write(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(InputError, match=r"line 2 .*0xff"):
        read_table(tmp_path / "a.jsonl.gz", "k")


def test_mixed_label_types_are_refused(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n{"text": "c", "label": true}\n')
    with pytest.raises(InputError, match=r"mixes value types \(number in rows \[0\]; text in rows \[1\]; bool in rows \[2\]\)"):
        read_labelled(str(f), "text", "label", None, "k")


def test_long_texts_are_truncated_at_a_token_boundary_and_counted(smollm_tok):
    long = " ".join(POOL[:6])  # several times a 256-token budget
    out, n = truncate_texts(smollm_tok, [long, "short note"], budget=100)
    assert n == 1 and out[1] == "short note"
    assert long.startswith(out[0]) and len(smollm_tok(out[0], add_special_tokens=False)["input_ids"]) == 100


def _strategy(tmp_path, model, **block):
    cfg = DictDefault({"base_model": str(model), "sequence_len": 256, "bf16": False,
                       "decselfmask": {"items": ["neoplasms"], "cache_dir": str(tmp_path / "cache"),
                                       "relevance": {"shard_size": 4}, "spans": {"rescale_after_smoothing": True},
                                       **block}})
    return load(AutoTokenizer.from_pretrained(model), cfg, DictDefault({"path": "pool.jsonl"}))


def test_test_rows_in_pool_are_refused_or_dropped(tmp_path, tiny_llama):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"text": t, "label": "x"}) + "\n" for t in TEST[:3]))
    pool = Dataset.from_list([{"text": t} for t in POOL[:4] + ["  " + TEST[1].upper() + " "]])
    strategy = _strategy(tmp_path, tiny_llama, classification={"test_file": str(test_file)})
    with pytest.raises(InputError, match=r"1 unlabelled texts also appear in the test file .*pool text 4 = test row 1"):
        strategy.wrap_dataset(pool)
    strategy = _strategy(tmp_path, tiny_llama, classification={"test_file": str(test_file)},
                         drop_test_texts_from_pool=True)
    out = strategy.wrap_dataset(pool)
    manifest = json.loads(next((tmp_path / "cache").glob("examples-*/manifest.json")).read_text())
    assert manifest["n_texts"] == 4 and len(out) == manifest["n_examples"]


def test_texts_containing_the_mask_string_are_skipped_and_counted(tmp_path, tiny_llama, capsys):
    mask = "<|decselfmask_mask|>"  # masking.mask_token: auto on SmolLM2's tokenizer
    pool = Dataset.from_list([{"text": t} for t in POOL[:3]] + [{"text": f"A {mask} already here. " + POOL[3]}])
    _strategy(tmp_path, tiny_llama).wrap_dataset(pool)
    assert "1 skipped for containing the mask string" in capsys.readouterr().out
    only = Dataset.from_list([{"text": f"{mask} everywhere"}])
    with pytest.raises(InputError, match="every unlabelled text contains the mask string"):
        _strategy(tmp_path, tiny_llama).wrap_dataset(only)


def test_mask_token_that_is_not_one_token_is_refused(tmp_path, tiny_llama):
    strategy = _strategy(tmp_path, tiny_llama, masking={"mask_token": "<mask>", "add_mask_token": True})
    with pytest.raises(InputError, match=r"is not one token of the tokenizer \(3 tokens\)"):
        strategy.wrap_dataset(Dataset.from_list([{"text": POOL[0]}]))


def test_item_of_one_token_has_a_middle(smollm_model, smollm_tok):
    p = build_relevance_prompt(smollm_tok, POOL[0][:300], "cancer", "Which?")
    assert len(p.item_positions) == 1
    for position in ("first", "middle", "last"):
        rel = GradientXInput(smollm_model, smollm_tok, target="token_logit", token_position=position).attribute([p])[0]
        assert np.isfinite(rel).all() and np.abs(rel).max() > 0


def test_zero_spans_is_a_clear_error_not_empty_examples(tmp_path, tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    cfg = DecSelfMaskConfig(items=["neoplasms"], spans={"high": 1.0, "low": 0.5})  # nothing is above 1
    with pytest.raises(ValueError, match="no spans were found in any of the 3 texts"):
        run_precompute([t[:300] for t in POOL[:3]], cfg, tok, str(tiny_llama), tmp_path, progress=False)
    assert not list(tmp_path.glob("examples-*/manifest.json"))


def test_nan_relevance_is_skipped_and_counted_never_cached_as_nan(tmp_path, tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    poison = tok(" Zymurgy", add_special_tokens=False)["input_ids"]
    # untie the output layer, then poison only the input embedding of the words above
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    with torch.no_grad():
        model.get_input_embeddings().weight[poison] = float("nan")
    bad_model = tmp_path / "nan-model"
    model.save_pretrained(bad_model)
    tok.save_pretrained(bad_model)
    texts = [POOL[0][:300], "The Zymurgy " + POOL[1][:300], POOL[2][:300]]
    cfg = DecSelfMaskConfig(items=["neoplasms"], spans={"rescale_after_smoothing": True})
    result = run_precompute(texts, cfg, tok, str(bad_model), tmp_path / "cache", progress=False)
    assert result.n_bad_relevance == 1
    assert {ex["text_index"] for ex in result.examples} <= {0, 2}
    for part in (tmp_path / "cache").glob("relevance-*/part-*.json"):
        raw = part.read_text()
        assert "NaN" not in raw and "Infinity" not in raw
        assert [r["scores"] is None for r in json.loads(raw)["records"]] == [False, True, False]
