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
    return model
