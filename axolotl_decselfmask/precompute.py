"""Deprecated: ``python -m axolotl_decselfmask.precompute`` is now ``axolotl decselfmask precompute``.

The tool lives in :mod:`axolotl_decselfmask.stage1.precompute`.
This module prints one line naming the new command, then runs it; it goes in the next release.
"""

import sys

from axolotl_decselfmask.cli.commands import deprecated_attribute, deprecated_main


def __getattr__(name):
    return deprecated_attribute("precompute", "axolotl_decselfmask.stage1.precompute", name)


if __name__ == "__main__":
    sys.exit(deprecated_main("precompute", "precompute"))
