"""``python -m axolotl_decselfmask.inspector``: the tool lives in :mod:`axolotl_decselfmask.tools.inspector`."""

import sys

from axolotl_decselfmask.tools.inspector import *  # noqa: F401,F403
from axolotl_decselfmask.tools.inspector import main

if __name__ == "__main__":
    sys.exit(main())
