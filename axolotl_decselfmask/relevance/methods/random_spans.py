"""The random baseline: as many spans, of the same lengths, as the relevance-guided spans
would have, placed at random (seeded) word-aligned positions of the text.

Its relevance is gradient x input (to know the spans' count and lengths); the difference is in
the span selector it asks for (``random``). ``relevance.method: random`` is kept as the short
way to ask for it (docs/choosing_a_method.md, the benchmark's rows); its relevance cache is keyed
by its own name. The same spans over a cache shared with ``grad_x_input`` runs come from the
default method with ``spans.selector: random``: what the ``random_masking`` baseline of the
comparison uses (``axolotl_decselfmask/tools/experiments/methods.py``).
"""

from __future__ import annotations

from axolotl_decselfmask.relevance.methods.grad_x_input import GradientXInput


class RandomBaseline(GradientXInput):
    name = "random"
    span_selector = "random"
