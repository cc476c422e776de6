"""The methods of the comparison, defined once: each is the recipe keys that make it that method.

The runner applies these keys over its common recipe (:func:`apply_method`), and the tests check
that every ``recipes/baselines/llama-3.2-1b-<method>.yml`` sets exactly them
(:func:`definition_problems`): everything else is the same in all of them.

A key is a dotted path into an Axolotl recipe; a number is a list index (``datasets.0.type``: the
type of the first dataset). A dict value names a block: these settings, next to any of the block's
own (the pseudo-label thresholds, the pool to label), which are then the method's too.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Method:
    description: str
    keys: dict[str, Any] = field(default_factory=dict)
    #: "recipe": an Axolotl recipe (``axolotl train``); "setfit", "logreg": not a decoder, the runner
    #: trains and evaluates it itself (:mod:`.setfit_run`), no recipe and no keys
    kind: str = "recipe"
    #: one of a grid's methods when the grid names none
    default: bool = True
    #: has a ``recipes/baselines/llama-3.2-1b-<method>.yml``
    baseline: bool = True

    @property
    def stage1(self) -> bool:
        return bool(self.keys.get("decselfmask.stage1", False))


def _dotted(tree: dict, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def paper_stage1_keys() -> dict[str, Any]:
    """``protocol: paper``'s stage-1 settings as method keys: every key of its preset outside
    ``classification`` (relevance, items per text, spans, masking) and its Axolotl keys (the
    stage-1 loss on the whole sequence). Set over the common recipe, they win over whatever a grid
    pins for the other methods; stage 2 is left to the common block, which writes every
    classification key the preset would fill in (:func:`.recipes.stage2_defaults`)."""
    from axolotl_decselfmask.protocol import PRESETS, RECIPE_KEYS

    stage1 = {k: v for k, v in PRESETS["paper"].items() if k != "classification"}
    return {"decselfmask.protocol": "paper", **_dotted(stage1, "decselfmask."), **RECIPE_KEYS["paper"]}


SFT_KEYS = {"decselfmask.stage1": False, "decselfmask.probing.enabled": True}

METHODS: dict[str, Method] = {
    "zero_shot": Method(
        "no stage 1 and no stage-2 training: the base model answers the test texts as it is",
        {"decselfmask.stage1": False, "decselfmask.classification.train": False, "decselfmask.probing.enabled": False},
    ),
    "sft": Method(
        "no stage 1; stage 2 fine-tunes the base model on the few labels (the paper's baseline)",
        dict(SFT_KEYS),
    ),
    "continual_pretraining": Method(
        "stage 1 is next-token prediction on the raw unlabelled texts; then stage 2",
        {"decselfmask.stage1": True, "datasets.0.type": "axolotl_decselfmask.continual_pretraining",
         "decselfmask.probing.enabled": True},
    ),
    "continual_pretraining_authors": Method(
        "stage 1 is continual pretraining in the authors' form: decselfmask's masked rows (its relevance, spans "
        "and cache) with the spans put back, in the chat template, the loss on every token; then stage 2",
        {"decselfmask.stage1": True, "datasets.0.type": "axolotl_decselfmask.continual_pretraining",
         "decselfmask.continual_pretraining.form": "authors", "decselfmask.probing.enabled": True},
        default=False, baseline=False,
    ),
    "synthetic_labels": Method(
        "no stage 1; the stage-2 model labels the pool, its confident pseudo-labels join the gold ones, stage 2 again",
        {"decselfmask.stage1": False, "decselfmask.classification.pseudo_labels": {"enabled": True},
         "decselfmask.probing.enabled": False},
    ),
    "random_masking": Method(
        "stage 1 reconstructs spans at random places, of the relevance spans' count and lengths (the same "
        "relevance as decselfmask, so its cache is shared); then stage 2",
        {"decselfmask.stage1": True, "decselfmask.spans.selector": "random", "decselfmask.probing.enabled": True},
    ),
    "decselfmask": Method(
        "stage 1 reconstructs the self-relevant spans (the defaults); then stage 2",
        {"decselfmask.stage1": True, "decselfmask.probing.enabled": True},
    ),
    "decselfmask_paper": Method(
        "stage 1 as `protocol: paper` sets it (AttnLRP of the largest logit at the item's middle token, the "
        "completion prompt, the loss on the whole sequence), with every item of a note as the comparison of "
        "2026-12-02 ran it (the corrected preset takes 9 random items a note; pinned here so that the committed "
        "runs keep their run key); then the common stage 2",
        {"decselfmask.stage1": True, "decselfmask.probing.enabled": True,
         **paper_stage1_keys(), "decselfmask.items_per_text": "all"},
        default=False, baseline=False,
    ),
    "setfit": Method(
        "not a decoder: SetFit (sentence-transformers contrastive fine-tuning and a logistic-regression head) "
        "on the same labelled and test notes, trained and evaluated by the runner (setfit_run.py)",
        kind="setfit", default=False, baseline=False,
    ),
    "sft_mask_fill": Method(
        "sft with the added mask token's embedding row as the embedding resize gives it, not the plugin's mean "
        "(masking.mask_init: model): the never-trained mask row the authors' SFT baseline meets; differs from sft "
        "only where the grid's prompt is mask_fill",
        {**SFT_KEYS, "decselfmask.masking.mask_init": "model"},
        default=False, baseline=False,
    ),
    "sft_options": Method(
        "sft with the options prompt (the question and the option list, no mask token at all); differs from sft "
        "only where the grid's prompt is mask_fill",
        {**SFT_KEYS, "decselfmask.classification.prompt": "options"},
        default=False, baseline=False,
    ),
    "sft_early_stop": Method(
        "sft with stage 2 trained until it stops improving: its epochs chosen on a stratified, seeded validation "
        "split of the labelled notes (classification.early_stopping, its defaults: a quarter held out, up to 20 "
        "epochs, patience 2, the calibrated decision's Macro F1), then a fresh LoRA on every labelled note",
        {**SFT_KEYS, "decselfmask.classification.early_stopping.enabled": True},
        default=False, baseline=False,
    ),
    "decselfmask_early_stop": Method(
        "decselfmask (the grid's stage 1) with stage 2 trained until it stops improving, as sft_early_stop",
        {"decselfmask.stage1": True, "decselfmask.probing.enabled": True,
         "decselfmask.classification.early_stopping.enabled": True},
        default=False, baseline=False,
    ),
    "head": Method(
        "no stage 1; the classifier is the package's head (classification.method: head, its package style) on the "
        "base model's frozen hidden states, its decision fitted on out-of-fold scores",
        {"decselfmask.stage1": False, "decselfmask.classification.method": "head",
         "decselfmask.classification.head.style": "package", "decselfmask.probing.enabled": False},
        default=False, baseline=False,
    ),
    "head_authors": Method(
        "no stage 1; the classifier is the authors' head (classification.head.style: authors: the raw text "
        "note + '{item}? <mask>' read at its last token, no activation, dropout 0.1, AdamW 1e-3, batch 64) on the "
        "base model's frozen hidden states, 50 epochs (one epoch of 16 labelled notes is one step; as the ladder's "
        "probing head), its decision fitted on out-of-fold scores",
        {"decselfmask.stage1": False, "decselfmask.classification.method": "head",
         "decselfmask.classification.head.style": "authors", "decselfmask.classification.head.epochs": 50,
         "decselfmask.probing.enabled": False},
        default=False, baseline=False,
    ),
    "decselfmask_head": Method(
        "decselfmask's stage 1, then the package's head on the stage-1 model's frozen hidden states (as head)",
        {"decselfmask.stage1": True, "decselfmask.classification.method": "head",
         "decselfmask.classification.head.style": "package", "decselfmask.probing.enabled": False},
        default=False, baseline=False,
    ),
    "decselfmask_head_authors": Method(
        "decselfmask's stage 1, then the authors' head on the stage-1 model's frozen hidden states (as head_authors)",
        {"decselfmask.stage1": True, "decselfmask.classification.method": "head",
         "decselfmask.classification.head.style": "authors", "decselfmask.classification.head.epochs": 50,
         "decselfmask.probing.enabled": False},
        default=False, baseline=False,
    ),
    "logreg_minilm": Method(
        "not a decoder: a logistic regression (scikit-learn's defaults, seeded) on the frozen all-MiniLM-L6-v2 "
        "sentence embeddings of the same labelled and test notes (SetFit's head without its contrastive "
        "fine-tuning), trained and evaluated by the runner (setfit_run.py)",
        kind="logreg", default=False, baseline=False,
    ),
}
METHOD_NAMES = tuple(METHODS)
DEFAULT_METHODS = tuple(name for name, m in METHODS.items() if m.default)
RECIPE_METHODS = tuple(name for name, m in METHODS.items() if m.kind == "recipe")
BASELINE_METHODS = tuple(name for name, m in METHODS.items() if m.baseline)
STAGE1_METHODS = tuple(name for name, m in METHODS.items() if m.stage1)
BASELINE = "sft"

ABSENT = object()  # the value of a key a recipe does not have


def _step(node, part: str):
    if isinstance(node, list) and part.isdigit():
        return node[int(part)] if int(part) < len(node) else ABSENT
    return node.get(part, ABSENT) if isinstance(node, dict) else ABSENT


def get_key(recipe: dict, key: str):
    """The value at a dotted ``key`` of ``recipe``, or :data:`ABSENT`."""
    node = recipe
    for part in key.split("."):
        node = _step(node, part)
        if node is ABSENT:
            return ABSENT
    return node


def set_key(recipe: dict, key: str, value) -> None:
    """Set a dotted ``key`` (its blocks made as needed); a dict value is merged into the block there."""
    *parents, last = key.split(".")
    node = recipe
    for part in parents:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(value)
    elif isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last].update(copy.deepcopy(value))
    else:
        node[last] = copy.deepcopy(value)


def drop_key(recipe: dict, key: str) -> None:
    *parents, last = key.split(".")
    node = get_key(recipe, ".".join(parents)) if parents else recipe
    if isinstance(node, dict):
        node.pop(last, None)


def apply_method(recipe: dict, method: str) -> dict:
    """``recipe`` (not changed) with the keys of ``method`` set."""
    out = copy.deepcopy(recipe)
    for key, value in METHODS[method].keys.items():
        set_key(out, key, value)
    return out


def matches(value, wanted) -> bool:
    """A recipe's value against a definition's: equal, or for a block, holding the wanted settings."""
    if isinstance(wanted, dict):
        return isinstance(value, dict) and all(k in value and matches(value[k], v) for k, v in wanted.items())
    return value is not ABSENT and value == wanted and type(value) is type(wanted)


def _flat(value, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path (an empty block is no leaf: the same as an absent one)."""
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value:
        return {k: v for i, sub in enumerate(value) for k, v in _flat(sub, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def _shown(value) -> str:
    return "(absent)" if value is ABSENT else repr(value)


def method_keys() -> list[str]:
    """Every key that defines some method, in order."""
    return list(dict.fromkeys(key for m in METHODS.values() for key in m.keys))


def definition_problems(recipes: dict[str, dict], ignore: tuple[str, ...] = ()) -> list[str]:
    """Why ``recipes`` (method -> recipe) are not exactly the methods of :data:`METHODS`, or [].

    Each recipe must have its method's keys; a key that defines some methods must hold one and the
    same other value in the rest; and outside those keys (and ``ignore``, e.g. ``output_dir``)
    every recipe must be the same.
    """
    problems = [f"{m}: not a recipe method of METHODS {list(RECIPE_METHODS)}" for m in recipes
                if m not in RECIPE_METHODS]
    known = {m: r for m, r in recipes.items() if m in RECIPE_METHODS}
    return problems + _own_keys(known) + _keys_of_others(known) + _rest(known, ignore)


def _own_keys(recipes: dict[str, dict]) -> list[str]:
    return [f"{m}: {key} is {_shown(get_key(r, key))}; METHODS says {wanted!r}"
            for m, r in recipes.items() for key, wanted in METHODS[m].keys.items()
            if not matches(get_key(r, key), wanted)]


def _keys_of_others(recipes: dict[str, dict]) -> list[str]:
    problems = []
    for key in method_keys():
        setters = [m for m in recipes if key in METHODS[m].keys]
        others = {m: get_key(r, key) for m, r in recipes.items() if m not in setters}
        first = next(iter(others.values()), ABSENT)
        if any(v != first for v in others.values()):
            shown = ", ".join(f"{m}: {_shown(v)}" for m, v in others.items())
            problems.append(f"{key} defines {setters}; the other methods must agree on it, but have {shown}")
    return problems + _taken_definitions(recipes)


def _taken_definitions(recipes: dict[str, dict]) -> list[str]:
    """A recipe that holds every value defining another method, at the keys it does not set itself,
    is that method too. (One of several keys may hold a defining value: ``decselfmask_paper``'s
    ``masking.spans_per_example: 1`` is every method's.)"""
    problems = []
    for s in recipes:
        for m, r in recipes.items():
            keys = [k for k in METHODS[s].keys if k not in METHODS[m].keys] if m != s else []
            if keys and all(matches(get_key(r, k), METHODS[s].keys[k]) for k in keys):
                shown = ", ".join(f"{k} is {_shown(get_key(r, k))}" for k in keys)
                problems.append(f"{m}: {shown}, the values that define {s}")
    return problems


def _rest(recipes: dict[str, dict], ignore: tuple[str, ...]) -> list[str]:
    stripped = {}
    for m, r in recipes.items():
        r = copy.deepcopy(r)
        for key in (*method_keys(), *ignore):
            drop_key(r, key)
        stripped[m] = _flat(r)
    if not stripped:
        return []
    name = "decselfmask" if "decselfmask" in stripped else next(iter(stripped))
    ref = stripped[name]
    problems = []
    for m, flat in stripped.items():
        diff = sorted(k for k in set(flat) | set(ref) if flat.get(k, ABSENT) != ref.get(k, ABSENT))
        if diff:
            problems.append(f"{m}: differs from {name} outside the method keys, at {diff}")
    return problems
