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
from pathlib import Path

from axolotl_decselfmask.compat import quiet_foreign_lines

quiet_foreign_lines()  # before Axolotl's imports: torchao's, bitsandbytes' and torch's lines a user cannot act on

from axolotl.integrations.base import BasePlugin  # noqa: E402

from axolotl_decselfmask.args import plugin_config
from axolotl_decselfmask.compat import install_cli_excepthook, training_raised
from axolotl_decselfmask.hardware import (
    apply_threads,
    cpu_kernel_keys,
    log_line,
    resolve_recipe_precision,
    slow_bf16_warning,
    wait_policy_warning,
)
from axolotl_decselfmask.io.distributed import is_main_process
from axolotl_decselfmask.io.tables import (
    check_pool_file,
    dataset_text_column,
)
from axolotl_decselfmask.mask_token import prepare_stage1_model
from axolotl_decselfmask.protocol import apply_recipe_preset, preset_report
from axolotl_decselfmask.recipe import (
    check_model_paths,
    launcher_warning,
    prepare_raw_recipe,
    uses_pool_dataset,
)
from axolotl_decselfmask.stage1.checkpoints import (
    STAGE1_MARKER,
    check_checkpoint,
    checkpoints,
    set_aside_torn_checkpoints,
    skip_if_finished,
    write_stage1_marker,
)
from axolotl_decselfmask.stage1.pool import MASKED_RECONSTRUCTION_TYPE as DATASET_TYPE
from axolotl_decselfmask.stage1.pool import POOL_TYPES
from axolotl_decselfmask.stage2.hub import start_warnings as hub_start_warnings
from axolotl_decselfmask.stage2.run import after_stage1, check_inputs

LOG = logging.getLogger(__name__)

OUR_TYPES = POOL_TYPES


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

        When Axolotl runs a command (``load_cfg`` has set ``axolotl_config_path``), the plugin's
        errors are set to end the command in one line, and the model folders are checked; a
        recipe validated on its own (tests, the comparison runner) is not looked up on disk.
        """
        if cfg.get("axolotl_config_path"):
            install_cli_excepthook()
            check_model_paths(cfg)
            warning = launcher_warning()
            if warning:
                LOG.warning(warning)
        block = cfg.get("decselfmask")
        if block is None:
            cfg["decselfmask"] = block = {}
        for line in preset_report(cfg, block):
            LOG.info("decselfmask: protocol %s: %s", block.get("protocol"), line)
        apply_recipe_preset(cfg, block)
        for line in hub_start_warnings(cfg, block):  # the classifier's repository and Axolotl's stage-1 push
            LOG.warning(line)
        _set_up_machine(cfg, block)
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
            _check_stage1_datasets(cfg)
            return None
        return _placeholder_meta(cfg)

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
        """Runs in ``axolotl train`` only, before stage 1 trains (or resumes).

        The stage-1 completion record of an earlier run no longer describes ``output_dir``, whose
        weights this run rewrites: remove it (it is written again when this run's stage 1 ends).
        With ``auto_resume_from_checkpoints``, set aside checkpoints that a kill left half-written,
        so that Axolotl resumes from the newest complete one. Resuming from a checkpoint that
        already reached ``max_steps`` (stage 1 finished, stage 2 did not) loads it without
        training: the Trainer would otherwise take one step past ``max_steps``.
        """
        if not plugin_config(cfg).stage1:
            return
        self._stage1_started = True
        out = Path(cfg.output_dir)
        if is_main_process():
            (out / STAGE1_MARKER).unlink(missing_ok=True)
            if cfg.get("resume_from_checkpoint"):
                check_checkpoint(Path(cfg.resume_from_checkpoint))
            elif cfg.get("auto_resume_from_checkpoints"):
                set_aside_torn_checkpoints(out)
        _barrier()
        resume = cfg.get("resume_from_checkpoint") or (
            cfg.get("auto_resume_from_checkpoints") and next(reversed(checkpoints(out)), None))
        if resume:
            skip_if_finished(trainer, Path(resume))

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
            _mark_stage1_complete(cfg)
            self._stage1_marked = True
        if self._stage2_done or not config.classification.enabled:
            return
        self._stage2_done = True
        after_stage1(cfg, config)  # stage 2, the evaluation, the model card, the hub (once)


def _set_up_machine(cfg: dict, block: dict) -> None:
    """Precision and CPU threads, decided before Axolotl's own dtype resolution (see :mod:`.hardware`)."""
    precision = resolve_recipe_precision(cfg)
    warning = slow_bf16_warning(precision)
    if warning:
        LOG.warning(warning)
    setting = block.get("cpu_threads", "auto")
    threads, why = apply_threads(setting if setting == "auto" or isinstance(setting, int) else "auto")
    LOG.info(log_line(precision, threads, why))
    if precision.device == "cpu":
        spin = wait_policy_warning(threads)
        if spin:
            LOG.warning(spin)
        kernels = cpu_kernel_keys(cfg, precision)  # the CUDA-only lora_*_kernel keys off
        if kernels:
            LOG.info(kernels)


def _check_stage1_datasets(cfg) -> None:
    """The recipe's pool files of the plugin's types, checked before stage 1."""
    for n, entry in enumerate(cfg.get("datasets") or []):
        if entry.get("type") in OUR_TYPES:
            check_pool_file(entry["path"], dataset_text_column(entry), f"datasets[{n}].path")
    if not uses_pool_dataset(cfg):
        LOG.warning("decselfmask: no dataset has type %s; stage 1 trains on the recipe's datasets as they are",
                    DATASET_TYPE)


def _mark_stage1_complete(cfg) -> None:
    """Stage 1's completion record, once its weights are saved (:func:`.stage1.checkpoints.write_stage1_marker`)."""
    marker = write_stage1_marker(cfg.output_dir, adapter=bool(cfg.adapter),
                                 extra={"resumed_from": cfg.get("resume_from_checkpoint")})
    LOG.info("decselfmask: stage 1 complete, %s written (%s)", Path(cfg.output_dir) / STAGE1_MARKER,
             ", ".join(f["name"] for f in marker["files"]))


def _barrier():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _placeholder_meta(cfg):
    """One tokenised row, so Axolotl can build its trainer when stage 1 is switched off."""
    from axolotl.common.datasets import TrainDatasetMeta
    from axolotl.loaders import load_tokenizer
    from datasets import Dataset

    tokenizer = load_tokenizer(cfg)
    ids = tokenizer("decselfmask placeholder", add_special_tokens=False)["input_ids"]
    row = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}
    return TrainDatasetMeta(train_dataset=Dataset.from_list([row]), eval_dataset=None, total_num_steps=1)
