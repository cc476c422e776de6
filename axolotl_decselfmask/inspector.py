"""Deprecated: ``python -m axolotl_decselfmask.inspector`` is now ``axolotl decselfmask inspect``.

The tool lives in :mod:`axolotl_decselfmask.tools.inspector`.
This module prints one line naming the new command, then runs it; it goes in the next release.
"""

import sys

from axolotl_decselfmask.cli.commands import deprecated_attribute, deprecated_main


def __getattr__(name):
    return deprecated_attribute("inspector", "axolotl_decselfmask.tools.inspector", name)


if __name__ == "__main__":
    sys.exit(deprecated_main("inspector", "inspect"))
