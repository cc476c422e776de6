"""The authors' string-match scorer: Macro F1 over answers read from teacher-forced argmax ids.

What the authors' evaluation does (ferrazzipietro/DecSelfMask, ``compute_metrics_sft`` in
src/training/evaluation_functions.py; see docs for the file references), restated:

- per example, the argmax token ids and the gold ids on the labelled positions;
- the answer is what follows the first occurrence of the assistant-header ids INSIDE that sequence (the
  predicted header is looked for in the prediction itself), special ids dropped; without a header the
  whole sequence, special ids dropped, is the answer;
- answers are compared as their ids joined with no separator, so a prediction that is none of the gold
  answers is a class of its own with F1 0 that counts in the macro mean (scikit-learn with ``labels``
  left unset: the classes are the union of gold and predicted values);
- Macro F1 pooled over every example of every item, and per item on that item's examples.

``teacher_forced_argmax`` produces the per-example id lists from a causal LM and tokenised rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

IGNORE = -100


def answer_ids(ids: Sequence[int], header: Sequence[int], special: Iterable[int]) -> list[int]:
    """The ids after the first occurrence of ``header`` in ``ids`` (all of ``ids`` when it does not
    occur), with the ``special`` ids removed."""
    ids, header, special = [int(i) for i in ids], [int(h) for h in header], {int(s) for s in special}
    if not header:
        raise ValueError("string_match: the assistant-header id sequence is empty; pass the chat template's "
                         "header ids (e.g. the ids of '<|im_start|>assistant\\n' for ChatML)")
    found = header_start(ids, header)
    start = found + len(header) if found >= 0 else 0
    return [t for t in ids[start:] if t not in special]


def header_start(ids: Sequence[int], header: Sequence[int]) -> int:
    """Where ``header`` first occurs in ``ids`` (-1 when it does not)."""
    ids, header = [int(i) for i in ids], [int(h) for h in header]
    for i in range(len(ids) - len(header) + 1):
        if ids[i:i + len(header)] == header:
            return i
    return -1


def header_miss(predicted: Sequence[int], gold: Sequence[int], header: Sequence[int]) -> tuple[int, int] | None:
    """Why ``predicted`` (unshifted argmax ids: position t holds the prediction of token t + 1) holds no header:
    (j, the id predicted) for the first header token j the model mispredicts where ``gold`` has the header (the
    argmax one position before it); None when ``predicted`` holds the header, or ``gold`` has none to compare."""
    if header_start(predicted, header) >= 0:
        return None
    start = header_start(gold, header)
    if start < 1:
        return None
    for j, h in enumerate(header):
        if start - 1 + j < len(predicted) and int(predicted[start - 1 + j]) != int(h):
            return j, int(predicted[start - 1 + j])
    return None


def answer_string(ids: Sequence[int], header: Sequence[int], special: Iterable[int]) -> str:
    """The answer as the authors compare it: its ids joined with no separator ("" when empty)."""
    return "".join(str(t) for t in answer_ids(ids, header, special))


def macro_f1(gold: Sequence[str], predicted: Sequence[str], average: str = "macro") -> float:
    """F1 as scikit-learn computes it with ``labels`` unset: classes = union of gold and predicted."""
    from sklearn.metrics import f1_score

    if len(gold) != len(predicted):
        raise ValueError(f"string_match: {len(gold)} gold answers but {len(predicted)} predictions")
    if not gold:
        raise ValueError("string_match: no examples to score")
    return float(f1_score(list(gold), list(predicted), average=average, zero_division=0.0))


@dataclass
class StringMatchScores:
    """Pooled figures (every example of every item together) and per-item figures beside them."""

    macro_f1: float
    micro_f1: float
    weighted_f1: float
    off_format: float  # share of predictions that are none of their item's gold answer strings
    n: int
    per_item: dict[str, dict] = field(default_factory=dict)  # item -> macro_f1, off_format, n

    @property
    def mean_per_item_macro_f1(self) -> float:
        """Mean of the per-item Macro F1 (not a figure the authors' function reports)."""
        return sum(v["macro_f1"] for v in self.per_item.values()) / len(self.per_item)

    def to_dict(self) -> dict:
        return {"macro_f1": self.macro_f1, "micro_f1": self.micro_f1, "weighted_f1": self.weighted_f1,
                "off_format": self.off_format, "n": self.n,
                "mean_per_item_macro_f1": self.mean_per_item_macro_f1, "per_item": self.per_item}


def _answers(sequences: Sequence[Sequence[int]], header, special, what: str) -> list[str]:
    out = [answer_string(s, header, special) for s in sequences]
    if what == "gold":
        empty = [i for i, a in enumerate(out) if not a]
        if empty:
            raise ValueError(f"string_match: gold example(s) {empty[:5]} have an empty answer after the header "
                             "(special ids dropped); the rows must carry the gold answer on the labelled positions")
    return out


def _off_format(gold: list[str], predicted: list[str], items: list[str],
                valid: Mapping[str, Iterable[str]] | None) -> list[bool]:
    if valid is None:
        seen: dict[str, set[str]] = {}
        for g, it in zip(gold, items):
            seen.setdefault(it, set()).add(g)
        allowed = seen
    else:
        missing = sorted(set(items) - set(valid))
        if missing:
            raise ValueError(f"string_match: valid_answers has no entry for item(s) {missing[:5]}")
        allowed = {k: set(v) for k, v in valid.items()}
    return [p not in allowed[it] for p, it in zip(predicted, items)]


def score_strings(gold: Sequence[str], predicted: Sequence[str], items: Sequence[str],
                  off: Sequence[bool]) -> StringMatchScores:
    """:class:`StringMatchScores` of answers already read (``answer_string``), their items and
    off-format flags: Macro F1 pooled over every example, and per item on that item's examples."""
    if not (len(gold) == len(predicted) == len(items) == len(off)):
        raise ValueError(f"string_match: {len(gold)} gold answers, {len(predicted)} predictions, {len(items)} items "
                         f"and {len(off)} off-format flags do not match")
    per_item = {}
    for it in sorted(set(items)):
        idx = [i for i, x in enumerate(items) if x == it]
        per_item[it] = {"macro_f1": macro_f1([gold[i] for i in idx], [predicted[i] for i in idx]),
                        "off_format": sum(bool(off[i]) for i in idx) / len(idx), "n": len(idx)}
    return StringMatchScores(macro_f1=macro_f1(gold, predicted), micro_f1=macro_f1(gold, predicted, "micro"),
                             weighted_f1=macro_f1(gold, predicted, "weighted"),
                             off_format=sum(bool(o) for o in off) / len(off), n=len(gold), per_item=per_item)


def score_string_match(predicted: Sequence[Sequence[int]], gold: Sequence[Sequence[int]],
                       header: Sequence[int], special: Iterable[int], items: Sequence[str] | None = None,
                       valid_answers: Mapping[str, Iterable[str]] | None = None) -> StringMatchScores:
    """Macro F1 of the authors' scorer, pooled and per item, with the share of off-format answers.

    ``predicted[i]`` / ``gold[i]``: the argmax ids and the gold ids on example i's labelled positions.
    ``items[i]``: example i's item (task); one item when None. ``valid_answers``: per item, the answer
    strings that count as in format (default: the gold answer strings seen for that item).
    """
    if len(predicted) != len(gold):
        raise ValueError(f"string_match: {len(predicted)} predicted sequences but {len(gold)} gold sequences")
    items = ["all"] * len(gold) if items is None else [str(x) for x in items]
    if len(items) != len(gold):
        raise ValueError(f"string_match: {len(items)} item names for {len(gold)} examples")
    special = {int(s) for s in special}
    g = _answers(gold, header, special, "gold")
    p = _answers(predicted, header, special, "predicted")
    return score_strings(g, p, items, _off_format(g, p, items, valid_answers))


def assistant_header(tokenizer) -> tuple[str, str]:
    """(the assistant-header text the answer is read after, which rule gave it), from the chat template.

    ``chatml`` (a ChatML template, SmolLM2 and Qwen): the end of the user turn and the assistant
    header, ``<|im_end|>\n<|im_start|>assistant\n``, as the authors read Qwen; ``llama3``: the
    generation header ``<|start_header_id|>assistant<|end_header_id|>\n\n``, as they read Llama;
    ``template`` (any other): what the template adds for the assistant turn (the conversation
    rendered with the generation prompt minus the same without it).
    """
    user = "DECSELFMASK-USER-TURN"
    messages = [{"role": "user", "content": user}]
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    with_prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not with_prompt.startswith(without) or len(with_prompt) == len(without):
        raise ValueError("string_match: the chat template adds no assistant header of its own after the user "
                         "turn (rendered with and without add_generation_prompt), so the answer cannot be "
                         "located; set `chat_template:` in the recipe, or use classification.scorer: options")
    generation = with_prompt[len(without):]
    if generation.startswith("<|im_start|>"):
        return with_prompt[with_prompt.rindex(user) + len(user):], "chatml"
    if generation.startswith("<|start_header_id|>"):
        return generation, "llama3"
    return generation, "template"


def header_and_special(tokenizer) -> tuple[list[int], set[int], str, str]:
    """(header ids, special ids, header text, rule) as the authors' evaluation reads a model's
    answers: the header of :func:`assistant_header` tokenised alone; the special ids every added
    token of the tokenizer, and for ChatML also the newline id (the authors drop Qwen's)."""
    text, rule = assistant_header(tokenizer)
    header = tokenizer(text, add_special_tokens=False)["input_ids"]
    special = {int(i) for i in tokenizer.added_tokens_decoder}
    if rule == "chatml":
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        if len(newline) != 1:
            raise ValueError(f"string_match: the tokenizer writes a newline as {len(newline)} ids {newline}; "
                             "the ChatML reading drops one newline id")
        special.add(int(newline[0]))
    return [int(h) for h in header], special, text, rule


def teacher_forced_argmax(model, tokenizer, rows: Sequence[Mapping], batch_size: int = 8,
                          shift: bool = True, groups: Sequence | None = None,
                          row_chunk: int = 8) -> tuple[list[list[int]], list[list[int]]]:
    """(argmax ids, gold ids) on each row's labelled positions (``labels`` != -100), one forward per batch.

    ``rows``: dicts with ``input_ids`` and ``labels`` (the stage-2 training format). ``shift=True``: the
    prediction for position t is the argmax of the logits at t-1, as a causal LM's loss reads them (a
    labelled position 0 has no prediction and is left out). ``shift=False``: the argmax at t itself, as
    the authors' Trainer hands it to ``compute_metrics_sft`` (their answers then carry the prediction made
    after the last token). Right padding with the tokenizer's pad id (eos when it has none).

    ``groups``: one key per row (the note it reads); rows of one key (one note's rows for several tasks) have the
    argmax of their common prefix computed once, and each row's rest on a copy of its key/value cache
    (:func:`shared_prefix_argmax`, ``row_chunk`` rows a copy); equal to one forward per row up to rounding.
    """
    import torch

    from axolotl_decselfmask.compat import forward_keeping

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    sequences = [list(r["input_ids"]) for r in rows]
    firsts = [_first_read(r, shift) for r in rows]
    argmaxes: list = [None] * len(rows)
    alone = list(range(len(rows)))
    if groups is not None:
        sizes: dict = {}
        for key in groups:
            sizes[key] = sizes.get(key, 0) + 1
        shared = [i for i, key in enumerate(groups) if sizes[key] > 1]
        if shared:
            found = shared_prefix_argmax(model, [sequences[i] for i in shared], [groups[i] for i in shared], int(pad),
                                         batch_size, row_chunk, [firsts[i] for i in shared])
            for i, a in zip(shared, found):
                argmaxes[i] = a
        alone = [i for i, key in enumerate(groups) if sizes[key] == 1]
    for start in range(0, len(alone), batch_size):
        batch = alone[start:start + batch_size]
        width = max(len(sequences[i]) for i in batch)
        ids = torch.full((len(batch), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, i in enumerate(batch):
            ids[b, :len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
            mask[b, :len(sequences[i])] = 1
        # the logits of the positions whose argmax is read only (the answer's, when only the answer is labelled):
        # the vocabulary-wide logits of a long note are most of the pass's memory
        skip = min(min(firsts[i] for i in batch), width - 1)
        with torch.no_grad():
            argmax = forward_keeping(model, torch.arange(skip, width, device=device), input_ids=ids.to(device),
                                     attention_mask=mask.to(device)).logits.argmax(-1).cpu()
        for b, i in enumerate(batch):
            argmaxes[i] = [_UNREAD] * skip + argmax[b, :len(sequences[i]) - skip].tolist()
    return _labelled(rows, argmaxes, shift)


_UNREAD = -1  # the argmax of a position no labelled position reads (not computed)


def _first_read(row: Mapping, shift: bool) -> int:
    """The first position whose argmax :func:`_labelled` reads (the row's length when it reads none)."""
    for t, y in enumerate(row["labels"]):
        if y != IGNORE and (t > 0 or not shift):
            return t - 1 if shift else t
    return len(row["input_ids"])


def _labelled(rows: Sequence[Mapping], argmaxes: list[list[int]], shift: bool) -> tuple[list[list[int]], list[list[int]]]:
    """(argmax ids, gold ids) on each row's labelled positions, from each row's argmax at every position."""
    predicted, gold = [], []
    for n, (r, argmax) in enumerate(zip(rows, argmaxes)):
        if len(r["labels"]) != len(r["input_ids"]):
            raise ValueError(f"string_match: row {n} has {len(r['labels'])} labels for {len(r['input_ids'])} input ids")
        keep = [t for t, y in enumerate(r["labels"]) if y != IGNORE and (t > 0 or not shift)]
        predicted.append([int(argmax[t - 1 if shift else t]) for t in keep])
        gold.append([int(r["labels"][t]) for t in keep])
    return predicted, gold


def shared_prefix_argmax(model, sequences: list[list[int]], groups: Sequence, pad: int, batch_size: int = 8,
                         row_chunk: int = 8, firsts: Sequence[int] | None = None) -> list[list[int]]:
    """The argmax of the logits at every position of each sequence, the sequences of one group key sharing
    their common prefix: ``batch_size`` groups' prefixes at a time (left-padded, with a key/value cache), then
    ``row_chunk`` rows of each group at a time on a copy of that cache (right-padded). A group of one row, or
    rows without a common prefix, run whole. Groups are batched by their number of rows. ``firsts``: each
    sequence's first position whose argmax is read; where no sequence of a batch reads one inside its prefix,
    the prefixes' vocabulary-wide logits are not kept (their argmax is -1; :func:`.compat.forward_keeping`)."""
    import copy

    import torch

    from axolotl_decselfmask.compat import forward_keeping, repeat_cache_rows
    from axolotl_decselfmask.stage2.scoring import continuation_inputs, shared_prefix_length

    device = next(model.parameters()).device
    out: list[list[int] | None] = [None] * len(sequences)
    members: dict = {}
    for i, key in enumerate(groups):
        members.setdefault(key, []).append(i)
    by_size: dict[int, list[list[int]]] = {}
    for rows in members.values():
        by_size.setdefault(len(rows), []).append(rows)
    with torch.no_grad():
        for k, all_groups in by_size.items():
            prefix = {g[0]: shared_prefix_length([sequences[i] for i in g]) for g in all_groups}
            all_groups.sort(key=lambda g: prefix[g[0]])
            for start in range(0, len(all_groups), batch_size):
                batch = all_groups[start:start + batch_size]
                lengths = [prefix[g[0]] for g in batch]
                width = max(lengths)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                first = None
                if width:
                    ids = torch.full((len(batch), width), pad, dtype=torch.long)
                    for b, (g, n) in enumerate(zip(batch, lengths)):
                        ids[b, width - n:] = torch.tensor(sequences[g[0]][:n], dtype=torch.long)
                        mask[b, width - n:] = 1
                    read = firsts is None or any(firsts[i] < n for g, n in zip(batch, lengths) for i in g)
                    result = forward_keeping(model, 0 if read else 1, input_ids=ids.to(device),
                                             attention_mask=mask.to(device), use_cache=True,
                                             position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device))
                    head = (result.logits.argmax(-1).cpu() if read
                            else torch.full((len(batch), width), _UNREAD, dtype=torch.long))
                    first = result.past_key_values
                    del result
                chunks = [list(range(j, min(j + row_chunk, k))) for j in range(0, k, row_chunk)]
                for c, chunk in enumerate(chunks):
                    cache = None if first is None else first if c == len(chunks) - 1 else copy.deepcopy(first)
                    if cache is not None:
                        repeat_cache_rows(cache, len(chunk))
                    rests = [sequences[g[j]][n:] for g, n in zip(batch, lengths) for j in chunk]
                    c_ids, c_mask, c_pos = continuation_inputs(rests, mask, len(chunk), pad)
                    tail = model(input_ids=c_ids.to(device), attention_mask=c_mask.to(device),
                                 position_ids=c_pos.to(device), past_key_values=cache,
                                 use_cache=cache is not None).logits.argmax(-1).cpu()
                    row = 0
                    for b, (g, n) in enumerate(zip(batch, lengths)):
                        mine = head[b, width - n:].tolist() if n else []
                        for j in chunk:
                            rest = len(sequences[g[j]]) - n
                            out[g[j]] = mine + tail[row, :rest].tolist()
                            row += 1
                del first
    return out
