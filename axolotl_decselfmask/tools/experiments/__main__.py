"""``python -m axolotl_decselfmask.tools.experiments`` (the same as ``axolotl decselfmask experiments``)."""

import sys

from axolotl_decselfmask.tools.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
