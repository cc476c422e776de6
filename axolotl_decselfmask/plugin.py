"""The Axolotl plugin: ``plugins: [axolotl_decselfmask.DecSelfMaskPlugin]``.

Hook wiring only, as Axolotl's own integrations write theirs: each hook calls the stage that owns
the work. The settings live in :mod:`.args` and :mod:`.protocol`, the recipe's preparation in
:mod:`.recipe` and :mod:`.hardware`, stage 1 in :mod:`.stage1` (its data type, its mask token's
row, its checkpoints and completion record), stage 2, the evaluation, the model card and the hub
upload in :mod:`.stage2` (:func:`.stage2.run.check_inputs` before stage 1,
:func:`.stage2.run.after_stage1` after it).
"""

from __future__ import annotations

import logging

from axolotl_decselfmask.compat import quiet_foreign_lines

quiet_foreign_lines()  # before Axolotl's imports: torchao's, bitsandbytes' and torch's lines a user cannot act on,
# and the lines of transformers and Axolotl printed later that say nothing about the run (compat.AFTER_LOAD_LINES)

from axolotl.integrations.base import BasePlugin  # noqa: E402

from axolotl_decselfmask.args import plugin_config
from axolotl_decselfmask.compat import install_cli_excepthook, say_startup_lines_note, training_raised
from axolotl_decselfmask.hardware import set_up_machine
from axolotl_decselfmask.io.distributed import is_main_process
from axolotl_decselfmask.mask_token import prepare_stage1_model
from axolotl_decselfmask.protocol import apply_recipe_preset, preset_report
from axolotl_decselfmask.recipe import check_model_paths, launcher_warning, prepare_raw_recipe
from axolotl_decselfmask.stage1.checkpoints import before_stage1_trains, mark_stage1_complete
from axolotl_decselfmask.stage1.pool import check_pool_datasets
from axolotl_decselfmask.stage2.hub import start_warnings as hub_start_warnings
from axolotl_decselfmask.stage2.run import after_stage1, check_inputs

LOG = logging.getLogger(__name__)


class DecSelfMaskPlugin(BasePlugin):
    """DecSelfMask: relevance-guided masked reconstruction, then few-label classification."""

    def __init__(self):
        super().__init__()
        self._stage2_done = False
        self._stage1_started = False
        self._stage1_marked = False
        # Axolotl configures its own "axolotl" logger; ours is a sibling, so set its level.
        logging.getLogger("axolotl_decselfmask").setLevel(logging.INFO)

    def get_input_args(self) -> str:
        return "axolotl_decselfmask.args.DecSelfMaskArgs"

    def register(self, cfg: dict):
        """Runs on the raw recipe, before validation (once in each process).

        When Axolotl runs a command (``load_cfg`` has set ``axolotl_config_path``): on a machine without
        CUDA one line says what the start-up lines of torchao and bitsandbytes printed before the plugin
        loaded mean (:func:`.compat.startup_lines_note`), the plugin's errors are set to end the command
        in one line, and the model folders are checked; a recipe validated on its own (tests, the
        comparison runner) is not looked up on disk.
        """
        if cfg.get("axolotl_config_path"):
            say_startup_lines_note(LOG)  # on a CPU: what torchao's and bitsandbytes' lines before this one mean
            install_cli_excepthook()
            check_model_paths(cfg)
            warning = launcher_warning()
            if warning:
                LOG.warning(warning)
        block = cfg.get("decselfmask")
        if block is None:
            cfg["decselfmask"] = block = {}
        for line in preset_report(cfg, block):
            LOG.info("decselfmask: protocol %s: %s", block.get("protocol", "default"), line)
        apply_recipe_preset(cfg, block)
        for line in hub_start_warnings(cfg, block):  # the classifier's repository and Axolotl's stage-1 push
            LOG.warning(line)
        set_up_machine(cfg, block)  # precision and CPU threads, before Axolotl resolves its dtype
        prepare_raw_recipe(cfg, block)
        if cfg.get("axolotl_config_path"):  # a stage predicted not to fit: said now, not hours later (memory.py)
            from axolotl_decselfmask.memory import check_at_start

            warning = check_at_start(cfg)
            if warning:
                LOG.warning(warning)

    def load_datasets(self, cfg, preprocess: bool = False):
        """Check every input file before any model work; serve a placeholder when stage 1 is off."""
        config = plugin_config(cfg)
        from axolotl_decselfmask.relevance.loading import check_model_tokenizers

        check_model_tokenizers(cfg, config)  # a tokenizer with more tokens than the embedding has rows
        if config.classification.enabled:
            check_inputs(cfg, config)  # stage 2's files and prompts, before stage 1
        if config.stage1:
            check_pool_datasets(cfg)
            return None
        from axolotl_decselfmask.stage1.trainer import placeholder_meta

        return placeholder_meta(cfg)  # one row, so Axolotl builds the trainer that skips stage 1

    def pre_model_load(self, cfg):
        """Before the stage-1 model is built: the recipe's seed (its LoRA and an added row start the same every run)."""
        from axolotl_decselfmask.stage1.trainer import seed_stage1

        seed_stage1(cfg)

    def pre_lora_load(self, cfg, model):
        """After Axolotl resized the embeddings, before LoRA: the added mask token's row (mask_token.py)."""
        prepare_stage1_model(cfg, model)

    def post_lora_load(self, cfg, model):
        """After LoRA: adapters and checkpoints keep the trained mask row, not the whole embedding (mask_token.py)."""
        from axolotl_decselfmask.mask_token import save_trained_rows_only
        from axolotl_decselfmask.model_precision import log_loaded

        save_trained_rows_only(cfg, model)
        log_loaded("stage 1", model)  # e.g. "4-bit NF4 base, bfloat16 compute" with adapter: qlora

    def get_trainer_cls(self, cfg):
        if not plugin_config(cfg).stage1:
            from axolotl_decselfmask.stage1.trainer import SkipStage1Trainer

            return SkipStage1Trainer
        return None

    def get_training_args(self, cfg):
        import torch

        # Axolotl refuses bf16 on a machine without CUDA unless the trainer is told it is on CPU.
        if not torch.cuda.is_available():
            return {"use_cpu": True}
        return None

    def post_trainer_create(self, cfg, trainer):
        """In ``axolotl train`` only, before stage 1 trains or resumes: the old completion record removed,
        torn checkpoints set aside, a finished checkpoint loaded without a step (stage1/checkpoints.py)."""
        if not plugin_config(cfg).stage1:
            return
        self._stage1_started = True
        before_stage1_trains(cfg, trainer)

    def post_train_unload(self, cfg):
        """Stage 2 and the evaluation, once the stage-1 model is saved and unloaded.

        Axolotl 0.20 and 0.21 also call this hook while an error of stage 1 propagates
        (:func:`.compat.training_raised`): then nothing is marked complete and stage 2 does not run."""
        raised = training_raised()
        if raised is not None:
            LOG.warning("decselfmask: stage 1 stopped (%s); stage 2 does not run", type(raised).__name__)
            return
        config = plugin_config(cfg)
        if not is_main_process():
            return
        if config.stage1 and self._stage1_started and not self._stage1_marked:
            # Axolotl calls this hook only after stage 1 returned and its weights were saved.
            mark_stage1_complete(cfg)
            self._stage1_marked = True
        if self._stage2_done or not config.classification.enabled:
            return
        self._stage2_done = True
        after_stage1(cfg, config)  # stage 2, the evaluation, the model card, the hub (once)

