"""The model stage 2 starts from: the stage-1 model as one folder, and its tokenizer.

Stage 2's adapter is saved with that folder as its base (``base_model_name_or_path``), so
``AutoPeftModelForCausalLM.from_pretrained("<output_dir>/stage2")`` loads stage 1 and stage 2
together with nothing else to know:

- stage 1 off (the plain-SFT baseline): the recipe's ``base_model``;
- stage 1 a full fine-tune: ``output_dir``;
- stage 1 a LoRA: ``<output_dir>/stage1_merged``, the base model with the stage-1 adapter
  merged in, written once (its record names the stage-1 completion marker it was made from,
  so a new stage 1 makes it again).

A QLoRA recipe (``adapter: qlora``, ``load_in_4bit: true``) writes no merged copy: the folder is
``output_dir`` itself (the stage-1 adapter), which :func:`load_model` loads as the 4-bit base with
that adapter applied unmerged, and the stage-2 folder holds one adapter with stage 1 in it, based
on ``base_model`` (:mod:`.quantized`). :func:`load_classifier_model` loads a trained classifier
in either precision, as the evaluation scored it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from axolotl_decselfmask.args import DecSelfMaskConfig, plugin_config
from axolotl_decselfmask.io.files import atomic_write_json, fingerprint, read_json
from axolotl_decselfmask.mask_token import (
    AUTO,
    BASE_WITH_MASK_DIR,
    base_with_mask,
    init_mask_row,
    stage2_uses_mask,
)
from axolotl_decselfmask.stage1.checkpoints import verify_stage1_output
from axolotl_decselfmask.stage2 import quantized

MERGED_DIR = "stage1_merged"
MERGED_RECORD = "decselfmask_merged.json"


def stage1_model_folder(cfg, config: DecSelfMaskConfig, dtype: torch.dtype) -> tuple[str, str]:
    """(folder, description) of the stage-1 model as one loadable model folder.

    With ``stage1: true`` the weights must match the completion record that the plugin writes
    once stage 1 has finished (:func:`write_stage1_marker`); otherwise
    :class:`Stage1IncompleteError` says how to resume.
    """
    out = Path(cfg.output_dir)
    if not config.stage1:
        if config.masking.mask_token == AUTO and stage2_uses_mask(config):  # an added mask needs its row
            folder = base_with_mask(cfg, load_tokenizer(cfg), out / BASE_WITH_MASK_DIR, dtype,
                                    config.masking.mask_init, config.seed)
            if folder:
                return folder, f"none (plain SFT; the base model with the mask token's row, {folder})"
        return str(cfg.base_model), "none (plain SFT)"
    marker = verify_stage1_output(cfg)
    if marker["kind"] != "lora":
        return str(out), f"full model {out}"
    if quantized.uses_4bit(cfg):  # no merged copy: the adapter stays unmerged on the 4-bit base
        return str(out), f"LoRA adapter {out}, unmerged on the 4-bit base model {cfg.base_model}"
    merged = out / MERGED_DIR
    key = fingerprint(marker, str(dtype))
    record = read_json(merged / MERGED_RECORD)
    if not (isinstance(record, dict) and record.get("key") == key):
        _write_merged(cfg, out, merged, dtype)
        atomic_write_json(merged / MERGED_RECORD, {"key": key, "stage1_adapter": str(out), "dtype": str(dtype)})
    return str(merged), f"LoRA adapter {out}, merged into {merged}"


def _write_merged(cfg, out: Path, merged: Path, dtype: torch.dtype) -> None:
    """Merge the stage-1 adapter of ``out`` into the base model and save it with its tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    shutil.rmtree(merged, ignore_errors=True)
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model, dtype=dtype,
                                                trust_remote_code=bool(cfg.trust_remote_code))
    tok_vocab = _tokenizer_len(out)
    if tok_vocab and tok_vocab > base.get_input_embeddings().weight.shape[0]:  # tokens added in stage 1
        base.resize_token_embeddings(tok_vocab)
    init_mask_row(plugin_config(cfg), base, load_tokenizer(cfg))  # the added mask's row as stage 1 started
    model = PeftModel.from_pretrained(base, str(out)).merge_and_unload()
    model.save_pretrained(str(merged))
    load_tokenizer(cfg).save_pretrained(str(merged))
    del model, base


def load_model(folder: str, cfg, dtype: torch.dtype, what: str = "stage 2"):
    """A causal LM from ``folder`` (one of :func:`stage1_model_folder`'s); with a QLoRA recipe in
    4 bits (:func:`.quantized.load_start`: a stage-1 adapter folder on the 4-bit base). One log
    line says what was loaded (``what``: the stage)."""
    from transformers import AutoModelForCausalLM

    if quantized.uses_4bit(cfg):
        model = quantized.load_start(cfg, folder, dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=bool(cfg.trust_remote_code))
    quantized.log_loaded(what, model, dtype)
    return model


def load_classifier_model(cfg, config: DecSelfMaskConfig, adapter_folder, dtype: torch.dtype,
                          what: str = "predict"):
    """The trained stage-2 LoRA classifier of ``adapter_folder`` as the evaluation scored it, for
    the evaluation itself, ``predict`` and ``evaluate``: 16 bits, the adapter merged into its base
    (the stage-1 model folder its adapter_config names, made again where output_dir moved);
    QLoRA, the 4-bit base with the adapter (stage 1 in it) unmerged (:func:`.quantized.load_classifier`)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from axolotl_decselfmask.errors import InputError

    if quantized.uses_4bit(cfg):
        model = quantized.load_classifier(cfg, adapter_folder, dtype)
    else:
        adapter_folder = Path(adapter_folder)
        base = json.loads((adapter_folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        if not Path(base).exists():
            if Path(base).name == MERGED_DIR:  # output_dir moved, or the folder removed: output_dir's, made again
                base, _ = stage1_model_folder(cfg, config, dtype)
            elif Path(base).is_absolute():
                raise InputError(f"decselfmask: the base of the stage-2 adapter {adapter_folder}, {base}, is missing; "
                                 "put it back or train again.")
        base = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, trust_remote_code=bool(cfg.trust_remote_code))
        model = PeftModel.from_pretrained(base, str(adapter_folder)).merge_and_unload()
    quantized.log_loaded(what, model, dtype)
    return model.eval()


def classifier_after_training(cfg, trainer, out_dir, dtype: torch.dtype, what: str = "evaluation"):
    """The classifier just trained and saved in ``out_dir``, for the evaluation: 16 bits, the
    trainer's model merged (it runs faster); QLoRA, loaded again from ``out_dir`` exactly as
    ``predict`` loads it (:func:`load_classifier_model`), so both score with the same weights."""
    if not quantized.uses_4bit(cfg):
        model = trainer.model.merge_and_unload()
        quantized.log_loaded(what, model)
        return model
    import gc

    trainer.model = trainer.model_wrapped = None  # the training copy's adapters go before the load
    gc.collect()
    return load_classifier_model(cfg, plugin_config(cfg), out_dir, dtype, what)


def load_stage1_model(cfg, config: DecSelfMaskConfig, dtype: torch.dtype):
    """(model, description): the stage-1 model (:func:`stage1_model_folder`), loaded."""
    folder, source = stage1_model_folder(cfg, config, dtype)
    return load_model(folder, cfg, dtype), source


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
