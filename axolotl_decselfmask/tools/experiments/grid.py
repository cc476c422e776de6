"""The grid file: its schema (unknown keys are errors that name the key) and :func:`load_grid`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from axolotl_decselfmask.tools.experiments.methods import DEFAULT_METHODS, METHOD_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Strict):
    name: str = Field(min_length=1, description="Task name (unique within the corpus).")
    label_column: str = Field(description="Column of the corpus holding the label.")
    positive: str | int | None = Field(
        default=None,
        description="One-vs-rest: rows whose label equals this are 'yes', the others 'no'. Omit for multi-class.",
    )
    min_class_rows: int = Field(default=1, ge=1, description="Multi-class: drop classes with fewer rows (multi-label: labels).")
    multi_label: bool = Field(
        default=False,
        description=(
            "The column holds several labels per row (a list, or joined by label_separator): one yes/no question "
            "per label (question, with {label} in it), one results row per label."
        ),
    )
    label_separator: str = Field(default=";", min_length=1, description="multi_label: what joins a row's labels.")
    question: str = Field(
        min_length=1,
        description="The classification question asked after the text (multi_label: the question of one {label}).",
    )
    items: list[str] = Field(
        default_factory=list,
        description="Relevance items of this task. Default: its labels (multi-class) or `positive`.",
    )


class CorpusSpec(_Strict):
    name: str = Field(min_length=1)
    file: str = Field(description="The corpus table (csv, csv.gz, jsonl, parquet).")
    text_column: str = "text"
    lead_in: str | None = Field(default=None, description="Relevance lead-in for this corpus.")
    tasks: list[TaskSpec] = Field(min_length=1)


class SetFitSpec(_Strict):
    """The ``setfit:`` block of a grid (SetFit 1.2.0's TrainingArguments of the same names)."""

    num_iterations: int = Field(default=2, ge=1, description="Contrastive pairs drawn per labelled note (x2).")
    num_epochs: int = Field(default=1, ge=1, description="Epochs of the contrastive fine-tuning.")
    batch_size: int = Field(default=16, ge=1, description="Batch size of the contrastive fine-tuning.")
    max_seq_length: int = Field(default=128, ge=8, description="Word pieces of a note the encoder reads.")


class Grid(_Strict):
    """An experiment grid (the YAML file given to ``run``)."""

    model: str = Field(description="base_model of every run (a local folder).")
    methods: list[Literal[METHOD_NAMES]] = Field(
        default_factory=lambda: list(DEFAULT_METHODS),
        description=f"Methods to run (tools/experiments/methods.py). Default: {list(DEFAULT_METHODS)}.",
    )
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    labelled_per_task: int = Field(default=32, ge=2, description="Labelled examples per task (balanced over classes).")
    test_per_task: int = Field(
        default=100, ge=2,
        description="Rows of each task's fixed stratified test split (not used when test_notes is set).",
    )
    test_notes: int | None = Field(
        default=None, ge=1,
        description=(
            "One test set per corpus, shared by all of its tasks (instead of test_per_task's split per task): this "
            "many rows at random (seeded by split_seed), then, for each task from the rarest, rows with its label "
            "added until it has test_min_positives positive test rows (multi-class: of each class; multi_label: "
            "of each label kept). A test row is never labelled and never in the pool."
        ),
    )
    test_min_positives: int = Field(
        default=10, ge=1,
        description="test_notes: the least number of test rows of each task's positive label (each class, label).",
    )
    pool_size: int = Field(default=200, ge=1, description="Unlabelled texts per corpus (never a test row).")
    stage1_token_budget: int = Field(default=20000, ge=1, description="Tokens every stage-1 method trains on.")
    pseudo_label_texts: int = Field(default=64, ge=1, description="synthetic_labels: pool texts the SFT model labels.")
    probing: bool = Field(default=True, description="Probe the base model (sft runs) and each stage-1 model.")
    setfit_model: str = Field(
        default="models/all-minilm-l6-v2",
        description="setfit: the sentence-transformers folder SetFit starts from (`make setfit-model` writes it).",
    )
    setfit_packages: str = Field(
        default=".venv-setfit",
        description=(
            "setfit: a folder of packages put first on the setfit run's PYTHONPATH (`make setfit` installs setfit "
            "1.2.0 there, beside the venv: it needs an evaluate newer than Axolotl's pin). Not used when it does "
            "not exist and setfit imports in the venv itself."
        ),
    )
    setfit: SetFitSpec = Field(default_factory=lambda: SetFitSpec(), description="setfit: its training settings.")
    share_stage1_across_seeds: bool = Field(
        default=True,
        description=(
            "true: one Axolotl run per corpus and method, whose stage 1 (seed of the first seed) serves every "
            "seed's stage 2; seeds then vary the labelled sample and stage 2 only. false: one run per seed."
        ),
    )
    split_seed: int = Field(default=1234, description="Seed of the test splits and the pool (fixed across runs).")
    max_text_chars: int | None = Field(default=None, ge=100, description="Cut texts to this many characters.")
    stage1_models: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Stage 1 reused, not trained: method -> the folder of a stage-1 model saved by another grid's run, with "
            "{corpus} and {seed} filled in per run (e.g. ../ladder/outputs/experiments/ladder_4_hallmarks/runs/"
            "{corpus}/decselfmask-seed{seed}/output/stage1_merged). The method's runs start stage 2 (or its head) "
            "from that model with decselfmask.stage1: false, so a stage-2 setting or a classifier can be added to a "
            "stage 1 already trained. Only methods with a stage 1; a relative path is under the current folder."
        ),
    )
    recipe: dict[str, Any] = Field(default_factory=dict, description="Axolotl keys that override the runner's recipe.")
    decselfmask: dict[str, Any] = Field(default_factory=dict, description="Overrides of the decselfmask: block.")
    corpora: list[CorpusSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _stage1_models(self) -> "Grid":
        from axolotl_decselfmask.tools.experiments.methods import METHODS

        for method, template in self.stage1_models.items():
            if method not in self.methods:
                raise ValueError(f"stage1_models.{method}: not one of the grid's methods {list(self.methods)}")
            if not METHODS[method].stage1:
                raise ValueError(f"stage1_models.{method}: {method} has no stage 1 to reuse; name a method with one "
                                 "(decselfmask_early_stop, decselfmask_head, ...)")
            try:
                template.format(corpus="c", seed=0)
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"stage1_models.{method}: {template!r} may hold only {{corpus}} and {{seed}} "
                                 f"({err})") from None
        if self.stage1_models and self.share_stage1_across_seeds:
            raise ValueError("stage1_models: each seed's run starts from that seed's stage-1 model, so set "
                             "share_stage1_across_seeds: false (with true, one run would serve every seed from the "
                             "first seed's model)")
        return self

    @model_validator(mode="after")
    def _distinct(self) -> "Grid":
        names = [c.name for c in self.corpora]
        if len(set(names)) != len(names):
            raise ValueError(f"corpora: names must be distinct, got {names}")
        for c in self.corpora:
            tasks = [t.name for t in c.tasks]
            if len(set(tasks)) != len(tasks):
                raise ValueError(f"corpora[{c.name}].tasks: names must be distinct, got {tasks}")
            for t in c.tasks:
                if t.multi_label and (t.positive is not None or "{label}" not in t.question):
                    raise ValueError(f"corpora[{c.name}].tasks[{t.name}]: a multi_label task has no positive, and its "
                                     "question holds {label} (the question asked for each label)")
        return self


def load_grid(path: str | Path, data_dir: str | Path | None = None) -> Grid:
    """The grid at ``path``, its paths resolved (:func:`_resolve`). ``data_dir`` (``--data-dir``):
    every corpus file is looked up there by its file name, whatever folder the grid names."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no such grid file")
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        grid = Grid(**raw)
    except Exception as err:  # pydantic's message names the key
        raise SystemExit(f"{path}: invalid grid:\n{err}") from None
    base = path.parent
    grid.model = _resolve(grid.model, base)
    grid.setfit_model, grid.setfit_packages = _resolve(grid.setfit_model, base), _resolve(grid.setfit_packages, base)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise SystemExit(f"--data-dir {data_dir}: no such folder")
    for c in grid.corpora:
        if data_dir is not None:
            c.file = str((Path(data_dir) / Path(c.file).name).resolve())
            if not Path(c.file).exists():
                raise SystemExit(f"{path}: corpora[{c.name}].file: {Path(c.file).name} is not in --data-dir "
                                 f"{data_dir}; docs/experiments.md (Corpora) says where each public corpus comes from")
            continue
        c.file = _resolve(c.file, base)
        if not Path(c.file).exists():
            raise SystemExit(f"{path}: corpora[{c.name}].file {c.file} does not exist (or give the folder that holds "
                             "it with --data-dir)")
    return grid


def _resolve(p: str, base: Path) -> str:
    """Paths in a grid are relative to the current folder, or else to the grid file's folder."""
    if Path(p).is_absolute() or Path(p).exists():
        return str(Path(p).resolve())
    return str((base / p).resolve())
