"""``python -m axolotl_decselfmask.bench``: the tool lives in :mod:`axolotl_decselfmask.tools.bench`."""

import sys

from axolotl_decselfmask.tools.bench import *  # noqa: F401,F403
from axolotl_decselfmask.tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
