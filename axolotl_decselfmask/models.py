"""``python -m axolotl_decselfmask.models``: the tool lives in :mod:`axolotl_decselfmask.tools.models`."""

import sys

from axolotl_decselfmask.tools.models import *  # noqa: F401,F403
from axolotl_decselfmask.tools.models import main

if __name__ == "__main__":
    sys.exit(main())
