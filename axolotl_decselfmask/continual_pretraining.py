"""``type: axolotl_decselfmask.continual_pretraining``: the continual-pretraining dataset type, which lives in :mod:`axolotl_decselfmask.stage1.continual_pretraining`.

Axolotl imports the module a dataset's ``type`` names and calls its ``load``; this path is the
one recipes use, so it stays.
"""

from axolotl_decselfmask.stage1.continual_pretraining import *  # noqa: F401,F403
from axolotl_decselfmask.stage1.continual_pretraining import load  # noqa: F401
