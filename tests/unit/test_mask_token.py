"""The one-token mask (axolotl_decselfmask.mask_token) on real tokenizers, a Llama 3 layout, and the added path."""

from __future__ import annotations

import importlib.util
import json
import struct

import pytest
import torch
from axolotl.utils.dict import DictDefault
from conftest import DATA, ROOT, make_tiny_llama, require_smollm
from transformers import AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskConfig, MaskingConfig
from axolotl_decselfmask.mask_token import (
    ADDED_MASK_TEXT,
    CONFIG_ATTR,
    POOL_TYPE,
    arrange_recipe,
    base_with_mask,
    choose_mask_token,
    mask_for,
    prepare_model_for_mask,
    prepare_stage1_model,
    resolve_mask_setting,
)
from axolotl_decselfmask.prompts import (
    ensure_chat_template,
    reconstruction_messages,
    tokenize_for_training,
)
from axolotl_decselfmask.stage1.examples import build_examples
from axolotl_decselfmask.stage1.pool import MASKED_RECONSTRUCTION_TYPE, prepare_pool

TOKENIZERS = ROOT / "models" / "tokenizers"
QWEN = TOKENIZERS / "qwen2.5-coder-0.5b-instruct"
GEMMA = TOKENIZERS / "gemma-3-270m"
POOL = [json.loads(line)["text"] for line in (DATA / "abstracts_unlabelled.jsonl").read_text().splitlines()]


def _require(folder):
    if not (folder / "tokenizer_config.json").is_file():
        pytest.skip(f"{folder} is missing: run `make tokenizers` first")
    return folder


def _tokenizer(folder):
    return AutoTokenizer.from_pretrained(_require(folder))


def _mask_ids_in_training_example(tokenizer, mask_text: str) -> tuple[list[int], dict]:
    """A real masked example (the first abstract, one word masked), tokenised as stage 1 does it."""
    text = POOL[0][:400]
    start = text.index("patients") if "patients" in text else 10
    example = build_examples(text, [(start, start + 8)], mask_text)[0]
    ensure_chat_template(tokenizer)
    row = tokenize_for_training(tokenizer, reconstruction_messages(example.masked_text, example.answer, "Fill in."))
    return row["input_ids"], row


def _llama3_layout(pad_token: str | None = None):
    """A tokenizer whose added tokens are Llama 3.1's (ids 128000-128255) over a tiny word-level vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, **{f"w{i}": i for i in range(1, 128000)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    named = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
             128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>", 128009: "<|eot_id|>",
             128010: "<|python_tag|>"}
    reserved = iter(range(248))
    specials = [named.get(i) or f"<|reserved_special_token_{next(reserved)}|>" for i in range(128000, 128256)]
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
    if pad_token:
        tok.pad_token = pad_token
    tok.chat_template = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
                         "\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
    return tok


# ------------------------------------------------------------------------------ the rule, per tokenizer


def test_llama3_layout_gets_the_authors_token():
    tok = _llama3_layout()
    assert tok.convert_ids_to_tokens(128255) == "<|reserved_special_token_247|>"
    mask = choose_mask_token(tok)
    assert (mask.text, mask.id, mask.source) == ("<|reserved_special_token_246|>", 128254, "reserved")
    assert tok("w5 " + mask.text + " w7", add_special_tokens=False)["input_ids"] == [5, 128254, 7]


def test_llama3_layout_with_the_authors_token_as_pad_takes_the_highest_free_one():
    mask = choose_mask_token(_llama3_layout(pad_token="<|reserved_special_token_246|>"))
    assert (mask.text, mask.id) == ("<|reserved_special_token_247|>", 128255)


def test_a_reserved_token_in_the_chat_template_is_not_chosen():
    tok = _llama3_layout()
    tok.chat_template += "{# <|reserved_special_token_246|> #}"
    assert choose_mask_token(tok).text != "<|reserved_special_token_246|>"


def test_smollm2_has_no_reserved_token_and_gets_the_added_one(smollm_path):
    tok = AutoTokenizer.from_pretrained(smollm_path)
    n = len(tok)
    mask = choose_mask_token(tok)
    assert (mask.text, mask.id, mask.source) == (ADDED_MASK_TEXT, None, "added") and len(tok) == n  # no change
    added = choose_mask_token(tok, add=True)
    assert added.id == n == 49152 and len(tok) == n + 1
    assert choose_mask_token(tok) == added  # once added, the same token and id
    ids, _ = _mask_ids_in_training_example(tok, added.text)
    assert ids.count(added.id) == 1


def test_qwen25_gets_the_added_token_inside_its_embedding_rows():
    tok = _tokenizer(QWEN)
    assert len(tok) == 151665  # the model's embedding has 151936 rows: the new id needs no resize
    mask = choose_mask_token(tok, add=True)
    assert (mask.text, mask.id, mask.source) == (ADDED_MASK_TEXT, 151665, "added")
    ids, row = _mask_ids_in_training_example(tok, mask.text)
    assert ids.count(151665) == 1 and "<|im_start|>" in tok.decode(ids)
    assert row["labels"][ids.index(151665)] == -100  # the mask is in the prompt, not in the answer


def test_gemma3_gets_its_first_unused_token():
    tok = _tokenizer(GEMMA)
    n = len(tok)
    mask = choose_mask_token(tok, add=True)
    assert (mask.text, mask.id, mask.source) == ("<unused0>", 6, "reserved") and len(tok) == n
    ids, _ = _mask_ids_in_training_example(tok, mask.text)
    assert ids.count(6) == 1


def test_an_explicit_string_stays_plain_text(smollm_tok):
    mask = mask_for(smollm_tok, MaskingConfig(mask_token="<mask>"))
    assert mask.source == "text" and mask.id is None and not mask.one_token
    config = DecSelfMaskConfig(masking={"mask_token": "<mask>"})
    assert resolve_mask_setting(smollm_tok, config).text == "<mask>" and config.masking.mask_token == "<mask>"
    assert len(smollm_tok("<mask>", add_special_tokens=False)["input_ids"]) > 1


# ------------------------------------------------------------------------------ stage 1's examples and pool


def test_stage1_pool_uses_the_chosen_token_and_skips_texts_containing_it(smollm_path):
    tok = AutoTokenizer.from_pretrained(smollm_path)
    config = DecSelfMaskConfig(items=["neoplasms"])
    assert config.masking.mask_token == "auto" and POOL_TYPE == MASKED_RECONSTRUCTION_TYPE
    cfg = DictDefault({"base_model": str(smollm_path), "sequence_len": 256, "bf16": False})
    texts = POOL[:3] + [f"A {ADDED_MASK_TEXT} already here. " + POOL[3]]
    pool = prepare_pool(texts, cfg, config, tok, "pool.jsonl", "text")
    assert config.masking.mask_token == ADDED_MASK_TEXT  # resolved for the examples, keys and manifest
    assert pool.with_mask == 1 and len(pool.texts) == 3
    assert tok.convert_tokens_to_ids(ADDED_MASK_TEXT) == 49152


# ------------------------------------------------------------------------------ the added path: the model


def _untied_tiny(folder, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("tied", [True, False])
def test_added_row_is_the_mean_and_the_call_is_idempotent(tmp_path, tied):
    from transformers import AutoModelForCausalLM

    tok = AutoTokenizer.from_pretrained(require_smollm())
    folder = make_tiny_llama(tmp_path / "m") if tied else _untied_tiny(tmp_path / "m", tok)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    mask = choose_mask_token(tok)
    prepare_model_for_mask(model, tok, mask)
    n = 49152
    weight = model.get_input_embeddings().weight
    assert tok.convert_tokens_to_ids(ADDED_MASK_TEXT) == n and weight.shape[0] == n + 1
    assert torch.allclose(weight[n], before_in.mean(dim=0), atol=1e-6)
    assert torch.equal(weight[:n], before_in)  # the vocabulary's rows are untouched
    out = model.get_output_embeddings().weight
    assert (out is weight) == tied
    assert torch.allclose(out[n], (before_in if tied else before_out).mean(dim=0), atol=1e-6)
    with torch.no_grad():
        weight[n] += 1.0  # trained since
    prepare_model_for_mask(model, tok, choose_mask_token(tok))
    assert torch.allclose(weight[n], before_in.mean(dim=0) + 1.0, atol=1e-6)  # left alone
    assert getattr(model.config, CONFIG_ATTR) == {"text": ADDED_MASK_TEXT, "id": n}


def test_added_row_is_the_same_in_stage1_and_with_stage1_off(tmp_path):
    """Stage 1: Axolotl adds the token (the recipe's special_tokens, arranged by the plugin) and resizes
    the embeddings (random rows), then the plugin's pre_lora_load hook sets the row and makes it
    trainable. Stage 1 off: stage 2's base is the base model with the same row."""
    from axolotl.loaders import load_tokenizer
    from transformers import AutoModelForCausalLM

    base = make_tiny_llama(tmp_path / "base")
    raw = {"base_model": str(base), "adapter": "lora", "datasets": [{"path": "p.jsonl", "type": POOL_TYPE}],
           "decselfmask": {"items": ["x"]}}
    mask = arrange_recipe(raw, DecSelfMaskConfig(items=["x"]))
    assert mask.source == "added" and raw["special_tokens"]["additional_special_tokens"] == [ADDED_MASK_TEXT]
    cfg = DictDefault({**raw, "tokenizer_config": str(base)})
    tok = load_tokenizer(cfg)
    assert tok.convert_tokens_to_ids(ADDED_MASK_TEXT) == 49152
    stage1 = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    stage1.resize_token_embeddings(len(tok), mean_resizing=False)  # as Axolotl does (mean_resizing_embeddings: false)
    prepare_stage1_model(cfg, stage1)
    assert cfg.peft_trainable_token_indices == {"embed_tokens": [49152]}

    off = DictDefault({"base_model": str(base), "trust_remote_code": False})
    folder = base_with_mask(off, AutoTokenizer.from_pretrained(base), tmp_path / "out" / "base_with_mask",
                            torch.float32)
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert torch.equal(plain.get_input_embeddings().weight, stage1.get_input_embeddings().weight)
    assert AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(ADDED_MASK_TEXT) == 49152
    assert base_with_mask(off, AutoTokenizer.from_pretrained(base), folder, torch.float32) == folder  # written once


def test_recipe_is_left_alone_where_the_mask_is_reserved_or_unused():
    raw = {"base_model": str(_require(GEMMA)), "datasets": [{"path": "p.jsonl", "type": POOL_TYPE}]}
    assert arrange_recipe(raw, DecSelfMaskConfig(items=["x"])).text == "<unused0>" and "special_tokens" not in raw
    smol = {"base_model": str(require_smollm()), "datasets": []}  # no pool, options prompt: no mask used
    assert arrange_recipe(smol, DecSelfMaskConfig(items=["x"])) is None and "special_tokens" not in smol


# ------------------------------------------------------------------------------ the GGUF header reader


def _gguf_script():
    spec = importlib.util.spec_from_file_location("gguf_tokenizer", ROOT / "scripts" / "gguf_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gguf_header_of_a_cut_file_is_read_without_its_tensors(tmp_path):
    import io

    import numpy as np
    from gguf import GGUFReader, GGUFWriter

    path = tmp_path / "full.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_token_list(["<s>", "a", "b"])
    writer.add_token_types([3, 1, 1])
    writer.add_tensor("w", np.ones((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes()
    header = _gguf_script().metadata_only_gguf(io.BytesIO(data[: len(data) - 8000]))  # a first chunk
    (tmp_path / "header.gguf").write_bytes(header)
    fields = GGUFReader(str(tmp_path / "header.gguf")).fields
    assert fields["tokenizer.ggml.tokens"].contents() == ["<s>", "a", "b"]
    assert struct.unpack("<Q", header[8:16])[0] == 0 and len(header) % 32 == 0
    with pytest.raises(SystemExit, match="too short"):
        _gguf_script().metadata_only_gguf(io.BytesIO(data[:40]))


def test_stage2_with_stage1_off_starts_from_the_base_with_the_mask_row(tmp_path):
    """The plain-SFT baseline in the mask-fill format: stage 2's base folder has the added row; with the
    options prompt (no mask) it is the base model itself."""
    from transformers import AutoModelForCausalLM

    from axolotl_decselfmask.stage2.model import stage1_model_folder

    base = make_tiny_llama(tmp_path / "base")
    cfg = DictDefault({"base_model": str(base), "output_dir": str(tmp_path / "out"), "trust_remote_code": False})
    config = DecSelfMaskConfig(stage1=False, items=["x"], classification={"prompt": "mask_fill"})
    folder, source = stage1_model_folder(cfg, config, torch.float32)
    assert folder == str(tmp_path / "out" / "base_with_mask") and "mask token's row" in source
    weight = AutoModelForCausalLM.from_pretrained(folder).get_input_embeddings().weight
    assert weight.shape[0] == 49153 and torch.allclose(weight[49152], weight[:49152].mean(dim=0), atol=1e-6)
    options = DecSelfMaskConfig(stage1=False, items=["x"])
    assert stage1_model_folder(cfg, options, torch.float32) == (str(base), "none (plain SFT)")


def test_the_model_card_names_the_token(smollm_path):
    from axolotl_decselfmask.mask_token import describe, describe_for_run

    line = describe_for_run({"base_model": str(smollm_path)}, DecSelfMaskConfig())
    assert line.startswith(f"`{ADDED_MASK_TEXT}` (one token, added") and "trained in stage 1" in line
    assert "trained" not in describe_for_run({"base_model": str(smollm_path)}, DecSelfMaskConfig(stage1=False))
    reserved = describe(choose_mask_token(_llama3_layout()))
    assert reserved.startswith("`<|reserved_special_token_246|>` (id 128254, a reserved token")
    assert describe_for_run({"base_model": str(smollm_path)}, DecSelfMaskConfig(masking={"mask_token": "[M]"})) == \
        "`[M]` (plain text)"
