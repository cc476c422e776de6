"""The classification head (``classification.method: head``): a small classifier per task on the
frozen model's hidden state, as the paper's last step.

The features are probing's (:mod:`.probing`): the final-layer hidden state of the classification
prompt (rendered as the evaluation renders it, without the answer) at the mask token
(``position="mask"``: the last occurrence of ``mask_id`` in the prompt, which the mask-fill prompt
puts right after the question) or at the last prompt token (``"last"``). The head is trained on the
labelled examples only: features standardised with the training statistics, hidden ->
``head.hidden_size`` -> labels with a ReLU, full-batch AdamW, seeded. Its scores are log-softmax
probabilities over the options, shape (texts, labels), so the decision rule, the prior calibration
and the metrics apply to them as to the generative scores.

:meth:`HeadClassifier.save` writes ``<name>.safetensors`` (the weights) and ``<name>.json`` (the
settings, labels, position, mask id, prompt and standardisation statistics, written last), so a
head is usable later without its training data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from axolotl_decselfmask.args import HeadConfig
from axolotl_decselfmask.io.files import atomic_write_json, safe_filename
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.probing import (
    build_network,
    cached_features,
    feature_index,
    fit_network,
    label_indices,
    prompt_ids,
    standardisation,
)
from axolotl_decselfmask.stage2.tasks import Task, TaskPrompt

LOG = logging.getLogger(__name__)

FORMAT = "decselfmask-classification-head"
VERSION = 1


def resolve_position(tokenizer, position: str, mask_id: int | None, labels: list[str], question: str,
                     system_prompt: str) -> str:
    """``head.position`` as ``"last"`` or ``"mask"``: ``auto`` is ``mask`` when the classification
    prompt (of an empty text: its question, system turn and options) holds the token ``mask_id``."""
    if position == "last":
        return "last"
    if position not in ("auto", "mask"):
        raise ValueError(f"head position must be auto, last or mask, got {position!r}")
    if mask_id is None:
        if position == "mask":
            raise InputError("decselfmask.classification.head.position: mask needs the mask token, and "
                             "this run has none; use the mask_fill prompt or set position: last.")
        return "last"
    has_mask = feature_index(prompt_ids(tokenizer, "", labels, question, system_prompt), "mask", mask_id) is not None
    return "mask" if has_mask or position == "mask" else "last"


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
        mean, std = standardisation(x)
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
            network = build_network(info["n_inputs"], settings.hidden_size, len(info["labels"]))
            network.load_state_dict(state)
            mean = torch.tensor(info["mean"], dtype=torch.float32)
            std = torch.tensor(info["std"], dtype=torch.float32)
            if mean.numel() != info["n_inputs"] or std.numel() != info["n_inputs"]:
                raise ValueError("the standardisation statistics do not match n_inputs")
        except Exception as exc:  # noqa: BLE001 - json, pydantic, safetensors and torch raise several types
            raise InputError(f"{meta}: not a readable classification head ({exc}); train it again.") from exc
        return cls(network, info["labels"], mean, std, settings, info["position"], info["mask_id"],
                   info.get("question"), info.get("system_prompt"), info.get("seed", 0), info.get("n_train", 0))


def fit_head(model, tokenizer, train_texts: list[str], train_labels: list[str], labels: list[str], question: str,
             system_prompt: str, settings: HeadConfig, seed: int, position: str | None = None,
             mask_id: int | None = None, progress: bool = True, batch_size: int = 8,
             feature_cache: dict | None = None) -> HeadClassifier:
    """Train a head on the frozen ``model``'s features of the labelled texts.

    ``position``: ``"auto"``, ``"last"`` or ``"mask"`` (default: ``settings.position``); ``auto`` is
    resolved by :func:`resolve_position`. ``feature_cache`` (a dict kept by the caller for one and
    the same model) keeps each prompt's feature for :func:`head_scores` and probing.
    """
    if len(train_texts) != len(train_labels):
        raise ValueError("head: every training text needs one label")
    resolved = resolve_position(tokenizer, position or settings.position, mask_id, labels, question, system_prompt)
    label_indices(list(train_labels), labels, "training", where="classification head")  # before the features
    feats = cached_features(model, tokenizer, list(train_texts), labels, question, system_prompt, resolved,
                            mask_id, batch_size=batch_size, progress=progress, feature_cache=feature_cache)
    head = HeadClassifier.fit(feats, list(train_labels), labels, settings, seed, resolved, mask_id, question,
                              system_prompt)
    LOG.info("decselfmask head: trained on %d examples, %d labels, features at the %s token", len(train_texts),
             len(labels), resolved)
    return head


def head_scores(model, tokenizer, head: HeadClassifier, texts: list[str], question: str | None = None,
                system_prompt: str | None = None, progress: bool = True, batch_size: int = 8,
                feature_cache: dict | None = None) -> np.ndarray:
    """The head's log-probabilities of its options for each text, shape (texts, labels), the
    features read from ``model`` at the head's position. ``question`` and ``system_prompt``
    default to the ones the head was trained with."""
    question = head.question if question is None else question
    system_prompt = head.system_prompt if system_prompt is None else system_prompt
    if question is None or system_prompt is None:
        raise ValueError("head_scores: this head records no prompt; pass question and system_prompt")
    if (question, system_prompt) != (head.question, head.system_prompt) and head.question is not None:
        LOG.warning("decselfmask head: scoring with a prompt other than the one the head was trained on")
    if not texts:
        return np.zeros((0, len(head.labels)), dtype=np.float64)
    feats = cached_features(model, tokenizer, list(texts), head.labels, question, system_prompt, head.position,
                            head.mask_id, batch_size=batch_size, progress=progress, feature_cache=feature_cache)
    return head.log_probs(feats)


def train_task_head(seed: int, t: Task, model, tokenizer, folder: Path, progress: bool, features: dict):
    """A head on the frozen model's hidden states of the task's labelled examples, saved in ``folder``
    under the task's name; where it is, in the task's ``run_info``."""
    head = fit_head(model, tokenizer, t.train_texts, t.train_labels, t.data.labels, t.prompt.question,
                    t.prompt.system_prompt, t.settings.head, seed, mask_id=_mask_id(tokenizer, t.prompt),
                    progress=progress, batch_size=t.settings.eval_batch_size, feature_cache=features)
    path = head.save(folder, safe_filename(t.name))
    t.run_info.update(stage2_head=str(path), head_position=head.position)
    print(f"decselfmask stage 2 [{t.name}]: head trained on {len(t.train_texts)} examples (hidden state at the "
          f"{head.position} token), saved to {path}")
    return head


def _mask_id(tokenizer, prompt: TaskPrompt) -> int | None:
    """The mask's token id when the prompt has a one-token mask, else None."""
    if prompt.mask_text is None:
        return None
    ids = tokenizer(prompt.mask_text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None
