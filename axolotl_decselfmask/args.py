"""The recipe's ``decselfmask:`` block, declared as pydantic models.

Axolotl drops unknown YAML keys silently, so every key this plugin reads is declared
here, with its default, its range and a description. A wrong value fails Axolotl's
config validation with a message that names the key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, model_validator

from axolotl_decselfmask.io.files import safe_filename

DEFAULT_LEAD_IN = "Which clinical finding does the text above describe?"
# relevance.prompt_style: completion (the authors' form, here in English: the item completes it)
DEFAULT_COMPLETION_LEAD_IN = "Given the patient's history, the patient presents"
DEFAULT_MASK_SYSTEM = "Fill in the masked part of the following text."
DEFAULT_CLASSIFY_SYSTEM = "Answer with one of the options."
MULTI_LABEL_QUESTION = "Does the text above concern {label}?"


class _Strict(BaseModel):
    # A typo inside our own block is an error, not a silently ignored key.
    model_config = ConfigDict(extra="forbid")


class RelevanceConfig(_Strict):
    """How the model scores which words of a text matter for a task item."""

    method: str = Field(
        default="attnlrp",
        description=(
            "Attribution method: attnlrp (AttnLRP, built in; the default: the only method whose map was "
            "above every random control on both faithfulness scores, docs/benchmark.md), grad_x_input "
            "(embedding x gradient), integrated_gradients, feature_ablation, attention, random (baseline), "
            "or one added by another package through the plugin hooks."
        ),
    )
    ig_steps: int = Field(default=32, ge=2, le=1024, description="integrated_gradients: interpolation steps.")
    ablation_unit: Literal["word", "sentence"] = Field(
        default="word", description="feature_ablation: what is ablated at a time."
    )
    target: Literal["sum_logprob", "token_logit", "max_logit"] = Field(
        default="sum_logprob",
        description=(
            "What is differentiated. sum_logprob: summed log-probability of the item's "
            "tokens (teacher-forced). token_logit: the logit of one item token, read at the "
            "position that predicts it. max_logit (the authors' scripts): the largest vocabulary "
            "logit at the position of one item token. token_position picks the token."
        ),
    )
    token_position: Literal["first", "middle", "last"] = Field(
        default="middle",
        description="Which item token token_logit and max_logit score (the authors' scripts: the middle one).",
    )
    prompt_style: Literal["question", "completion"] = Field(
        default="question",
        description=(
            "question: the text, a blank line, then lead_in as a question the item (the assistant "
            "turn) answers. completion (the authors' form): the text, a newline, then lead_in as a "
            "sentence the item completes; its default lead_in is "
            f"{DEFAULT_COMPLETION_LEAD_IN!r}."
        ),
    )
    lead_in: str = Field(
        default=DEFAULT_LEAD_IN,
        min_length=1,
        description=(
            "Appended to the text in the user turn: a question (prompt_style question) or a sentence "
            "the item completes (completion; if lead_in is not set, the completion default)."
        ),
    )
    model: str | None = Field(
        default=None,
        description="Model folder that scores relevance. Default: the recipe's base_model.",
    )
    batch_size: int = Field(default=4, ge=1, le=1024, description="Texts per batch.")
    shard_size: int = Field(
        default=64, ge=1, description="(text, item) pairs per cache shard; a stopped run resumes at the first missing shard."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description=("auto: the recipe's bf16 as the plugin resolved it (bfloat16 on a GPU with bf16 or a CPU with "
                     "native bf16, such as AMX; float32 elsewhere)."),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: cuda when available."
    )
    fast_backward: bool | Literal["auto"] = Field(
        default="auto",
        description=(
            "grad_x_input: run the backward pass with torch's float32 matmul precision 'medium' "
            "(1.25x faster here, maps within 5e-5 relative). auto: on when relevance runs on a CPU "
            "without AMX, where 'medium' still computes in float32 (oneDNN kernels); off on GPUs and "
            "AMX CPUs, where it would compute in TF32/bfloat16."
        ),
    )
    load_in_4bit: bool = Field(default=False, description="Score relevance on a 4-bit (bitsandbytes nf4) copy.")
    load_in_8bit: bool = Field(default=False, description="Score relevance on an 8-bit (bitsandbytes) copy.")

    @model_validator(mode="after")
    def _known_method(self) -> "RelevanceConfig":
        from axolotl_decselfmask.registry import relevance_method_names

        methods = relevance_method_names()
        if self.method not in methods:
            raise ValueError(
                f"decselfmask.relevance.method {self.method!r} is unknown; available: {sorted(methods)}"
            )
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("decselfmask.relevance: choose load_in_4bit or load_in_8bit, not both")
        if self.prompt_style == "completion" and "lead_in" not in self.model_fields_set:
            self.lead_in = DEFAULT_COMPLETION_LEAD_IN  # the question default does not fit a completion
        return self


class SpanConfig(_Strict):
    """How relevance scores become masked spans (hysteresis grouping)."""

    selector: str = Field(
        default="hysteresis",
        description="Span selector: hysteresis (the method's), top_k, random, or one added through the hooks.",
    )
    top_k_ratio: float = Field(default=0.15, gt=0.0, le=1.0, description="top_k: share of text tokens kept.")
    sigma: float = Field(default=1.0, ge=0.0, le=10.0, description="Gaussian smoothing width in tokens.")
    truncate: float = Field(
        default=1.0, gt=0.0, le=10.0,
        description=(
            "Gaussian kernel radius in sigmas, as scipy's truncate: radius = int(truncate * sigma + 0.5). "
            "1.0: 3 taps at sigma 1 (0.274, 0.452, 0.274; the authors' scripts), so a lone relevant token "
            "(0.452 > high 0.4) seeds a span. 4.0: 9 taps (centre 0.399; a lone token seeds none without "
            "rescale_after_smoothing), wider spans."
        ),
    )
    sign: Literal["auto", "positive", "absolute"] = Field(
        default="auto",
        description=(
            "How the relevance's sign counts before the |r|/max scaling. positive: max(r, 0) / max(r), only "
            "tokens that raise the item's score; absolute: |r| / max|r| (the authors' scripts), tokens that "
            "lower it count too. auto: positive for attnlrp, absolute for the other methods (what the "
            "faithfulness benchmark measured best for each: AttnLRP's negative relevance is large and "
            "points away from what drives the score)."
        ),
    )
    high: float = Field(default=0.4, gt=0.0, le=1.0, description="A span needs a token above this.")
    low: float = Field(default=0.2, ge=0.0, lt=1.0, description="A span grows while scores stay above this.")
    max_spans_per_text: int | None = Field(
        default=None, ge=1, description="Keep at most this many spans (highest peaks)."
    )
    max_span_fraction: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="Drop a span longer than this fraction of the text's characters.",
    )
    rescale_after_smoothing: bool = Field(
        default=False,
        description="Divide smoothed scores by their maximum again (lets a lone peak seed a span).",
    )

    @model_validator(mode="after")
    def _low_below_high(self) -> "SpanConfig":
        from axolotl_decselfmask.registry import span_selectors

        if self.selector not in span_selectors():
            raise ValueError(
                f"decselfmask.spans.selector {self.selector!r} is unknown; available: {sorted(span_selectors())}"
            )
        if self.low >= self.high:
            raise ValueError(
                f"decselfmask.spans.low ({self.low}) must be below decselfmask.spans.high ({self.high})"
            )
        return self


class MaskingConfig(_Strict):
    """How spans become masked-reconstruction training examples."""

    mask_token: str = Field(
        default="auto",
        min_length=1,
        description=(
            "What replaces each span. auto: one token that never occurs in text, the same in stage 1 and "
            "the mask-fill prompt: a reserved special token of the vocabulary (Llama 3: "
            "<|reserved_special_token_246|>, Gemma: <unused0>), else <|decselfmask_mask|> added as a new "
            "special token whose embedding row the plugin initialises and trains (docs: the mask token). "
            "Any other string: used as plain text, unless add_mask_token is true."
        ),
    )
    add_mask_token: bool = Field(
        default=False,
        description=(
            "With an explicit mask_token: add it to the vocabulary as one new token (the plugin adds it to "
            "`tokens:`); with LoRA, set `lora_modules_to_save: [embed_tokens, lm_head]`. Not needed with auto."
        ),
    )
    mask_init: Literal["mean", "model"] = Field(
        default="mean",
        description=(
            "The embedding row of the added mask token (mask_token: auto, where the vocabulary has no reserved "
            "token). mean: the mean of the vocabulary's rows. model: left as the embedding resize gives it "
            "(transformers' resize_token_embeddings with Axolotl's mean_resizing_embeddings, default false: "
            "normal(0, initializer_range); with stage 1 off drawn under decselfmask's seed, in stage 1 Axolotl's "
            "resize draws it and stage 1 trains it), the never-trained row the authors' SFT baseline meets (the "
            "experiments' sft_mask_fill). A reserved token's row is left as the checkpoint has it either way."
        ),
    )
    system_prompt: str = Field(default=DEFAULT_MASK_SYSTEM, description="System turn of each example.")
    spans_per_example: int = Field(
        default=1, ge=1, le=64,
        description="1: one example per span. n>1: up to n spans masked in one example, answers joined by answer_separator.",
    )
    answer_separator: str = Field(default="\n", description="Joins the answers of several spans.")
    write_jsonl: bool = Field(
        default=True,
        description=(
            "Keep the readable masked examples (examples.jsonl) in the cache. false: the cache "
            "holds only relevance scores and offsets (no text); examples are rebuilt from them."
        ),
    )


class ContinualPretrainingConfig(_Strict):
    """The rows of the ``axolotl_decselfmask.continual_pretraining`` dataset type (the continual-pretraining
    baseline's stage 1)."""

    form: Literal["raw", "authors"] = Field(
        default="raw",
        description=(
            "raw: each pool text as it is, then eos, no chat template (one row a text). authors: the "
            "masked-reconstruction rows (the relevance, spans and cache of masked_reconstruction) with their "
            "spans put back, each in the chat template as one user turn after an empty system turn, eos "
            "appended (one row per masked example, as the authors' first commit). Both: loss on every token."
        ),
    )


def items_per_text_value(value):
    """``decselfmask.items_per_text`` as the block keeps it: a whole number >= 1, or ``all``; -1 (the
    authors' scripts' ``keep_n_sequences_per_note`` for every item) is ``all``."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value == -1 and isinstance(value, int) and not isinstance(value, bool):
        return "all"
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError(
        f"decselfmask.items_per_text: {value!r} is not a number of items per note; write a whole number "
        "N >= 1 (N random items per note, drawn without replacement under decselfmask.seed; every item when "
        "N >= the number of items), or all (or -1, the authors' scripts' value) for every item")


class PseudoLabelConfig(_Strict):
    """The synthetic-labels baseline: the stage-2 model labels unlabelled texts, the confident
    labels join the gold ones, and stage 2 is trained again from the start on both."""

    enabled: bool = Field(default=False, description="Add confident pseudo-labels of pool_file, then train stage 2 again.")
    pool_file: str | None = Field(default=None, description="Unlabelled texts to label (jsonl, csv, parquet or a saved HF dataset).")
    text_column: str = Field(default="text", description="Column of pool_file holding the text.")
    max_texts: int = Field(default=256, ge=1, description="Label at most the first n texts of pool_file.")
    min_confidence: float = Field(
        default=0.6, ge=0.0, le=1.0,
        description="Keep a pseudo-label when its probability among the label options is at least this.",
    )
    max_per_label: int = Field(default=32, ge=1, description="Keep at most this many pseudo-labels per label (the most confident).")


#: the settings of each head style (:class:`HeadConfig`) that are not given: ``package`` (this
#: project's head) and ``authors`` (the head of the authors' ``d_classification_head.sh``)
HEAD_STYLES: dict[str, dict] = {
    "package": {"prompt": "chat", "position": "auto", "activation": "relu", "dropout": 0.0, "standardise": True,
                "batch_size": 0, "epochs": 200},
    "authors": {"prompt": "raw", "position": "last", "activation": "none", "dropout": 0.1, "standardise": False,
                "batch_size": 64, "epochs": 1},
}


class EarlyStoppingConfig(_Strict):
    """``classification.early_stopping``: stage 2 trained until it stops improving, its number of
    epochs chosen on a validation split of the labelled notes (never the test notes;
    stage2/epochs.py, docs/method.md "Stage 2 until it stops improving")."""

    enabled: bool = Field(
        default=False,
        description=(
            "Choose stage 2's epochs on a validation split of the labelled notes: train on the rest epoch by "
            "epoch, score the validation notes after each, stop after patience epochs without a gain; the chosen "
            "epochs and the curve go to metrics.json (stage2_epochs). Replaces num_epochs; not with max_steps."
        ),
    )
    validation_fraction: float = Field(
        default=0.25, gt=0.0, lt=1.0,
        description="Share of each task's labelled notes held out for validation (stratified by label, seeded).",
    )
    max_epochs: int = Field(default=20, ge=1, le=100, description="Most epochs the search trains.")
    patience: int = Field(default=2, ge=1, description="Epochs without a gain over the best before the search stops.")
    threshold: float = Field(default=0.0, ge=0.0, description="A gain is more than this over the best so far.")
    metric: Literal["macro_f1", "macro_f1_argmax"] = Field(
        default="macro_f1",
        description=(
            "What is compared: macro_f1, the validation Macro F1 of the calibrated decision (fitted on the "
            "training part's scores, as the run fits it; pool modes use balanced), or macro_f1_argmax, of the "
            "options' argmax; averaged over the tasks of a joint stage 2."
        ),
    )
    final: Literal["retrain", "best_epoch"] = Field(
        default="retrain",
        description=(
            "retrain: a fresh LoRA on every labelled note for the chosen epochs (uses every label); best_epoch: "
            "the search's LoRA at its best epoch (trained on the training part only)."
        ),
    )


class HeadConfig(_Strict):
    """``classification.method: head``: a small classifier (hidden -> hidden_size -> labels) trained on
    the labelled examples' hidden states of the frozen (stage-1) model. ``style`` fills in every
    setting left unset: ``package`` (the chat prompt, ReLU, standardised features, full-batch, 200
    epochs) or ``authors`` (the raw text ``note + "{item}? <mask>"`` without chat template, read at
    its last token; no activation; dropout 0.1; no standardisation; mini-batches of 64; 1 epoch)."""

    style: Literal["package", "authors"] = Field(
        default="package",
        description=(
            "package: this project's head; authors: the authors' (d_classification_head.sh: raw text "
            "note + '{item}? <mask>', last token, H -> 256 -> dropout 0.1 -> labels without activation, AdamW "
            "1e-3, batch 64, 1 epoch). Sets every setting below that is not given."
        ),
    )
    hidden_size: int = Field(default=256, ge=1, description="Width of the head's hidden layer (the paper: 256).")
    epochs: Optional[int] = Field(default=None, ge=1, description="AdamW epochs of the head (default: the style's, 200 or 1).")
    learning_rate: float = Field(default=1e-3, gt=0.0, description="The head's learning rate.")
    weight_decay: float = Field(default=1e-2, ge=0.0, description="The head's AdamW weight decay (torch's default).")
    position: Optional[Literal["auto", "last", "mask"]] = Field(
        default=None,
        description=(
            "Where the hidden state is read in the prompt: mask (the mask token; an error if the prompt "
            "has none), last (the last prompt token, as probing and the authors' head), auto (mask when the "
            "prompt has a mask, as the mask_fill prompt, else last). Default: the style's (auto, last)."
        ),
    )
    prompt: Optional[Literal["chat", "raw"]] = Field(
        default=None,
        description=(
            "chat: the classification prompt as the evaluation renders it (chat template, question, options); "
            "raw: the text followed by the question (with the mask_fill prompt: '{item}? <mask>'), no chat "
            "template, tokenised as the tokenizer does by default. Default: the style's (chat, raw)."
        ),
    )
    activation: Optional[Literal["relu", "none"]] = Field(
        default=None, description="Between the two layers: relu, or none (linear). Default: the style's (relu, none).")
    dropout: Optional[float] = Field(
        default=None, ge=0.0, lt=1.0,
        description="Dropout after the hidden layer, in training (default: the style's, 0 or 0.1).")
    standardise: Optional[bool] = Field(
        default=None,
        description="Standardise the features with the training statistics (default: the style's, true or false).")
    batch_size: Optional[int] = Field(
        default=None, ge=0,
        description="Mini-batch size (shuffled, seeded); 0: the whole training set in one batch. Default: the "
                    "style's (0, 64).")
    decision_scores: Literal["out_of_fold", "in_sample"] = Field(
        default="out_of_fold",
        description=(
            "The labelled examples' scores the decision (calibration) is fitted on: out_of_fold (each scored "
            "by a head trained on the other folds; the final head is trained on all of them) or in_sample "
            "(by the final head, which was trained on them)."
        ),
    )
    folds: int = Field(default=5, ge=2, description="Stratified, seeded folds of decision_scores: out_of_fold.")

    @model_validator(mode="after")
    def _style_defaults(self) -> "HeadConfig":
        for key, value in HEAD_STYLES[self.style].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        return self


def _authors_head(value):
    """``probing.authors_head``: a HeadConfig whose ``style`` is ``authors`` unless given."""
    return {"style": "authors", **value} if isinstance(value, dict) else value


class ProbingConfig(_Strict):
    """Probing: heads trained on the frozen model's hidden states of the labelled examples, scored
    (argmax) on the test examples: ``package`` (the last token of the chat classification prompt, a
    classifier hidden -> hidden_size -> labels with ReLU) and ``authors`` (:class:`HeadConfig` of
    style ``authors``, ``authors_head``)."""

    enabled: bool = Field(default=False, description="Probe the model before stage 2 (after stage 1, or the base model).")
    hidden_size: int = Field(default=256, ge=1, description="Width of the classifier's hidden layer (the paper: 256).")
    epochs: int = Field(default=200, ge=1, description="Full-batch training epochs of the classifier.")
    learning_rate: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=1e-2, ge=0.0)
    heads: list[Literal["package", "authors"]] = Field(
        default_factory=lambda: ["package", "authors"], min_length=1,
        description=(
            "The heads probing trains and scores: package (the settings above) and authors (authors_head's). "
            "Each one's Macro F1 and per-note predictions go into metrics.json (probe_heads)."
        ),
    )
    authors_head: Annotated[HeadConfig, BeforeValidator(_authors_head)] = Field(
        default_factory=lambda: HeadConfig(style="authors"),
        description="The authors' head of probing (style authors unless set; e.g. epochs).",
    )


def field_groups(model: type[BaseModel]) -> list[tuple[str, list[str]]]:
    """``(heading, keys)`` of each ``> Parameters that control ...`` section of ``model``'s docstring,
    in order (TRL's layout: the keys of a section are the backquoted names under its heading); [] for a
    model whose docstring has no section."""
    groups: list[tuple[str, list[str]]] = []
    for line in (model.__doc__ or "").splitlines():
        text = line.strip()
        if text.startswith("> Parameters that control"):
            groups.append((text.removeprefix("> "), []))
        elif groups:
            groups[-1][1].extend(re.findall(r"`(\w+)`", text))
    return groups


class ClassificationConfig(_Strict):
    r"""Stage 2 (supervised classification with TRL) and the evaluation.

    Parameters:
        > Parameters that control what stage 2 runs

            `enabled`, `train`, `method`, `head`, `joint`

        > Parameters that control the task (an entry of `tasks` may set each of these for itself)

            `task`, `train_file`, `test_file`, `test_fraction`, `text_column`, `label_column`, `id_column`,
            `labels`, `question`, `multi_label`, `label_separator`, `label_question`, `seed`

        > Parameters that control the prompt

            `prompt`, `system_prompt`, `label_answers`, `max_length`

        > Parameters that control the training

            `lora_r`, `lora_alpha`, `lora_dropout`, `learning_rate`, `num_epochs`, `max_steps`, `batch_size`,
            `gradient_accumulation_steps`, `weight_decay`, `warmup_ratio`, `lr_scheduler`, `train_on_inputs`,
            `max_train_examples`, `save_steps`, `save_total_limit`, `logging_steps`, `pseudo_labels`,
            `early_stopping`

        > Parameters that control the evaluation

            `eval_batch_size`, `option_chunk`, `max_test_examples`, `scorer`

        > Parameters that control the decision

            `calibration`, `calibration_pool_texts`, `calibration_temperature`
    """

    # Parameters that control what stage 2 runs
    enabled: bool = Field(default=True, description="Run stage 2 after stage 1, in the same `axolotl train`.")
    train: bool = Field(
        default=True,
        description="false: no stage-2 training; the model is evaluated as it is (the zero-shot baseline).",
    )
    method: Literal["lora", "head"] = Field(
        default="lora",
        description=(
            "How stage 2 classifies: lora (a LoRA trained to answer the label; the options scored by "
            "log-probability) or head (a small classifier per task on the frozen model's hidden state, "
            "see head)."
        ),
    )
    head: HeadConfig = Field(default_factory=HeadConfig, description="The classification head (method: head).")
    joint: bool = Field(
        default=True,
        description=(
            "One stage-2 LoRA trained on the labelled examples of every task together (the paper), saved "
            "to <output_dir>/stage2. false: one LoRA per task, in <output_dir>/stage2/<task>."
        ),
    )

    # Parameters that control the task (an entry of `tasks` may set each of these for itself)
    task: str = Field(default="task", min_length=1, description="Task name used in metrics.json.")
    train_file: str | None = Field(default=None, description="Labelled examples (jsonl, csv, parquet or a saved HF dataset).")
    test_file: str | None = Field(default=None, description="Test examples; Macro F1 is computed on these.")
    test_fraction: float | None = Field(
        default=None, gt=0.0, lt=1.0,
        description=(
            "Instead of test_file: this share of train_file's rows, stratified by label and seeded by "
            "decselfmask.seed, is the test set, the rest the training set; the split is saved to "
            "<output_dir>/split-<task>.json (row numbers of each side) and reused by a rerun."
        ),
    )
    text_column: str = Field(default="text", description="Column holding the text.")
    label_column: str = Field(default="label", description="Column holding the label.")
    id_column: str = Field(
        default="id",
        description="Column holding each row's id, copied into predictions-<task>.jsonl when the file has it (else the row number).",
    )
    labels: list[str] = Field(
        default_factory=list,
        description="The label options, in order. Empty: the sorted distinct labels of train_file.",
    )
    question: str = Field(
        default="Which category does the text above belong to?",
        min_length=1,
        description="Question asked after the text; the options are listed after it.",
    )
    multi_label: bool | Literal["auto"] = Field(
        default="auto",
        description=(
            "true: each note has a set of labels (a JSON list, or labels joined by label_separator; an empty cell "
            "is the empty set), and each label becomes one yes/no question (label_question), trained in stage 2 "
            "and calibrated and evaluated per label (stage2/multilabel.py). auto: true when the training file's "
            "label column holds lists or label_separator (and no option of labels contains it)."
        ),
    )
    label_separator: str = Field(
        default=";", min_length=1,
        description="multi_label: what joins the labels of one note in a text cell (spaces around a label are dropped).",
    )
    label_question: str = Field(
        default=MULTI_LABEL_QUESTION, min_length=1,
        description=(
            "multi_label: the question asked for each label, {label} replaced by the label; with prompt: mask_fill "
            "it is followed by the mask."
        ),
    )
    seed: int | None = Field(
        default=None,
        description=(
            "The seed of this task's stage-2 training (the LoRA's or head's initialisation, the example "
            "order). Tasks of different seeds never share a stage-2 classifier: joint stage 2 trains one LoRA "
            "per seed, in <output_dir>/stage2/seed<k> when there are several (the comparison runner's seeds "
            "with a shared stage 1). Null: decselfmask.seed."
        ),
    )

    # Parameters that control the prompt
    prompt: Literal["options", "mask_fill"] = Field(
        default="options",
        description=(
            "options: system_prompt, the text, the question and the option list. mask_fill (the paper's): "
            "the stage-1 system prompt (masking.system_prompt), the text, the question (or the task's one "
            "item) followed by the one-token mask, then the option list."
        ),
    )
    system_prompt: str = Field(default=DEFAULT_CLASSIFY_SYSTEM, description="System turn of the classification prompt.")
    label_answers: list[str] = Field(
        default_factory=lambda: ["yes", "no"], min_length=2, max_length=2,
        description="multi_label: the two options of every label question, the first meaning the note has the label.",
    )
    max_length: int | None = Field(
        default=None, ge=16, description="Token limit of a classification prompt. Default: sequence_len."
    )

    # Parameters that control the training
    lora_r: int = Field(default=32, ge=1, description="Stage-2 LoRA rank (the paper: 32).")
    lora_alpha: int = Field(default=64, ge=1, description="Stage-2 LoRA alpha (the paper: 64).")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    learning_rate: float = Field(default=3e-4, gt=0.0, description="Stage-2 learning rate (the paper: 3e-4).")
    num_epochs: float = Field(default=1.0, gt=0.0, le=100.0, description="Stage-2 epochs (the paper: 1).")
    max_steps: int | None = Field(
        default=None, ge=1, description="Stage-2 optimiser steps; when set it overrides num_epochs.")
    batch_size: int = Field(default=8, ge=1, le=4096, description="Stage-2 per-device batch size.")
    gradient_accumulation_steps: int = Field(
        default=1, ge=1, le=4096, description="Micro-batches per optimiser step (the paper: 16 x 4 = 64).")
    weight_decay: float = Field(default=0.001, ge=0.0, le=1.0, description="AdamW weight decay (the paper: 0.001).")
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0, description="Share of the steps spent warming up (the paper: 0.1).")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        default="cosine", description="Learning-rate schedule (the paper: cosine).")
    train_on_inputs: bool = Field(
        default=False,
        description="Loss on the whole prompt too, not only on the label (the authors' shipped runs: true).",
    )
    max_train_examples: int | None = Field(
        default=None, ge=1, description="Train (and fit the decision) on the first n labelled rows only.")
    save_steps: int | None = Field(
        default=None, ge=1,
        description=(
            "Save a stage-2 checkpoint every n steps in the stage-2 folder (default: none). A stopped run resumes "
            "from the newest when it starts from the same stage-1 weights with the same labelled examples, "
            "settings and seed; otherwise the checkpoints are removed and stage 2 starts over (docs/resuming.md)."
        ),
    )
    save_total_limit: int | None = Field(default=2, ge=1, description="Stage-2 checkpoints kept.")
    logging_steps: int = Field(default=5, ge=1, description="Stage-2 loss logged every n steps.")
    pseudo_labels: PseudoLabelConfig = Field(default_factory=PseudoLabelConfig)
    early_stopping: EarlyStoppingConfig = Field(
        default_factory=EarlyStoppingConfig,
        description="Stage 2's epochs chosen on a validation split of the labelled notes (enabled: false: num_epochs).",
    )

    # Parameters that control the evaluation
    eval_batch_size: int = Field(default=8, ge=1)
    option_chunk: int = Field(
        default=8, ge=1,
        description=(
            "Evaluation: label options scored together per text. Each option gets its own copy of the "
            "prompt's key/value cache, so memory grows with this (times eval_batch_size), not with the "
            "number of labels; the scores are the same for any value."
        ),
    )
    max_test_examples: int | None = Field(default=None, ge=1, description="Evaluate on the first n test rows only.")
    scorer: Literal["options", "string_match", "both"] = Field(
        default="options",
        description=(
            "How the test notes are scored. options: the label options by log-probability (the decision "
            "below). string_match or both: the option figures and, beside them in metrics.json, the authors' "
            "string-match Macro F1 (the teacher-forced argmax answer after the assistant header, every "
            "off-format answer a class of its own; per task and pooled over the tasks) with the share of "
            "off-format answers (stage2/string_match.py; docs/method.md)."
        ),
    )

    # Parameters that control the decision
    calibration: Literal["none", "balanced", "labelled", "pool", "pool_uncorrected"] = Field(
        default="balanced",
        description=(
            "The decision on the option scores (stage2/calibration.py; never reads the test file). none: the "
            "argmax. balanced: the per-class bias fitted on the labelled examples removed, uniform priors. "
            "labelled: the same with the labelled file's label distribution as priors (when it is a random sample). "
            "pool: bias removed, priors re-estimated by EM on calibration_pool_texts unlabelled pool notes. "
            "pool_uncorrected: EM without the bias correction (for comparison). metrics.json keeps macro_f1_argmax."
        ),
    )
    calibration_pool_texts: int = Field(
        default=256, ge=1, le=100000,
        description="pool calibration: at most this many unlabelled pool notes (a seeded sample, no test text) are scored.",
    )
    calibration_temperature: bool = Field(
        default=False,
        description=(
            "Also fit the softmax temperature on the labelled examples (bias-corrected temperature scaling). "
            "They are the training examples, so the fitted temperature is optimistic."
        ),
    )

    @model_validator(mode="after")
    def _labels_distinct(self) -> "ClassificationConfig":
        check_test_source(self)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("decselfmask.classification.labels has duplicates")
        if self.labels and len(self.labels) < 2:
            raise ValueError("decselfmask.classification.labels needs at least 2 options")
        if self.early_stopping.enabled and self.max_steps:
            raise ValueError("decselfmask.classification.early_stopping.enabled chooses stage 2's epochs; "
                             f"max_steps ({self.max_steps}) would override them: remove one of the two")
        if "{label}" not in self.label_question:
            raise ValueError("decselfmask.classification.label_question must contain {label} (where the label goes)")
        if len({a.strip() for a in self.label_answers}) != 2 or not all(a.strip() for a in self.label_answers):
            raise ValueError(f"decselfmask.classification.label_answers needs two distinct answers, got "
                             f"{self.label_answers}")
        return self


def check_test_source(c) -> None:
    """A task's test rows come from test_file or from test_fraction of train_file, not both."""
    if c.test_file and c.test_fraction is not None:
        raise ValueError(
            f"decselfmask [{c.task}]: test_file ({c.test_file}) and test_fraction ({c.test_fraction}) are both set; "
            "keep test_file for a separate test set, or test_fraction to split train_file")


#: the keys of ``classification`` that an entry of ``tasks`` may set for itself: the group "Parameters that
#: control the task" of :class:`ClassificationConfig`, from which :class:`TaskConfig` is made
TASK_KEYS = ("task", "train_file", "test_file", "test_fraction", "text_column", "label_column", "id_column",
             "labels", "question", "multi_label", "label_separator", "label_question", "seed")

#: ``tasks[]`` keys whose description says more than "null takes classification's value"
_TASK_DESCRIPTIONS = {
    "test_fraction": "This task's test rows: a share of its train_file (replaces an inherited test_file), or set test_file.",
}


class _TaskChecks(_Strict):
    """The checks of one ``tasks`` entry; its keys are added by :func:`_task_field`."""

    @model_validator(mode="after")
    def _one_test_source(self) -> "TaskConfig":
        check_test_source(self)
        return self


def _task_field(name: str) -> tuple:
    """``(type, Field)`` of ``tasks[].<name>``, made from ``classification.<name>``: the same type and
    range, and null (the default) takes the value of ``classification``; ``task`` stays required."""
    info = ClassificationConfig.model_fields[name]
    annotation = info.annotation if name == "task" else Optional[info.annotation]
    if info.metadata:  # the range (ge, lt, min_length...) of classification's key
        annotation = Annotated[(annotation, *info.metadata)]
    if name == "task":
        return annotation, Field(description=info.description)
    return annotation, Field(
        default=None, description=_TASK_DESCRIPTIONS.get(name, f"This task's value; null takes `classification.{name}`."))


TaskConfig = create_model(
    "TaskConfig",
    __base__=_TaskChecks,
    __module__=__name__,
    __doc__="""One task of a many-task run: its files and labels. Keys left out are taken from
    ``decselfmask.classification``.""",
    **{name: _task_field(name) for name in TASK_KEYS},
    items=(list[str], Field(
        default_factory=list,
        description="Task items this task adds to the relevance items. Empty: its labels.",
    )),
)


class DecSelfMaskConfig(_Strict):
    """Settings of the DecSelfMask plugin (the recipe's ``decselfmask:`` block)."""

    items: list[str] = Field(
        default_factory=list,
        description=(
            "Task items the relevance is computed for (e.g. 'Presence of pacemaker'). "
            "Empty: the classification labels."
        ),
    )
    protocol: Literal["default", "paper"] = Field(
        default="default",
        description=(
            "paper: the authors' procedure as their scripts run it (AttnLRP, max-logit target, 9 random "
            "items per note, joint stage 2 in the mask-fill format, their stage-2 settings with LoRA alpha 16, "
            "the string-match scorer beside the options; see docs/method.md, The paper's procedure). Keys "
            "written in the recipe override the preset."
        ),
    )
    items_per_text: Annotated[int, Field(ge=1)] | Literal["all"] = Field(
        default=1,
        description=(
            "Items scored per unlabelled text: N drawn at random per text, without replacement, under seed "
            "(every item when N >= the number of items), so every pool text gets at least one; all (or -1): "
            "every item. The authors' keep_n_sequences_per_note: 9 in their first commit's relevance run."
        ),
    )
    seed: int = Field(default=0, description="Seed of item choice and example order.")
    stage1: bool = Field(default=True, description="false skips masked-reconstruction training: the plain-SFT baseline.")
    fallback_chat_template: bool = Field(
        default=True,
        description="Use a plain built-in chat template when the tokenizer has none (false: error).",
    )
    drop_test_texts_from_pool: bool = Field(
        default=False,
        description=(
            "Unlabelled texts that also appear in classification.test_file are an error; "
            "true drops them from the pool (counted) instead."
        ),
    )
    max_texts: int | None = Field(default=None, ge=1, description="Use only the first n unlabelled texts.")
    stage1_token_budget: int | None = Field(
        default=None, ge=1,
        description=(
            "Stage-1 examples are kept, in order, while their summed token count stays within this "
            "budget (the same budget makes stage-1 methods comparable). Default: all examples."
        ),
    )
    cpu_threads: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "CPU threads of each training process. auto: every core of the process's share when "
            "`accelerate launch` (how `axolotl train` starts) set OMP_NUM_THREADS=1; any other "
            "OMP_NUM_THREADS is kept. A number pins it."
        ),
    )
    cache_dir: str | None = Field(
        default=None,
        description="Where relevance and masked examples are cached. Default: <dataset_prepared_path>/decselfmask.",
    )
    relevance: RelevanceConfig = Field(default_factory=RelevanceConfig)
    spans: SpanConfig = Field(default_factory=SpanConfig)
    masking: MaskingConfig = Field(default_factory=MaskingConfig)
    continual_pretraining: ContinualPretrainingConfig = Field(default_factory=ContinualPretrainingConfig)
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig)
    tasks: list[TaskConfig] = Field(
        default_factory=list,
        description="Many tasks over one pool: each entry overrides classification's files, columns, labels and question.",
    )
    probing: ProbingConfig = Field(default_factory=ProbingConfig)
    hub_model_id: str | None = Field(
        default=None,
        description=(
            "After stage 2: build output_dir/hub (the classifier, stage 1 applied and the stage-2 LoRA merged in, "
            "loaded by AutoModelForCausalLM.from_pretrained; its decisions, results, recipe and card) and upload it "
            "to this Hugging Face model repository, created if missing. Not Axolotl's hub_model_id, which pushes "
            "the stage-1 model (a mask-filler) when stage 1 ends. The token is huggingface_hub's (HF_TOKEN, or "
            "`hf auth login`); offline or without one the run says so at start and does not upload."
        ),
    )
    hub_private: bool = Field(default=True, description="Create the hub repository as private (false: public).")
    hub_revision: str | None = Field(
        default=None, description="Branch of the hub repository to upload to (created if missing). Default: main.")

    @model_validator(mode="before")
    @classmethod
    def _protocol_preset(cls, data):
        from axolotl_decselfmask.protocol import resolve_preset

        return resolve_preset(data) if isinstance(data, dict) else data

    @model_validator(mode="before")
    @classmethod
    def _items_per_text(cls, data):
        if isinstance(data, dict) and "items_per_text" in data:
            data = {**data, "items_per_text": items_per_text_value(data["items_per_text"])}
        return data

    def items_per_text_count(self) -> int:
        """How many items each text is scored for."""
        n = len(self.task_items())
        return n if self.items_per_text == "all" else min(self.items_per_text, max(n, 1))

    @model_validator(mode="after")
    def _distinct_tasks(self) -> "DecSelfMaskConfig":
        names = [t.task for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"decselfmask.tasks: task names must be distinct, got {names}")
        files: dict[str, str] = {}
        for name in names:
            # compared without case: one file on macOS and Windows file systems
            other = files.setdefault(safe_filename(name).casefold(), name)
            if other != name:
                a, b = safe_filename(other), safe_filename(name)
                same = (f"both become the file name {a!r}" if a == b else
                        f"become the file names {a!r} and {b!r}, one file where case is ignored (macOS, Windows)")
                raise ValueError(
                    f"decselfmask.tasks: task names {other!r} and {name!r} {same}, so their predictions and "
                    "stage-2 folders would overwrite each other (file names keep letters, digits, '-' and '_'); "
                    "rename one of them"
                )
        for n, task in enumerate(self.task_configs()):
            if task.labels and len(task.labels) < 2:
                raise ValueError(f"decselfmask.tasks[{n}].labels needs at least 2 options")
            if "{label}" not in task.label_question:
                raise ValueError(f"decselfmask.tasks[{n}].label_question must contain {{label}} (where the label goes)")
            check_test_source(task)
        return self

    def task_configs(self) -> list[ClassificationConfig]:
        """One classification setting per task (``classification`` alone when ``tasks`` is empty)."""
        if not self.tasks:
            return [self.classification]
        out = []
        for t in self.tasks:
            update = {k: v for k, v in t.model_dump(exclude={"items"}).items() if v is not None}
            if ("test_file" in update) != ("test_fraction" in update):  # a task's own test source replaces the shared one
                update.setdefault("test_file", None)
                update.setdefault("test_fraction", None)
            out.append(self.classification.model_copy(update=update))
        return out

    def task_items(self) -> list[str]:
        """The relevance items: ``items``, else each task's items (or labels), in order, once each."""
        if self.items:
            return list(self.items)
        if not self.tasks:
            return list(self.classification.labels)
        seen: dict[str, None] = {}
        for t, c in zip(self.tasks, self.task_configs()):
            for item in (t.items or c.labels):
                seen.setdefault(item, None)
        return list(seen)


class DecSelfMaskArgs(BaseModel):
    """What the plugin adds to Axolotl's config schema: one nested block."""

    decselfmask: DecSelfMaskConfig = Field(
        default_factory=DecSelfMaskConfig,
        description="DecSelfMask settings (see docs/configuration.md).",
    )


def plugin_config(cfg) -> DecSelfMaskConfig:
    """The validated ``decselfmask:`` block of an Axolotl config."""
    block = cfg.get("decselfmask") or {}
    if hasattr(block, "to_dict"):
        block = block.to_dict()
    return DecSelfMaskConfig(**block)
