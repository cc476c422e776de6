"""``python -m axolotl_decselfmask.tools.bench`` (the same as ``axolotl decselfmask bench``)."""

import sys

from axolotl_decselfmask.tools.bench.cli import main

sys.exit(main())
