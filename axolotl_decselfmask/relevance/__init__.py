"""Step 1 of the method, self-relevance: which tokens of a note matter for a task item.

:mod:`.prompt` builds the prompt (note, lead-in, the item as the answer), :mod:`.runner` scores
many prompts in batches, :mod:`.loading` loads the scoring model, and :mod:`.methods` holds the
attribution methods (one class each, one ``attribute()``).
"""

from axolotl_decselfmask.relevance.loading import (
    load_relevance_model,
    pick_device,
    pick_dtype,
)
from axolotl_decselfmask.relevance.prompt import (
    PromptLayoutError,
    RelevancePrompt,
    build_relevance_prompt,
    shared_prefix_key,
)
from axolotl_decselfmask.relevance.runner import (
    compute_relevance,
    items_for_texts,
    iter_batches,
)

__all__ = ["PromptLayoutError", "RelevancePrompt", "build_relevance_prompt", "compute_relevance", "items_for_texts",
           "iter_batches", "load_relevance_model", "pick_device", "pick_dtype", "shared_prefix_key"]
