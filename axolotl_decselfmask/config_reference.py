"""``python -m axolotl_decselfmask.config_reference``: the tool lives in :mod:`axolotl_decselfmask.tools.config_reference`."""

import sys

from axolotl_decselfmask.tools.config_reference import *  # noqa: F401,F403
from axolotl_decselfmask.tools.config_reference import main

if __name__ == "__main__":
    sys.exit(main())
