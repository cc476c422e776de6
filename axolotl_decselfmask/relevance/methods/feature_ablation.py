"""Feature ablation (captum ``FeatureAblation``) over words or sentences of the text.

Each word (or sentence) of the text is replaced by padding tokens in turn; its relevance is
the drop of the target. Every token of a unit gets the unit's value.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from axolotl_decselfmask.relevance.methods.base import RelevanceMethod

UNITS = {"word": re.compile(r"\S+"), "sentence": re.compile(r"[^.!?]+(?:[.!?]+|$)")}


def unit_of_tokens(offsets: list[tuple[int, int]], text: str, unit: str) -> list[int]:
    """Index of the word or sentence each text token starts in."""
    spans = [m.span() for m in UNITS[unit].finditer(text) if m.group().strip()]
    out, k = [], 0
    for start, end in offsets:
        first = start + (len(text[start:end]) - len(text[start:end].lstrip()))
        while k + 1 < len(spans) and first >= spans[k][1]:
            k += 1
        out.append(k)
    return out


class FeatureAblation(RelevanceMethod):
    name = "feature_ablation"

    def attribute(self, prompts) -> list[np.ndarray]:
        from captum.attr import FeatureAblation as CaptumFeatureAblation

        unit = self.options.get("unit") or "sentence"
        if unit not in UNITS:
            raise ValueError(f"feature_ablation unit must be one of {sorted(UNITS)}, not {unit!r}")
        batch = self.batch(prompts)
        n = batch.ids.shape[0]
        mask = torch.zeros_like(batch.ids)  # feature 0: not ablated (prompt, padding)
        for row, p in enumerate(prompts):
            units = unit_of_tokens(p.offsets, p.text, unit)
            mask[row, p.text_positions] = torch.tensor(units, device=mask.device) + 1

        def forward(ids):
            return self.scores(batch, expand=ids.shape[0] // n, input_ids=ids)

        ablation = CaptumFeatureAblation(forward)
        with torch.no_grad():
            attr = ablation.attribute(batch.ids, baselines=self.pad_id, feature_mask=mask,
                                      perturbations_per_eval=int(self.options.get("perturbations_per_eval") or 4))
        return self.text_values(attr.float(), prompts)
