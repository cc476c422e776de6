"""Presets of the ``decselfmask:`` block: ``protocol: paper`` sets what the authors' scripts do.

The preset fills in every key the recipe leaves out; a key written in the recipe wins. It is
applied when the block is validated (:class:`~axolotl_decselfmask.args.DecSelfMaskConfig`), so
the precompute, the experiment runner and ``axolotl train`` all see the same settings, and
:func:`apply_recipe_preset` adds the one Axolotl key it sets (``train_on_inputs``: stage 1's
loss on the whole sequence). :func:`preset_report` lists what the preset resolved, for the log.

What ``paper`` sets, from the authors' scripts (ferrazzipietro/DecSelfMask; see
docs/method.md, "The paper's procedure"):

- relevance: AttnLRP (built in) of the largest vocabulary logit at the item's middle token,
  with a completion-style lead-in; 9 random items per note (``items_per_text: 9``, the first
  commit's relevance run); from another model only where the recipe names one (``relevance.model``);
- spans: |r| / max|r| (``sign: absolute``), Gaussian sigma 1 truncated to 3 taps, hysteresis
  0.4 / 0.2; one example per span,
  the mask one token (the plugin's choice, :mod:`.mask_token`);
- stage 1 and stage 2 with the loss on the whole sequence; stage 1 a full fine-tune at lr 4e-5 where
  the recipe has no ``adapter:`` (Axolotl's ``learning_rate`` set only then, and only when the recipe
  has none of its own);
- stage 2: one LoRA over every task (joint), the mask-fill prompt, batch 16 x 4 = 64, lr 3e-4,
  cosine, warmup 0.1, weight decay 0.001, 1 epoch, LoRA r 32 / alpha 16 / dropout 0.05 on all
  linear layers (alpha 16: their scripts never pass the YAML's 64 on, so their ``load_model``'s
  default 16 reaches PEFT);
- the evaluation: the authors' string-match scorer beside the option scoring (``scorer: both``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "items_per_text": 9,
        "relevance": {"method": "attnlrp", "target": "max_logit", "token_position": "middle",
                      "prompt_style": "completion"},
        "spans": {"selector": "hysteresis", "sigma": 1.0, "truncate": 1.0, "high": 0.4, "low": 0.2,
                  "sign": "absolute"},
        "masking": {"mask_token": "auto", "spans_per_example": 1},
        "classification": {
            "joint": True, "prompt": "mask_fill", "train_on_inputs": True,
            "batch_size": 16, "gradient_accumulation_steps": 4, "learning_rate": 3e-4, "lr_scheduler": "cosine",
            "warmup_ratio": 0.1, "weight_decay": 0.001, "num_epochs": 1.0,
            "lora_r": 32, "lora_alpha": 16, "lora_dropout": 0.05, "scorer": "both",
        },
    },
}

#: Axolotl keys (outside the decselfmask block) a preset sets
RECIPE_KEYS: dict[str, dict[str, Any]] = {"default": {}, "paper": {"train_on_inputs": True}}
#: Axolotl keys a preset sets only when the recipe trains stage 1 without an adapter (a full fine-tune)
FULL_FINETUNE_KEYS: dict[str, dict[str, Any]] = {"default": {}, "paper": {"learning_rate": 4e-5}}


#: the defaults the pre-registered rule of issue 34 chose (docs/results.md, amendment D1), written by
#: scripts/apply_defaults.py with the measurement that chose them; absent until the rule has been applied
MEASURED_DEFAULTS = Path(__file__).with_name("measured_defaults.json")


def install_measured_defaults(path: str | Path = MEASURED_DEFAULTS) -> dict | None:
    """Make the ``default`` protocol fill in the keys of ``path`` (scripts/apply_defaults.py's file: the
    ``decselfmask`` block's keys, the Axolotl keys of ``recipe`` and ``full_finetune``), as ``paper`` fills in
    its own; nothing when the file is not there. Returns what it read."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("its top level must be a mapping")
        parts = {k: data.get(k) or {} for k in ("decselfmask", "recipe", "full_finetune")}
        if not all(isinstance(v, dict) for v in parts.values()):
            raise ValueError("decselfmask, recipe and full_finetune must be mappings")
    except ValueError as err:
        raise RuntimeError(f"{path}: not the file scripts/apply_defaults.py writes ({err}); write it again with "
                           "`python scripts/apply_defaults.py --write`") from None
    PRESETS["default"] = parts["decselfmask"]
    RECIPE_KEYS["default"] = parts["recipe"]
    FULL_FINETUNE_KEYS["default"] = parts["full_finetune"]
    return data


def _merge(preset: dict, block: dict) -> dict:
    """``block`` over ``preset``: nested blocks merged, a key of ``block`` always wins."""
    out = copy.deepcopy(preset)
    for key, value in block.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_preset(block: dict) -> dict:
    """The block with its protocol's preset filled in (unknown protocols are left to validation)."""
    name = block.get("protocol", "default")
    if not isinstance(name, str) or name not in PRESETS:
        return block
    return _merge(PRESETS[name], block)


def leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``tree``'s values by their dotted keys (``classification.prompt``), nested blocks flattened."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def preset_report(cfg: dict, block: dict) -> list[str]:
    """One line per key the protocol sets: its value and whether the preset or the recipe set it."""
    name = block.get("protocol", "default")
    if name not in PRESETS or not PRESETS[name]:
        return []
    written = leaves(block)
    lines = []
    fallback = "measured default: docs/results.md, amendment D1" if name == "default" else "preset"
    for key, value in leaves(PRESETS[name]).items():
        source = "recipe" if key in written else fallback
        lines.append(f"decselfmask.{key}: {written.get(key, value)!r} ({source})")
    for key, value in RECIPE_KEYS[name].items():
        lines.append(f"{key}: {cfg.get(key, value)!r} ({'recipe' if key in cfg else fallback})")
    for key, value in FULL_FINETUNE_KEYS[name].items():
        if key in cfg:
            lines.append(f"{key}: {cfg[key]!r} (recipe)")
        elif not cfg.get("adapter"):
            lines.append(f"{key}: {value!r} ({fallback}: stage 1 is a full fine-tune)")
    return lines


def apply_recipe_preset(cfg: dict, block: dict) -> None:
    """Set the Axolotl keys of the block's protocol that the recipe leaves out (stage 1's learning
    rate only when the recipe has no ``adapter:``, a full fine-tune as the authors' stage 1)."""
    name = block.get("protocol", "default")
    for key, value in RECIPE_KEYS.get(name, {}).items():
        cfg.setdefault(key, value)
    if not cfg.get("adapter"):
        for key, value in FULL_FINETUNE_KEYS.get(name, {}).items():
            cfg.setdefault(key, value)


install_measured_defaults()
