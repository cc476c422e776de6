"""Apply the pre-registered defaults rule (issue 34; docs/results.md, amendment D1): the setting the rule chose
(docs/results/ladder/ladder.json, ``defaults_rule.choice``) becomes the plugin's defaults, written to
axolotl_decselfmask/measured_defaults.json, which the ``default`` protocol fills in (protocol.py), with the
measurement that chose it beside the keys.

    python scripts/apply_defaults.py                  # print the keys the choice sets
    python scripts/apply_defaults.py --write          # write axolotl_decselfmask/measured_defaults.json
    python scripts/apply_defaults.py --check          # exit 1 when the file differs from what it writes

How a setting maps onto defaults (fixed before any ladder result was read; :func:`setting_keys`): today's default
(the rule's reference, rung 1's ``decselfmask`` with ``options``) sets nothing. Any other setting sets the keys in
which the ladder's own setting (rung 1's grid) differs from the plugin's defaults (:func:`measured_setting`: the
mask-fill prompt), the factors of every rung up to the chosen one (scripts/ladder_grids.py's ``RUNGS``; the
ladder's own measurement, ``COMMON``, is no factor), then its classifier:

- ``decselfmask.<key>``: that key of the ``decselfmask:`` block;
- ``recipe.train_on_inputs`` (stage 1's loss on every token): the Axolotl key, set where the recipe leaves it out;
- ``recipe.learning_rate`` of the full fine-tune (rung 7): set only where the recipe trains stage 1 without an
  adapter; whether to train without one (``recipe.adapter``) is the recipe's, a matter of the user's memory;
- ``pool_size`` and ``stage1_token_budget`` (rung 4's volume: every pool note): the plugin already uses every pool
  note it is given and has no token budget by default, so they set nothing; the pool is the user's data;
- ``decselfmask.relevance.model`` (rung 6's teacher): a model the user may not have, so it is no default; the
  docs recommend it with the measurement;
- the recipe's checkpoint keys (``save_*``, ``auto_resume_from_checkpoints``): how the ladder resumes, no factor;
- the classifier: ``options``: nothing (LoRA with option scoring is the default); the ``package`` head:
  ``classification.method: head``, ``head.style: package``; the ``authors`` head: the same with
  ``head.style: authors`` and ``head.epochs: 50`` (what the ladder's and the arm's authors head ran); the arm's
  ``decselfmask_early_stop``: ``classification.early_stopping.enabled: true`` on its rung's factors, its
  ``decselfmask_head`` / ``decselfmask_head_authors`` as the package / authors head.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ladder_grids  # scripts/ladder_grids.py: a script's own folder is first on sys.path

ROOT = Path(__file__).resolve().parents[1]
LADDER_JSON = ROOT / "docs" / "results" / "ladder" / "ladder.json"
OUT = ROOT / "axolotl_decselfmask" / "measured_defaults.json"
ARM = "arm"
NOT_A_FACTOR = ("recipe.save_strategy", "recipe.save_steps", "recipe.save_total_limit",
                "recipe.auto_resume_from_checkpoints")
ALREADY_DEFAULT = {"pool_size": "the plugin trains on every pool note it is given (the pool is the user's data)",
                   "stage1_token_budget": "the plugin has no stage-1 token budget by default"}
LEFT = {"decselfmask.relevance.model": "a teacher model is the user's to have and name (relevance.model); the "
                                       "docs recommend it with the measurement",
        "recipe.adapter": "training stage 1 without an adapter is the recipe's choice (the user's memory); "
                          "the full fine-tune's learning rate is set where it has none"}
HEADS = {"package": {"classification.method": "head", "classification.head.style": "package"},
         "authors": {"classification.method": "head", "classification.head.style": "authors",
                     "classification.head.epochs": 50}}
ARM_METHODS = {"decselfmask_early_stop": {"classification.early_stopping.enabled": True},
               "decselfmask_head": HEADS["package"], "decselfmask_head_authors": HEADS["authors"]}


def measured_setting() -> dict:
    """The keys of the ladder's setting (rung 1's grid, the core grid's) that differ from the plugin's built-in defaults,
    as dotted ``decselfmask.`` keys, without the ladder's own measurement (``COMMON``: the scorer, the probing
    heads): the rungs' factors were measured on top of these."""
    import yaml

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.protocol import leaves

    grid = yaml.safe_load((ROOT / "examples" / "grids" / "ladder_1_hallmarks.yml").read_text())
    # the built-in defaults: model_construct skips the validator that fills in a protocol's preset, so a file
    # already written (measured_defaults.json) does not count as the plugin's default
    plugin = leaves(DecSelfMaskConfig.model_construct().model_dump())
    measurement = {k.removeprefix("decselfmask.") for k in ladder_grids.COMMON}
    return {f"decselfmask.{key}": value for key, value in leaves(grid.get("decselfmask") or {}).items()
            if key not in measurement and not key.startswith("probing.") and plugin.get(key) != value}


def setting_keys(choice: dict) -> dict:
    """What the chosen setting (a candidate of the rule: ``rung``, ``method``, ``classifier``; the arm's with
    ``stage1_rung``) sets over today's defaults: ``decselfmask`` (the block's keys, nested), ``recipe`` (Axolotl
    keys set where the recipe leaves them out), ``full_finetune`` (set only where stage 1 has no adapter),
    ``left_to_the_user`` and ``already_default`` (key -> why it sets nothing). Today's default itself (rung 1's
    ``decselfmask`` with ``options``, the rule's reference) sets nothing; any other setting also carries the keys
    of the ladder's setting that differ from the plugin's defaults (:func:`measured_setting`)."""
    rung = choice["stage1_rung"] if choice["rung"] == ARM else choice["rung"]
    if not isinstance(rung, int) or not 1 <= rung <= 7:
        raise SystemExit(f"apply_defaults: the choice names no ladder rung: {choice}")
    out = {"decselfmask": {}, "recipe": {}, "full_finetune": {}, "left_to_the_user": {}, "already_default": {}}
    if choice["rung"] == 1 and choice["classifier"] == "options" and choice["method"] == "decselfmask":
        return out
    factors: dict = dict(measured_setting())
    for _, keys, _, _ in ladder_grids.RUNGS[:rung]:
        factors.update(keys)
    full = "recipe.adapter" in factors and factors["recipe.adapter"] is None
    for key, value in factors.items():
        if key in NOT_A_FACTOR:
            continue
        if key in LEFT:
            out["left_to_the_user"][key] = {"value": value, "why": LEFT[key]}
        elif key in ALREADY_DEFAULT:
            out["already_default"][key] = ALREADY_DEFAULT[key]
        elif key.startswith("decselfmask."):
            ladder_grids.set_dotted(out["decselfmask"], key.removeprefix("decselfmask."), value)
        elif key == "recipe.learning_rate" and full:
            out["full_finetune"]["learning_rate"] = value
        elif key.startswith("recipe."):
            out["recipe"][key.removeprefix("recipe.")] = value
        else:
            raise SystemExit(f"apply_defaults: rung {rung}'s key {key} has no rule here; add one before applying")
    if choice["rung"] == ARM:
        extra = ARM_METHODS.get(choice["method"])
        if extra is None:
            raise SystemExit(f"apply_defaults: the arm's {choice['method']} is not a DecSelfMask setting")
    else:
        extra = HEADS.get(choice["classifier"], {})
    for key, value in extra.items():
        ladder_grids.set_dotted(out["decselfmask"], key, value)
    return out


def _label(choice: dict) -> str:
    if choice["rung"] == ARM:
        return f"the arm's {choice['method']} (rung {choice['stage1_rung']}'s stage 1)"
    what = "options" if choice["classifier"] == "options" else f"{choice['classifier']} head"
    return f"rung {choice['rung']}'s {choice['method']} ({what})"


def measured_defaults(rule: dict) -> dict:
    """The file's content: the keys of the rule's choice and the measurement that chose it."""
    if not rule.get("applied"):
        raise SystemExit("apply_defaults: the defaults rule is not applied yet (the ladder or the arm is not "
                         "finished, and no cut is declared): nothing to apply")
    choice = rule.get("choice")
    if choice is None:
        raise SystemExit(f"apply_defaults: the rule chose nothing ({rule.get('why')})")
    diff = rule.get("difference")
    measurement = {"chosen": _label(choice), "why": rule["why"],
                   "macro_f1": {k: choice[k] for k in ("mean", "low", "high")}, "seeds": choice.get("seeds"),
                   "minus_todays_default": None if not diff else {k: diff[k] for k in ("mean", "low", "high")},
                   "source": "docs/results.md, \"Which part of the paper's protocol carries its gain\" "
                             "(docs/results/ladder/ladder.json, defaults_rule)"}
    return {"measurement": measurement, **setting_keys(choice)}


def render(content: dict) -> str:
    return json.dumps(content, indent=1, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ladder-json", default=str(LADDER_JSON))
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    rule = json.loads(Path(args.ladder_json).read_text()).get("defaults_rule") or {}
    text = render(measured_defaults(rule))
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"not what scripts/apply_defaults.py writes: {OUT.name}", file=sys.stderr)
            return 1
        return 0
    if args.write:
        OUT.write_text(text)
        print(f"wrote {OUT}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
