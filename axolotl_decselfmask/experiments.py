"""Deprecated: ``python -m axolotl_decselfmask.experiments`` is now ``axolotl decselfmask experiments``.

The tool lives in :mod:`axolotl_decselfmask.tools.experiments`.
This module prints one line naming the new command, then runs it; it goes in the next release.
"""

import sys

from axolotl_decselfmask.cli.commands import deprecated_attribute, deprecated_main


def __getattr__(name):
    return deprecated_attribute("experiments", "axolotl_decselfmask.tools.experiments", name)


if __name__ == "__main__":
    sys.exit(deprecated_main("experiments", "experiments"))
