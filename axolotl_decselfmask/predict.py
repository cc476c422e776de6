"""Deprecated: ``python -m axolotl_decselfmask.predict`` is now ``axolotl decselfmask predict``.

The tool lives in :mod:`axolotl_decselfmask.stage2.predict`.
This module prints one line naming the new command, then runs it; it goes in the next release.
"""

import sys

from axolotl_decselfmask.cli.commands import deprecated_attribute, deprecated_main


def __getattr__(name):
    return deprecated_attribute("predict", "axolotl_decselfmask.stage2.predict", name)


if __name__ == "__main__":
    sys.exit(deprecated_main("predict", "predict"))
