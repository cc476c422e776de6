"""``python -m axolotl_decselfmask.precompute``: the tool lives in :mod:`axolotl_decselfmask.stage1.precompute`."""

import sys

from axolotl_decselfmask.stage1.precompute import *  # noqa: F401,F403
from axolotl_decselfmask.stage1.precompute import main

if __name__ == "__main__":
    sys.exit(main())
