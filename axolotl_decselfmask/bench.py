"""Deprecated: ``python -m axolotl_decselfmask.bench`` is now ``axolotl decselfmask bench``.

The tool lives in :mod:`axolotl_decselfmask.tools.bench`.
This module prints one line naming the new command, then runs it; it goes in the next release.
"""

import sys

from axolotl_decselfmask.cli.commands import deprecated_attribute, deprecated_main


def __getattr__(name):
    return deprecated_attribute("bench", "axolotl_decselfmask.tools.bench", name)


if __name__ == "__main__":
    sys.exit(deprecated_main("bench", "bench"))
