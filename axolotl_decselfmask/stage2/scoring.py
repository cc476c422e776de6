"""Scoring: the summed log-probability of each label option as the answer, and the classifiers
that give a task's option scores.

No free generation: for each text the model scores every label option as the assistant's answer
(its tokens and the end-of-turn marker, so a label that is a prefix of another is not favoured);
the option with the highest summed log-probability is the argmax. One scorer,
:func:`score_questions`, scores several questions with the same options on one text: the prompt
prefix the questions share (the system turn and the text) is run once per text, and its key/value
cache is shared by every (question, option) pair, scored ``classification.option_chunk`` at a
time. :func:`score_options` is that scorer with one question.

A task's classifier is a :class:`Scorer` (the generative model's option scores, or a trained
head's log-probabilities, :mod:`.head`). Tasks whose questions share their test notes (the label
questions of a multi-label task, or single-label tasks of one corpus) are scored together by one
:class:`SharedPrefixScorer`, each note's prefix once (:func:`shared_test_scorers` for single-label
tasks, :func:`.evaluation.evaluate_label_sets` for multi-label ones).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from axolotl_decselfmask.compat import forward_keeping, repeat_cache_rows
from axolotl_decselfmask.prompts import classification_messages, render
from axolotl_decselfmask.stage2.tasks import Task, TaskPrompt

LOG = logging.getLogger(__name__)

#: (question, option) pairs scored together per text by default (``classification.option_chunk``)
OPTION_CHUNK = 8


def shared_prefix_length(seqs: list[list[int]], keep: int = 1) -> int:
    """How many leading token ids all of ``seqs`` have in common, leaving each at least ``keep`` ids of
    its own after them (the prompts of one note's questions: the prefix run once on a key/value cache)."""
    n = min(len(x) for x in seqs) - keep
    for x in seqs[1:]:
        n = next((i for i, (a, b) in enumerate(zip(seqs[0][:n], x[:n])) if a != b), n)
    return max(n, 0)


def continuation_inputs(rests: list[list[int]], prefix_mask: torch.Tensor, k: int, pad: int):
    """Input ids, attention mask and position ids of ``rests``, right-padded, run on a cache of the
    left-padded prefixes of ``prefix_mask`` whose rows are each repeated ``k`` times
    (:func:`.compat.repeat_cache_rows`): row ``i * k + j`` continues prefix ``i``."""
    width = max(len(r) for r in rests)
    ids = torch.full((len(rests), width), pad, dtype=torch.long)
    own = torch.zeros((len(rests), width), dtype=torch.long)
    for row, rest in enumerate(rests):
        ids[row, : len(rest)] = torch.tensor(rest, dtype=torch.long)
        own[row, : len(rest)] = 1
    mask = torch.cat([prefix_mask.repeat_interleave(k, 0), own], 1)
    positions = prefix_mask.sum(1).repeat_interleave(k)[:, None] + torch.arange(width)[None, :]
    return ids, mask, positions


def _question_ids(tokenizer, text, questions: list[str], options: list[str], system_prompt: str):
    """Token ids of the note's shared prompt prefix, of each question's rest of the prompt, and of
    each option's answer (label + end of turn): each question's prompt is its prefix + its rest.
    ``text``: the note, or one text per question (the note cut for each question's prompt: the
    prefix is then the tokens all of them share, the rest of a longer cut in its question's rest)."""
    per_question = [text] * len(questions) if isinstance(text, str) else list(text)
    prompts = [tokenizer(render(tokenizer, classification_messages(x, q, options, system_prompt,
                                                                   answer=options[0])).prompt,
                         add_special_tokens=False)["input_ids"] for x, q in zip(per_question, questions)]
    turns = [render(tokenizer, classification_messages(per_question[0], questions[0], options, system_prompt,
                                                       answer=o)) for o in options]
    answers = [tokenizer(t.answer, add_special_tokens=False)["input_ids"] for t in turns]
    n = shared_prefix_length(prompts)  # every question keeps at least one token of its own
    return prompts[0][:n], [p[n:] for p in prompts], answers


@torch.no_grad()
def score_questions(model, tokenizer, texts: list, questions: list[str], options: list[str],
                    system_prompt: str, progress: bool = True, batch_size: int = 8,
                    option_chunk: int = OPTION_CHUNK, desc: str = "scoring label questions") -> np.ndarray:
    """Summed log-probability of each option as the answer to each question, for each text:
    shape (texts, questions, options). A text may be a tuple of one text per question (a note cut
    for each question's prompt): each question is then scored on its own text.

    Each text's prompt prefix shared by its questions (system turn and text) is run once
    (``batch_size`` texts at a time, left-padded); then ``option_chunk`` (question, option) pairs
    at a time each get a copy of the prefix's key/value cache and run the rest of their question's
    prompt and the option's answer on it.
    """
    if option_chunk < 1:
        raise ValueError(f"option_chunk must be at least 1, got {option_chunk}")
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [_question_ids(tokenizer, t, questions, options, system_prompt) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
    pairs = [(q, k) for q in range(len(questions)) for k in range(len(options))]
    chunks = [pairs[j: j + option_chunk] for j in range(0, len(pairs), option_chunk)]
    out = np.zeros((len(texts), len(questions), len(options)), dtype=np.float64)
    bar = tqdm(total=len(texts), desc=desc, unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        batch = order[start: start + batch_size]
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            prefix = encoded[i][0]
            ids[row, width - len(prefix):] = torch.tensor(prefix, dtype=torch.long)
            mask[row, width - len(prefix):] = 1
        first = forward_keeping(model, 1, input_ids=ids.to(device), attention_mask=mask.to(device),
                                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device), use_cache=True)
        for n, chunk in enumerate(chunks):
            # the continuations extend the cache in place: every chunk but the last gets a copy
            cache = first.past_key_values if n == len(chunks) - 1 else copy.deepcopy(first.past_key_values)
            _score_pairs(model, cache, encoded, batch, chunk, mask, pad, device, out)
        del first
        bar.update(len(batch))
    bar.close()
    if was_training:
        model.train()
    return out


def _score_pairs(model, cache, encoded, batch, chunk, mask, pad, device, out) -> None:
    """Score the (question, option) ``chunk`` of every text of ``batch`` after the prefixes'
    ``cache``: one continuation per pair, the question's rest then the answer, right-padded; only
    the logits of the positions that predict answer tokens are computed."""
    k = len(chunk)
    repeat_cache_rows(cache, k)
    conts, starts, answers = [], [], []
    for i in batch:
        rests = encoded[i][1]
        for q, o in chunk:
            answers.append(encoded[i][2][o])
            conts.append(rests[q] + answers[-1])
            starts.append(len(rests[q]) - 1)  # the position that predicts the answer's first token
    width = max(len(c) for c in conts)
    c_ids = torch.full((len(conts), width), pad, dtype=torch.long)
    for row, cont in enumerate(conts):
        c_ids[row, : len(cont)] = torch.tensor(cont, dtype=torch.long)
    c_mask = torch.cat([mask.repeat_interleave(k, 0), torch.ones((len(conts), width), dtype=torch.long)], 1)
    c_pos = mask.sum(1).repeat_interleave(k)[:, None] + torch.arange(width)[None, :]
    lo, hi = min(starts), max(s + len(a) for s, a in zip(starts, answers))
    lp = forward_keeping(model, torch.arange(lo, hi, device=device), input_ids=c_ids.to(device),
                         attention_mask=c_mask.to(device), position_ids=c_pos.to(device), past_key_values=cache,
                         use_cache=True).logits.float().log_softmax(-1).cpu()
    targets = [(i, q, o) for i in batch for q, o in chunk]
    for row, ((i, q, o), a) in enumerate(zip(targets, answers)):
        at = torch.arange(len(a)) + starts[row] - lo
        out[i, q, o] = lp[row, at, torch.tensor(a, dtype=torch.long)].sum().item()


def score_options(model, tokenizer, texts, labels, question, system_prompt, progress=True,
                  batch_size: int = 8, option_chunk: int = OPTION_CHUNK) -> np.ndarray:
    """Summed log-probability of each label option as the answer for each text, shape (texts, labels):
    :func:`score_questions` with one question.

    Texts go in batches of similar prompt length, left-padded, with position ids that start at 0 at
    each prompt's first real token; memory grows with ``batch_size x option_chunk``, not with the
    number of options. A text's scores do not depend on its batch or on the chunk size.
    """
    return score_questions(model, tokenizer, list(texts), [question], list(labels), system_prompt, progress,
                           batch_size, option_chunk, desc="scoring labels")[:, 0]


class Scorer:
    """Scores of a task's options for texts: the generative model's, or a head's."""

    def __init__(self, model, tokenizer, options: list[str], prompt: TaskPrompt, settings, progress: bool = True,
                 head=None, feature_cache: dict | None = None):
        self.model, self.tokenizer, self.progress = model, tokenizer, progress
        self.options, self.prompt, self.settings = list(options), prompt, settings  # settings: ClassificationConfig
        self.head, self.feature_cache = head, feature_cache

    @classmethod
    def of(cls, model, tokenizer, task: Task, progress: bool = True, head=None,
           feature_cache: dict | None = None) -> "Scorer":
        """The scorer of ``task``'s options, on its prompt and with its settings."""
        return cls(model, tokenizer, task.data.labels, task.prompt, task.settings, progress, head, feature_cache)

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.options)))
        p, s = self.prompt, self.settings
        if self.head is not None:
            from axolotl_decselfmask.stage2.head import head_scores

            return head_scores(self.model, self.tokenizer, self.head, texts, p.question, p.system_prompt,
                               self.progress, s.eval_batch_size, self.feature_cache)
        return score_options(self.model, self.tokenizer, texts, self.options, p.question, p.system_prompt,
                             self.progress, s.eval_batch_size, s.option_chunk)


class SharedPrefixScorer:
    """The option scores of several questions with the same options on the same notes, by
    :func:`score_questions` once per list of notes: the label questions of one multi-label task
    (its sub-tasks ``parts``), or single-label tasks that share their test notes
    (:func:`shared_test_scorers`). ``part(i)`` is task i's :class:`Scorer`-like view
    (texts -> (n, options)). ``texts``: None (any list of texts, the same for every part), or each
    part's own list of its test notes (each note cut for that part's prompt), the only lists scored
    together; any other list goes to the part's ``fallback`` (its own scorer: each task's labelled
    examples are its own)."""

    def __init__(self, model, tokenizer, parts: list[Task], progress: bool = True, texts: list[list[str]] | None = None):
        self.model, self.tokenizer, self.parts, self.progress = model, tokenizer, parts, progress
        self.texts = None if texts is None else [tuple(x) for x in texts]
        self.memo: dict[tuple, np.ndarray] = {}

    def covers(self, index: int, texts: list[str]) -> bool:
        return self.texts is None or tuple(texts) == self.texts[index]

    def scores(self, texts: list) -> np.ndarray:
        """(notes, parts, options); ``texts``: one text per note, or per note a tuple of one per part."""
        key = tuple(texts)
        if key not in self.memo:
            first = self.parts[0]
            self.memo[key] = score_questions(
                self.model, self.tokenizer, list(texts), [t.prompt.question for t in self.parts], first.data.labels,
                first.prompt.system_prompt, self.progress, first.settings.eval_batch_size,
                first.settings.option_chunk)
        return self.memo[key]

    def part(self, index: int, fallback=None) -> "_PartScorer":
        return _PartScorer(self, index, fallback)


class _PartScorer:
    head = None

    def __init__(self, shared: SharedPrefixScorer, index: int, fallback=None):
        self.shared, self.index, self.fallback = shared, index, fallback

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.shared.parts[self.index].data.labels)))
        if not self.shared.covers(self.index, texts):
            return self.fallback(texts)
        if self.shared.texts is None:
            return self.shared.scores(texts)[:, self.index]
        by_note = [x[0] if len(set(x)) == 1 else x for x in zip(*self.shared.texts)]
        return self.shared.scores(by_note)[:, self.index]


def _sharing_key(t: Task) -> tuple:
    """What single-label tasks must have alike to be scored on one prefix per test note: the same
    test notes (before each is cut for the task's prompt), options, system prompt and prompt style."""
    return (tuple(t.data.test.texts[: len(t.test_texts)]), tuple(t.data.labels), t.prompt.system_prompt,
            t.prompt.style, t.prompt.mask_text, t.settings.eval_batch_size, t.settings.option_chunk)


def shared_test_scorers(model, tokenizer, tasks: list[Task], progress: bool = True) -> dict:
    """Scorers of the single-label tasks among ``tasks`` (:class:`.tasks.Task`, scored by the
    generative model) whose test notes are the same, with the same options, system prompt and
    prompt style, at least two alike: their test notes scored together by one
    :class:`SharedPrefixScorer` (each note's prefix once, each task's question and options after
    it; a note cut shorter for a longer question shares the tokens it has in common, the rest of a
    longer cut goes with its question); any other texts (the labelled examples, pool notes) by the
    task's own :class:`Scorer`. Returns ``{task name: scorer}`` for those tasks only."""
    groups: dict[tuple, list] = {}
    for t in tasks:
        if t.parent is None and t.test_texts and t.data.test is not None:
            groups.setdefault(_sharing_key(t), []).append(t)
    out = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        shared = SharedPrefixScorer(model, tokenizer, group, progress, texts=[t.test_texts for t in group])
        for i, t in enumerate(group):
            out[t.name] = shared.part(i, Scorer.of(model, tokenizer, t, progress))
        names = ", ".join(t.name for t in group)
        cut = sum(len(set(x)) > 1 for x in zip(*(t.test_texts for t in group)))
        print(f"decselfmask evaluation: {len(group)} tasks share their {len(group[0].test_texts)} test notes ({cut} "
              f"cut differently for their prompts): one prompt prefix per note, each task's question and options "
              f"after it ({names})")
    return out
