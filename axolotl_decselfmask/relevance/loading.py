"""Loading the model that scores relevance: device, precision, optional 4/8-bit quantisation."""

from __future__ import annotations

import os

import torch


def pick_dtype(name: str, device: str) -> torch.dtype:
    """``relevance.dtype``; ``auto`` is the machine's precision (:func:`.hardware.decide_precision`)."""
    if name != "auto":
        return getattr(torch, name)
    from axolotl_decselfmask.hardware import decide_precision

    cuda = device.startswith("cuda")
    return decide_precision(cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported()).torch_dtype()


def pick_device(name: str) -> str:
    """``cpu``, or this process's GPU: ``cuda:<LOCAL_RANK>`` under ``accelerate launch``/torchrun,
    so that the processes of a sharded precompute do not all load onto GPU 0."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("decselfmask.relevance.device is 'cuda' but no CUDA device is available")
    if name == "cpu" or not torch.cuda.is_available():
        return "cpu"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def load_relevance_model(path: str, dtype: str = "auto", device: str = "auto", trust_remote_code: bool = False,
                         eager_attention: bool = False, load_in_4bit: bool = False, load_in_8bit: bool = False):
    """Load a causal LM for scoring: eval mode, frozen weights, optionally quantised (bitsandbytes)."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dev = pick_device(device)
    kwargs = {"dtype": pick_dtype(dtype, dev), "trust_remote_code": trust_remote_code}
    if eager_attention:
        kwargs["attn_implementation"] = "eager"
    if load_in_4bit or load_in_8bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=load_in_4bit, load_in_8bit=load_in_8bit, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=kwargs["dtype"])
        kwargs["device_map"] = {"": dev}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not (load_in_4bit or load_in_8bit):
        model.to(dev)
    model.eval()
    model.requires_grad_(False)
    from axolotl_decselfmask.model_precision import keep_4bit_differentiable, log_loaded

    if load_in_4bit:
        keep_4bit_differentiable(model)  # relevance backpropagates to the input through every layer
    log_loaded("relevance", model)
    return model


def embedding_rows(model_path: str | os.PathLike) -> int | None:
    """The rows of a local model folder's token embedding, from its ``config.json`` (``vocab_size``,
    or a multimodal config's ``text_config.vocab_size``) without loading a weight; None when the
    folder is not local or does not say."""
    import json
    from pathlib import Path

    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # Axolotl's own loader says what is wrong with it
    rows = data.get("vocab_size") or (data.get("text_config") or {}).get("vocab_size")
    return rows if isinstance(rows, int) and rows > 0 else None


def check_tokenizer_fits(model_path: str, tokenizer_path: str, key: str, trust_remote_code: bool = False) -> None:
    """An :class:`InputError` naming both folders and sizes when the tokenizer of ``tokenizer_path`` has
    more tokens than the model of ``model_path`` has embedding rows: its ids from that row count up
    would end in ``IndexError: index out of range in self`` deep in the first forward pass. A
    tokenizer smaller than the embedding is normal (padding rows). Reads ``config.json`` and the
    tokenizer only, no weights; not local, or no tokenizer files there: nothing to check here."""
    from pathlib import Path

    from axolotl_decselfmask.errors import InputError

    rows = embedding_rows(model_path)
    if rows is None or not (Path(tokenizer_path) / "tokenizer_config.json").is_file():
        return
    from transformers import AutoTokenizer

    try:
        tokens = len(AutoTokenizer.from_pretrained(str(tokenizer_path), trust_remote_code=trust_remote_code))
    except (OSError, ValueError):
        return  # the loader that needs it reports it
    if tokens > rows:
        where = (f"the tokenizer in {tokenizer_path}" if str(tokenizer_path) == str(model_path)
                 else f"the tokenizer {tokenizer_path}")
        raise InputError(
            f"{key}: {where} has {tokens:,} tokens, but the model {model_path} has a {rows:,}-row embedding "
            f"(config.json vocab_size): token ids {rows:,} and up have no row (IndexError: index out of range "
            "in self). The tokenizer does not belong to this model: put the model's own tokenizer files in its "
            "folder (or point the recipe at the model the tokenizer was made for)."
        )


def check_model_tokenizers(cfg, config) -> None:
    """The recipe's tokenizer against ``base_model``, and ``decselfmask.relevance.model``'s own tokenizer
    against it (:func:`check_tokenizer_fits`): before the precompute and stage 1 load any model."""
    trust = bool(cfg.get("trust_remote_code"))
    base = str(cfg.get("base_model") or "")
    tokenizer = str(cfg.get("tokenizer_config") or base)
    if base:
        key = "tokenizer_config" if cfg.get("tokenizer_config") else "base_model"
        check_tokenizer_fits(base, tokenizer, key, trust)
    if config.relevance.model:
        check_tokenizer_fits(config.relevance.model, config.relevance.model, "decselfmask.relevance.model", trust)
