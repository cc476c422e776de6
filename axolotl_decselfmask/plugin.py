"""The Axolotl plugin: ``plugins: [axolotl_decselfmask.DecSelfMaskPlugin]``.

Thin on purpose: settings live in :mod:`.args`, the stage-1 data in
:mod:`.masked_reconstruction`, what stage 1 leaves behind in :mod:`.stage1_output`, stage 2
and the evaluation in :mod:`.classification`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from axolotl.integrations.base import BasePlugin

from axolotl_decselfmask.args import DecSelfMaskConfig, plugin_config
from axolotl_decselfmask.compat import install_cli_excepthook
from axolotl_decselfmask.hardware import (
    apply_threads,
    log_line,
    resolve_recipe_precision,
    slow_bf16_warning,
    wait_policy_warning,
)
from axolotl_decselfmask.io.distributed import is_main_process
from axolotl_decselfmask.io.files import safe_filename
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
from axolotl_decselfmask.stage2.calibration import calibration_path
from axolotl_decselfmask.stage2.data import text_budget
from axolotl_decselfmask.stage2.metrics import forget_task
from axolotl_decselfmask.stage2.multilabel import (
    forget_group,
    load_any_task_data,
    task_prompt_for,
)
from axolotl_decselfmask.stage2.run import run_stage2

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
        _set_up_machine(cfg, block)
        prepare_raw_recipe(cfg, block)

    def load_datasets(self, cfg, preprocess: bool = False):
        """Check every input file before any model work; serve a placeholder when stage 1 is off."""
        config = plugin_config(cfg)
        if config.classification.enabled:
            tokenizer = None
            for n, task in enumerate(config.task_configs()):
                data = load_any_task_data(task, cfg.output_dir, config.seed)  # a multi-label task too
                LOG.info("decselfmask [%s]: %s; labels %s", task.task, data.train.report.summary(task.train_file),
                         data.labels)
                tokenizer = tokenizer or _prompt_tokenizer(cfg, config)
                text_budget(tokenizer, task, data.labels, task.max_length or cfg.sequence_len,
                            task_prompt_for(config, n, tokenizer, data))  # before stage 1
            from axolotl_decselfmask.stage2.hub import token_warning

            warning = token_warning(config)
            if warning:
                LOG.warning(warning)
        if config.stage1:
            for n, entry in enumerate(cfg.get("datasets") or []):
                if entry.get("type") in OUR_TYPES:
                    check_pool_file(entry["path"], dataset_text_column(entry), f"datasets[{n}].path")
            if not uses_pool_dataset(cfg):
                LOG.warning("decselfmask: no dataset has type %s; stage 1 trains on the recipe's datasets as they are",
                            DATASET_TYPE)
            return None
        return _placeholder_meta(cfg)

    def pre_lora_load(self, cfg, model):
        """After Axolotl resized the embeddings, before LoRA: the added mask token's row (mask_token.py)."""
        prepare_stage1_model(cfg, model)

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
        """Stage 2 and the evaluation, once the stage-1 model is saved and unloaded."""
        config = plugin_config(cfg)
        if not is_main_process():
            return
        if config.stage1 and self._stage1_started and not self._stage1_marked:
            # Axolotl calls this hook only after stage 1 returned and its weights were saved.
            marker = write_stage1_marker(cfg.output_dir, adapter=bool(cfg.adapter),
                                         extra={"resumed_from": cfg.get("resume_from_checkpoint")})
            self._stage1_marked = True
            LOG.info("decselfmask: stage 1 complete, %s written (%s)", Path(cfg.output_dir) / STAGE1_MARKER,
                     ", ".join(f["name"] for f in marker["files"]))
        if self._stage2_done or not config.classification.enabled:
            return
        self._stage2_done = True
        for task in config.task_configs():
            _forget_previous_results(Path(cfg.output_dir), task.task)
        run_stage2(cfg, config)
        from axolotl_decselfmask.stage2.model_card import (
            write_model_card,  # README.md in output_dir; never raises
        )

        write_model_card(cfg, config)
        from axolotl_decselfmask.stage2.hub import push_results

        push_results(cfg, config)  # decselfmask.hub_model_id: stage 2, metrics, predictions, card (main process, once)


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



def _prompt_tokenizer(cfg, config: DecSelfMaskConfig):
    """The recipe's tokenizer as Axolotl loads it (chat_template, special tokens), with the
    plugin's fallback template: the classification prompt's length is measured with it."""
    from axolotl.loaders import load_tokenizer

    from axolotl_decselfmask.prompts import ensure_chat_template

    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    return tokenizer


def _barrier():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _forget_previous_results(out: Path, task: str) -> None:
    """Drop this task's metrics and predictions of an earlier run before stage 2 starts.

    ``metrics.json`` is written (atomically) only after stage 2 and the evaluation, so an entry
    for the task then always belongs to a finished run.
    """
    forget_task(out / "metrics.json", task)
    (out / f"predictions-{safe_filename(task)}.jsonl").unlink(missing_ok=True)
    calibration_path(out, task).unlink(missing_ok=True)  # predict's decision: written again after the evaluation
    forget_group(out, task)  # a multi-label task's decisions per label


def _placeholder_meta(cfg):
    """One tokenised row, so Axolotl can build its trainer when stage 1 is switched off."""
    from axolotl.common.datasets import TrainDatasetMeta
    from axolotl.loaders import load_tokenizer
    from datasets import Dataset

    tokenizer = load_tokenizer(cfg)
    ids = tokenizer("decselfmask placeholder", add_special_tokens=False)["input_ids"]
    row = {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": ids}
    return TrainDatasetMeta(train_dataset=Dataset.from_list([row]), eval_dataset=None, total_num_steps=1)
