"""Saved adapters hold the trained mask row, not the whole resized embedding (mask_token.save_trained_rows_only).

The stage-1 model is built as Axolotl builds it (the recipe's added token, the resize, the plugin's
``pre_lora_load`` and ``post_lora_load`` hooks, PEFT's LoRA with the recipe's trainable_token_indices), the
mask row and the LoRA moved as training would, saved as Axolotl saves (``model.save_pretrained(dir)``), then
reloaded as stage 2 does (base resized to the saved tokenizer, the mask row as stage 1 started it, the adapter)
and with ``AutoPeftModelForCausalLM``: the same row, the same logits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from axolotl.utils.dict import DictDefault
from conftest import make_tiny_llama, require_smollm

from axolotl_decselfmask.mask_token import (
    ADDED_MASK_TEXT,
    POOL_TYPE,
    arrange_recipe,
    init_mask_row,
    prepare_stage1_model,
    rows_rebuilt_at_load,
    save_trained_rows_only,
)


def _stage1_model(base: Path, mask_init: str = "mean"):
    """(cfg, PEFT model, tokenizer) as Axolotl and the plugin's hooks make them for stage 1."""
    from axolotl.loaders import load_tokenizer
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from axolotl_decselfmask.args import DecSelfMaskConfig

    block = {"items": ["x"], "masking": {"mask_init": mask_init}}
    raw = {"base_model": str(base), "adapter": "lora", "datasets": [{"path": "p.jsonl", "type": POOL_TYPE}],
           "decselfmask": block}
    arrange_recipe(raw, DecSelfMaskConfig(**block))
    cfg = DictDefault({**raw, "tokenizer_config": str(base), "seed": 7})
    tok = load_tokenizer(cfg)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(7)
    model.resize_token_embeddings(len(tok), mean_resizing=False)  # as Axolotl does
    prepare_stage1_model(cfg, model)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False,  # B != 0: "trained"
                      trainable_token_indices=dict(cfg.peft_trainable_token_indices))
    model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "trainable_tokens_delta" in name:
                param.add_(0.5)  # the mask row moved in training
    return cfg, model, tok


def _logits(model, tok) -> torch.Tensor:
    ids = tok(f"Fill in: the patient {ADDED_MASK_TEXT} was discharged.", return_tensors="pt").input_ids
    assert tok.convert_tokens_to_ids(ADDED_MASK_TEXT) in ids[0].tolist()
    with torch.no_grad():
        return model(input_ids=ids).logits


def _reload_as_stage2(cfg, out: Path):
    """stage2/model.py's path: the base, resized to the tokenizer saved with the adapter, the mask row
    initialised as stage 1 started it, then the adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.args import plugin_config

    tok = AutoTokenizer.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=torch.float32)
    base.resize_token_embeddings(len(tok))
    init_mask_row(plugin_config(cfg), base, tok)
    return PeftModel.from_pretrained(base, str(out))


def _saved_and_reloaded(base: Path, out: Path):
    cfg, model, tok = _stage1_model(base)
    assert rows_rebuilt_at_load(model) is None
    assert save_trained_rows_only(cfg, model)
    model.save_pretrained(str(out))  # Axolotl's final save and the Trainer's checkpoints call it so
    tok.save_pretrained(str(out))
    model.eval()
    return cfg, model, tok


def _assert_same(model, again, tok, mask_id):
    row = again.get_input_embeddings()(torch.tensor([mask_id]))
    assert torch.equal(row, model.get_input_embeddings()(torch.tensor([mask_id])))
    torch.testing.assert_close(_logits(again, tok), _logits(model, tok), rtol=1e-5, atol=1e-5)


def test_the_adapter_holds_the_mask_row_not_the_embedding(tmp_path):
    from peft import AutoPeftModelForCausalLM
    from safetensors import safe_open

    base = make_tiny_llama(tmp_path / "base", hidden_size=64)
    out = tmp_path / "out"
    cfg, model, tok = _saved_and_reloaded(base, out)
    mask_id = tok.convert_tokens_to_ids(ADDED_MASK_TEXT)
    embedding_bytes = model.get_input_embeddings().weight.numel() * 4
    size = (out / "adapter_model.safetensors").stat().st_size
    assert size < 0.02 * embedding_bytes, (size, embedding_bytes)
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as saved:
        keys = list(saved.keys())
        deltas = [k for k in keys if "trainable_tokens_delta" in k]
        assert deltas and all(saved.get_tensor(k).shape == (1, 64) for k in deltas)
    assert not [k for k in keys if k.endswith("base_layer.weight") or "lm_head.weight" in k], keys

    _assert_same(model, _reload_as_stage2(cfg, out).eval(), tok, mask_id)
    auto = AutoPeftModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    _assert_same(model, auto, tok, mask_id)


def test_an_explicit_argument_still_wins(tmp_path):
    base = make_tiny_llama(tmp_path / "base")
    cfg, model, tok = _stage1_model(base)
    save_trained_rows_only(cfg, model)
    model.save_pretrained(str(tmp_path / "whole"), save_embedding_layers=True)
    model.save_pretrained(str(tmp_path / "rows"))
    whole = (tmp_path / "whole" / "adapter_model.safetensors").stat().st_size
    rows = (tmp_path / "rows" / "adapter_model.safetensors").stat().st_size
    assert whole > 20 * rows


def test_an_untied_output_row_drawn_by_the_resize_keeps_the_whole_embedding(tmp_path):
    """masking.mask_init: model on an untied model: the output row is the resize's draw, which
    nothing rebuilds at load, so PEFT's own rule (the whole embedding) stays."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(require_smollm())
    folder = tmp_path / "untied"
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg, model, _ = _stage1_model(folder, mask_init="model")
    assert "mask_init: model" in rows_rebuilt_at_load(model, "model")
    assert not save_trained_rows_only(cfg, model)
    cfg, model, _ = _stage1_model(folder, mask_init="mean")  # the default: the output row is rebuilt
    assert rows_rebuilt_at_load(model, "mean") is None


@pytest.mark.slow
def test_the_embedded_models_stage1_adapter_is_a_small_fraction_of_it(tmp_path):
    base = require_smollm()
    out = tmp_path / "out"
    cfg, model, tok = _saved_and_reloaded(base, out)
    model_bytes = sum(p.numel() * p.element_size() for p in model.get_base_model().parameters())
    size = (out / "adapter_model.safetensors").stat().st_size
    assert size < 0.01 * model_bytes, (size, model_bytes)  # was 133 MB of a 538 MB model
    _assert_same(model, _reload_as_stage2(cfg, out).eval(), tok, tok.convert_tokens_to_ids(ADDED_MASK_TEXT))
