"""Write the grids that carry the ladder's moving rungs to another corpus and another model (issue 34;
docs/results.md, amendment T1): examples/grids/transfer_mtsamples.yml and
examples/grids/transfer_qwen_hallmarks.yml.

    python scripts/transfer_grids.py                     # the rungs from docs/results/ladder/ladder.json
    python scripts/transfer_grids.py --rungs 4,5         # given rungs (a test, or a declared choice)
    python scripts/transfer_grids.py --check             # exit 1 when a file differs from what it writes

Which rungs "moved the result" was fixed before any ladder result was read (``moved_rungs``, in
axolotl_decselfmask/tools/experiments/transfer.py, which the ladder's report uses too): a rung
moved it when DecSelfMask minus SFT, under the options scorer or under the string match, is at least
:data:`STEP` (two Macro F1 points) higher than at the rung before it (the previous rung with a figure). Only a
gain counts: the transfer keeps a rung's factor, which is worth doing only where it helped. The rungs' factors
(scripts/ladder_grids.py) are set over:

- mtsamples: the core grid of mtsamples (examples/grids/comparison_core_mtsamples.yml), its 22 tasks and 199
  test notes; rung 4's volume is 1,700 pool notes here too (the same number as on the hallmarks, not all 2,177
  mtsamples notes that are not test notes: a stated cut);
- Qwen2.5-Coder-0.5B-Instruct on the hallmarks: rung 1's grid with that model. Rung 6 (relevance from
  that same model as a teacher) is no factor for it and is left out.

Both take the ladder's measurements (both scorers, both heads) and its methods (`sft`, `decselfmask`,
`continual_pretraining_authors`), seed 0 first, seeds 1-2 as budget allows (cut before the other grid).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

from axolotl_decselfmask.tools.experiments.transfer import STEP, moved_rungs  # noqa: F401 (STEP: the rule's step)

import ladder_grids  # noqa: E402,I001 (scripts/ladder_grids.py: a script's folder is first on sys.path)

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ROOT / "examples" / "grids"
LADDER_JSON = ROOT / "docs" / "results" / "ladder" / "ladder.json"
QWEN = "models/qwen2.5-coder-0.5b-instruct"
TEACHER_RUNG = 6
METHODS = ["sft", "decselfmask", "continual_pretraining_authors"]
OUT = {"mtsamples": GRIDS / "transfer_mtsamples.yml", "qwen": GRIDS / "transfer_qwen_hallmarks.yml"}


def _factor_keys(rungs: list[int], skip: set[int] = frozenset()) -> dict:
    keys = dict(ladder_grids.COMMON)
    for n in rungs:
        if n not in skip:
            keys.update(ladder_grids.RUNGS[n - 1][1])
    return keys


def transfer_grids(rungs: list[int]) -> dict[str, dict]:
    out = {}
    mts = yaml.safe_load((GRIDS / "comparison_core_mtsamples.yml").read_text())
    for key, value in _factor_keys(rungs).items():
        ladder_grids.set_dotted(mts, key, 1700 if key == "pool_size" else value)
    mts["methods"], mts["seeds"] = list(METHODS), [0, 1, 2]
    out["mtsamples"] = mts
    qwen = yaml.safe_load((GRIDS / "ladder_1_hallmarks.yml").read_text())
    for key, value in _factor_keys(rungs, {TEACHER_RUNG}).items():
        ladder_grids.set_dotted(qwen, key, value)
    qwen["model"], qwen["methods"], qwen["seeds"] = QWEN, list(METHODS), [0, 1, 2]
    out["qwen"] = qwen
    return out


def render(name: str, rungs: list[int], grid: dict) -> str:
    kept = [n for n in rungs if not (name == "qwen" and n == TEACHER_RUNG)]
    return ("# PRE-REGISTERED (docs/results.md, amendment T1). Written by scripts/transfer_grids.py from the "
            f"ladder's moving\n# rungs {','.join(map(str, rungs)) or 'none'} (factors kept here: "
            f"{','.join(map(str, kept)) or 'none'}); do not edit by hand.\n"
            "# Run (after committing it): scripts/after_ladder.sh, after the arm (two lanes, the registered order)\n"
            + yaml.safe_dump(grid, sort_keys=False, width=120))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", help="comma-separated rung numbers (default: moved_rungs of --ladder-json)")
    parser.add_argument("--ladder-json", default=str(LADDER_JSON))
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    if args.rungs is not None:
        rungs = sorted({int(x) for x in args.rungs.split(",") if x.strip()})
    else:
        rungs = moved_rungs(json.loads(Path(args.ladder_json).read_text()))
    if not rungs:
        print("transfer_grids: no rung moved the result (amendment T1): nothing to carry over, no grid written")
        return 0
    stale = []
    for name, grid in transfer_grids(rungs).items():
        text = render(name, rungs, grid)
        if args.check:
            if not OUT[name].exists() or OUT[name].read_text() != text:
                stale.append(OUT[name].name)
        else:
            OUT[name].write_text(text)
            print(f"wrote {OUT[name]}")
    if stale:
        print("not what scripts/transfer_grids.py writes: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
