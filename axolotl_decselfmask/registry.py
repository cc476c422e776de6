"""The registry of relevance methods and span selectors: built-ins plus entry-point plugins."""

from __future__ import annotations

import functools

import pluggy

from axolotl_decselfmask import hookspecs
from axolotl_decselfmask.hookspecs import PROJECT, hookimpl

# The built-in relevance methods by name, so that validating a recipe does not import them (and torch);
# tests/unit/test_hooks_names.py checks it against relevance.methods.BUILTIN_METHODS.
BUILTIN_METHOD_NAMES = ("grad_x_input", "integrated_gradients", "feature_ablation", "attention", "attnlrp", "random")


class _Builtins:
    @hookimpl
    def decselfmask_relevance_methods(self):
        from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS

        return dict(BUILTIN_METHODS)

    @hookimpl
    def decselfmask_span_selectors(self):
        from axolotl_decselfmask.stage1.selectors import BUILTIN_SELECTORS

        return dict(BUILTIN_SELECTORS)


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(_Builtins(), name="builtins")
    pm.load_setuptools_entrypoints(PROJECT)
    return pm


def _merged(results: list[dict]) -> dict:
    out: dict = {}
    # pluggy calls the last registered first, so the built-ins come last and keep their names:
    # a plugin adds methods, it cannot silently replace a built-in one.
    for result in results:
        out.update(result or {})
    return out


def relevance_methods() -> dict:
    return _merged(plugin_manager().hook.decselfmask_relevance_methods())


def relevance_method_names() -> set[str]:
    """The names :func:`relevance_methods` would give, importing methods only where another
    package registered some."""
    pm = plugin_manager()
    if any(name != "builtins" for name, _ in pm.list_name_plugin()):
        return set(relevance_methods())
    return set(BUILTIN_METHOD_NAMES)


def span_selectors() -> dict:
    return _merged(plugin_manager().hook.decselfmask_span_selectors())


def get_method(name: str):
    methods = relevance_methods()
    if name not in methods:
        raise ValueError(f"decselfmask.relevance.method {name!r} is unknown; available: {sorted(methods)}")
    return methods[name]


def get_selector(name: str):
    selectors = span_selectors()
    if name not in selectors:
        raise ValueError(f"decselfmask.spans.selector {name!r} is unknown; available: {sorted(selectors)}")
    return selectors[name]


def selector_for(config, method_cls):
    """The span selector of a run (``DecSelfMaskConfig``): the method's own (``random``), else ``spans.selector``."""
    return get_selector(getattr(method_cls, "span_selector", None) or config.spans.selector)
