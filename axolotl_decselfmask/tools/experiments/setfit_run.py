"""The ``setfit`` method of the comparison: SetFit (contrastive fine-tuning of a sentence-transformers
encoder, then a logistic-regression head) on the same labelled and test notes as the decoder
methods, trained and evaluated per task x seed.

``python -m axolotl_decselfmask.tools.experiments.setfit_run RUNSPEC.json`` (the runner's
subprocess, :func:`.runner.execute`): the run spec (:func:`runspec`) names the model folder, the
settings and the tasks; the run writes ``<output_dir>/metrics.json`` (the entries of a decoder
run: ``macro_f1``, ``accuracy``, ``n_test``, ``per_class_f1``, ``confusion_matrix``, ``labels``,
``n_train``, ...) and ``predictions-<task>@seed<k>.jsonl`` (``id``, ``row``, ``gold``, ``pred``,
``scores``: the head's log-probability of each label in the order of ``labels``). The decision
is SetFit's ``predict`` (the head's argmax: probability 0.5 for two labels).

SetFit 1.2.0 needs an ``evaluate`` newer than Axolotl 0.19's pin, so it is installed beside the
venv (``make setfit``: ``--target .venv-setfit``) and put first on this subprocess' PYTHONPATH.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from axolotl_decselfmask.io.files import atomic_write_json, read_json, safe_filename

SETFIT_VERSION = "1.2.0"
MISSING_SETFIT = (f"setfit {SETFIT_VERSION} is not importable: run `make setfit` (installs it into .venv-setfit, "
                  "beside the venv, which the runner puts first on the setfit run's PYTHONPATH; grid key "
                  "setfit_packages)")
MISSING_MODEL = ("{folder}: no sentence-transformers model folder (modules.json); run `make setfit-model` "
                 "(python -m axolotl_decselfmask.models all-minilm-l6-v2 models/all-minilm-l6-v2), or set the "
                 "grid key setfit_model")


def runspec(grid, tasks: list[dict], output_dir: Path) -> dict:
    """What one setfit run does (its fingerprint is the run's recipe key): ``tasks`` as
    :func:`.recipes._tasks` gives them (``<task>@seed<k>``, train and test files, labels)."""
    multi = [t["task"] for t in tasks if t.get("multi_label")]
    if multi:
        raise SystemExit(f"setfit: multi_label tasks are not supported ({multi}); leave setfit out of the grid's "
                         "methods for this corpus")
    return {
        "method": "setfit", "setfit_version": SETFIT_VERSION, "model": grid.setfit_model,
        "settings": grid.setfit.model_dump(), "output_dir": str(output_dir),
        "tasks": [{"task": t["task"], "train_file": t["train_file"], "test_file": t["test_file"],
                   "labels": list(t["labels"]), "seed": int(t["task"].rpartition("@seed")[2])} for t in tasks],
    }


def _check_model(folder: str) -> None:
    if not (Path(folder) / "modules.json").is_file():
        raise SystemExit(MISSING_MODEL.format(folder=folder))


def _fit(train_texts: list[str], train_y: list[int], folder: str, settings: dict, seed: int, work_dir: Path):
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import set_seed

    set_seed(seed)
    model = SetFitModel.from_pretrained(folder, head_params={"random_state": seed})
    model.model_body.max_seq_length = settings["max_seq_length"]
    args = TrainingArguments(batch_size=settings["batch_size"], num_epochs=settings["num_epochs"],
                             num_iterations=settings["num_iterations"], seed=seed, report_to="none",
                             show_progress_bar=False, save_strategy="no",  # no checkpoint (SetFit's default:
                             output_dir=str(work_dir / "setfit-trainer"))  # one per 500 steps into ./checkpoints)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": train_texts,
                                                                               "label": train_y}))
    trainer.train()
    return model


def run_task(task: dict, spec: dict, out: Path) -> dict:
    """Train and evaluate one ``<task>@seed<k>``; writes its predictions, returns its metrics entry."""
    import numpy as np

    from axolotl_decselfmask.io.labelled import read_labelled
    from axolotl_decselfmask.stage2.metrics import (
        classification_report_dict,
        dump_predictions,
    )

    labels = task["labels"]
    train = read_labelled(task["train_file"], "text", "label", labels, "setfit.train_file")
    test = read_labelled(task["test_file"], "text", "label", labels, "setfit.test_file")
    model = _fit(train.texts, [labels.index(y) for y in train.labels], spec["model"], spec["settings"], task["seed"], out)
    proba = np.asarray(model.predict_proba(test.texts, as_numpy=True), dtype=np.float64)
    classes = [int(c) for c in model.model_head.classes_]  # the label indices the head saw
    full = np.zeros((len(test.texts), len(labels)))
    full[:, classes] = proba
    pred = [labels[int(i)] for i in np.asarray(model.predict(test.texts, as_numpy=True))]
    with np.errstate(divide="ignore"):
        scores = np.log(full)
    dump_predictions(out / f"predictions-{safe_filename(task['task'])}.jsonl", test.ids, test.rows, test.labels,
                     pred, scores, labels)
    report = classification_report_dict(test.labels, pred, labels)
    return {**report, "n_test": len(test.labels), "labels": labels, "n_train": len(train.labels),
            "seed": task["seed"], "method": "setfit", "setfit": spec["settings"],
            "model": Path(spec["model"]).name, "stage1": False, "trained": True}


def run(spec_path: str) -> dict:
    """Every task of the run spec at ``spec_path``; returns (and writes) ``metrics.json``."""
    spec = read_json(Path(spec_path))
    if not isinstance(spec, dict) or spec.get("method") != "setfit":
        raise SystemExit(f"{spec_path}: not a setfit run spec (runner.py writes it)")
    try:
        import setfit
    except ImportError:
        raise SystemExit(MISSING_SETFIT) from None
    if setfit.__version__ != spec["setfit_version"]:
        raise SystemExit(f"setfit {setfit.__version__} found, the run spec wants {spec['setfit_version']}: "
                         "run `make setfit`")
    _check_model(spec["model"])
    out = Path(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    tasks = {}
    for task in spec["tasks"]:
        start = time.time()
        tasks[task["task"]] = {**run_task(task, spec, out), "seconds": round(time.time() - start, 1)}
        print(f"setfit [{task['task']}]: macro_f1 {tasks[task['task']]['macro_f1']:.4f}", flush=True)
    metrics = {"tasks": tasks, "macro_f1_mean": float(sum(t["macro_f1"] for t in tasks.values()) / len(tasks))}
    if not all(math.isfinite(t["macro_f1"]) for t in tasks.values()):
        raise SystemExit("setfit: a task's Macro F1 is not finite")
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m axolotl_decselfmask.tools.experiments.setfit_run RUNSPEC.json")
    run(argv[0])


if __name__ == "__main__":
    main()
