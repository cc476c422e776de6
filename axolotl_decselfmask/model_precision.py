"""What precision and quantisation a loaded model has, said in one log line per stage
(``decselfmask stage 2: 4-bit NF4 base, bfloat16 compute (210 Linear4bit layers)``): relevance,
stage 1, stage 2, the evaluation and ``predict`` each print it once they have their model."""

from __future__ import annotations

import torch


def quantised_layers(model, bits: int = 4) -> int:
    """How many of ``model``'s linear layers are bitsandbytes ``Linear4bit`` (``bits=8``: ``Linear8bitLt``)."""
    try:
        from bitsandbytes.nn import Linear4bit, Linear8bitLt
    except ImportError:
        return 0
    kind = Linear4bit if bits == 4 else Linear8bitLt
    return sum(isinstance(m, kind) for m in model.modules())


def describe(model, dtype: torch.dtype | None = None) -> str:
    """What ``model`` holds, for the log: ``4-bit NF4 base, bfloat16 compute (210 Linear4bit
    layers)`` or ``float32 weights, not quantised``."""
    n = quantised_layers(model)
    n8 = quantised_layers(model, bits=8)
    if n8:
        return f"8-bit LLM.int8 base ({n8} Linear8bitLt layers)"
    if not n:
        weights = dtype or next(model.parameters()).dtype
        return f"{str(weights).replace('torch.', '')} weights, not quantised"
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
    quant = str(config.get("bnb_4bit_quant_type") or "nf4").upper()
    compute = str(config.get("bnb_4bit_compute_dtype") or dtype or "float32").replace("torch.", "")
    return f"4-bit {quant} base, {compute} compute ({n} Linear4bit layers)"


def log_loaded(what: str, model, dtype: torch.dtype | None = None) -> None:
    """One line: ``decselfmask <what>: <describe(model)>``."""
    print(f"decselfmask {what}: {describe(model, dtype)}")


def keep_4bit_differentiable(model) -> int:
    """Keep gradients through ``model``'s 4-bit layers right on a CPU: bitsandbytes 0.50 repacks a
    ``Linear4bit``'s weight for its AVX512-BF16 kernel at the first forward in eval mode without
    gradients, and from then on every forward, with gradients or not, runs that kernel, which has no
    backward (torch warns "gemv_4bit: an autograd kernel was not registered"): the relevance pass's
    gradient to the input would be silently wrong. Turned off per layer; returns how many."""
    n = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n
