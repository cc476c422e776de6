"""``type: axolotl_decselfmask.masked_reconstruction``: the stage-1 dataset type, which lives in :mod:`axolotl_decselfmask.stage1.masked_reconstruction`.

Axolotl imports the module a dataset's ``type`` names and calls its ``load``; this path is the
one recipes use, so it stays.
"""

from axolotl_decselfmask.stage1.masked_reconstruction import *  # noqa: F401,F403
from axolotl_decselfmask.stage1.masked_reconstruction import load  # noqa: F401
