"""The self-relevance prompt: the text, a lead-in, and the task item as the assistant's answer.

The model reads the text, then the lead-in, and the assistant turn holds the task item (no
label is used). The lead-in is a question (``prompt_style: question``, the default: the item
answers it) or a declarative sentence that the item completes (``prompt_style: completion``,
the authors' form: "Given the patient's history, the patient presents" + the item). A method
of :mod:`.methods` scores each text token against a scalar target:

- ``sum_logprob`` (default): the summed log-probability of the item's tokens under teacher
  forcing. Every token of the item counts, so "Presence of pacemaker" and "Presence of
  diabetes" give different maps.
- ``token_logit``: the logit of one item token (first, middle or last), read at the position
  that predicts it. For items that share a prefix ("Presence of ...") the middle token is the
  same word for every item, so every item gives the same map; kept for comparison.
- ``max_logit`` (the authors' target): the largest vocabulary logit at the position *of* one
  item token (first, middle or last; the authors: the middle one), i.e. the logit of the
  model's top prediction for the token after it. As ``token_logit``, it sees the item only up
  to that token.
"""

from __future__ import annotations

from dataclasses import dataclass

from axolotl_decselfmask.prompts import relevance_messages, render


@dataclass
class RelevancePrompt:
    """A tokenised relevance prompt and where the text and the item sit in it."""

    input_ids: list[int]
    text_positions: list[int]  # token positions covering the text, in order
    offsets: list[tuple[int, int]]  # char offsets of those tokens inside the text
    item_positions: list[int]  # token positions of the item (assistant content)
    text: str = ""  # the text itself (feature ablation groups its tokens into words or sentences)


class PromptLayoutError(ValueError):
    pass


def build_relevance_prompt(tokenizer, text: str, item: str, lead_in: str, style: str = "question") -> RelevancePrompt:
    """Render and tokenise the relevance prompt of ``text`` and ``item``.

    ``style``: ``question`` or ``completion`` (see :func:`..prompts.relevance_messages`). In
    both the item is the assistant turn. Positions are found through the fast tokenizer's
    offset mapping, so nothing depends on a tokenizer's byte-level conventions.
    """
    turns = render(tokenizer, relevance_messages(text, item, lead_in, style))
    full = turns.prompt + turns.answer
    t0 = turns.prompt.find(text)
    if t0 < 0:
        raise PromptLayoutError("the chat template does not reproduce the text verbatim")
    t1 = t0 + len(text)
    i0 = len(turns.prompt) + turns.answer.find(item)
    if turns.answer.find(item) < 0:
        raise PromptLayoutError("the chat template does not reproduce the item verbatim")
    i1 = i0 + len(item)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    text_positions, offsets, item_positions = [], [], []
    for pos, (s, e) in enumerate(enc["offset_mapping"]):
        if e <= s:
            continue
        if s < t1 and e > t0:
            text_positions.append(pos)
            offsets.append((max(s, t0) - t0, min(e, t1) - t0))
        elif s < i1 and e > i0:
            item_positions.append(pos)
    if not item_positions:
        raise PromptLayoutError(f"the item {item!r} has no tokens in the prompt")
    if item_positions[0] == 0:
        raise PromptLayoutError("the item cannot be the first token of the prompt")
    return RelevancePrompt(enc["input_ids"], text_positions, offsets, item_positions, text)


def shared_prefix_key(prompt: RelevancePrompt) -> tuple[int, ...]:
    """The tokens before the item: prompts of one text (and lead-in) with different items
    share them, unless the tokenizer merges the item's first token with what precedes it."""
    return tuple(prompt.input_ids[: prompt.item_positions[0]])
