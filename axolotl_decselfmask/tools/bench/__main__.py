"""``python -m axolotl_decselfmask.tools.bench`` (the same as ``python -m axolotl_decselfmask.bench``)."""

import sys

from axolotl_decselfmask.tools.bench.cli import main

sys.exit(main())
