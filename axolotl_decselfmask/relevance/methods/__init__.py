"""Relevance methods, one class per method, each with one ``attribute()`` (like captum)."""

from axolotl_decselfmask.relevance.methods.attention import AttentionRelevance
from axolotl_decselfmask.relevance.methods.attnlrp import AttnLRP
from axolotl_decselfmask.relevance.methods.base import (
    MethodNotSupported,
    RelevanceMethod,
)
from axolotl_decselfmask.relevance.methods.feature_ablation import FeatureAblation
from axolotl_decselfmask.relevance.methods.grad_x_input import GradientXInput
from axolotl_decselfmask.relevance.methods.integrated_gradients import (
    IntegratedGradients,
)
from axolotl_decselfmask.relevance.methods.random_spans import RandomBaseline

BUILTIN_METHODS = {cls.name: cls for cls in (
    GradientXInput, IntegratedGradients, FeatureAblation, AttentionRelevance, AttnLRP, RandomBaseline)}

__all__ = ["BUILTIN_METHODS", "MethodNotSupported", "RelevanceMethod", *[c.__name__ for c in BUILTIN_METHODS.values()]]
