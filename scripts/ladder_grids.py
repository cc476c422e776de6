"""Write the ladder's grid files (issue 34; docs/results.md, "The ladder: plan"):
examples/grids/ladder_<n>_hallmarks.yml, one rung each, each rung the one before it plus ONE factor.

    python scripts/ladder_grids.py            # (re)write the seven files
    python scripts/ladder_grids.py --check    # exit 1 when a file differs from what this script writes

The starting point is the core grid (examples/grids/comparison_core_hallmarks.yml): its corpus, tasks,
test notes, labelled notes, pool and stage-2 settings. tests/unit/test_ladder_grids.py checks that the files
are what this script writes and that each rung differs from the one before it only by its factor's keys.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "examples" / "grids" / "comparison_core_hallmarks.yml"
GRIDS = ROOT / "examples" / "grids"

#: rung -> (what it adds, the keys it sets: dotted paths into the grid, methods run at the rung, seeds)
RUNGS: list[tuple[str, dict, list[str], list[int]]] = [
    ("the core grid's setting, scored with both scorers, both heads on every model",
     {}, ["zero_shot", "sft", "decselfmask", "continual_pretraining_authors"], [0, 1, 2]),
    ("stage 2 in the authors' form: loss on every token, LoRA alpha 16 (r 32), batch 8 x 8 = 64",
     {"decselfmask.classification.train_on_inputs": True, "decselfmask.classification.lora_alpha": 16,
      "decselfmask.classification.gradient_accumulation_steps": 8},
     ["sft", "decselfmask", "continual_pretraining_authors"], [0, 1, 2]),
    ("stage-1 loss on every token",
     {"recipe.train_on_inputs": True}, ["decselfmask", "continual_pretraining_authors"], [0, 1, 2]),
    ("stage-1 volume: every pool note (the 1,700 that are not test notes), one random item each, no token budget; "
     "stage-1 checkpoints every 100 steps so that a stopped run resumes",
     {"pool_size": 1700, "stage1_token_budget": 100_000_000, "recipe.save_strategy": "steps",
      "recipe.save_steps": 100, "recipe.save_total_limit": 1, "recipe.auto_resume_from_checkpoints": True},
     ["decselfmask", "continual_pretraining_authors"], [0]),
    ("the authors' relevance from the model itself: AttnLRP of the largest logit at the item's middle token, "
     "the completion prompt, spans of abs(r)",
     {"decselfmask.relevance.method": "attnlrp", "decselfmask.relevance.target": "max_logit",
      "decselfmask.relevance.token_position": "middle", "decselfmask.relevance.prompt_style": "completion",
      "decselfmask.spans.sign": "absolute"},
     ["decselfmask", "continual_pretraining_authors"], [0]),
    ("relevance from a larger teacher: Qwen2.5-Coder-0.5B-Instruct (make qwen-model)",
     {"decselfmask.relevance.model": "models/qwen2.5-coder-0.5b-instruct"},
     ["decselfmask", "continual_pretraining_authors"], [0]),
    ("stage 1 a full fine-tune at lr 4e-5 (no stage-1 adapter)",
     {"recipe.adapter": None, "recipe.learning_rate": 4e-5},
     ["decselfmask", "continual_pretraining_authors"], [0]),
]

#: set at every rung on top of the core grid (the ladder's own measurement, not a factor)
COMMON = {
    "probing": True,                                   # both heads on every stage-1 model (and the base model: sft)
    "decselfmask.probing.authors_head.epochs": 50,     # the plan: 1 epoch of 16 notes would be one step
    "decselfmask.classification.scorer": "both",       # options and the authors' string match
}


def set_dotted(tree: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[last] = value


def rung_grids() -> list[dict]:
    """The seven grids, in order; each a dict as the grid file holds it."""
    core = yaml.safe_load(CORE.read_text())
    out, keys = [], dict(COMMON)
    for _, factor, methods, seeds in RUNGS:
        keys.update(factor)
        grid = copy.deepcopy(core)
        for key, value in keys.items():
            set_dotted(grid, key, value)
        grid["methods"], grid["seeds"] = list(methods), list(seeds)
        out.append(grid)
    return out


def header(n: int) -> str:
    what = RUNGS[n - 1][0]
    return (f"# PRE-REGISTERED (docs/results.md, \"The ladder (issue 34): plan\"): rung {n} of 7. Written by\n"
            f"# scripts/ladder_grids.py from comparison_core_hallmarks.yml; do not edit by hand.\n"
            f"# Rung {n} adds: {what}.\n"
            f"# Run: KERNELS=native scripts/lane.sh 1 \"ladder_{n}_hallmarks|<methods>|<seeds>|"
            f"docs/results/predictions/ladder_{n}_hallmarks\"\n")


def render(n: int, grid: dict) -> str:
    return header(n) + yaml.safe_dump(grid, sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    stale = []
    for n, grid in enumerate(rung_grids(), start=1):
        path = GRIDS / f"ladder_{n}_hallmarks.yml"
        text = render(n, grid)
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
    if stale:
        print("not what scripts/ladder_grids.py writes: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
