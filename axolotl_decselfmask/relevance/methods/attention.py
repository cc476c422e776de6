"""Attention from the positions that predict the item to the text tokens.

Mean over layers and heads of the attention weights at each position whose logits the target
reads (the positions that predict the item's tokens; ``max_logit``: the scored item token's own
position). Needs eager attention (the weights are not materialised by SDPA or flash kernels);
the method switches the model to it.
"""

from __future__ import annotations

import numpy as np
import torch

from axolotl_decselfmask.compat import ensure_eager_attention, forward_keeping
from axolotl_decselfmask.relevance.methods.base import (
    MethodNotSupported,
    RelevanceMethod,
)


class AttentionRelevance(RelevanceMethod):
    name = "attention"
    needs_eager_attention = True

    def attribute(self, prompts) -> list[np.ndarray]:
        try:
            ensure_eager_attention(self.model)
        except Exception as exc:  # noqa: BLE001
            raise MethodNotSupported(f"attention: cannot switch this model to eager attention ({exc})") from exc
        batch = self.batch(prompts)
        with torch.no_grad():
            out = forward_keeping(self.model, 1, input_ids=batch.ids, attention_mask=batch.mask,
                                  output_attentions=True, use_cache=False)
        if not out.attentions or out.attentions[0] is None:
            raise MethodNotSupported("attention: the model returned no attention weights")
        # [layers, B, heads, L, L] -> mean over layers and heads -> [B, L, L]
        att = torch.stack([a.float() for a in out.attentions]).mean(dim=(0, 2))
        values = torch.zeros(batch.ids.shape, dtype=torch.float32, device=att.device)
        counts = torch.zeros(batch.ids.shape[0], device=att.device)
        values.index_add_(0, batch.rows, att[batch.rows, batch.cols])
        counts.index_add_(0, batch.rows, torch.ones_like(batch.rows, dtype=torch.float32))
        return self.text_values(values / counts[:, None], prompts)
