"""The comparison of the paper on public data: methods x tasks x seeds, through Axolotl.

::

    python -m axolotl_decselfmask.experiments run GRID.yml --out DIR
    python -m axolotl_decselfmask.experiments report --out DIR

A grid names corpora (a table with a text column and label columns), tasks over each corpus
(multi-class, or one-vs-rest with ``positive``), the methods, the seeds and the sizes. The
runner writes the data of every task and seed (a fixed stratified test split per task, held
constant across methods and seeds; a labelled sample per seed; an unlabelled pool that never
holds a test row), one Axolotl recipe per run, runs ``axolotl train`` on each, and collects
every run's ``metrics.json`` into ``results.csv``, ``results.md`` and plots. A run that has
finished is not run again (delete its folder to redo it).

Methods (each a recipe of the same plugin; see :data:`METHODS`): ``zero_shot``, ``sft``,
``continual_pretraining``, ``synthetic_labels``, ``random_masking``, ``decselfmask``. The
stage-1 methods train one epoch on the same ``stage1_token_budget``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from axolotl_decselfmask.io.files import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    fingerprint,
    read_json,
)
from axolotl_decselfmask.stage1.budget import STATS_FILE

LOG = logging.getLogger(__name__)

METHODS = ("zero_shot", "sft", "continual_pretraining", "synthetic_labels", "random_masking", "decselfmask")
STAGE1_METHODS = ("continual_pretraining", "random_masking", "decselfmask")
BASELINE = "sft"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _yaml_dump(value) -> str:
    """YAML without anchors and aliases: recipes are read by people."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    return yaml.dump(value, Dumper=Dumper, sort_keys=False)


class TaskSpec(_Strict):
    name: str = Field(min_length=1, description="Task name (unique within the corpus).")
    label_column: str = Field(description="Column of the corpus holding the label.")
    positive: str | int | None = Field(
        default=None,
        description="One-vs-rest: rows whose label equals this are 'yes', the others 'no'. Omit for multi-class.",
    )
    min_class_rows: int = Field(default=1, ge=1, description="Multi-class: drop classes with fewer rows.")
    question: str = Field(min_length=1, description="The classification question asked after the text.")
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


class Grid(_Strict):
    """An experiment grid (the YAML file given to ``run``)."""

    model: str = Field(description="base_model of every run (a local folder).")
    methods: list[Literal[METHODS]] = Field(default_factory=lambda: list(METHODS))
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    labelled_per_task: int = Field(default=32, ge=2, description="Labelled examples per task (balanced over classes).")
    test_per_task: int = Field(default=100, ge=2, description="Rows of each task's fixed stratified test split.")
    pool_size: int = Field(default=200, ge=1, description="Unlabelled texts per corpus (never a test row).")
    stage1_token_budget: int = Field(default=20000, ge=1, description="Tokens every stage-1 method trains on.")
    pseudo_label_texts: int = Field(default=64, ge=1, description="synthetic_labels: pool texts the SFT model labels.")
    probing: bool = Field(default=True, description="Probe the base model (sft runs) and each stage-1 model.")
    share_stage1_across_seeds: bool = Field(
        default=True,
        description=(
            "true: one Axolotl run per corpus and method, whose stage 1 (seed of the first seed) serves every "
            "seed's stage 2; seeds then vary the labelled sample and stage 2 only. false: one run per seed."
        ),
    )
    split_seed: int = Field(default=1234, description="Seed of the test splits and the pool (fixed across runs).")
    max_text_chars: int | None = Field(default=None, ge=100, description="Cut texts to this many characters.")
    recipe: dict[str, Any] = Field(default_factory=dict, description="Axolotl keys that override the runner's recipe.")
    decselfmask: dict[str, Any] = Field(default_factory=dict, description="Overrides of the decselfmask: block.")
    corpora: list[CorpusSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> "Grid":
        names = [c.name for c in self.corpora]
        if len(set(names)) != len(names):
            raise ValueError(f"corpora: names must be distinct, got {names}")
        for c in self.corpora:
            tasks = [t.name for t in c.tasks]
            if len(set(tasks)) != len(tasks):
                raise ValueError(f"corpora[{c.name}].tasks: names must be distinct, got {tasks}")
        return self


def load_grid(path: str | Path) -> Grid:
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
    for c in grid.corpora:
        c.file = _resolve(c.file, base)
        if not Path(c.file).exists():
            raise SystemExit(f"{path}: corpora[{c.name}].file {c.file} does not exist")
    return grid


def _resolve(p: str, base: Path) -> str:
    """Paths in a grid are relative to the current folder, or else to the grid file's folder."""
    if Path(p).is_absolute() or Path(p).exists():
        return str(Path(p).resolve())
    return str((base / p).resolve())


# ----------------------------------------------------------------------------- data

def _read_corpus(c: CorpusSpec, max_chars: int | None) -> list[dict]:
    from axolotl_decselfmask.io.tables import read_table

    rows = read_table(c.file, f"corpora[{c.name}].file")
    needed = {c.text_column, *(t.label_column for t in c.tasks)}
    missing = needed - set(rows[0])
    if missing:
        raise SystemExit(f"{c.file}: no column(s) {sorted(missing)} (corpus {c.name}); it has {sorted(rows[0])}")
    out = []
    for i, r in enumerate(rows):
        text = r.get(c.text_column)
        if not isinstance(text, str) or not text.strip():
            continue
        text = " ".join(text.split())
        out.append({**r, c.text_column: text[:max_chars] if max_chars else text, "_row": i})
    return out


def _label(row: dict, t: TaskSpec) -> str | None:
    value = row.get(t.label_column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    value = str(int(value)) if isinstance(value, (bool, np.bool_, int, np.integer)) or (
        isinstance(value, float) and value.is_integer()) else str(value)
    if t.positive is None:
        return value
    return "yes" if value == str(t.positive) else "no"


def _stratified(indices_by_label: dict[str, list[int]], n: int, rng: np.random.Generator, balanced: bool) -> list[int]:
    """``n`` indices: proportional to the classes (test) or as equal as the classes allow (labelled)."""
    labels = sorted(indices_by_label)
    pools = {y: list(rng.permutation(indices_by_label[y])) for y in labels}
    total = sum(len(v) for v in pools.values())
    if balanced:
        take = {y: 0 for y in labels}
        left = min(n, total)
        while left:
            open_ = [y for y in labels if take[y] < len(pools[y])]
            for y in open_[:left] if len(open_) > left else open_:
                take[y] += 1
                left -= 1
                if not left:
                    break
    else:
        take = {y: int(np.floor(n * len(pools[y]) / total)) for y in labels}
        order = sorted(labels, key=lambda y: -(n * len(pools[y]) / total - take[y]))
        for y in order[: n - sum(take.values())]:
            take[y] += 1
    chosen = [i for y in labels for i in pools[y][: take[y]]]
    return sorted(int(i) for i in chosen)


def build_data(grid: Grid, out: Path) -> dict:
    """Write every corpus' test splits, labelled samples and pool; returns their description."""
    described = {}
    for c in grid.corpora:
        folder = out / "data" / c.name
        rows = _read_corpus(c, grid.max_text_chars)
        rng = np.random.default_rng(grid.split_seed)
        tasks, test_union = {}, set()
        for t in c.tasks:
            labelled = {i: y for i, r in enumerate(rows) if (y := _label(r, t)) is not None}
            by = {}
            for i, y in labelled.items():
                by.setdefault(y, []).append(i)
            if t.positive is None:
                by = {y: v for y, v in by.items() if len(v) >= t.min_class_rows}
            if len(by) < 2:
                raise SystemExit(f"{c.file}: task {t.name} has fewer than 2 classes in column {t.label_column}")
            if t.positive is not None and "yes" not in by:
                raise SystemExit(f"{c.file}: task {t.name}: no row has {t.label_column} == {t.positive!r}")
            test = _stratified(by, grid.test_per_task, rng, balanced=False)
            test_union |= set(test)
            tasks[t.name] = {"by": by, "test": test, "labels": sorted(by)}
        pool_candidates = [i for i in rng.permutation(len(rows)) if i not in test_union]
        pool = [int(i) for i in pool_candidates[: grid.pool_size]]
        text = c.text_column
        atomic_write_jsonl(folder / "pool.jsonl", [{"text": rows[i][text], "row": rows[i]["_row"]} for i in pool])
        info = {"pool": str(folder / "pool.jsonl"), "n_pool": len(pool), "n_rows": len(rows), "tasks": {}}
        for t in c.tasks:
            d = tasks[t.name]
            y_of = {i: y for y, v in d["by"].items() for i in v}
            atomic_write_jsonl(folder / f"test-{t.name}.jsonl",
                        [{"text": rows[i][text], "label": y_of[i], "row": rows[i]["_row"]} for i in d["test"]])
            trainable = {y: [i for i in v if i not in test_union] for y, v in d["by"].items()}
            seeds = {}
            for seed in grid.seeds:
                pick = _stratified(trainable, grid.labelled_per_task, np.random.default_rng([grid.split_seed, seed]),
                                   balanced=True)
                path = folder / f"train-{t.name}-seed{seed}.jsonl"
                atomic_write_jsonl(path, [{"text": rows[i][text], "label": y_of[i], "row": rows[i]["_row"]} for i in pick])
                seeds[seed] = str(path)
            info["tasks"][t.name] = {
                "labels": d["labels"], "test": str(folder / f"test-{t.name}.jsonl"), "n_test": len(d["test"]),
                "train": seeds, "question": t.question,
                "items": t.items or ([t.positive] if t.positive is not None else d["labels"]),
            }
        described[c.name] = info
    return described


# ----------------------------------------------------------------------------- recipes

BASE_RECIPE: dict[str, Any] = {
    "val_set_size": 0,
    "sequence_len": 256,
    "sample_packing": False,
    "adapter": "lora",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_linear": True,
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
    "lora_embedding_kernel": False,
    "micro_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "num_epochs": 1,
    "learning_rate": 3e-4,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.1,
    "optimizer": "adamw_torch",
    "bf16": "auto",
    "fp16": False,
    "tf32": False,
    "gradient_checkpointing": False,
    "logging_steps": 5,
    "save_strategy": "no",
}


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def run_recipe(grid: Grid, corpus: CorpusSpec, data: dict, method: str, seeds: list[int], run_dir: Path) -> dict:
    """The Axolotl recipe of one run: ``method`` on ``corpus``, stage 2 for every task x seed."""
    tasks, items = [], []
    for t in corpus.tasks:
        d = data["tasks"][t.name]
        items += [i for i in d["items"] if i not in items]
        for seed in seeds:
            tasks.append({"task": f"{t.name}@seed{seed}", "train_file": d["train"][seed], "test_file": d["test"],
                          "labels": d["labels"], "question": d["question"], "items": d["items"]})
    dsm: dict[str, Any] = {
        "seed": seeds[0],
        "items_per_text": 1,
        "stage1": method in STAGE1_METHODS,
        "stage1_token_budget": grid.stage1_token_budget,
        "relevance": {"method": "random" if method == "random_masking" else "grad_x_input"},
        "masking": {"spans_per_example": 3},
        "classification": {"text_column": "text", "label_column": "label"},
        "tasks": tasks,
        "probing": {"enabled": grid.probing and method in (BASELINE, *STAGE1_METHODS)},
    }
    if corpus.lead_in:
        dsm["relevance"]["lead_in"] = corpus.lead_in
    if method == "zero_shot":
        dsm["classification"]["train"] = False
    if method == "synthetic_labels":
        dsm["classification"]["pseudo_labels"] = {"enabled": True, "pool_file": data["pool"],
                                                  "max_texts": grid.pseudo_label_texts}
    dsm = _merge(dsm, grid.decselfmask)
    recipe = _merge(BASE_RECIPE, grid.recipe)
    recipe.update({
        "base_model": grid.model,
        "plugins": ["axolotl_decselfmask.DecSelfMaskPlugin"],
        "datasets": [{
            "path": data["pool"], "ds_type": "json", "text_column": "text",
            "type": "axolotl_decselfmask.continual_pretraining" if method == "continual_pretraining"
            else "axolotl_decselfmask.masked_reconstruction",
        }],
        "dataset_prepared_path": str(run_dir / "prepared"),
        "output_dir": str(run_dir / "output"),
        "seed": seeds[0],
        "decselfmask": dsm,
    })
    return recipe


# ----------------------------------------------------------------------------- running

def plan(grid: Grid, out: Path, data: dict) -> list[dict]:
    runs = []
    seed_groups = [list(grid.seeds)] if grid.share_stage1_across_seeds else [[s] for s in grid.seeds]
    for c in grid.corpora:
        for method in grid.methods:
            # zero-shot trains nothing and its test split is fixed: one evaluation serves every seed
            for seeds in ([[grid.seeds[0]]] if method == "zero_shot" else seed_groups):
                name = method if grid.share_stage1_across_seeds else f"{method}-seed{seeds[0]}"
                run_dir = out / "runs" / c.name / name
                runs.append({"corpus": c.name, "method": method, "seeds": seeds, "dir": run_dir,
                             "recipe": run_recipe(grid, c, data[c.name], method, seeds, run_dir)})
    return runs


def _done(run: dict) -> dict | None:
    record = read_json(run["dir"] / "done.json")
    if isinstance(record, dict) and record.get("recipe_key") == fingerprint(run["recipe"]):
        return record
    return None


def execute(run: dict, log_progress=print) -> dict:
    """``axolotl train`` of one run (its output in ``run.log``); returns the done record."""
    run_dir: Path = run["dir"]
    run_dir.mkdir(parents=True, exist_ok=True)
    recipe_path = run_dir / "recipe.yml"
    atomic_write_text(recipe_path, _yaml_dump(run["recipe"]))
    (run_dir / "output" / "metrics.json").unlink(missing_ok=True)  # a finished run writes it anew
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               AXOLOTL_DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    axolotl = Path(sys.executable).parent / "axolotl"
    command = [str(axolotl) if axolotl.exists() else "axolotl", "train", str(recipe_path)]
    start = time.time()
    with open(run_dir / "run.log", "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - start
    metrics = read_json(run_dir / "output" / "metrics.json")
    if proc.returncode != 0 or not isinstance(metrics, dict):
        tail = (run_dir / "run.log").read_text(errors="replace").splitlines()[-25:]
        raise RuntimeError(f"run {run_dir} failed (exit {proc.returncode}); last lines of {run_dir / 'run.log'}:\n"
                           + "\n".join(tail))
    stage1 = read_json(run_dir / "output" / STATS_FILE) or {}
    record = {"recipe_key": fingerprint(run["recipe"]), "seconds": round(seconds, 1), "command": command,
              "stage1_tokens": stage1.get("tokens"), "stage1_examples": stage1.get("examples"),
              "stage1_supervised_tokens": stage1.get("supervised_tokens"), "metrics": metrics}
    atomic_write_json(run_dir / "done.json", record)
    return record


def collect(grid: Grid, runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        record = _done(run)
        if not record:
            continue
        for task_seed, m in sorted(record["metrics"].get("tasks", {}).items()):
            task, _, seed = task_seed.rpartition("@seed")
            seeds = grid.seeds if run["method"] == "zero_shot" else [int(seed)]
            rows += [{
                "corpus": run["corpus"], "task": task, "method": run["method"], "seed": seed,
                "macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["accuracy"], 4),
                "probe_macro_f1": round(m["probe_macro_f1"], 4) if "probe_macro_f1" in m else "",
                "n_train": m.get("n_train", ""), "n_pseudo": m.get("n_pseudo", ""), "n_test": m["n_test"],
                "n_labels": len(m.get("labels") or []),
                "stage1_tokens": record.get("stage1_tokens") or "",
                "run_seconds": record["seconds"],
            } for seed in seeds]
    return rows


COLUMNS = ["corpus", "task", "method", "seed", "macro_f1", "accuracy", "probe_macro_f1", "n_train", "n_pseudo",
           "n_test", "n_labels", "stage1_tokens", "run_seconds"]


def write_results(out: Path, rows: list[dict], grid: Grid | None = None, elapsed: float | None = None) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.md", report_markdown(rows, grid, elapsed))
    if rows:
        plot(rows, out)


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(rows: list[dict]) -> dict:
    """Per method: mean and std over seeds of the mean Macro F1 over tasks; per task means."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    per_seed: dict[str, dict[int, list[float]]] = {}
    per_task: dict[tuple, list[float]] = {}
    probe: dict[str, list[float]] = {}
    for r in rows:
        per_seed.setdefault(r["method"], {}).setdefault(r["seed"], []).append(r["macro_f1"])
        per_task.setdefault((r["corpus"], r["task"], r["method"]), []).append(r["macro_f1"])
        if r["probe_macro_f1"] != "":
            probe.setdefault(r["method"], []).append(r["probe_macro_f1"])
    summary = {}
    for m in methods:
        seed_means = [float(np.mean(v)) for _, v in sorted(per_seed[m].items())]
        mean, std = _mean_std(seed_means)
        summary[m] = {"mean": mean, "std": std, "n_seeds": len(seed_means),
                      "probe": float(np.mean(probe[m])) if m in probe else None}
    tasks = sorted({(c, t) for c, t, _ in per_task})
    return {"methods": methods, "summary": summary, "tasks": tasks,
            "per_task": {k: float(np.mean(v)) for k, v in per_task.items()}}


def report_markdown(rows: list[dict], grid: Grid | None = None, elapsed: float | None = None) -> str:
    if not rows:
        return "# Results\n\nNo finished runs yet.\n"
    s = summarise(rows)
    base = s["summary"].get(BASELINE)
    lines = ["# Results", ""]
    n_tasks = len(s["tasks"])
    lines.append(f"{len(rows)} results (rows of results.csv) over {n_tasks} tasks; Macro F1 is the mean over "
                 "tasks of one seed, then mean +- standard deviation over seeds.")
    if elapsed is not None:
        lines.append(f"Wall time of this invocation: {elapsed / 60:.1f} min.")
    lines += ["", "| method | Macro F1 (mean +- std over seeds) | vs sft | tasks won vs sft | probing Macro F1 |",
              "| --- | --- | --- | --- | --- |"]
    for m in s["methods"]:
        v = s["summary"][m]
        diff = f"{v['mean'] - base['mean']:+.4f}" if base and m != BASELINE else ""
        wins = ""
        if base and m != BASELINE:
            won = sum(s["per_task"].get((c, t, m), -1) > s["per_task"].get((c, t, BASELINE), 2) for c, t in s["tasks"])
            compared = sum((c, t, m) in s["per_task"] and (c, t, BASELINE) in s["per_task"] for c, t in s["tasks"])
            wins = f"{won}/{compared}"
        probe = f"{v['probe']:.4f}" if v["probe"] is not None else ""
        lines.append(f"| {m} | {v['mean']:.4f} +- {v['std']:.4f} (n={v['n_seeds']}) | {diff} | {wins} | {probe} |")
    lines += ["", "Per task (mean Macro F1 over seeds):", "",
              "| corpus | task | " + " | ".join(s["methods"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in s["methods"]) + " |"]
    for c, t in s["tasks"]:
        cells = [f"{s['per_task'][(c, t, m)]:.4f}" if (c, t, m) in s["per_task"] else "" for m in s["methods"]]
        lines.append(f"| {c} | {t} | " + " | ".join(cells) + " |")
    lines += ["", "`zero_shot` trains nothing and every seed shares its test split: it is evaluated once and its "
              "result stands for every seed (spread 0).",
              "", "Probing is the frozen model before stage 2: the base model for `sft`, the stage-1 model for "
              "the stage-1 methods.", ""]
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarise(rows)
    methods = s["methods"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    means = [s["summary"][m]["mean"] for m in methods]
    stds = [s["summary"][m]["std"] for m in methods]
    colors = ["#c44e52" if m == "decselfmask" else "#4c72b0" if m == BASELINE else "#8c8c8c" for m in methods]
    ax.bar(range(len(methods)), means, yerr=stds, capsize=4, color=colors)
    for i, m in enumerate(methods):  # the seeds themselves
        seeds = sorted({r["seed"] for r in rows if r["method"] == m})
        vals = [np.mean([r["macro_f1"] for r in rows if r["method"] == m and r["seed"] == sd]) for sd in seeds]
        ax.scatter([i] * len(vals), vals, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right")
    ax.set_ylabel("Macro F1 (mean over tasks)")
    ax.set_title("Methods: mean over seeds, bar = std, dots = seeds")
    fig.tight_layout()
    _save(fig, out / "methods.png")
    plt.close(fig)

    if BASELINE in methods and "decselfmask" in methods:
        pts = [(s["per_task"][(c, t, BASELINE)], s["per_task"][(c, t, "decselfmask")], c)
               for c, t in s["tasks"] if (c, t, BASELINE) in s["per_task"] and (c, t, "decselfmask") in s["per_task"]]
        fig, ax = plt.subplots(figsize=(4.6, 4.4))
        for corpus in sorted({p[2] for p in pts}):
            xs = [p[0] for p in pts if p[2] == corpus]
            ys = [p[1] for p in pts if p[2] == corpus]
            ax.scatter(xs, ys, label=corpus, s=28)
        hi = max([max(p[0], p[1]) for p in pts] + [0.1]) * 1.05
        ax.plot([0, hi], [0, hi], color="gray", linewidth=1, linestyle="--")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.set_xlabel("sft Macro F1")
        ax.set_ylabel("decselfmask Macro F1")
        ax.set_title("Per task, mean over seeds\n(above the line: DecSelfMask wins)", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        _save(fig, out / "tasks_decselfmask_vs_sft.png")
        plt.close(fig)


def _save(fig, path: Path) -> None:
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def run_grid(grid_path: str, out: str, methods: list[str] | None = None, dry_run: bool = False) -> list[dict]:
    from tqdm.auto import tqdm

    grid = load_grid(grid_path)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    data = build_data(grid, out_dir)
    atomic_write_json(out_dir / "data" / "splits.json", data)
    runs = plan(grid, out_dir, data)
    if methods:
        runs = [r for r in runs if r["method"] in methods]
    todo = [r for r in runs if not _done(r)]
    print(f"experiments: {len(runs)} runs ({len(runs) - len(todo)} already done), "
          f"{sum(len(c.tasks) for c in grid.corpora)} tasks, seeds {grid.seeds}, into {out_dir}")
    if dry_run:
        for r in todo:
            r["dir"].mkdir(parents=True, exist_ok=True)
            atomic_write_text(r["dir"] / "recipe.yml", _yaml_dump(r["recipe"]))
            print(f"  would run: axolotl train {r['dir'] / 'recipe.yml'}")
        return []
    failed = []
    bar = tqdm(todo, desc="experiments", unit="run")
    for run in bar:
        bar.set_postfix_str(f"{run['corpus']}/{run['method']}")
        try:
            record = execute(run)
            tqdm.write(f"  {run['corpus']}/{run['dir'].name}: {record['seconds'] / 60:.1f} min, "
                       f"mean Macro F1 {record['metrics'].get('macro_f1_mean', float('nan')):.4f}")
        except RuntimeError as err:
            failed.append(str(err))
            tqdm.write(str(err))
        write_results(out_dir, collect(grid, runs), grid, time.time() - start)
    rows = collect(grid, runs)
    write_results(out_dir, rows, grid, time.time() - start)
    print(f"experiments: {len(rows)} result rows in {out_dir / 'results.csv'}, summary in {out_dir / 'results.md'}")
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed; see their run.log. The others are kept; run again to retry.")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m axolotl_decselfmask.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run a grid (finished runs are skipped)")
    p_run.add_argument("grid")
    p_run.add_argument("--out", required=True)
    p_run.add_argument("--methods", help="comma-separated subset of the grid's methods")
    p_run.add_argument("--dry-run", action="store_true", help="write data and recipes, run nothing")
    p_rep = sub.add_parser("report", help="rebuild results.csv, results.md and plots from finished runs")
    p_rep.add_argument("grid")
    p_rep.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "run":
        run_grid(args.grid, args.out, args.methods.split(",") if args.methods else None, args.dry_run)
    else:
        grid = load_grid(args.grid)
        out = Path(args.out)
        data = read_json(out / "data" / "splits.json")
        if not data:
            raise SystemExit(f"{out}: no data/splits.json; run the grid first")
        rows = collect(grid, plan(grid, out, {k: _intkeys(v) for k, v in data.items()}))
        write_results(out, rows, grid)
        print(f"{len(rows)} rows -> {out / 'results.csv'}")


def _intkeys(corpus: dict) -> dict:
    for t in corpus["tasks"].values():
        t["train"] = {int(k): v for k, v in t["train"].items()}
    return corpus


if __name__ == "__main__":
    main()
