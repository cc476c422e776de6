"""The classification head (``classification.method: head``): a small classifier per task on the
frozen model's hidden state.

The features are probing's (:mod:`.probing`): the final-layer hidden state of the prompt at the
mask token (``position="mask"``: the last occurrence of ``mask_id`` in the prompt, which the
mask-fill prompt puts right after the question) or at the last prompt token (``"last"``); the
prompt is the classification prompt as the evaluation renders it, without the answer
(``head.prompt: chat``), or the raw text followed by the question, no chat template (``raw``).
The head is trained on the labelled examples only, seeded, as ``head.style`` sets it
(:class:`.args.HeadConfig`): ``package``, features standardised with the training statistics,
hidden -> ``head.hidden_size`` -> labels with a ReLU, full-batch AdamW; ``authors``, as the
authors' ``d_classification_head.sh``: the raw ``note + "{item}? <mask>"`` at its last token, no
standardisation, hidden -> 256 -> dropout 0.1 -> labels without activation, AdamW 1e-3 on
shuffled mini-batches of 64, 1 epoch. Its scores are log-softmax probabilities over the options,
shape (texts, labels), so the decision rule, the prior calibration and the metrics apply to them
as to the generative scores.

The decision is fitted on the labelled examples' scores (:mod:`.calibration`). A head scores its
own training examples better than any other note, so by default (``head.decision_scores:
out_of_fold``) those scores are out-of-fold (:func:`out_of_fold_scores`): the labelled examples are
split into ``head.folds`` stratified, seeded folds, each fold scored by a head trained on the
others; the head that is kept is trained on all of them.

:meth:`HeadClassifier.save` writes ``<name>.safetensors`` (the weights) and ``<name>.json`` (the
settings, labels, position, mask id, prompt and standardisation statistics, written last), so a
head is usable later without its training data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from axolotl_decselfmask.args import HeadConfig
from axolotl_decselfmask.io.files import atomic_write_json, safe_filename
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.probing import (
    cached_features,
    fit_network,
    label_indices,
    mask_token_id,
    network_of,
    resolve_position,
    scaled,
)
from axolotl_decselfmask.stage2.tasks import Task

LOG = logging.getLogger(__name__)

FORMAT = "decselfmask-classification-head"
VERSION = 1


__all__ = ["HeadClassifier", "OutOfFold", "fit_head", "head_scores", "out_of_fold_scores", "resolve_position",
           "stratified_folds", "train_task_head"]


def _as_tensor(features) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.ndim != 2:
        raise ValueError(f"head: features must be a (texts, hidden) matrix, got shape {tuple(x.shape)}")
    return x.detach().float().cpu()


class HeadClassifier:
    """A trained head: the network, its labels, where its features are read and their statistics.

    Build one with :meth:`fit` (or :func:`fit_head`), or :meth:`load` a saved one.
    """

    def __init__(self, network: torch.nn.Sequential, labels: list[str], mean: torch.Tensor, std: torch.Tensor,
                 settings: HeadConfig, position: str = "last", mask_id: int | None = None,
                 question: str | None = None, system_prompt: str | None = None, seed: int = 0,
                 n_train: int = 0):
        if position not in ("last", "mask"):
            raise ValueError(f"a trained head's position is last or mask, got {position!r}")
        self.network = network.eval()
        self.labels = list(labels)
        self.mean = mean.reshape(1, -1).float()
        self.std = std.reshape(1, -1).float()
        self.settings = settings
        self.position = position
        self.mask_id = mask_id if position == "mask" else None
        self.question = question
        self.system_prompt = system_prompt
        self.seed = seed
        self.n_train = n_train
        #: the labelled examples' out-of-fold scores (:func:`out_of_fold_scores`), for the decision
        self.out_of_fold: OutOfFold | None = None

    @property
    def n_inputs(self) -> int:
        return self.mean.shape[1]

    @classmethod
    def fit(cls, features, targets: list[str], labels: list[str], settings: HeadConfig, seed: int,
            position: str = "last", mask_id: int | None = None, question: str | None = None,
            system_prompt: str | None = None) -> "HeadClassifier":
        """Train on labelled ``features`` (texts, hidden) with ``targets`` (one of ``labels`` each)."""
        x = _as_tensor(features)
        if len(x) != len(targets):
            raise ValueError(f"head: {len(x)} feature rows but {len(targets)} labels")
        if not len(x):
            raise InputError("the classification head needs at least one labelled example "
                             "(decselfmask.classification.train_file).")
        if not torch.isfinite(x).all():
            raise ValueError("head: the features are not finite (NaN or inf); check the model's precision.")
        y = label_indices(list(targets), labels, "training", where="classification head")
        absent = [label for i, label in enumerate(labels) if i not in set(y)]
        if absent:
            LOG.warning("decselfmask head: no training example of %s; the head will rarely predict them", absent)
        mean, std = scaled(x, settings)
        network = fit_network((x - mean) / std, y, len(labels), settings, seed)
        return cls(network, labels, mean, std, settings, position, mask_id, question, system_prompt, seed, len(x))

    @torch.no_grad()
    def log_probs(self, features) -> np.ndarray:
        """Log-softmax over the options of each row of ``features``, float64, shape (texts, labels)."""
        x = _as_tensor(features)
        if x.shape[1] != self.n_inputs:
            raise ValueError(f"head: features have {x.shape[1]} dimensions, the head was trained on "
                             f"{self.n_inputs} (another model?)")
        logits = self.network((x - self.mean) / self.std)
        return logits.double().log_softmax(-1).numpy()

    def predict(self, features) -> list[str]:
        """The most probable option of each row (argmax, no calibration)."""
        return [self.labels[i] for i in self.log_probs(features).argmax(1)]

    # ---- files -------------------------------------------------------------------------------

    @staticmethod
    def paths(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"head name must be a plain file name, got {name!r}")
        folder = Path(folder)
        return folder / f"{name}.safetensors", folder / f"{name}.json"

    def settings_json(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION, "labels": self.labels, "position": self.position,
            "mask_id": self.mask_id, "question": self.question, "system_prompt": self.system_prompt,
            "settings": self.settings.model_dump(), "seed": self.seed, "n_train": self.n_train,
            "n_inputs": self.n_inputs, "mean": self.mean[0].tolist(), "std": self.std[0].tolist(),
        }

    def save(self, folder: str | os.PathLike, name: str = "head") -> Path:
        """Write ``<folder>/<name>.safetensors`` and ``<folder>/<name>.json``; returns the JSON's path."""
        from safetensors.torch import save

        weights, meta = self.paths(folder, name)
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        fd, tmp = tempfile.mkstemp(prefix=f".{weights.name}.", suffix=".tmp", dir=weights.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(save(state, metadata={"format": FORMAT}))
            os.replace(tmp, weights)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        atomic_write_json(meta, self.settings_json())  # last: its presence means the head is whole
        return meta

    @classmethod
    def load(cls, folder: str | os.PathLike, name: str = "head") -> "HeadClassifier":
        """The head :meth:`save` wrote to ``folder`` under ``name``."""
        from safetensors.torch import load_file

        weights, meta = cls.paths(folder, name)
        if not meta.is_file() or not weights.is_file():
            raise InputError(f"no classification head at {meta} (and {weights.name}): train one with "
                             "decselfmask.classification.method: head, or check the folder and name.")
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
            if info.get("format") != FORMAT or info.get("version") != VERSION:
                raise ValueError(f"format {info.get('format')!r} version {info.get('version')!r}, "
                                 f"expected {FORMAT!r} version {VERSION}")
            settings = HeadConfig.model_validate(info["settings"])
            state = load_file(str(weights))
            network = network_of(info["n_inputs"], len(info["labels"]), settings)
            network.load_state_dict(state)
            mean = torch.tensor(info["mean"], dtype=torch.float32)
            std = torch.tensor(info["std"], dtype=torch.float32)
            if mean.numel() != info["n_inputs"] or std.numel() != info["n_inputs"]:
                raise ValueError("the standardisation statistics do not match n_inputs")
        except Exception as exc:  # noqa: BLE001 - json, pydantic, safetensors and torch raise several types
            raise InputError(f"{meta}: not a readable classification head ({exc}); train it again.") from exc
        return cls(network, info["labels"], mean, std, settings, info["position"], info["mask_id"],
                   info.get("question"), info.get("system_prompt"), info.get("seed", 0), info.get("n_train", 0))


@dataclass
class OutOfFold:
    """The labelled examples' out-of-fold scores: ``scores[i]`` (log-probabilities over the options)
    by the head trained on the rows ``train_rows[fold[i]]``, none of which is in fold ``fold[i]``."""

    texts: tuple
    scores: np.ndarray  # (texts, labels)
    fold: np.ndarray  # (texts,) the fold of each row
    train_rows: list  # per fold, the rows its head was trained on

    def covers(self, texts: list[str]) -> bool:
        return tuple(texts) == self.texts


def stratified_folds(targets: list[int], k: int, seed: int) -> np.ndarray:
    """The fold (0..k-1) of each row: per class (in order) its rows in a seeded random order,
    dealt to the folds in turn, the deal going on from class to class (fold sizes differ by one at
    most, each class spread as evenly as its count allows)."""
    y = np.asarray(targets)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    dealt = 0
    for c in sorted(set(y.tolist())):
        rows = rng.permutation(np.flatnonzero(y == c))
        fold[rows] = (dealt + np.arange(len(rows))) % k
        dealt += len(rows)
    return fold


def out_of_fold_scores(features, targets: list[str], labels: list[str], settings: HeadConfig, seed: int,
                       texts: list[str] | None = None) -> OutOfFold | None:
    """Each labelled example's scores by a head that never saw it: ``settings.folds`` (at most one
    per example) stratified folds (:func:`stratified_folds`, seeded by ``seed``), each scored by a
    head trained (as :meth:`HeadClassifier.fit`, same settings and seed) on the other folds. None
    with fewer than two examples."""
    x = _as_tensor(features)
    y = label_indices(list(targets), labels, "training", where="classification head")
    k = min(settings.folds, len(y))
    if k < 2:
        return None
    fold = stratified_folds(y, k, seed)
    scores = np.zeros((len(y), len(labels)), dtype=np.float64)
    train_rows = []
    for f in range(k):
        held, rest = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        mean, std = scaled(x[rest], settings)
        network = fit_network((x[rest] - mean) / std, [y[i] for i in rest], len(labels), settings, seed)
        with torch.no_grad():
            scores[held] = network((x[held] - mean) / std).double().log_softmax(-1).numpy()
        train_rows.append(rest)
    return OutOfFold(tuple(texts) if texts is not None else (), scores, fold, train_rows)


def fit_head(model, tokenizer, train_texts: list[str], train_labels: list[str], labels: list[str], question: str,
             system_prompt: str, settings: HeadConfig, seed: int, position: str | None = None,
             mask_id: int | None = None, progress: bool = True, batch_size: int = 8,
             feature_cache: dict | None = None) -> HeadClassifier:
    """Train a head on the frozen ``model``'s features of the labelled texts (read from
    ``settings.prompt``'s prompt), and with ``settings.decision_scores: out_of_fold`` their
    out-of-fold scores (``head.out_of_fold``, :func:`out_of_fold_scores`).

    ``position``: ``"auto"``, ``"last"`` or ``"mask"`` (default: ``settings.position``); ``auto`` is
    resolved by :func:`resolve_position`. ``feature_cache`` (a dict kept by the caller for one and
    the same model) keeps each prompt's feature for :func:`head_scores` and probing.
    """
    if len(train_texts) != len(train_labels):
        raise ValueError("head: every training text needs one label")
    resolved = resolve_position(tokenizer, position or settings.position, mask_id, labels, question, system_prompt,
                                settings.prompt)
    label_indices(list(train_labels), labels, "training", where="classification head")  # before the features
    feats = cached_features(model, tokenizer, list(train_texts), labels, question, system_prompt, resolved,
                            mask_id, batch_size=batch_size, progress=progress, feature_cache=feature_cache,
                            prompt=settings.prompt)
    head = HeadClassifier.fit(feats, list(train_labels), labels, settings, seed, resolved, mask_id, question,
                              system_prompt)
    if settings.decision_scores == "out_of_fold":
        head.out_of_fold = out_of_fold_scores(feats, list(train_labels), labels, settings, seed, list(train_texts))
    LOG.info("decselfmask head (%s): trained on %d examples, %d labels, features at the %s token of the %s prompt",
             settings.style, len(train_texts), len(labels), resolved, settings.prompt)
    return head


def head_scores(model, tokenizer, head: HeadClassifier, texts: list[str], question: str | None = None,
                system_prompt: str | None = None, progress: bool = True, batch_size: int = 8,
                feature_cache: dict | None = None) -> np.ndarray:
    """The head's log-probabilities of its options for each text, shape (texts, labels), the
    features read from ``model`` at the head's position of its prompt. ``question`` and
    ``system_prompt`` default to the ones the head was trained with."""
    question = head.question if question is None else question
    system_prompt = head.system_prompt if system_prompt is None else system_prompt
    if question is None or system_prompt is None:
        raise ValueError("head_scores: this head records no prompt; pass question and system_prompt")
    if (question, system_prompt) != (head.question, head.system_prompt) and head.question is not None:
        LOG.warning("decselfmask head: scoring with a prompt other than the one the head was trained on")
    if not texts:
        return np.zeros((0, len(head.labels)), dtype=np.float64)
    feats = cached_features(model, tokenizer, list(texts), head.labels, question, system_prompt, head.position,
                            head.mask_id, batch_size=batch_size, progress=progress, feature_cache=feature_cache,
                            prompt=head.settings.prompt)
    return head.log_probs(feats)


def train_task_head(seed: int, t: Task, model, tokenizer, folder: Path, progress: bool, features: dict):
    """A head on the frozen model's hidden states of the task's labelled examples, saved in ``folder``
    under the task's name; where it is, its style and how its decision's scores are made, in the
    task's ``run_info``."""
    settings = t.settings.head
    head = fit_head(model, tokenizer, t.train_texts, t.train_labels, t.data.labels, t.prompt.question,
                    t.prompt.system_prompt, settings, seed, mask_id=mask_token_id(tokenizer, t.prompt.mask_text),
                    progress=progress, batch_size=t.settings.eval_batch_size, feature_cache=features)
    path = head.save(folder, safe_filename(t.name))
    oof = head.out_of_fold
    t.run_info.update(stage2_head=str(path), head_position=head.position, head_style=settings.style,
                      head_decision_scores=f"out_of_fold ({len(oof.train_rows)} folds)" if oof else "in_sample")
    print(f"decselfmask stage 2 [{t.name}]: {settings.style} head trained on {len(t.train_texts)} examples (hidden "
          f"state at the {head.position} token of the {settings.prompt} prompt), saved to {path}")
    return head
