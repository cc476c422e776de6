"""Stage 2, the evaluation and ``predict`` in 4 bits: a QLoRA recipe (``adapter: qlora``,
``load_in_4bit: true``).

The base model is loaded in 4 bits (NF4, the quantisation Axolotl gave stage 1: same
``BitsAndBytesConfig``, so the same quantised weights the stage-1 adapter was trained on) and
stage 1 is applied *unmerged*: the stage-1 LoRA adapter sits frozen on the 4-bit layers
(adapter ``stage1``) and the stage-2 LoRA is trained beside it (adapter ``default``). Nothing of
the model is written to disk in 16 bits. Once trained, both adapters are saved as ONE adapter
(:func:`write_combined_adapter`): the rank-``r1 + r2`` LoRA whose ``A`` stacks the two ``A``
(each times its scaling) and whose ``B`` stacks the two ``B`` (an exact sum of the two updates),
with stage 1's trained mask row, based on the recipe's ``base_model``. So the classifier is the
base model plus one adapter: ``AutoPeftModelForCausalLM.from_pretrained("<output_dir>/stage2")``
loads it (pass ``quantization_config``, :func:`bnb_config`, for the 4-bit model the evaluation
scored), and :func:`load_classifier` loads it as the evaluation and ``predict`` do. Why this and
not a merge: docs/method.md, "QLoRA: how stage 1 is applied in 4 bits".
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from axolotl_decselfmask.model_precision import (  # noqa: F401 - describe, log_loaded: the loaders' line
    describe,
    keep_4bit_differentiable,
    log_loaded,
    quantised_layers,
)

LOG = logging.getLogger(__name__)

STAGE1_ADAPTER = "stage1"  # the frozen stage-1 adapter's name while stage 2 trains
TRAINED_ADAPTER = "default"  # the stage-2 adapter (PEFT saves ``default`` at the folder's root)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def uses_4bit(cfg) -> bool:
    """The recipe is QLoRA: stage 2, the evaluation and predict load the base model in 4 bits."""
    return cfg.get("adapter") == "qlora" and bool(cfg.get("load_in_4bit"))


def bnb_config(cfg, dtype: torch.dtype):
    """The ``BitsAndBytesConfig`` of Axolotl 0.19's QLoRA loader (``axolotl/loaders/model.py``):
    NF4, double quantisation, ``dtype`` compute, the recipe's ``bnb_config_kwargs`` on top."""
    from transformers import BitsAndBytesConfig

    settings = {"load_in_4bit": True, "llm_int8_threshold": 6.0, "llm_int8_has_fp16_weight": False,
                "bnb_4bit_compute_dtype": dtype, "bnb_4bit_use_double_quant": True,
                "bnb_4bit_quant_type": "nf4", "bnb_4bit_quant_storage": torch.bfloat16}
    settings.update(dict(cfg.get("bnb_config_kwargs") or {}))
    return BitsAndBytesConfig(**settings)


def base_model_name(cfg) -> str:
    """The recipe's ``base_model`` as a classifier adapter names its base: a local folder absolute
    (loadable from anywhere), a hub id as it is."""
    base = Path(str(cfg.base_model))
    return str(base.resolve()) if base.exists() else str(cfg.base_model)


# ------------------------------------------------------------------------------ loading


def load_base(cfg, folder: str, dtype: torch.dtype, vocab_from: str | Path | None = None):
    """The model of ``folder`` in 4 bits (:func:`bnb_config`), its vocabulary grown to the
    tokenizer of ``vocab_from`` when that has tokens added (the mask) and the added mask's row
    set as stage 1 started (a stage-1 or classifier adapter then sets the trained row)."""
    from transformers import AutoModelForCausalLM

    from axolotl_decselfmask.args import plugin_config
    from axolotl_decselfmask.mask_token import init_mask_row

    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb_config(cfg, dtype), dtype=dtype,
                                                 trust_remote_code=bool(cfg.trust_remote_code))
    if vocab_from is not None and (Path(vocab_from) / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(vocab_from), trust_remote_code=bool(cfg.trust_remote_code))
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
            init_mask_row(plugin_config(cfg), model, tokenizer)
    return model


def is_adapter_folder(folder) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def load_start(cfg, folder: str, dtype: torch.dtype):
    """The model stage 2 starts from, in 4 bits: with ``folder`` a stage-1 LoRA adapter, the 4-bit
    base model with that adapter on it, frozen and unmerged (adapter ``stage1``); else the model
    of ``folder`` (the base model: stage 1 off) in 4 bits. A recipe whose ``base_model`` is itself
    an adapter folder (``predict.yml`` in a shared QLoRA folder, :mod:`.hub`) gets that adapter on
    the base model it names, loaded as the evaluation loaded the classifier (:func:`load_classifier`)."""
    if is_adapter_folder(folder) and _same_path(folder, cfg.base_model):
        _require_base(Path(folder))
        return load_classifier(cfg, folder, dtype)
    if not is_adapter_folder(folder):
        model = load_base(cfg, folder, dtype)
        keep_4bit_differentiable(model)  # stage 2 trains on it, maybe after probing's inference forwards
        return model.eval()
    model = load_base(cfg, str(cfg.base_model), dtype, vocab_from=folder)
    keep_4bit_differentiable(model)
    model = with_frozen_adapter(model, Path(folder))
    model.decselfmask_stage1_folder = str(folder)  # its saved weights go into the classifier's adapter
    return model.eval()


def _require_base(folder: Path) -> None:
    """The base model a shared adapter folder names is there (a local folder), before a long load."""
    from axolotl_decselfmask.errors import InputError

    base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base or (Path(base).is_absolute() and not Path(base).exists()):
        raise InputError(f"decselfmask: {folder / 'adapter_config.json'} names the base model {base!r}, which is not "
                         "here: set base_model_name_or_path there to the base model's folder or hub id.")


def _same_path(a, b) -> bool:
    return Path(str(a)).exists() and Path(str(b)).exists() and Path(str(a)).resolve() == Path(str(b)).resolve()


def with_frozen_adapter(model, folder: Path):
    """``model`` with the LoRA adapter of ``folder`` on it as adapter ``stage1``, frozen and unmerged.
    Its trained token rows (PEFT's ``trainable_token_indices``: the added mask's) are written
    into the embedding, which is not quantised (exactly what PEFT's layer does in its forward),
    so that the stage-2 adapter is the only other one PEFT sees."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    config = LoraConfig.from_pretrained(str(folder))
    rows = config.trainable_token_indices
    if rows:
        names = rows if isinstance(rows, dict) else {_input_embedding_name(model): rows}
        for name, indices in names.items():
            delta = next(v for k, v in weights.items() if k.endswith(f"{name}.token_adapter.trainable_tokens_delta"))
            layer = next(m for n, m in model.named_modules() if n == name or n.endswith(f".{name}"))
            with torch.no_grad():
                layer.weight[torch.tensor(indices)] = delta.to(layer.weight.dtype)
    config.trainable_token_indices = None
    config.inference_mode = True
    model = get_peft_model(model, config, adapter_name=STAGE1_ADAPTER)
    set_peft_model_state_dict(model, {k: v for k, v in weights.items() if ".token_adapter." not in k},
                              adapter_name=STAGE1_ADAPTER)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _input_embedding_name(model) -> str:
    embeddings = model.get_input_embeddings()
    return next(n for n, m in model.named_modules() if m is embeddings)


def load_classifier(cfg, adapter_folder, dtype: torch.dtype):
    """The trained classifier as the evaluation scores it: the 4-bit base model named by the
    adapter (``base_model_name_or_path``; the recipe's ``base_model`` where that is missing) with
    the adapter of ``adapter_folder`` on it, unmerged, in eval mode."""
    from peft import PeftModel

    adapter_folder = Path(adapter_folder)
    base = json.loads((adapter_folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    if not base or (not Path(base).exists() and Path(base).is_absolute()):
        base = str(cfg.base_model)  # output_dir or the base model moved
    model = load_base(cfg, base, dtype, vocab_from=adapter_folder)
    return PeftModel.from_pretrained(model, str(adapter_folder)).eval()


# ------------------------------------------------------------------------------ training


def add_trainable_adapter(model, lora):
    """``model`` (the 4-bit start model) with a fresh trainable LoRA ``lora`` (adapter
    ``default``), the stage-1 adapter frozen and still applied: a PeftModel ready for the trainer."""
    from peft import PeftModel, get_peft_model

    for p in model.parameters():
        p.requires_grad_(False)
    if not isinstance(model, PeftModel):
        return without_embedding_in_saves(get_peft_model(model, lora))
    without_embedding_in_saves(model)
    model.add_adapter(TRAINED_ADAPTER, lora)
    model.base_model.set_adapter([TRAINED_ADAPTER, STAGE1_ADAPTER])  # both applied; the trainer takes the first
    for name, p in model.named_parameters():
        p.requires_grad_(f".{TRAINED_ADAPTER}" in name and f".{STAGE1_ADAPTER}" not in name)
    return model


def without_embedding_in_saves(model):
    """``model`` (the stage-2 PeftModel) saving its adapter without the embedding and output
    matrices: PEFT's ``save_embedding_layers="auto"`` writes both whole into every checkpoint when
    the vocabulary was resized (the added mask), though stage 2 trains LoRAs on linear layers only
    and stage 1's mask row is in its own adapter (:func:`with_frozen_adapter`). A caller's explicit
    value wins. Returns ``model``."""
    save = model.save_pretrained

    def save_pretrained(*args, **kwargs):
        kwargs.setdefault("save_embedding_layers", False)
        return save(*args, **kwargs)

    model.save_pretrained = save_pretrained
    return model


def keep_trained_adapter_only(folder) -> None:
    """A saved stage-2 folder or checkpoint holds the trained adapter alone: PEFT also writes the
    frozen stage-1 adapter in ``<folder>/stage1/``, which is ``output_dir``'s already (and would
    make a resume load it as a trainable adapter)."""
    shutil.rmtree(Path(folder) / STAGE1_ADAPTER, ignore_errors=True)


def write_combined_adapter(model, folder, base_model: str) -> None:
    """Replace the stage-2 adapter saved in ``folder`` by the classifier as one adapter: stage 1's
    LoRA and stage 2's stacked (rank ``r1 + r2``, ``lora_alpha`` = rank so the scaling is 1; a
    module only one of them adapts gets zeros in the other's rows: the sum of the two updates,
    exactly), stage 1's other saved weights (the trained mask row) as they were, and
    ``base_model`` as its base."""
    from peft import LoraConfig, PeftModel
    from safetensors.torch import load_file, save_file

    if not (isinstance(model, PeftModel) and STAGE1_ADAPTER in model.peft_config):
        return  # stage 1 off: the stage-2 adapter is the classifier
    folder = Path(folder)
    configs = model.peft_config
    if any(getattr(configs[a], "use_dora", False) for a in (STAGE1_ADAPTER, TRAINED_ADAPTER)):
        raise ValueError("decselfmask: a DoRA adapter cannot be stacked with another exactly; use plain LoRA for "
                         "stage 1 and stage 2 with load_in_4bit.")
    ranks = {a: _max_rank(configs[a]) for a in (STAGE1_ADAPTER, TRAINED_ADAPTER)}
    rank = sum(ranks.values())
    weights, targets = {}, set()
    for name, module in model.base_model.model.named_modules():
        if not (hasattr(module, "lora_A") and hasattr(module, "scaling")):
            continue
        parts = [_lora_part(module, a, ranks[a]) for a in (STAGE1_ADAPTER, TRAINED_ADAPTER)]
        if all(p is None for p in parts):
            continue
        fill = next(p for p in parts if p is not None)
        a = torch.cat([p[0] if p else fill[0].new_zeros(ranks[n], fill[0].shape[1])
                       for n, p in zip((STAGE1_ADAPTER, TRAINED_ADAPTER), parts)], 0)
        b = torch.cat([p[1] if p else fill[1].new_zeros(fill[1].shape[0], ranks[n])
                       for n, p in zip((STAGE1_ADAPTER, TRAINED_ADAPTER), parts)], 1)
        key = f"base_model.model.{name}"
        weights[f"{key}.lora_A.weight"], weights[f"{key}.lora_B.weight"] = a.contiguous(), b.contiguous()
        targets.add(name.rsplit(".", 1)[-1])
    stage1 = load_file(str(_stage1_folder(model) / "adapter_model.safetensors"))
    weights.update({k: v for k, v in stage1.items() if ".lora_A." not in k and ".lora_B." not in k})
    settings = LoraConfig.from_pretrained(str(_stage1_folder(model))).to_dict()  # as saved: its trained rows too
    settings.update(r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={}, lora_dropout=0.0,
                    target_modules=sorted(targets), base_model_name_or_path=base_model, inference_mode=True)
    settings["peft_type"], settings["task_type"] = "LORA", "CAUSAL_LM"
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(_jsonable(settings), indent=2, sort_keys=True),
                                                encoding="utf-8")


def _max_rank(config) -> int:
    return max([config.r, *(config.rank_pattern or {}).values()])


def _lora_part(module, adapter: str, rank: int):
    """(A times scaling, B) of ``adapter`` in ``module``, padded to ``rank``; None where absent."""
    if adapter not in module.lora_A:
        return None
    a = module.lora_A[adapter].weight.detach().float() * module.scaling[adapter]
    b = module.lora_B[adapter].weight.detach().float()
    if a.shape[0] < rank:  # a rank_pattern rank below the adapter's largest
        a = torch.cat([a, a.new_zeros(rank - a.shape[0], a.shape[1])], 0)
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - b.shape[1])], 1)
    return a, b


def _stage1_folder(model) -> Path:
    return Path(model.decselfmask_stage1_folder)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, tuple)):
        return sorted(value) if isinstance(value, set) else list(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, (str, int, float, bool)):  # enums
        return value.value
    return value
