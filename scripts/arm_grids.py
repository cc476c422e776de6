"""Write the grid of the ladder's arm beyond the paper (issue 34; docs/results.md, "The arm beyond the
paper" and amendment A1): examples/grids/arm_hallmarks.yml, from the grid of the ladder's best rung.

    python scripts/arm_grids.py --rung N [--ladder-out DIR]   # write it (N: the best rung, by the rule)
    python scripts/arm_grids.py --rung N --check              # exit 1 when the file differs

The rung is the one with the highest mean `decselfmask` Macro F1 under the options scorer (over the
seeds it has), chosen after the ladder; everything else is fixed here, before any ladder result was read:

- the rung's corpus, tasks, test notes, labelled notes (16 a task, seeds 0, 1, 2) and stage-2 settings;
- methods: `sft_early_stop` and `decselfmask_early_stop` (stage 2 until it stops improving, its epochs
  chosen on a quarter of the labelled notes: classification.early_stopping's defaults), `head` and
  `head_authors` on the untouched model, `decselfmask_head` and `decselfmask_head_authors` on the
  stage-1 model, and `setfit` on the same 16 labels;
- the `decselfmask_*` methods do not train stage 1 again: they start from the stage-1 model the ladder's
  `decselfmask` run of the same rung and seed saved (`stage1_models`), so rungs 4-7, which ran seed 0
  only, give those methods seed 0 only (`--seeds 0`);
- the option scorer only (the string match is not a user's prediction), no probing (the heads are
  methods here).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "examples" / "grids"
OUT = GRIDS / "arm_hallmarks.yml"
LADDER_OUT = "../ladder/outputs/experiments"  # where scripts/ladder_resume.sh runs the ladder
METHODS = ["sft_early_stop", "decselfmask_early_stop", "head", "head_authors", "decselfmask_head",
           "decselfmask_head_authors", "setfit"]
REUSED = [m for m in METHODS if m.startswith("decselfmask")]
#: Axolotl keys that only shape stage 1 (the ladder's full fine-tune: no adapter, lr 4e-5). The arm trains no
#: stage 1, and with no adapter Axolotl's skipped stage-1 trainer would save a copy of the whole model in
#: every run: the arm leaves them to the runner's defaults, as rungs 1-6 do.
STAGE1_ONLY = ("adapter", "learning_rate")


def full_fine_tune(ladder: dict) -> bool:
    """Whether the rung's stage 1 is a full fine-tune (``recipe.adapter: null``)."""
    recipe = ladder.get("recipe") or {}
    return "adapter" in recipe and recipe["adapter"] is None


def stage1_folder(rung: int, ladder_out: str, full: bool) -> str:
    """Where the rung's decselfmask runs keep their stage-1 model: a merged LoRA in ``output/stage1_merged``,
    a full fine-tune in ``output/`` itself."""
    run = f"{ladder_out}/ladder_{rung}_hallmarks/runs/{{corpus}}/decselfmask-seed{{seed}}/output"
    return run if full else f"{run}/stage1_merged"


def arm_grid(rung: int, ladder_out: str = LADDER_OUT) -> dict:
    ladder = yaml.safe_load((GRIDS / f"ladder_{rung}_hallmarks.yml").read_text())
    full = full_fine_tune(ladder)
    grid = copy.deepcopy(ladder)
    if full:
        for key in STAGE1_ONLY:
            grid["recipe"].pop(key, None)
    grid["methods"] = list(METHODS)
    grid["seeds"] = [0, 1, 2]
    grid["share_stage1_across_seeds"] = False
    grid["probing"] = False
    grid["stage1_models"] = {m: stage1_folder(rung, ladder_out, full) for m in REUSED}
    dsm = grid.setdefault("decselfmask", {})
    dsm.setdefault("classification", {})["scorer"] = "options"
    dsm.pop("probing", None)
    return grid


def render(rung: int, grid: dict) -> str:
    seeds = "0" if rung >= 4 else "0,1,2"
    return ("# PRE-REGISTERED (docs/results.md, \"The arm beyond the paper\", amendment A1). Written by\n"
            f"# scripts/arm_grids.py --rung {rung} from ladder_{rung}_hallmarks.yml (the ladder's best rung); do not\n"
            "# edit by hand. The decselfmask_* methods start from that rung's saved stage-1 models (stage1_models),\n"
            f"# so they run the seeds that rung ran: {seeds}.\n"
            "# Run (after committing it): scripts/after_ladder.sh (two lanes, the registered order; docs/experiments.md)\n"
            + yaml.safe_dump(grid, sort_keys=False, width=120))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rung", type=int, required=True, choices=range(1, 8))
    parser.add_argument("--ladder-out", default=LADDER_OUT,
                        help="the ladder's --out folder of experiments (its runs keep the stage-1 models)")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render(args.rung, arm_grid(args.rung, args.ladder_out))
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"not what scripts/arm_grids.py --rung {args.rung} writes: {OUT.name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
