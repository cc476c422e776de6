"""The random baseline: as many spans, of the same lengths, as the relevance-guided spans
would have, placed at random (seeded) word-aligned positions of the text.

Its relevance is gradient x input (to know the spans' count and lengths); the difference is in
the span selector it asks for (``random``).
"""

from __future__ import annotations

from axolotl_decselfmask.relevance.methods.grad_x_input import GradientXInput


class RandomBaseline(GradientXInput):
    name = "random"
    span_selector = "random"
