"""Probing: how much of the task a frozen model's representation already holds.

For each text the classification prompt is rendered exactly as the evaluation renders it (see
:func:`.scoring.score_options`): system turn, user turn with the text, the question and the
options, and the start of the assistant turn, without any answer. The frozen model reads it
and the final layer's hidden state at the last prompt token is the text's feature. A small
classifier (hidden -> ``probing.hidden_size`` -> labels, ReLU; features standardised with the
training statistics) is trained full-batch with AdamW on the labelled examples and scored on
the test examples with the same Macro F1 as the evaluation: the ``package`` head of
``probing.heads``. The ``authors`` head (``probing.authors_head``, a :class:`.args.HeadConfig` of
style ``authors``) reads the raw text ``text + question`` (with the mask_fill prompt the question
is ``"{item}? <mask>"``) without chat template at its last token, as the authors'
``scripts/train_classification_head.py`` (``src/classifier_training/data.py``,
``ClassificationHeadDataset``) does; see docs/method.md.

The features (:func:`prompt_features`, :func:`cached_features`, at the last prompt token or at
a mask token, of the chat or the raw prompt) and the classifier (:func:`standardisation`,
:func:`build_network`, :func:`fit_network`) are shared with the classification head of stage 2
(:mod:`.head`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from axolotl_decselfmask.args import ProbingConfig
from axolotl_decselfmask.compat import forward_keeping
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.prompts import classification_messages, render
from axolotl_decselfmask.stage2.metrics import macro_f1
from axolotl_decselfmask.stage2.tasks import Task

LOG = logging.getLogger(__name__)

#: where a prompt's feature is read: its last token, or the (last) mask token in it
POSITIONS = ("last", "mask")


#: how a text's prompt is built: the chat classification prompt, or the raw text and question
PROMPTS = ("chat", "raw")


def prompt_ids(tokenizer, text: str, labels: list[str], question: str, system_prompt: str,
               prompt: str = "chat") -> list[int]:
    """Token ids of the prompt whose hidden state is read. ``chat``: the classification prompt up
    to and including the assistant-turn start, as the evaluation builds them (the answer is not
    part of it). ``raw``: ``tokenizer(text + question)`` as the tokenizer encodes a string by
    default (its special tokens added), no chat template, no options, no system prompt (the
    authors' head: ``note + "{item}? <mask>"``)."""
    if prompt == "raw":
        return tokenizer(text + question)["input_ids"]
    if prompt != "chat":
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    turns = render(tokenizer, classification_messages(text, question, labels, system_prompt, answer=labels[0]))
    return tokenizer(turns.prompt, add_special_tokens=False)["input_ids"]


def mask_token_id(tokenizer, mask_text: str | None) -> int | None:
    """The mask's token id when ``mask_text`` (a task prompt's) is one token, else None."""
    if mask_text is None:
        return None
    ids = tokenizer(mask_text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def resolve_position(tokenizer, position: str, mask_id: int | None, labels: list[str], question: str,
                     system_prompt: str, prompt: str = "chat") -> str:
    """A head's ``position`` as ``"last"`` or ``"mask"``: ``auto`` is ``mask`` when the prompt (of
    an empty text: its question, and for ``chat`` its system turn and options) holds ``mask_id``."""
    if position == "last":
        return "last"
    if position not in ("auto", "mask"):
        raise ValueError(f"head position must be auto, last or mask, got {position!r}")
    if mask_id is None:
        if position == "mask":
            raise InputError("decselfmask.classification.head.position: mask needs the mask token, and "
                             "this run has none; use the mask_fill prompt or set position: last.")
        return "last"
    has_mask = feature_index(prompt_ids(tokenizer, "", labels, question, system_prompt, prompt), "mask",
                             mask_id) is not None
    return "mask" if has_mask or position == "mask" else "last"


def feature_index(ids: list[int], position: str = "last", mask_id: int | None = None) -> int | None:
    """Index in ``ids`` of the token whose hidden state is the feature: the last token
    (``position="last"``) or the last occurrence of ``mask_id`` (``"mask"``; None when absent)."""
    if position == "last":
        return len(ids) - 1
    if position != "mask":
        raise ValueError(f"feature position must be one of {POSITIONS}, got {position!r}")
    if mask_id is None:
        raise ValueError("feature position 'mask' needs the mask token id (mask_id)")
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == mask_id:
            return i
    return None


def mask_missing_error(tokenizer, mask_id: int, row: int, n: int) -> InputError:
    token = tokenizer.convert_ids_to_tokens(mask_id)
    return InputError(
        f"the classification prompt of text {row + 1} of {n} has no mask token (id {mask_id}, {token!r}), "
        "so there is no hidden state at the mask to read: put the mask in the question (the mask-fill "
        "prompt) or set decselfmask.classification.head.position: last."
    )


def _encode(tokenizer, texts, labels, question, system_prompt, position, mask_id, prompt="chat"):
    """Each text's prompt ids and the index of its feature token."""
    encoded, where = [], []
    for row, text in enumerate(texts):
        ids = prompt_ids(tokenizer, text, labels, question, system_prompt, prompt)
        index = feature_index(ids, position, mask_id)
        if index is None:
            raise mask_missing_error(tokenizer, mask_id, row, len(texts))
        encoded.append(ids)
        where.append(index)
    return encoded, where


@torch.no_grad()
def prompt_features(model, tokenizer, texts: list[str], labels: list[str], question: str, system_prompt: str,
                    batch_size: int = 8, progress: bool = True, position: str = "last",
                    mask_id: int | None = None, prompt: str = "chat") -> torch.Tensor:
    """Final-layer hidden state of each text's prompt (:func:`prompt_ids`: ``chat`` or ``raw``),
    float32 on the CPU, shape (texts, hidden): at its last real token (``position="last"``) or at
    the last occurrence of the token ``mask_id`` in it (``position="mask"``; an
    :class:`InputError` if a prompt has none).

    Prompts are run in batches of similar length, left-padded, with position ids that start at
    0 at each prompt's first real token, so a prompt's feature does not depend on its batch.
    """
    encoded, where = _encode(tokenizer, texts, labels, question, system_prompt, position, mask_id, prompt)
    if not texts:
        return torch.zeros((0, model.config.get_text_config().hidden_size), dtype=torch.float32)
    device = model.get_input_embeddings().weight.device
    was_training = model.training
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out: list[torch.Tensor | None] = [None] * len(texts)
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        for batch in tqdm(batches, desc="probing features", unit="batch", disable=not progress):
            width = max(len(encoded[i]) for i in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = len(encoded[i])
                ids[row, width - n:] = torch.tensor(encoded[i])
                mask[row, width - n:] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # the features are hidden states: no vocabulary-wide logits per token
            result = forward_keeping(model, 1, input_ids=ids.to(device), attention_mask=mask.to(device),
                                     position_ids=positions.to(device), output_hidden_states=True, use_cache=False)
            # left padding: a prompt of n tokens fills the last n columns
            columns = torch.tensor([width - len(encoded[i]) + where[i] for i in batch], device=ids.device)
            hidden = result.hidden_states[-1]
            picked = hidden[torch.arange(len(batch), device=hidden.device), columns.to(hidden.device)]
            picked = picked.float().cpu()
            for row, i in enumerate(batch):
                out[i] = picked[row]
    finally:
        if was_training:
            model.train()
    return torch.stack(out)


def feature_key(text: str, labels: list[str], question: str, system_prompt: str, position: str = "last",
                mask_id: int | None = None, prompt: str = "chat") -> tuple:
    """The key of one prompt's feature in a feature cache."""
    key = (text, tuple(labels), question, system_prompt, position, mask_id if position == "mask" else None)
    return key if prompt == "chat" else (*key, prompt)


def cached_features(model, tokenizer, texts: list[str], labels: list[str], question: str, system_prompt: str,
                    position: str = "last", mask_id: int | None = None, batch_size: int = 8,
                    progress: bool = True, feature_cache: dict | None = None, prompt: str = "chat") -> torch.Tensor:
    """:func:`prompt_features` of ``texts`` with the model frozen meanwhile (its ``requires_grad``
    flags restored), each distinct prompt computed once and kept in ``feature_cache`` (a dict kept
    by the caller for one and the same model). Raises ValueError on non-finite hidden states."""
    cache = feature_cache if feature_cache is not None else {}
    keys = [feature_key(t, labels, question, system_prompt, position, mask_id, prompt) for t in texts]
    todo = list(dict.fromkeys(k for k in keys if k not in cache))
    if todo:
        requires = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(False)
        try:
            new = prompt_features(model, tokenizer, [k[0] for k in todo], labels, question, system_prompt,
                                  batch_size=batch_size, progress=progress, position=position, mask_id=mask_id,
                                  prompt=prompt)
        finally:
            for p, r in zip(model.parameters(), requires):
                p.requires_grad_(r)
        cache.update(zip(todo, new))
    if not keys:
        return torch.zeros((0, model.config.get_text_config().hidden_size), dtype=torch.float32)
    feats = torch.stack([cache[k] for k in keys])
    if not torch.isfinite(feats).all():
        raise ValueError("probing: the model's hidden states are not finite (NaN or inf); check its precision.")
    return feats


def standardisation(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (1 where a feature is constant) of the training features, (1, hidden)."""
    train_x = train_x.float().cpu()
    mean = train_x.mean(0, keepdim=True)
    std = train_x.std(0, keepdim=True, unbiased=False)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def build_network(n_inputs: int, hidden_size: int, n_labels: int, activation: str = "relu",
                  dropout: float = 0.0) -> torch.nn.Sequential:
    """The classifier: hidden -> ``hidden_size`` -> (``activation``: ReLU, or ``none``: the
    identity) -> (dropout, where ``dropout`` > 0) -> labels."""
    if activation not in ("relu", "none"):
        raise ValueError(f"head activation must be relu or none, got {activation!r}")
    layers = [torch.nn.Linear(n_inputs, hidden_size),
              torch.nn.ReLU() if activation == "relu" else torch.nn.Identity()]
    if dropout > 0:
        layers.append(torch.nn.Dropout(dropout))
    return torch.nn.Sequential(*layers, torch.nn.Linear(hidden_size, n_labels))


def network_of(n_inputs: int, n_labels: int, settings) -> torch.nn.Sequential:
    """:func:`build_network` with ``settings``' width, activation and dropout (a
    :class:`.args.HeadConfig`; a :class:`.args.ProbingConfig`: ReLU, no dropout)."""
    return build_network(n_inputs, settings.hidden_size, n_labels, getattr(settings, "activation", "relu"),
                         getattr(settings, "dropout", 0.0))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's row indices: all rows in order (``batch_size`` 0), or shuffled into mini-batches."""
    if not batch_size:
        return [torch.arange(n)]
    order = torch.randperm(n, generator=generator)
    return [order[i: i + batch_size] for i in range(0, n, batch_size)]


def fit_network(xs: torch.Tensor, target: list[int], n_labels: int, settings, seed: int,
                losses: list | None = None) -> torch.nn.Sequential:
    """Train :func:`network_of` with AdamW on features ``xs`` (rows) and class indices ``target``;
    ``settings`` gives ``hidden_size``, ``epochs``, ``learning_rate``, ``weight_decay`` and, for a
    :class:`.args.HeadConfig`, ``activation``, ``dropout`` and ``batch_size`` (0, and a
    :class:`ProbingConfig`: full-batch; else shuffled mini-batches). ``losses``: each step's
    training loss is appended to it. Returned in eval mode.

    Deterministic for a seed: the random state used for the initialisation, the shuffling and
    the dropout is local.
    """
    labels = torch.tensor(target, dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = network_of(xs.shape[1], n_labels, settings)
        generator = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.AdamW(classifier.parameters(), lr=settings.learning_rate,
                                      weight_decay=settings.weight_decay)
        classifier.train()
        with torch.enable_grad():
            for _ in range(settings.epochs):
                for rows in _batches(len(xs), getattr(settings, "batch_size", 0) or 0, generator):
                    optimiser.zero_grad()
                    loss = torch.nn.functional.cross_entropy(classifier(xs[rows]), labels[rows])
                    loss.backward()
                    optimiser.step()
                    if losses is not None:
                        losses.append(float(loss.detach()))
    classifier.eval()
    return classifier


def scaled(train_x: torch.Tensor, settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(mean, std)`` the features are standardised with: the training statistics, or (0, 1)
    where ``settings.standardise`` is false (the authors' head)."""
    if getattr(settings, "standardise", True):
        return standardisation(train_x)
    width = train_x.shape[1]
    return torch.zeros((1, width)), torch.ones((1, width))


def train_probe(train_x: torch.Tensor, train_y: list[int], test_x: torch.Tensor, n_labels: int,
                settings, seed: int) -> list[int]:
    """Fit the classifier (``settings``: a :class:`ProbingConfig` or :class:`.args.HeadConfig`) on
    (train_x, train_y) and return its predicted class (argmax) for each test row.

    Deterministic for a seed: the random state used for the initialisation is local.
    """
    mean, std = scaled(train_x, settings)
    xs, xt = (train_x.float().cpu() - mean) / std, (test_x.float().cpu() - mean) / std
    classifier = fit_network(xs, train_y, n_labels, settings, seed)
    with torch.no_grad():
        return classifier(xt).argmax(-1).tolist()


def label_indices(values: list[str], labels: list[str], what: str, where: str = "probing") -> list[int]:
    """Index of each of ``values`` among the options ``labels``; InputError naming the strangers."""
    index = {label: i for i, label in enumerate(labels)}
    bad = sorted({v for v in values if v not in index})
    if bad:
        raise InputError(f"{where}: {what} labels {bad} are not among the label options {labels}.")
    return [index[v] for v in values]


def probe(model, tokenizer, train_texts: list[str], train_labels: list[str], test_texts: list[str],
          test_labels: list[str], labels: list[str], question: str, system_prompt: str,
          settings, seed: int, progress: bool = True, batch_size: int = 8,
          feature_cache: dict | None = None, mask_id: int | None = None, predictions: bool = False) -> dict:
    """Probe the frozen ``model``: Macro F1 and accuracy of a small classifier trained on its
    prompt features. Returns ``macro_f1``, ``accuracy``, ``n_train``, ``n_test`` (and with
    ``predictions`` the predicted label of each test text, ``predictions``).

    ``settings``: a :class:`ProbingConfig` (the package's probe: the last token of the chat
    prompt) or a :class:`.args.HeadConfig` (its prompt, position, network and training; ``mask_id``
    the mask's token id where its position needs it). ``feature_cache`` (a dict kept by the caller
    for one and the same model) keeps each prompt's feature, so tasks that share texts (seeds over
    one test split) compute them once.
    """
    if len(train_texts) != len(train_labels) or len(test_texts) != len(test_labels):
        raise ValueError("probing: every text needs one label")
    if not train_texts or not test_texts:
        raise InputError("probing needs at least one training and one test example "
                         "(decselfmask.classification.train_file and test_file).")
    train_y = label_indices(train_labels, labels, "training")
    label_indices(test_labels, labels, "test")  # every test label must be an option
    prompt = getattr(settings, "prompt", "chat")
    position = resolve_position(tokenizer, getattr(settings, "position", "last"), mask_id, labels, question,
                                system_prompt, prompt)
    feats = cached_features(model, tokenizer, list(train_texts) + list(test_texts), labels, question,
                            system_prompt, position, mask_id, batch_size=batch_size, progress=progress,
                            feature_cache=feature_cache, prompt=prompt)
    train_x, test_x = feats[: len(train_texts)], feats[len(train_texts):]
    pred_idx = train_probe(train_x, train_y, test_x, len(labels), settings, seed)
    pred = [labels[i] for i in pred_idx]
    gold = list(test_labels)
    result = {
        "macro_f1": macro_f1(gold, pred, labels),
        "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])),
        "n_train": len(train_texts),
        "n_test": len(test_texts),
    }
    LOG.info("decselfmask probing: macro_f1 %.4f, accuracy %.4f (%d train, %d test)", result["macro_f1"],
             result["accuracy"], result["n_train"], result["n_test"])
    return {**result, "predictions": pred} if predictions else result


def probe_settings(config, style: str):
    """The settings of probing's head ``style``: ``package``, ``probing``'s own; ``authors``,
    ``probing.authors_head``. ``config``: the :class:`.args.DecSelfMaskConfig`."""
    return config.probing if style == "package" else config.probing.authors_head


def probe_tasks(config, tasks: list[Task], model, tokenizer, progress: bool, features: dict) -> None:
    """Probing of the frozen starting model with each head of ``probing.heads``, per task with a
    test file, into each task's ``run_info`` (its metrics): ``probe_macro_f1`` and
    ``probe_accuracy`` (the package's head), and for a task the user named (not a label question of
    a multi-label task) ``probe_heads``: per head its ``macro_f1``, ``accuracy`` and the argmax
    ``predictions`` of the test texts, in their order. ``config``: the :class:`.args.DecSelfMaskConfig`."""
    for t in tasks:
        if t.test_texts is None:
            continue
        mask_id = mask_token_id(tokenizer, t.prompt.mask_text)
        heads = {style: probe(model, tokenizer, t.train_texts, t.train_labels, t.test_texts, t.gold, t.data.labels,
                              t.prompt.question, t.prompt.system_prompt, probe_settings(config, style), config.seed,
                              progress, feature_cache=features, mask_id=mask_id, predictions=True)
                 for style in dict.fromkeys(config.probing.heads)}
        if "package" in heads:
            t.run_info.update(probe_macro_f1=heads["package"]["macro_f1"], probe_accuracy=heads["package"]["accuracy"])
        if t.parent is None:
            t.run_info["probe_heads"] = {style: {k: r[k] for k in ("macro_f1", "accuracy", "predictions")}
                                         for style, r in heads.items()}
        shown = ", ".join(f"{style} head {r['macro_f1']:.4f}" for style, r in heads.items())
        print(f"decselfmask probing [{t.name}]: Macro F1 {shown} (frozen model; argmax)")
