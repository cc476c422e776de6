"""Training the stage-2 classifier: a fresh LoRA trained with TRL's SFTTrainer, loss on the label."""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.prompts import (
    classification_messages,
    tokenize_for_training,
)


def train_classifier(cfg, config: DecSelfMaskConfig, c: ClassificationConfig, model, tokenizer, texts, labels, options,
           max_length: int, out_dir: Path, progress: bool):
    """A fresh LoRA on ``model`` trained with TRL's SFTTrainer, loss on the label; saved to ``out_dir``."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    rows = [
        tokenize_for_training(tokenizer, classification_messages(t, c.question, options, c.system_prompt, answer=y))
        for t, y in zip(texts, labels)
    ]
    cuda = torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(out_dir),
        num_train_epochs=c.num_epochs,
        learning_rate=c.learning_rate,
        per_device_train_batch_size=c.batch_size,
        gradient_accumulation_steps=c.gradient_accumulation_steps,
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        logging_steps=5,
        save_strategy="no",
        report_to=report_to(cfg),
        seed=config.seed,
        data_seed=config.seed,
        bf16=next(model.parameters()).dtype == torch.bfloat16,
        fp16=False,
        use_cpu=not cuda,
        max_length=max_length,
        gradient_checkpointing=bool(cfg.gradient_checkpointing),
        dataset_num_proc=None,
        disable_tqdm=not progress,
    )
    lora = LoraConfig(
        r=c.lora_r, lora_alpha=c.lora_alpha, lora_dropout=c.lora_dropout,
        target_modules="all-linear", task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=lora)
    trainer.train()
    trainer.save_model(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    print(f"decselfmask stage 2 [{c.task}]: classifier saved to {out_dir}")
    return trainer


def report_to(cfg) -> list[str]:
    targets = []
    if cfg.use_tensorboard:
        targets.append("tensorboard")
    if cfg.use_wandb:
        targets.append("wandb")
    return targets or ["none"]
