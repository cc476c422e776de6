"""Multi-label tasks: several labels per note, one yes/no question per label.

A task whose label column holds a set of labels per note (``classification.multi_label``: a JSON
list, or labels joined by ``classification.label_separator``; ``auto`` detects either) is
expanded, after its files are read and its texts cut, into one binary sub-task per label
(:func:`expand_tasks`): the options are ``classification.label_answers`` (``yes``, ``no``), the
question ``classification.label_question`` with the label in it (with ``prompt: mask_fill`` it is
followed by the mask, as :func:`.data.task_prompt` does for any question), the training labels
``yes`` where the note has the label. Stage 2 trains the sub-tasks as it trains any tasks (in the
joint LoRA with the others; with ``joint: false`` the sub-tasks of one multi-label task share one
LoRA, in ``stage2/<task>``), and each sub-task's decision is calibrated on its own
(:mod:`.calibration`, exactly as a binary task's).

Every note's text is cut once for all its labels (to fit the longest label question), so the
label questions of one note share their prompt up to the question: the system turn and the
note. :func:`score_questions` runs that shared prefix once per note and scores every (question,
answer) after it on copies of its key/value cache, which gives the scores of scoring each
question as its own prompt (:func:`.scoring.score_options`) at the cost of one note instead of
one per label. Single-label tasks of one model whose test notes are the same (one test set shared
by a corpus' tasks), with the same options and prompt, are scored the same way on their test notes
(:func:`shared_test_scorers`), each task's question one of the questions; where a note is cut
differently for two questions' prompts, the prefix is the tokens the cuts share.

:func:`evaluate_multilabel` writes one ``metrics.json`` entry under the task's own name:
``macro_f1`` (the mean over labels of each label's F1, scikit-learn's ``average="macro"`` on the
note x label indicator matrix), ``micro_f1`` (F1 over all note x label decisions), ``accuracy``
(notes whose predicted label set equals the gold set), and ``per_label`` (each label's own
yes/no ``macro_f1``, F1, precision, recall, calibration and confusion matrix); and
``predictions-<task>.jsonl`` with, per note, ``gold`` and ``pred`` (label sets, in the order of
``labels``) and ``scores`` (per label, one score per answer).
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.compat import repeat_cache_rows
from axolotl_decselfmask.io.files import (
    atomic_write_json,
    atomic_write_jsonl,
    safe_filename,
)
from axolotl_decselfmask.io.label_sets import is_multi_label, label_set_rows, strata
from axolotl_decselfmask.io.labelled import (
    LabelledData,
    label_options,
    overlapping_rows,
    read_ids,
)
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.prompts import classification_messages, render
from axolotl_decselfmask.stage2.data import (
    TaskData,
    TaskPrompt,
    load_task_data,
    task_prompt,
)
from axolotl_decselfmask.stage2.evaluation import (
    Scorer,
    calibrate,
    log_metrics,
    save_decision,
)
from axolotl_decselfmask.stage2.metrics import (
    format_table,
    result_from_scores,
    write_metrics,
)

LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ reading

def read_label_sets(path: str, c: ClassificationConfig, options: list[str] | None, key: str) -> LabelledData:
    """A multi-label file: its texts, and as ``labels`` each kept row's label set (a list).

    A label not among ``options`` (when given) is an error naming the file and the row
    (:func:`.io.label_sets.label_set_rows`)."""
    rows, texts, kept, sets, report = label_set_rows(path, c, options, key)
    return LabelledData(texts, sets, kept, report, read_ids(rows, kept, c.id_column, path))


@dataclass
class MultiLabelTaskData(TaskData):
    """A multi-label task's files: ``train.labels`` and ``test.labels`` are label sets; ``labels``
    are the answers of every label question (the sub-tasks' options), ``label_set`` the labels."""

    label_set: list[str] = field(default_factory=list)


def _split(train: LabelledData, c: ClassificationConfig, seed: int, output_dir) -> tuple[LabelledData, LabelledData]:
    """``test_fraction`` of a multi-label file: :func:`.io.labelled.split_labelled` stratified by
    :func:`strata` (saved and reused as any split), the label sets put back."""
    from axolotl_decselfmask.io.labelled import split_labelled

    sets = dict(zip(train.rows, train.labels))
    keyed = LabelledData(train.texts, strata(train.labels), train.rows, train.report, train.ids)
    sides = split_labelled(keyed, c, seed, output_dir)
    return tuple(LabelledData(x.texts, [sets[r] for r in x.rows], x.rows, x.report, x.ids) for x in sides)


def load_multilabel_data(c: ClassificationConfig, output_dir=None, seed: int = 0) -> MultiLabelTaskData:
    """Read and check a multi-label task's files (no model needed); with ``test_fraction`` the
    training file is split in two (stratified by :func:`strata`, seeded by ``seed``, kept in
    ``output_dir``)."""
    train = read_label_sets(c.train_file, c, c.labels or None, "decselfmask.classification.train_file")
    flat = [(row, label) for row, labels in zip(train.rows, train.labels) for label in labels]
    pairs = LabelledData([""] * len(flat), [label for _, label in flat], [row for row, _ in flat], train.report)
    label_set = label_options(pairs, c.labels or None, c.train_file)
    test = None
    if c.test_fraction is not None:
        train, test = _split(train, c, seed, output_dir)
    elif c.test_file:
        test = read_label_sets(c.test_file, c, label_set, "decselfmask.classification.test_file")
        leaks = overlapping_rows(train.texts, test.texts)
        if leaks:
            LOG.warning("decselfmask: %d texts of %s also appear in %s: the test score is optimistic; remove them "
                        "from one of the files", len(leaks), c.train_file, c.test_file)
    answers = [a.strip() for a in c.label_answers]
    for label in label_set:
        if all(label in s for s in train.labels):
            LOG.warning("decselfmask [%s]: every training note has the label %r: its question is never "
                        "answered %r in training", c.task, label, answers[1])
    return MultiLabelTaskData(train, test, answers, label_set)


def load_any_task_data(c: ClassificationConfig, *args, **kwargs) -> TaskData:
    """:func:`load_multilabel_data` for a multi-label task (:func:`is_multi_label`), else
    :func:`.data.load_task_data` (with ``args``)."""
    if c.train_file and is_multi_label(c):
        return load_multilabel_data(c, *args, **kwargs)
    return load_task_data(c, *args, **kwargs)


# ---------------------------------------------------------------------------- the sub-tasks

def label_question(c: ClassificationConfig, label: str) -> str:
    """The question of one label: ``label_question`` with ``{label}`` replaced."""
    return c.label_question.replace("{label}", label)


def task_prompt_for(config: DecSelfMaskConfig, index: int, tokenizer, data: TaskData) -> TaskPrompt:
    """The prompt a task's texts are cut for: :func:`.data.task_prompt`, or for a multi-label
    task the prompt of its longest label question (so every question fits the same text)."""
    if not isinstance(data, MultiLabelTaskData):
        return task_prompt(config, index, tokenizer)
    c = config.task_configs()[index]
    prompts = [task_prompt(config, index, tokenizer, label_question(c, y)) for y in data.label_set]
    return max(prompts, key=lambda p: len(tokenizer(p.question, add_special_tokens=False)["input_ids"]))


@dataclass(frozen=True)
class MultiLabelGroup:
    """A multi-label task as the user named it; its sub-tasks are ``<task>/<label>``."""

    name: str
    labels: list[str]
    answers: list[str]
    c: ClassificationConfig
    test: LabelledData | None = None


@dataclass(frozen=True)
class MultiLabelPart:
    """What a sub-task is of its multi-label task: the group, its label and the label's index."""

    group: MultiLabelGroup
    label: str
    index: int


def _binary(label_sets: list[list[str]] | None, label: str, answers: list[str]) -> list[str] | None:
    return None if label_sets is None else [answers[0] if label in s else answers[1] for s in label_sets]


def _sub_data(d: MultiLabelTaskData, label: str) -> TaskData:
    def side(x: LabelledData | None) -> LabelledData | None:
        return None if x is None else LabelledData(x.texts, _binary(x.labels, label, d.labels), x.rows, x.report,
                                                   x.ids)

    return TaskData(side(d.train), side(d.test), list(d.labels))


def expand_tasks(config: DecSelfMaskConfig, tasks: list, tokenizer) -> list:
    """``tasks`` (:class:`.run.Task`, in the order of ``config.task_configs()``) with every
    multi-label task replaced by its sub-tasks, one per label, which share its (cut) texts."""
    out = []
    for n, t in enumerate(tasks):
        if not isinstance(t.data, MultiLabelTaskData):
            out.append(t)
            continue
        d = t.data
        group = MultiLabelGroup(t.c.task, list(d.label_set), list(d.labels), t.c, d.test)
        names: dict[str, str] = {}
        for i, label in enumerate(d.label_set):
            name = f"{t.c.task}/{label}"
            other = names.setdefault(safe_filename(name).casefold(), label)
            if other != label:
                raise InputError(f"decselfmask [{t.c.task}]: the labels {other!r} and {label!r} give the same file "
                                 "name (letters, digits, '-' and '_' are kept); rename one of them.")
            question = label_question(t.c, label)
            c = t.c.model_copy(update={"task": name, "labels": list(d.labels), "question": question})
            out.append(replace(
                t, c=c, data=_sub_data(d, label), prompt=task_prompt(config, n, tokenizer, question),
                train_labels=_binary(t.train_labels, label, d.labels), gold=_binary(t.gold, label, d.labels),
                extra=dict(t.extra), multi_label=MultiLabelPart(group, label, i)))
        print(f"decselfmask stage 2 [{t.c.task}]: multi-label, {len(d.label_set)} labels, one yes/no question "
              f"each ({len(d.label_set) * len(t.train_texts)} training rows)")
    return out


def task_groups(tasks: list) -> list[tuple[str, list]]:
    """``(name, tasks)`` of the stage-2 runs of ``joint: false``: each task alone, the sub-tasks
    of a multi-label task together under its name, in order."""
    groups: dict[str, list] = {}
    for t in tasks:
        groups.setdefault(t.multi_label.group.name if t.multi_label else t.c.task, []).append(t)
    return list(groups.items())


# ---------------------------------------------------------------------------- the scoring

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
    n = min(len(p) for p in prompts) - 1  # every question keeps at least one token of its own
    for p in prompts[1:]:
        n = next((i for i, (a, b) in enumerate(zip(prompts[0][:n], p[:n])) if a != b), n)
    return prompts[0][:n], [p[n:] for p in prompts], answers


@torch.no_grad()
def score_questions(model, tokenizer, texts: list, questions: list[str], options: list[str],
                    system_prompt: str, progress: bool = True, batch_size: int = 8, option_chunk: int = 8) -> np.ndarray:
    """Summed log-probability of each option as the answer to each question, for each text:
    shape (texts, questions, options); the numbers of :func:`.scoring.score_options` run once per
    question. A text may be a tuple of one text per question (a note cut for each question's
    prompt): each question is then scored on its own text.

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
    bar = tqdm(total=len(texts), desc="scoring label questions", unit="text", disable=not progress)
    for start in range(0, len(order), batch_size):
        batch = order[start: start + batch_size]
        width = max(len(encoded[i][0]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            prefix = encoded[i][0]
            ids[row, width - len(prefix):] = torch.tensor(prefix, dtype=torch.long)
            mask[row, width - len(prefix):] = 1
        first = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                      position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device), use_cache=True, logits_to_keep=1)
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
    lp = model(input_ids=c_ids.to(device), attention_mask=c_mask.to(device), position_ids=c_pos.to(device),
               past_key_values=cache, use_cache=True,
               logits_to_keep=torch.arange(lo, hi, device=device)).logits.float().log_softmax(-1).cpu()
    targets = [(i, q, o) for i in batch for q, o in chunk]
    for row, ((i, q, o), a) in enumerate(zip(targets, answers)):
        at = torch.arange(len(a)) + starts[row] - lo
        out[i, q, o] = lp[row, at, torch.tensor(a, dtype=torch.long)].sum().item()


class SharedPrefixScorer:
    """The option scores of several questions with the same options on the same notes, by
    :func:`score_questions` once per list of notes: the label questions of one multi-label task
    (its sub-tasks ``parts``), or single-label tasks that share their test notes
    (:func:`shared_test_scorers`). ``part(i)`` is task i's :class:`.evaluation.Scorer`-like view
    (texts -> (n, options)). ``texts``: None (any list of texts, the same for every part), or each
    part's own list of its test notes (each note cut for that part's prompt), the only lists scored
    together; any other list goes to the part's ``fallback`` (its own scorer: each task's labelled
    examples are its own)."""

    def __init__(self, model, tokenizer, parts: list, progress: bool = True, texts: list[list[str]] | None = None):
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
                first.prompt.system_prompt, self.progress, first.c.eval_batch_size, first.c.option_chunk)
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


def _sharing_key(t) -> tuple:
    """What single-label tasks must have alike to be scored on one prefix per test note: the same
    test notes (before each is cut for the task's prompt), options, system prompt and prompt style."""
    return (tuple(t.data.test.texts[: len(t.test_texts)]), tuple(t.data.labels), t.prompt.system_prompt,
            t.prompt.style, t.prompt.mask_text, t.c.eval_batch_size, t.c.option_chunk)


def shared_test_scorers(model, tokenizer, tasks: list, progress: bool = True) -> dict:
    """Scorers of the single-label tasks among ``tasks`` (:class:`.run.Task`, scored by the
    generative model) whose test notes are the same, with the same options, system prompt and
    prompt style, at least two alike: their test notes scored together by one
    :class:`SharedPrefixScorer` (each note's prefix once, each task's question and options after
    it; a note cut shorter for a longer question shares the tokens it has in common, the rest of a
    longer cut goes with its question); any other texts (the labelled examples, pool notes) by the
    task's own :class:`.evaluation.Scorer`. Returns ``{task name: scorer}`` for those tasks only."""
    groups: dict[tuple, list] = {}
    for t in tasks:
        if t.multi_label is None and t.test_texts and t.data.test is not None:
            groups.setdefault(_sharing_key(t), []).append(t)
    out = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        shared = SharedPrefixScorer(model, tokenizer, group, progress, texts=[t.test_texts for t in group])
        for i, t in enumerate(group):
            out[t.c.task] = shared.part(i, Scorer(model, tokenizer, t, progress))
        names = ", ".join(t.c.task for t in group)
        cut = sum(len(set(x)) > 1 for x in zip(*(t.test_texts for t in group)))
        print(f"decselfmask evaluation: {len(group)} tasks share their {len(group[0].test_texts)} test notes ({cut} "
              f"cut differently for their prompts): one prompt prefix per note, each task's question and options "
              f"after it ({names})")
    return out


# ---------------------------------------------------------------------------- the evaluation

def _per_label_entry(t, result: dict, f1: float, precision: float, recall: float) -> dict:
    entry = {k: result[k] for k in ("macro_f1", "accuracy", "macro_f1_argmax", "accuracy_argmax", "per_class_f1",
                                    "confusion_matrix", "calibration", "n_test")}
    entry.update(f1=f1, precision=precision, recall=recall, question=t.prompt.question,
                 n_gold=sum(g == t.data.labels[0] for g in t.gold),
                 n_predicted=sum(p == t.data.labels[0] for p in result["predictions"]))
    entry.update({k: t.extra[k] for k in ("probe_macro_f1", "probe_accuracy", "stage2_head", "n_pseudo")
                  if k in t.extra})
    return entry


def multilabel_result(parts: list, results: list[dict]) -> dict:
    """The task's ``metrics.json`` entry from its sub-tasks' results (:func:`.metrics.result_from_scores`)."""
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_recall_fscore_support,
    )

    group = parts[0].multi_label.group
    yes = group.answers[0]
    gold = np.array([[g == yes for g in t.gold] for t in parts], dtype=int).T  # (notes, labels)
    pred = np.array([[p == yes for p in r["predictions"]] for r in results], dtype=int).T
    argmax = np.array([[p == yes for p in r["predictions_argmax"]] for r in results], dtype=int).T
    precision, recall, f1, _ = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    entry = {
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        "accuracy": float(accuracy_score(gold, pred)),
        "label_accuracy": float((gold == pred).mean()),
        "macro_f1_argmax": float(f1_score(gold, argmax, average="macro", zero_division=0)),
        "micro_f1_argmax": float(f1_score(gold, argmax, average="micro", zero_division=0)),
        "accuracy_argmax": float(accuracy_score(gold, argmax)),
        "n_test": int(gold.shape[0]),
        "per_class_f1": {y: float(v) for y, v in zip(group.labels, f1)},
        "calibration": {"mode": group.c.calibration, "per_label": True},
    }
    extra = {k: v for k, v in parts[0].extra.items() if k not in ("probe_macro_f1", "probe_accuracy", "stage2_head",
                                                                   "n_pseudo", "labels")}
    entry.update(extra, multi_label=True, labels=list(group.labels), label_answers=list(group.answers),
                 label_question=group.c.label_question)
    if all("probe_macro_f1" in t.extra for t in parts):
        entry["probe_macro_f1"] = float(np.mean([t.extra["probe_macro_f1"] for t in parts]))
    entry["per_label"] = {t.multi_label.label: _per_label_entry(t, r, float(f1[i]), float(precision[i]),
                                                                float(recall[i]))
                          for i, (t, r) in enumerate(zip(parts, results))}
    return entry


def _prediction_rows(parts: list, results: list[dict]) -> list[dict]:
    group = parts[0].multi_label.group
    yes, n = group.answers[0], len(parts[0].gold)
    rows = []
    for j in range(n):
        rows.append({
            "id": group.test.ids[j], "row": group.test.rows[j],
            "gold": [t.multi_label.label for t in parts if t.gold[j] == yes],
            "pred": [t.multi_label.label for t, r in zip(parts, results) if r["predictions"][j] == yes],
            "scores": {t.multi_label.label: [float(v) if math.isfinite(v) else None for v in r["scores"][j]]
                       for t, r in zip(parts, results)},
        })
    return rows


def _label_table(entry: dict) -> str:
    rows = [("label", "f1", "macro_f1 (yes/no)", "gold", "predicted")]
    rows += [(y, f"{m['f1']:.4f}", f"{m['macro_f1']:.4f}", str(m["n_gold"]), str(m["n_predicted"]))
             for y, m in entry["per_label"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def group_record_path(output_dir, task: str) -> Path:
    """``<output_dir>/stage2/multilabel-<task>.json``: a multi-label task's labels, their questions
    and the files of their decisions (:func:`.calibration.calibration_path` of ``<task>/<label>``)."""
    return Path(output_dir) / "stage2" / f"multilabel-{safe_filename(task)}.json"


def save_group_decisions(cfg, parts: list, scorers: list, calibrations: list) -> Path:
    """Each label's fitted decision (:func:`.evaluation.save_decision`, under ``<task>/<label>``),
    and the task's record of them (:func:`group_record_path`), for predict."""
    group = parts[0].multi_label.group
    files = {t.multi_label.label: str(save_decision(cfg, t, cal, s)) for t, s, cal in zip(parts, scorers, calibrations)}
    path = group_record_path(cfg.output_dir, group.name)
    atomic_write_json(path, {
        "format": "decselfmask-multilabel", "version": 1, "task": group.name, "labels": list(group.labels),
        "answers": list(group.answers), "label_question": group.c.label_question,
        "sub_tasks": {t.multi_label.label: t.c.task for t in parts},
        "questions": {t.multi_label.label: t.prompt.question for t in parts}, "calibrations": files})
    return path


def forget_group(output_dir, task: str) -> None:
    """Remove the per-label decisions of an earlier run of a multi-label ``task`` and their record
    (:func:`group_record_path`), before stage 2 runs again; nothing when there are none."""
    from axolotl_decselfmask.io.files import read_json
    from axolotl_decselfmask.stage2.calibration import calibration_path

    path = group_record_path(output_dir, task)
    record = read_json(path)
    if isinstance(record, dict):
        for name in (record.get("sub_tasks") or {}).values():
            calibration_path(output_dir, name).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def saved_label_tasks(output_dir, c: ClassificationConfig) -> list[ClassificationConfig] | None:
    """For predict: the sub-tasks of a trained multi-label task ``c`` as its evaluation saved them
    (:func:`group_record_path`): one setting per label, task ``<task>/<label>``, the answers as
    its labels and the label's question; None when ``c`` was not trained as a multi-label task."""
    from axolotl_decselfmask.io.files import read_json

    record = read_json(group_record_path(output_dir, c.task))
    if not isinstance(record, dict) or record.get("format") != "decselfmask-multilabel":
        return None
    return [c.model_copy(update={"task": record["sub_tasks"][y], "labels": list(record["answers"]),
                                 "question": record["questions"][y]}) for y in record["labels"]]


def evaluate_multilabel(cfg, config: DecSelfMaskConfig, parts: list, scorers: list) -> dict:
    """Evaluate one multi-label task from its sub-tasks ``parts`` (one :class:`.run.Task` per
    label) and their scorers: each label's decision calibrated on its own before the test texts are
    scored, then one ``metrics.json`` entry under the task's name and ``predictions-<task>.jsonl``.
    Returns the whole ``metrics.json`` (empty without a test file)."""
    group = parts[0].multi_label.group
    calibrations = [calibrate(t, s, t.calibration_pool) for t, s in zip(parts, scorers)]  # no test text yet
    saved = save_group_decisions(cfg, parts, scorers, calibrations)
    if parts[0].test_texts is None:
        LOG.warning("decselfmask: no classification.test_file or test_fraction for %s: no evaluation; its decisions "
                    "(one per label) are saved, listed in %s, for predict", group.name, saved)
        return {}
    results = [result_from_scores(s(t.test_texts), t.gold, t.data.labels, cal)
               for t, s, cal in zip(parts, scorers, calibrations)]
    entry = multilabel_result(parts, results)
    out = Path(cfg.output_dir)
    metrics = write_metrics(out / "metrics.json", group.name, entry, extra=entry)  # every key of the entry
    atomic_write_jsonl(out / f"predictions-{safe_filename(group.name)}.jsonl", _prediction_rows(parts, results))
    log_metrics(cfg, group.name, {k: entry[k] for k in ("macro_f1", "micro_f1", "accuracy", "macro_f1_argmax")})
    print(f"decselfmask evaluation [{group.name}] (multi-label: {len(parts)} yes/no questions; decision: "
          f"calibration {group.c.calibration}, fitted per label): Macro F1 over labels {entry['macro_f1']:.4f}, "
          f"micro F1 {entry['micro_f1']:.4f}")
    print(_label_table(entry))
    print(format_table(metrics))
    return metrics


def evaluate_groups(cfg, config: DecSelfMaskConfig, tasks: list, model, tokenizer, progress: bool,
                    heads: dict, features: dict) -> dict:
    """Evaluate every multi-label task among ``tasks`` (the sub-tasks' scores on each note's shared
    prefix, or a head's per label). Returns the whole ``metrics.json`` ({} when none was written)."""
    metrics: dict = {}
    for _, parts in task_groups([t for t in tasks if t.multi_label]):
        if heads:
            scorers = [Scorer(model, tokenizer, t, progress, heads.get(t.c.task), features) for t in parts]
        else:
            shared = SharedPrefixScorer(model, tokenizer, parts, progress)
            scorers = [shared.part(i) for i in range(len(parts))]
        metrics = evaluate_multilabel(cfg, config, parts, scorers) or metrics
    return metrics

