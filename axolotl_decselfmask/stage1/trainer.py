"""The stage-1 trainer: Axolotl's own, able to skip stage 1 for the plain-SFT baseline (with the
one-row dataset Axolotl needs to build it); the seed that makes stage 1's initialisation the same
on every run."""

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


def placeholder_meta(cfg):
    """One tokenised row, so Axolotl can build its trainer when stage 1 is switched off."""
    from axolotl.common.datasets import TrainDatasetMeta
    from axolotl.loaders import load_tokenizer
    from datasets import Dataset

    tokenizer = load_tokenizer(cfg)
    ids = tokenizer("decselfmask placeholder", add_special_tokens=False)["input_ids"]
    row = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}
    return TrainDatasetMeta(train_dataset=Dataset.from_list([row]), eval_dataset=None, total_num_steps=1)


def seed_stage1(cfg) -> None:
    """Seed every generator before Axolotl loads the stage-1 model (the plugin's ``pre_model_load``).

    Axolotl seeds nothing before the model is built; the transformers Trainer seeds itself
    (``seed``) only once the LoRA exists. Without this, the LoRA's A matrices (kaiming-uniform)
    and an added token's row drawn by the embedding resize came from whatever state the process
    was in, and two runs of one recipe gave two stage-1 adapters (docs/hardening.md).
    """
    from transformers import set_seed

    seed = cfg.get("seed")
    set_seed(42 if seed is None else int(seed))  # 42: the Trainer's default seed, as Axolotl leaves it
