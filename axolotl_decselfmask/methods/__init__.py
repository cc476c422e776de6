"""Relevance methods, one class per method, each with one ``attribute()`` (like captum)."""

from .attention import AttentionRelevance
from .attnlrp import AttnLRP
from .base import MethodNotSupported, RelevanceMethod
from .feature_ablation import FeatureAblation
from .grad_x_input import GradientXInput
from .integrated_gradients import IntegratedGradients
from .random_spans import RandomBaseline

BUILTIN_METHODS = {cls.name: cls for cls in (
    GradientXInput, IntegratedGradients, FeatureAblation, AttentionRelevance, AttnLRP, RandomBaseline)}

__all__ = ["BUILTIN_METHODS", "MethodNotSupported", "RelevanceMethod", *[c.__name__ for c in BUILTIN_METHODS.values()]]
