"""Hooks through which other packages add relevance methods and span selectors.

A package declares an entry point in the group ``axolotl_decselfmask`` pointing at a module
(or object) that implements some of these hooks with ``@hookimpl``::

    # pyproject.toml of the other package
    [project.entry-points.axolotl_decselfmask]
    my_methods = "my_package.decselfmask_hooks"

    # my_package/decselfmask_hooks.py
    from axolotl_decselfmask.hookspecs import hookimpl
    from axolotl_decselfmask.relevance.methods import RelevanceMethod

    class Occlusion(RelevanceMethod):
        name = "occlusion"
        def attribute(self, prompts): ...

    @hookimpl
    def decselfmask_relevance_methods():
        return {"occlusion": Occlusion}

A recipe then says ``decselfmask: {relevance: {method: occlusion}}``.
"""

from __future__ import annotations

import pluggy

PROJECT = "axolotl_decselfmask"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def decselfmask_relevance_methods() -> dict:
    """Return ``{name: RelevanceMethod subclass}``."""


@hookspec
def decselfmask_span_selectors() -> dict:
    """Return ``{name: selector(scores, offsets, text, settings, rng) -> spans}``."""
