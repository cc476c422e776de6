"""Deprecated: ``python -m axolotl_decselfmask.models`` is now ``axolotl decselfmask models``.

The tool lives in :mod:`axolotl_decselfmask.tools.models`.
This module prints one line naming the new command, then runs it; it goes in the next release.
"""

import sys

from axolotl_decselfmask.cli.commands import deprecated_attribute, deprecated_main


def __getattr__(name):
    return deprecated_attribute("models", "axolotl_decselfmask.tools.models", name)


if __name__ == "__main__":
    sys.exit(deprecated_main("models", "models"))
