"""The stage-1 trainer: Axolotl's own, able to skip stage 1 for the plain-SFT baseline."""

from __future__ import annotations

import logging

from axolotl.core.trainers.base import AxolotlTrainer
from transformers.trainer_utils import TrainOutput

LOG = logging.getLogger(__name__)


class SkipStage1Trainer(AxolotlTrainer):
    """Used when ``decselfmask.stage1: false``: ``train()`` does no step.

    The untouched model (a freshly initialised LoRA changes nothing) is saved as usual,
    and stage 2 then starts from the base model: the plain supervised fine-tuning baseline.
    """

    def train(self, *args, **kwargs):  # noqa: D102
        LOG.info("decselfmask.stage1 is false: skipping masked-reconstruction training")
        return TrainOutput(global_step=0, training_loss=0.0, metrics={})
