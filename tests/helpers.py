"""Helpers shared by test files: labelled rows of the shipped abstracts, tiny recipes, Axolotl validation, span checks."""

from __future__ import annotations

import copy
import json

from conftest import DATA, ROOT, SMOLLM

# `axolotl train ... --launcher python`: training in the CLI's own process instead of under `accelerate launch`,
# which starts a second Python that imports Axolotl again (~20 s a run on these CPUs). For tests whose subject is
# not the launcher; tests/e2e/test_integration.py and test_own_data_path.py keep the default a user runs.
PYTHON_LAUNCHER = ("--launcher", "python")

LABELS = ["neoplasms", "digestive system diseases", "nervous system diseases",
          "cardiovascular diseases", "general pathological conditions"]


def data_rows(name, n=None, per_class=None):
    rows = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
    if per_class:
        out, seen = [], {}
        for r in rows:
            if seen.get(r["label"], 0) < per_class:
                out.append(r)
                seen[r["label"]] = seen.get(r["label"], 0) + 1
        return out
    return rows[:n]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_corpus(path, *names):
    """The shipped abstracts files ``names`` as one gzip'd corpus csv (text, label; "" where unlabelled)."""
    import csv
    import gzip

    rows = [r for name in names for r in data_rows(name)]
    with gzip.open(path, "wt", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows({"text": r["text"], "label": r.get("label", "")} for r in rows)
    return path


def base_recipe(tmp, model, stage1=True):
    return {
        "base_model": str(model),
        "plugins": ["axolotl_decselfmask.DecSelfMaskPlugin"],
        "datasets": [{"path": str(tmp / "pool.jsonl"), "ds_type": "json",
                      "type": "axolotl_decselfmask.masked_reconstruction", "text_column": "text"}],
        "dataset_prepared_path": str(tmp / "prepared"),
        "output_dir": str(tmp / "out"),
        "val_set_size": 0, "sequence_len": 192, "sample_packing": False,
        "adapter": "lora", "lora_r": 4, "lora_alpha": 8, "lora_target_linear": True,
        "micro_batch_size": 2, "gradient_accumulation_steps": 1, "num_epochs": 1, "max_steps": 3,
        "learning_rate": 1e-3, "optimizer": "adamw_torch", "bf16": False, "fp16": False, "tf32": False,
        "save_strategy": "no", "logging_steps": 1, "seed": 0,
        "decselfmask": {
            "stage1": stage1, "items": LABELS,
            "relevance": {"batch_size": 4},
            "spans": {"rescale_after_smoothing": True},
            "classification": {
                "task": "abstracts", "train_file": str(tmp / "train.jsonl"),
                "test_file": str(tmp / "test.jsonl"), "labels": LABELS,
                "lora_r": 4, "lora_alpha": 8, "batch_size": 4, "num_epochs": 1,
            },
        },
    }


# A GPU with bf16 (what the recipes are written for); validation needs capabilities to resolve bf16: auto.
GPU_CAPABILITIES = {"bf16": True, "fp8": False, "tf32": True, "n_gpu": 1, "compute_capability": "sm_89"}


ENV_CAPABILITIES = {"torch_version": "2.13.0"}


def validate_recipe(raw: dict):
    """What `axolotl train` does to a recipe before normalisation: plugins registered, then validated."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(copy.deepcopy(raw))
    prepare_plugins(cfg)
    return validate_config(cfg, capabilities=dict(GPU_CAPABILITIES), env_capabilities=dict(ENV_CAPABILITIES))


def assert_well_formed(spans, text):
    """Sorted, in bounds, non-empty, non-overlapping, not touching, stripped, word aligned."""
    for s, e in spans:
        assert 0 <= s < e <= len(text), (s, e)
        assert not text[s].isspace() and not text[e - 1].isspace(), repr(text[s:e])
        if s > 0:
            assert not (is_word_char(text, s - 1) and is_word_char(text, s)), f"cuts word at {s}: {text[s-5:s+5]!r}"
        if e < len(text):
            assert not (is_word_char(text, e - 1) and is_word_char(text, e)), f"cuts word at {e}: {text[e-5:e+5]!r}"
    for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
        assert e0 < s1, (spans, "overlap or touch")


def is_word_char(text, i):
    ch = text[i]
    if ch.isalnum() or ch == "_":
        return True
    if ch in "'-\u2019\u2010\u2011" and 0 < i < len(text) - 1:
        b, a = text[i - 1], text[i + 1]
        return (b.isalnum() or b == "_") and (a.isalnum() or a == "_")
    return False


# Tiny random configurations of every family the package supports (relevance tests build them).
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512)
FAMILIES = {
    "llama": dict(model_type="llama"),
    "qwen2": dict(model_type="qwen2"),
    "qwen3": dict(model_type="qwen3", head_dim=16),
    "gemma2": dict(model_type="gemma2", head_dim=16),
    "gemma3_text": dict(model_type="gemma3_text", head_dim=16),
    "mistral": dict(model_type="mistral"),
    "phi3": dict(model_type="phi3"),
}


def run_stage2_captured(recipe: dict, out) -> tuple[dict, str]:
    """Stage 2 as the plugin runs it (``run_stage2``) with ``output_dir`` = ``out``: (metrics, printed log)."""
    import contextlib
    import io

    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.run import run_stage2

    recipe = dict(copy.deepcopy(recipe), output_dir=str(out))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        metrics = run_stage2(DictDefault(recipe), DecSelfMaskConfig(**recipe["decselfmask"]), progress=False)
    return metrics, buffer.getvalue()


def script_module(name: str):
    """``scripts/<name>.py`` of the repository, imported as a module (the scripts are not a package). The scripts'
    folder goes on ``sys.path``, as it is when a script runs, for the scripts that import one another."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "scripts"
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    path = folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prediction_records(methods: dict, corpora=(("a", 6, 120),), seeds=(0, 1, 2), seed=0, rows_of=None):
    """Predictions records: ``methods`` name -> error rate (or "copy:<name>" for the same predictions)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for corpus, n_tasks, n_notes in corpora:
        gold = {t: rng.integers(0, 2, n_notes) for t in range(n_tasks)}
        made = {}
        for m, how in methods.items():
            for s in ([0] if m == "zero_shot" else seeds):
                if isinstance(how, str):
                    made[m, s] = made[how.split(":")[1], s]
                else:
                    made[m, s] = [np.where(rng.random(n_notes) < how, 1 - gold[t], gold[t]) for t in range(n_tasks)]
                tasks = [{"task": f"t{t}", "labels": ["no", "yes"],
                          "row": (rows_of(corpus, t) if rows_of else list(range(100, 100 + n_notes))),
                          "gold": gold[t].tolist(), "pred": made[m, s][t].tolist()} for t in range(n_tasks)]
                out.append({"corpus": corpus, "method": m, "seed": s,
                            "seeds": list(seeds) if m == "zero_shot" else [s], "tasks": tasks})
    return out


# three yes/no tasks on the shipped abstracts (tests of tasks that share their test notes)
QUESTIONS = {"neoplasms": "Is the abstract above about neoplasms?",
             "heart": "Does the abstract above describe a disease of the heart or of the blood vessels?",
             "treatment": "Is a treatment named in the abstract above?"}


def _task_label(task: str, row: dict) -> str:
    if task == "treatment":
        return "yes" if "treat" in row["text"].lower() else "no"
    return "yes" if row["label"] == {"neoplasms": "neoplasms", "heart": "cardiovascular diseases"}[task] else "no"


def shared_test_tasks(tmp_path, prompt: str, sequence_len: int = 256):
    """Three yes/no tasks with one test file (6 notes of 40-320 characters) and their own labelled
    examples, and a fourth task on other test notes (not scored with them)."""
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig

    rows = data_rows("abstracts_test.jsonl", n=10)
    test = [{**r, "text": r["text"][: n]} for r, n in zip(rows, (320, 40, 200, 90, 260, 140))]
    train = data_rows("abstracts_train.jsonl", per_class=2)
    tasks = []
    for k, (task, question) in enumerate(QUESTIONS.items()):
        mine = train[k * 3: k * 3 + 4]
        write_rows(tmp_path / f"test-{task}.jsonl", [{"text": r["text"], "label": _task_label(task, r)} for r in test])
        write_rows(tmp_path / f"train-{task}.jsonl", [{"text": r["text"][:200], "label": y}
                                                      for r, y in zip(mine, ["yes", "no"] * 2)])
        tasks.append({"task": task, "train_file": str(tmp_path / f"train-{task}.jsonl"), "question": question,
                      "test_file": str(tmp_path / f"test-{task}.jsonl"), "labels": ["yes", "no"]})
    write_rows(tmp_path / "test-other.jsonl", [{"text": r["text"][:150], "label": "no"} for r in rows[6:]])
    tasks.append({**tasks[0], "task": "other", "test_file": str(tmp_path / "test-other.jsonl")})
    config = DecSelfMaskConfig(items=["x"], masking={"mask_token": "<mask>"}, tasks=tasks, classification={
        "prompt": prompt, "train": False, "calibration": "balanced", "eval_batch_size": 4, "option_chunk": 3})

    def cfg(name):
        return DictDefault({"sequence_len": sequence_len, "output_dir": str(tmp_path / name), "datasets": [],
                            "use_tensorboard": False, "use_wandb": False})

    return config, cfg


SETFIT_MODEL = ROOT / "models" / "all-minilm-l6-v2"
SETFIT_PACKAGES = ROOT / ".venv-setfit"


def setfit_grid(tmp_path, methods: list[str]):
    """A tiny grid with SetFit's settings on the shipped abstracts (one task), written to ``tmp_path``."""
    import yaml

    corpus = write_corpus(tmp_path / "corpus.csv.gz", "abstracts_test.jsonl", "abstracts_unlabelled.jsonl")
    grid = {
        "model": str(SMOLLM), "methods": methods, "seeds": [0, 1], "labelled_per_task": 8, "test_per_task": 10,
        "pool_size": 8, "max_text_chars": 300, "setfit_model": str(SETFIT_MODEL),
        "setfit_packages": str(SETFIT_PACKAGES), "setfit": {"num_iterations": 1, "batch_size": 16},
        "corpora": [{"name": "abstracts", "file": str(corpus), "tasks": [
            {"name": "neoplasms", "label_column": "label", "positive": "neoplasms",
             "question": "Is the abstract above about neoplasms?"}]}],
    }
    path = tmp_path / "grid.yml"
    path.write_text(yaml.safe_dump(grid))
    return path


def experiment_grid(tmp_path, model, **over):
    """A tiny grid on the shipped abstracts (one task), written to ``tmp_path``; ``over`` replaces its keys."""
    import yaml

    grid = {
        "model": str(model),
        "seeds": [0, 1],
        "labelled_per_task": 6,
        "test_per_task": 6,
        "pool_size": 8,
        "stage1_token_budget": 600,
        "pseudo_label_texts": 6,
        "max_text_chars": 300,
        "recipe": {"bf16": False, "sequence_len": 160, "micro_batch_size": 2, "lora_r": 4, "lora_alpha": 8},
        "decselfmask": {"relevance": {"batch_size": 4}, "spans": {"rescale_after_smoothing": True},
                        "classification": {"lora_r": 4, "lora_alpha": 8, "batch_size": 4},
                        "probing": {"epochs": 20}},
        "corpora": [{
            "name": "abstracts", "file": str(write_corpus(tmp_path / "corpus.csv.gz", "abstracts_test.jsonl", "abstracts_unlabelled.jsonl")), "text_column": "text",
            "tasks": [
                {"name": "neoplasms", "label_column": "label", "positive": "neoplasms",
                 "question": "Is the abstract above about neoplasms?"},
            ],
        }],
    }
    grid.update(over)
    path = tmp_path / "grid.yml"
    path.write_text(yaml.safe_dump(grid))
    return path
