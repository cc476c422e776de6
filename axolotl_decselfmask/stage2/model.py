"""The model stage 2 starts from: the base model with the stage-1 weights of output_dir, and its tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.stage1.checkpoints import verify_stage1_output


def load_stage1_model(cfg, config: DecSelfMaskConfig, dtype: torch.dtype):
    """The base model with the stage-1 weights of ``output_dir`` merged in.

    With ``stage1: true`` the weights must match the completion record that the plugin writes
    once stage 1 has finished (:func:`write_stage1_marker`); otherwise
    :class:`Stage1IncompleteError` says how to resume.
    """
    from transformers import AutoModelForCausalLM

    out = Path(cfg.output_dir)
    kwargs = {"dtype": dtype, "trust_remote_code": bool(cfg.trust_remote_code)}
    if not config.stage1:
        return AutoModelForCausalLM.from_pretrained(cfg.base_model, **kwargs), "none (plain SFT)"
    marker = verify_stage1_output(cfg)
    if marker["kind"] == "lora":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(cfg.base_model, **kwargs)
        tok_vocab = _tokenizer_len(out)
        if tok_vocab and tok_vocab > base.get_input_embeddings().weight.shape[0]:  # tokens added in stage 1
            base.resize_token_embeddings(tok_vocab)
        model = PeftModel.from_pretrained(base, str(out)).merge_and_unload()
        return model, f"LoRA adapter {out} (merged)"
    return AutoModelForCausalLM.from_pretrained(str(out), **kwargs), f"full model {out}"


def _tokenizer_len(folder: Path) -> int | None:
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(folder)))


def load_tokenizer(cfg):
    from transformers import AutoTokenizer

    out = Path(cfg.output_dir)
    source = str(out) if (out / "tokenizer_config.json").is_file() else (cfg.tokenizer_config or cfg.base_model)
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(cfg.trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
