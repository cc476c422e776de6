"""The table of the plugin's commands and how one runs: the tool module, imported only then.

A command is a row of :data:`COMMANDS`: its name under ``axolotl decselfmask``, the ``main(argv)``
it forwards to, its line in ``--help``, and the optional dependencies it needs (the
``experiments`` extra). Nothing here imports a tool at module level (see :mod:`axolotl_decselfmask.cli`).
"""

from __future__ import annotations

import importlib
import importlib.util
import shlex
import sys
from dataclasses import dataclass

#: what ``pip install 'axolotl-decselfmask[experiments]'`` brings, by the module each tool imports
EXPERIMENTS_EXTRA = "experiments"


@dataclass(frozen=True)
class Command:
    name: str
    #: ``module:function``; the function takes ``argv`` and returns an exit code (or None)
    target: str
    help: str
    #: the modules the tool imports that are not core dependencies, installed by ``extra``
    needs: tuple[str, ...] = ()
    extra: str | None = None

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]


class MissingExtra(RuntimeError):
    """A command's optional dependency is not installed; the message names the extra to install."""


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("predict", "axolotl_decselfmask.stage2.predict:main",
            "Label new notes with a trained run."),
    Command("evaluate", "axolotl_decselfmask.stage2.evaluate:main",
            "Score a trained run on labelled notes, no training."),
    Command("inspect", "axolotl_decselfmask.tools.inspector:main",
            "An HTML page of relevance, spans and masks."),
    Command("precompute", "axolotl_decselfmask.stage1.precompute:main",
            "Masked examples into the cache, sharded."),
    Command("models", "axolotl_decselfmask.tools.models:main",
            "Write a known model into a folder."),
    Command("quickstart", "axolotl_decselfmask.tools.quickstart:main",
            "Set up the quickstart in a folder."),
    Command("experiments", "axolotl_decselfmask.tools.experiments.cli:main",
            "Run and report the comparison of methods.",
            needs=("matplotlib",), extra=EXPERIMENTS_EXTRA),
    Command("bench", "axolotl_decselfmask.tools.bench.cli:main",
            "Benchmarks of the plugin on this machine.",
            needs=("psutil",), extra=EXPERIMENTS_EXTRA),
    Command("config-reference", "axolotl_decselfmask.tools.config_reference:main",
            "The decselfmask: block's reference."),
)}

HELP_FLAGS = ("-h", "--help")


def missing_extra(spec: Command) -> str | None:
    """The one-line message when a module of the command's extra is not installed, else None."""
    absent = [m for m in spec.needs if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    return (f"axolotl decselfmask {spec.name} needs {', '.join(absent)}, which is not installed: "
            f"pip install -e '.[{spec.extra}]' in a checkout (or the wheel's path with [{spec.extra}])")


def run(name: str, argv: list[str]) -> int:
    """Run command ``name`` with ``argv`` (the arguments after the command's name); its exit code.

    Raises :class:`MissingExtra` before any work when the command's extra is missing (its ``--help``
    still works without it), and when the tool itself stops on a module of the extra.
    """
    spec = COMMANDS[name]
    message = missing_extra(spec)
    if message and not any(a in HELP_FLAGS for a in argv):
        raise MissingExtra(message)
    module, _, function = spec.target.partition(":")
    from axolotl_decselfmask.compat import quiet_foreign_lines

    quiet_foreign_lines()  # before the tool imports Axolotl, torchao, bitsandbytes: their lines a user cannot act on
    try:
        main = getattr(importlib.import_module(module), function)
        return main(argv) or 0
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] in spec.needs:
            raise MissingExtra(missing_extra(spec) or str(exc)) from None
        raise


def deprecated_main(old: str, name: str) -> int:
    """``python -m axolotl_decselfmask.<old> ...``: one line naming the new command, then the command."""
    argv = sys.argv[1:]
    new = shlex.join(["axolotl", "decselfmask", name, *argv])
    print(f"python -m axolotl_decselfmask.{old} is deprecated and goes in the next release: use `{new}`",
          file=sys.stderr)
    try:
        return run(name, argv)
    except MissingExtra as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1


def deprecated_attribute(old: str, new: str, attribute: str):
    """``from axolotl_decselfmask.<old> import X`` still finds X in the real module, with a warning."""
    import warnings

    if attribute.startswith("__"):  # the import system's and tools' probes (``__path__``, ...)
        raise AttributeError(attribute)
    warnings.warn(f"axolotl_decselfmask.{old} is deprecated: import {attribute} from {new}", DeprecationWarning,
                  stacklevel=3)
    return getattr(importlib.import_module(new), attribute)
