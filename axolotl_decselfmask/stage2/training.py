"""Training the stage-2 classifier: a fresh LoRA trained with TRL's SFTTrainer, loss on the label.

The rows are tokenised classification conversations (one task's, or every task's for the joint
classifier). With ``classification.save_steps`` the trainer saves checkpoints in the stage-2
folder, and a later run that starts from the same stage-1 weights with the same rows, settings
and seed resumes from the newest complete one; a run whose stage 1, rows or settings differ
starts again (its checkpoints are removed first, and one line says why). See docs/resuming.md.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from axolotl_decselfmask.args import ClassificationConfig
from axolotl_decselfmask.io.files import atomic_write_json, fingerprint, read_json
from axolotl_decselfmask.prompts import classification_messages, tokenize_for_training
from axolotl_decselfmask.stage2 import quantized
from axolotl_decselfmask.stage2.tasks import Task

LOG = logging.getLogger(__name__)

RUN_RECORD = "decselfmask_stage2_run.json"


def training_rows(tokenizer, texts, labels, options, question: str, system_prompt: str,
                  train_on_inputs: bool = False) -> list[dict]:
    """Tokenised classification conversations, the label as the answer."""
    return [
        tokenize_for_training(tokenizer, classification_messages(t, question, options, system_prompt, answer=y),
                              train_on_inputs=train_on_inputs)
        for t, y in zip(texts, labels)
    ]


def task_rows(tokenizer, task: Task, texts: list[str] | None = None, labels: list | None = None) -> list[dict]:
    """:func:`training_rows` of ``task`` (its prompt and options): its labelled examples, or ``texts``
    with ``labels`` (pseudo-labels)."""
    return training_rows(tokenizer, texts if texts is not None else task.train_texts,
                         labels if labels is not None else task.train_labels, task.data.labels,
                         task.prompt.question, task.prompt.system_prompt, task.settings.train_on_inputs)


def sft_config(cfg, c: ClassificationConfig, seed: int, out_dir: Path, bf16: bool, max_length: int,
               progress: bool):
    """TRL's SFTConfig for stage 2, from ``classification``'s settings."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=c.num_epochs,
        max_steps=c.max_steps or -1,
        learning_rate=c.learning_rate,
        per_device_train_batch_size=c.batch_size,
        gradient_accumulation_steps=c.gradient_accumulation_steps,
        weight_decay=c.weight_decay,
        lr_scheduler_type=c.lr_scheduler,
        warmup_steps=c.warmup_ratio,  # transformers 5: a value below 1 is a share of the steps
        logging_steps=c.logging_steps,
        save_strategy="steps" if c.save_steps else "no",
        save_steps=c.save_steps or 500,
        save_total_limit=c.save_total_limit,
        report_to=report_to(cfg),
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        fp16=False,
        use_cpu=not torch.cuda.is_available(),
        max_length=max_length,
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        dataset_num_proc=None,
        disable_tqdm=not progress,
    )


class TrainedAdapterOnly(TrainerCallback):
    """QLoRA: each checkpoint keeps the stage-2 adapter alone
    (:func:`.quantized.keep_trained_adapter_only`), so a resume loads it as the one to train."""

    def on_save(self, args, state, control, **kwargs):
        quantized.keep_trained_adapter_only(Path(args.output_dir) / f"checkpoint-{state.global_step}")


def train_classifier(cfg, c: ClassificationConfig, seed: int, model, tokenizer, rows: list[dict],
                     max_length: int, out_dir: Path, progress: bool, name: str, start: str | None = None,
                     callbacks: list | None = None):
    """A fresh LoRA on ``model`` trained on ``rows`` with TRL's SFTTrainer; saved to ``out_dir``.

    ``start``: the key of the weights ``model`` was loaded from (the stage-1 weights,
    :func:`.run.starting_key`); checkpoints of a run from other weights are not resumed.
    ``callbacks``: more trainer callbacks (the epoch search's, :mod:`.epochs`).
    """
    from peft import LoraConfig
    from transformers import set_seed
    from trl import SFTTrainer

    from axolotl_decselfmask.stage1.checkpoints import skip_if_finished

    out_dir = Path(out_dir)
    args = sft_config(cfg, c, seed, out_dir, next(model.parameters()).dtype == torch.bfloat16, max_length, progress)
    resume = _resume_point(out_dir, rows, c, seed, start, name)
    lora = LoraConfig(
        r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
        target_modules="all-linear", task_type="CAUSAL_LM",
    )
    # SFTTrainer adds the LoRA before the Trainer seeds anything: seed its initialisation here, so that
    # a run does not depend on what ran before it in the process
    set_seed(seed)
    four_bit = quantized.quantised_layers(model) > 0
    if four_bit:  # QLoRA: the LoRA added here, beside the frozen, unmerged stage-1 adapter
        model, lora = quantized.add_trainable_adapter(model, lora), None
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora,
                         callbacks=([TrainedAdapterOnly()] if four_bit else []) + list(callbacks or []) or None)
    if resume:
        print(f"decselfmask stage 2 [{name}]: resuming from {resume}")
        skip_if_finished(trainer, resume, "stage 2")  # a finished run's last checkpoint: no step past max_steps
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    if four_bit:  # the classifier as one adapter on the base model, stage 1 in it
        quantized.keep_trained_adapter_only(out_dir)
        quantized.write_combined_adapter(trainer.model, out_dir, quantized.base_model_name(cfg))
    print(f"decselfmask stage 2 [{name}]: classifier saved to {out_dir} ({len(rows)} examples, "
          f"{trainer.state.global_step} steps)")
    return trainer


def _resume_point(out_dir: Path, rows: list[dict], c: ClassificationConfig, seed: int, start: str | None = None,
                  name: str = "") -> Path | None:
    """The newest complete checkpoint of an earlier run from the same starting weights (``start``)
    with the same rows, settings and seed, else None: that run's checkpoints are removed, with one
    line saying why. Records this run's keys in ``out_dir``."""
    settings = c.model_dump(exclude={"max_test_examples", "eval_batch_size", "option_chunk", "save_total_limit",
                                     "logging_steps", "task", "test_file"}
                            | (set() if c.early_stopping.enabled else {"early_stopping"}))  # keys of earlier runs
    key = fingerprint([r["input_ids"] for r in rows], [r["labels"] for r in rows], settings, seed)
    record = read_json(out_dir / RUN_RECORD)
    found = sorted((p for p in out_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1])) if out_dir.is_dir() else []
    same = isinstance(record, dict) and record.get("key") == key and record.get("start") == start
    if not same:
        if found:
            why = ("the stage-1 weights it starts from changed" if isinstance(record, dict) and record.get("key") == key
                   else "its labelled examples, settings or seed changed")
            print(f"decselfmask stage 2 [{name}]: not resuming from {found[-1]}: {why} since it was saved; "
                  f"its {len(found)} checkpoint(s) removed, stage 2 starts over")
        for p in found:
            shutil.rmtree(p, ignore_errors=True)
        atomic_write_json(out_dir / RUN_RECORD, {"key": key, "start": start})
        return None
    complete = [p for p in found if (p / "trainer_state.json").is_file() and (p / "adapter_model.safetensors").is_file()]
    return complete[-1] if complete else None


def report_to(cfg) -> list[str]:
    targets = []
    if cfg.use_tensorboard:
        targets.append("tensorboard")
    if cfg.use_wandb:
        targets.append("wandb")
    return targets or ["none"]
