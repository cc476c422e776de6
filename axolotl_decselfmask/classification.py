"""Stage 2: supervised classification fine-tuning with TRL, then the evaluation.

Runs after stage 1 in the same ``axolotl train``: the stage-1 weights in ``output_dir``
(a LoRA adapter, merged into the base model, or a full model) are the starting point; a
fresh LoRA (the paper: r 32, alpha 64, lr 3e-4) is trained on the labelled examples with
TRL's ``SFTTrainer``, loss on the label only, and saved to ``<output_dir>/stage2``. The
test file is then scored (see :mod:`.evaluation`) and ``<output_dir>/metrics.json`` written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset

from .args import ClassificationConfig, DecSelfMaskConfig
from .hardware import environment, recipe_precision
from .evaluation import dump_predictions, evaluate, format_table, write_metrics
from .inputs import InputError, LabelledData, label_options, overlapping_rows, read_labelled
from .precompute import truncate_texts
from .prompts import classification_messages, ensure_chat_template, tokenize_for_training
from .stage1_output import verify_stage1_output

LOG = logging.getLogger(__name__)

STAGE2_DIR = "stage2"


@dataclass
class TaskData:
    train: LabelledData
    test: LabelledData | None
    labels: list[str]


def load_task_data(c: ClassificationConfig) -> TaskData:
    """Read and check the labelled files (no model needed): errors name file, row or key."""
    if not c.train_file:
        raise InputError("decselfmask.classification.train_file is not set (or set classification.enabled: false).")
    train = read_labelled(c.train_file, c.text_column, c.label_column, c.labels or None,
                          "decselfmask.classification.train_file")
    labels = label_options(train, c.labels or None, c.train_file)
    test = None
    if c.test_file:
        test = read_labelled(c.test_file, c.text_column, c.label_column, labels,
                             "decselfmask.classification.test_file")
        leaks = overlapping_rows(train.texts, test.texts)
        if leaks:
            shown = ", ".join(f"train row {train.rows[i]} = test row {test.rows[j]}" for i, j in leaks[:5])
            LOG.warning("decselfmask: %d texts of %s also appear in %s (%s): the test score is optimistic; "
                        "remove them from one of the files", len(leaks), c.train_file, c.test_file, shown)
    return TaskData(train, test, labels)


def _truncate_for(tokenizer, c: ClassificationConfig, labels: list[str], max_length: int, texts: list[str]):
    """Cut texts at a token boundary so prompt, text and longest label fit ``max_length``."""
    longest = max(labels, key=lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    overhead = len(tokenize_for_training(
        tokenizer, classification_messages("x", c.question, labels, c.system_prompt, answer=longest))["input_ids"])
    budget = max_length - overhead - 2
    if budget < 16:
        raise InputError(f"decselfmask.classification.max_length ({max_length}) is too small for the prompt.")
    return truncate_texts(tokenizer, texts, budget)


def load_stage1_model(cfg, config: DecSelfMaskConfig, dtype: torch.dtype):
    """The base model with the stage-1 weights of ``output_dir`` merged in.

    With ``stage1: true`` the weights must match the completion record that the plugin writes
    once stage 1 has finished (:func:`write_stage1_marker`); otherwise
    :class:`Stage1IncompleteError` says how to resume.
    """
    from transformers import AutoModelForCausalLM

    out = Path(cfg.output_dir)
    kwargs = {"dtype": dtype, "trust_remote_code": bool(cfg.trust_remote_code)}
    if not config.stage1:
        return AutoModelForCausalLM.from_pretrained(cfg.base_model, **kwargs), "none (plain SFT)"
    marker = verify_stage1_output(cfg)
    if marker["kind"] == "lora":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(cfg.base_model, **kwargs)
        tok_vocab = _tokenizer_len(out)
        if tok_vocab and tok_vocab > base.get_input_embeddings().weight.shape[0]:  # tokens added in stage 1
            base.resize_token_embeddings(tok_vocab)
        model = PeftModel.from_pretrained(base, str(out)).merge_and_unload()
        return model, f"LoRA adapter {out} (merged)"
    return AutoModelForCausalLM.from_pretrained(str(out), **kwargs), f"full model {out}"


def _tokenizer_len(folder: Path) -> int | None:
    if not (folder / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(folder)))


def _load_tokenizer(cfg):
    from transformers import AutoTokenizer

    out = Path(cfg.output_dir)
    source = str(out) if (out / "tokenizer_config.json").is_file() else (cfg.tokenizer_config or cfg.base_model)
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(cfg.trust_remote_code))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def run_stage2(cfg, config: DecSelfMaskConfig, progress: bool = True) -> dict:
    """Stage 2 and the evaluation of every task (``decselfmask.tasks``, else ``classification``).

    Every task's files are checked before any model work. Each task starts from the same
    stage-1 model (reloaded), gets its own LoRA and its own entry in ``metrics.json``.
    Returns the metrics dict.
    """
    tasks = config.task_configs()
    data = [load_task_data(c) for c in tasks]
    pool = None
    if any(c.pseudo_labels.enabled for c in tasks):
        from .pseudo_labels import read_pool

        # never pseudo-label (and then train on) a test text
        pool = {c.task: read_pool(c.pseudo_labels, exclude_texts=d.test.texts if d.test else None)
                for c, d in zip(tasks, data) if c.pseudo_labels.enabled}
    tokenizer = _load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    metrics: dict = {}
    features: dict = {}  # probing features of the (same) stage-1 model, shared by the tasks
    for c, d in zip(tasks, data):
        out_dir = Path(cfg.output_dir) / STAGE2_DIR
        if config.tasks:
            out_dir = out_dir / safe_filename(c.task)
        metrics = run_task(cfg, config, c, d, tokenizer, out_dir, (pool or {}).get(c.task), progress, features)
    return metrics


def run_task(cfg, config: DecSelfMaskConfig, c: ClassificationConfig, data: TaskData, tokenizer,
             out_dir: Path, pool_texts: list[str] | None, progress: bool = True,
             feature_cache: dict | None = None) -> dict:
    """Probe (optional), train the classifier (unless ``train: false``), evaluate one task."""
    max_length = c.max_length or cfg.sequence_len
    train_texts, n_cut = _truncate_for(tokenizer, c, data.labels, max_length, data.train.texts)
    print(f"decselfmask stage 2 [{c.task}]: {len(train_texts)} labelled examples, {len(data.labels)} labels, "
          f"{n_cut} texts truncated to fit {max_length} tokens")
    test_texts = gold = None
    if data.test is not None:
        test_texts = data.test.texts[: c.max_test_examples] if c.max_test_examples else data.test.texts
        gold = data.test.labels[: len(test_texts)]
        test_texts, _ = _truncate_for(tokenizer, c, data.labels, max_length, test_texts)

    precision = recipe_precision(cfg)
    dtype = precision.torch_dtype()
    model, source = load_stage1_model(cfg, config, dtype)
    print(f"decselfmask stage 2 [{c.task}]: starting from {source}")
    extra = {"stage1": config.stage1, "labels": data.labels, "n_train": len(train_texts), "trained": c.train,
             "environment": environment(precision)}

    if config.probing.enabled and test_texts is not None:
        from .probing import probe

        probed = probe(model, tokenizer, train_texts, data.train.labels, test_texts, gold, data.labels,
                       c.question, c.system_prompt, config.probing, config.seed, progress,
                       feature_cache=feature_cache)
        extra.update(probe_macro_f1=probed["macro_f1"], probe_accuracy=probed["accuracy"])
        print(f"decselfmask probing [{c.task}]: Macro F1 {probed['macro_f1']:.4f} (frozen model, last-token "
              f"hidden state, {config.probing.hidden_size}-unit classifier)")

    trainer = None
    if c.train:
        texts, labels = list(train_texts), list(data.train.labels)
        if c.pseudo_labels.enabled:
            from .pseudo_labels import pseudo_label

            trainer = _train(cfg, config, c, model, tokenizer, texts, labels, data.labels, max_length, out_dir, progress)
            pool_texts, _ = _truncate_for(tokenizer, c, data.labels, max_length, pool_texts or [])
            added = pseudo_label(trainer.model.merge_and_unload(), tokenizer, pool_texts, data.labels, c.question, c.system_prompt,
                                 c.pseudo_labels, progress)
            print(f"decselfmask pseudo-labels [{c.task}]: {len(added)} of {len(pool_texts)} pool texts labelled "
                  f"with confidence >= {c.pseudo_labels.min_confidence}; training again on gold + pseudo-labels")
            extra["n_pseudo"] = len(added)
            texts += [a["text"] for a in added]
            labels += [a["label"] for a in added]
            del trainer, model
            model, _ = load_stage1_model(cfg, config, dtype)
        trainer = _train(cfg, config, c, model, tokenizer, texts, labels, data.labels, max_length, out_dir, progress)
        model = trainer.model.merge_and_unload()  # saved already; merged, the evaluation runs faster

    if test_texts is None:
        LOG.warning("decselfmask: no classification.test_file for %s; skipping the evaluation", c.task)
        return {}
    result = evaluate(model, tokenizer, test_texts, gold, data.labels, c.question, c.system_prompt, progress,
                      c.eval_batch_size)
    metrics = write_metrics(Path(cfg.output_dir) / "metrics.json", c.task, result, extra=extra)
    dump_predictions(Path(cfg.output_dir) / f"predictions-{safe_filename(c.task)}.jsonl",
                     data.test.rows[: len(gold)], gold, result["predictions"])
    logged = {"macro_f1": result["macro_f1"], "accuracy": result["accuracy"]}
    if "probe_macro_f1" in extra:
        logged["probe_macro_f1"] = extra["probe_macro_f1"]
    log_metrics(cfg, c.task, logged)
    print(f"decselfmask evaluation [{c.task}] (constrained scoring of the label options):")
    print(format_table(metrics))
    print(f"metrics written to {Path(cfg.output_dir) / 'metrics.json'}")
    return metrics


def _train(cfg, config: DecSelfMaskConfig, c: ClassificationConfig, model, tokenizer, texts, labels, options,
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
        report_to=_report_to(cfg),
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


def log_metrics(cfg, task: str, values: dict[str, float]) -> None:
    """The evaluation's metrics into the loggers the recipe configures (tensorboard under
    ``<output_dir>/runs/decselfmask``, and the active wandb run), as ``decselfmask/<task>/<name>``."""
    tags = {f"decselfmask/{task}/{k}": float(v) for k, v in values.items()}
    if cfg.use_tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(cfg.output_dir) / "runs" / "decselfmask"))
        for tag, value in tags.items():
            writer.add_scalar(tag, value, 0)
        writer.close()
    if cfg.use_wandb:
        try:
            import wandb
        except ImportError:
            return
        if wandb.run is not None:
            wandb.log(tags)


def _report_to(cfg) -> list[str]:
    targets = []
    if cfg.use_tensorboard:
        targets.append("tensorboard")
    if cfg.use_wandb:
        targets.append("wandb")
    return targets or ["none"]


def safe_filename(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:80] or "task"


def is_main_process() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("RANK", "0")) == 0
