"""``python -m axolotl_decselfmask.experiments``: the tool lives in :mod:`axolotl_decselfmask.tools.experiments`."""

import sys

from axolotl_decselfmask.tools.experiments import *  # noqa: F401,F403
from axolotl_decselfmask.tools.experiments import main

if __name__ == "__main__":
    sys.exit(main())
