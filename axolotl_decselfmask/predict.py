"""``python -m axolotl_decselfmask.predict RECIPE NOTES --out FILE``: the tool lives in :mod:`axolotl_decselfmask.stage2.predict`."""

import sys

from axolotl_decselfmask.stage2.predict import *  # noqa: F401,F403
from axolotl_decselfmask.stage2.predict import main

if __name__ == "__main__":
    sys.exit(main())
