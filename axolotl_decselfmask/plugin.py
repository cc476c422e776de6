"""The Axolotl plugin: ``plugins: [axolotl_decselfmask.DecSelfMaskPlugin]``.

Thin on purpose: settings live in :mod:`.args`, the stage-1 data in
:mod:`.masked_reconstruction`, stage 2 and the evaluation in :mod:`.classification`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from axolotl.integrations.base import BasePlugin

from . import __version__
from .args import DecSelfMaskConfig
from .cache import fingerprint
from .classification import is_main_process, load_task_data, run_stage2
from .masked_reconstruction import plugin_config

LOG = logging.getLogger(__name__)

DATASET_TYPE = "axolotl_decselfmask.masked_reconstruction"
DEFAULT_PREPARED_PATH = "last_run_prepared"


def _uses_our_dataset(cfg) -> bool:
    return any(isinstance(d, dict) and d.get("type") == DATASET_TYPE for d in (cfg.get("datasets") or []))


class DecSelfMaskPlugin(BasePlugin):
    """DecSelfMask: relevance-guided masked reconstruction, then few-label classification."""

    def __init__(self):
        super().__init__()
        self._stage2_done = False
        # Axolotl configures its own "axolotl" logger; ours is a sibling, so set its level.
        logging.getLogger("axolotl_decselfmask").setLevel(logging.INFO)

    def get_input_args(self) -> str:
        return "axolotl_decselfmask.args.DecSelfMaskArgs"

    def register(self, cfg: dict):
        """Runs on the raw recipe, before validation."""
        block = cfg.get("decselfmask")
        if block is None:
            cfg["decselfmask"] = block = {}
        prepared = cfg.get("dataset_prepared_path") or DEFAULT_PREPARED_PATH
        if not block.get("cache_dir"):
            block["cache_dir"] = str(Path(prepared) / "decselfmask")
        if _uses_our_dataset(cfg):
            # Axolotl's prepared-dataset hash does not see the decselfmask block; key the
            # folder by it so that a changed setting never reuses stale examples.
            try:
                settings = DecSelfMaskConfig(**block).model_dump(exclude={"classification"})
            except Exception:  # noqa: BLE001 - Axolotl's validation reports it next
                settings = dict(block)
            key = fingerprint(__version__, settings)
            cfg["dataset_prepared_path"] = str(Path(prepared) / f"decselfmask-{key}")
        masking = block.get("masking") or {}
        if masking.get("add_mask_token"):
            token = masking.get("mask_token", "<mask>")
            tokens = list(cfg.get("tokens") or [])
            if token not in tokens:
                cfg["tokens"] = tokens + [token]

    def load_datasets(self, cfg, preprocess: bool = False):
        """Check the labelled data before any model work; serve a placeholder when stage 1 is off."""
        config = plugin_config(cfg)
        if config.classification.enabled:
            data = load_task_data(config.classification)
            LOG.info("decselfmask: %s; labels %s", data.train.report.summary(config.classification.train_file),
                     data.labels)
        if config.stage1:
            if not _uses_our_dataset(cfg):
                LOG.warning("decselfmask: no dataset has type %s; stage 1 trains on the recipe's datasets as they are",
                            DATASET_TYPE)
            return None
        return _placeholder_meta(cfg)

    def get_trainer_cls(self, cfg):
        if not plugin_config(cfg).stage1:
            from .trainer import SkipStage1Trainer

            return SkipStage1Trainer
        return None

    def get_training_args(self, cfg):
        import torch

        # Axolotl refuses bf16 on a machine without CUDA unless the trainer is told it is on CPU.
        if not torch.cuda.is_available():
            return {"use_cpu": True}
        return None

    def post_train_unload(self, cfg):
        """Stage 2 and the evaluation, once the stage-1 model is saved and unloaded."""
        config = plugin_config(cfg)
        if self._stage2_done or not config.classification.enabled or not is_main_process():
            return
        self._stage2_done = True
        run_stage2(cfg, config)


def _placeholder_meta(cfg):
    """One tokenised row, so Axolotl can build its trainer when stage 1 is switched off."""
    from axolotl.common.datasets import TrainDatasetMeta
    from axolotl.loaders import load_tokenizer
    from datasets import Dataset

    tokenizer = load_tokenizer(cfg)
    ids = tokenizer("decselfmask placeholder", add_special_tokens=False)["input_ids"]
    row = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}
    return TrainDatasetMeta(train_dataset=Dataset.from_list([row]), eval_dataset=None, total_num_steps=1)
