"""Gradient x input: embedding x gradient of the target, one forward and one backward pass."""

from __future__ import annotations

import numpy as np
import torch

from .base import RelevanceMethod


class GradientXInput(RelevanceMethod):
    """The default method: the gradient is taken with respect to the input embeddings only
    (frozen weights, no weight gradients), for a whole batch at once (prompts are
    independent, so the gradient of the summed targets is each prompt's own)."""

    name = "grad_x_input"

    def attribute(self, prompts) -> list[np.ndarray]:
        batch = self.batch(prompts)
        embeds = self.embedding(batch.ids).detach().requires_grad_(True)
        with torch.enable_grad():
            scores = self.scores(batch, inputs_embeds=embeds)
            (grad,) = torch.autograd.grad(scores.sum(), embeds)
        return self.text_values((embeds.detach().float() * grad.float()).sum(-1), prompts)
