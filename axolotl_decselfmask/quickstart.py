"""``python -m axolotl_decselfmask.quickstart``: the tool lives in :mod:`axolotl_decselfmask.tools.quickstart`."""

import sys

from axolotl_decselfmask.tools.quickstart import *  # noqa: F401,F403
from axolotl_decselfmask.tools.quickstart import main

if __name__ == "__main__":
    sys.exit(main())
