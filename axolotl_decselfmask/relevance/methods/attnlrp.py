"""AttnLRP (Achtibat et al., ICML 2024) through the ``lxt`` library: ``pip install axolotl-decselfmask[lrp]``.

lxt's efficient implementation patches the model family's modules so that gradient x input
of the patched model equals the LRP relevance. The patch is applied for the duration of
one :meth:`attribute` call and then undone, so training in the same process is not affected.

Notice: lxt's README states that LRP is a patented technology that can be used free of
charge for personal and scientific purposes only; check the licence before other use.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types

import numpy as np
import torch

from axolotl_decselfmask.relevance.methods.base import MethodNotSupported
from axolotl_decselfmask.relevance.methods.grad_x_input import GradientXInput

# model_type -> transformers modeling module that lxt knows how to patch
FAMILIES = {
    "llama": "transformers.models.llama.modeling_llama",
    "qwen2": "transformers.models.qwen2.modeling_qwen2",
    "qwen3": "transformers.models.qwen3.modeling_qwen3",
    "gemma3_text": "transformers.models.gemma3.modeling_gemma3",
    "gemma3": "transformers.models.gemma3.modeling_gemma3",
}


def _import_lxt():
    """Import lxt's efficient API. lxt imports torchvision for its ViT map at import time;
    where torchvision is absent or broken, a stand-in providing ``torch.nn`` is used (only
    ViT models need the real one, and they are not supported here)."""
    import transformers  # noqa: F401 - before the stand-in: transformers probes find_spec("torchvision")

    try:
        import torchvision.models.vision_transformer  # noqa: F401  (lxt needs it importable)
    except Exception:  # noqa: BLE001 - absent or broken torchvision
        for name in ("torchvision", "torchvision.models", "torchvision.models.vision_transformer"):
            sys.modules.pop(name, None)
        tv, models, vit = (types.ModuleType(n) for n in
                           ("torchvision", "torchvision.models", "torchvision.models.vision_transformer"))
        vit.nn = torch.nn
        models.vision_transformer = vit
        tv.models = models
        sys.modules.update({"torchvision": tv, "torchvision.models": models,
                            "torchvision.models.vision_transformer": vit})
    try:
        from lxt.efficient import monkey_patch
        from lxt.efficient.models import get_default_map
    except (ImportError, ValueError) as exc:
        hint = ""
        if int(transformers.__version__.split(".")[0]) >= 5:
            hint = (" lxt 2.1, its newest release, is written for transformers 4 and does not import or "
                    f"patch transformers {transformers.__version__} (pinned by Axolotl 0.19).")
        raise MethodNotSupported(
            "relevance.method attnlrp needs the lxt library (pip install 'axolotl-decselfmask[lrp]'), and "
            f"importing it failed: {exc}.{hint} Use grad_x_input (the default) or integrated_gradients."
        ) from exc
    return monkey_patch, get_default_map


@contextlib.contextmanager
def lxt_patched(module):
    """Patch ``module`` with lxt's AttnLRP rules, and restore everything afterwards."""
    monkey_patch, get_default_map = _import_lxt()
    patch_map = get_default_map(module)
    saved = []
    for target in patch_map:
        if isinstance(target, types.ModuleType):
            for attr in ("eager_attention_forward", "ALL_ATTENTION_FUNCTIONS"):
                if hasattr(target, attr):
                    saved.append((target, attr, getattr(target, attr), True))
        else:
            saved.append((target, "forward", target.__dict__.get("forward"), "forward" in target.__dict__))
    try:
        monkey_patch(module, patch_map)
        yield
    finally:
        for owner, attr, value, present in saved:
            if present:
                setattr(owner, attr, value)
            elif attr in owner.__dict__:
                delattr(owner, attr)


class AttnLRP(GradientXInput):
    name = "attnlrp"
    needs_eager_attention = True

    @classmethod
    def check_model_config(cls, config) -> None:
        model_type = getattr(config, "model_type", "?")
        if model_type not in FAMILIES:
            raise MethodNotSupported(
                f"relevance.method attnlrp supports the families {sorted(FAMILIES)} (lxt); this model is "
                f"{model_type!r}. Use grad_x_input or integrated_gradients."
            )
        _import_lxt()

    def attribute(self, prompts) -> list[np.ndarray]:
        self.check_model_config(self.model.config)
        module = importlib.import_module(FAMILIES[self.model.config.model_type])
        if getattr(self.model.config, "_attn_implementation", "eager") != "eager":
            self.model.set_attn_implementation("eager")
        with lxt_patched(module):
            return super().attribute(prompts)
