"""Deprecated: ``python -m axolotl_decselfmask.config_reference`` is now ``axolotl decselfmask config-reference``.

The tool lives in :mod:`axolotl_decselfmask.tools.config_reference`.
This module prints one line naming the new command, then runs it; it goes in the next release.
"""

import sys

from axolotl_decselfmask.cli.commands import deprecated_attribute, deprecated_main


def __getattr__(name):
    return deprecated_attribute("config_reference", "axolotl_decselfmask.tools.config_reference", name)


if __name__ == "__main__":
    sys.exit(deprecated_main("config_reference", "config-reference"))
