"""The encoder methods of the comparison, on the same labelled and test notes as the decoder methods,
trained and evaluated per task x seed: ``setfit`` (SetFit: contrastive fine-tuning of a
sentence-transformers encoder, then a logistic-regression head) and ``logreg_minilm`` (a
scikit-learn logistic regression on the frozen encoder's embeddings: SetFit's head without the
fine-tuning; each distinct text of a run embedded once).

``python -m axolotl_decselfmask.tools.experiments.setfit_run RUNSPEC.json`` (the runner's
subprocess, :func:`.runner.execute`): the run spec (:func:`runspec`) names the model folder, the
settings and the tasks; the run writes ``<output_dir>/metrics.json`` (the entries of a decoder
run: ``macro_f1``, ``accuracy``, ``n_test``, ``per_class_f1``, ``confusion_matrix``, ``labels``,
``n_train``, ...) and ``predictions-<task>@seed<k>.jsonl`` (``id``, ``row``, ``gold``, ``pred``,
``scores``: the head's log-probability of each label in the order of ``labels``). The decision
is SetFit's ``predict`` (the head's argmax: probability 0.5 for two labels); ``logreg_minilm``:
the regression's ``predict``, its scores the log of ``predict_proba``.

``logreg_minilm``'s regression: scikit-learn's defaults (``C`` 1, lbfgs, ``class_weight`` None,
as SetFit's head) and ``random_state`` the seed. No class weights: the labelled sample is the
runner's balanced draw, where ``balanced`` weights are all 1 and change nothing; left at None,
the regression stays SetFit's head exactly. The encoder reads ``setfit.max_seq_length`` word
pieces of a note, as SetFit's does, so the two differ only by the fine-tuning.

SetFit 1.2.0 needs an ``evaluate`` newer than Axolotl 0.19's pin, so it is installed beside the
venv (``make setfit``: ``--target .venv-setfit``) and put first on this subprocess' PYTHONPATH;
sentence-transformers is installed there too (not in the venv), so ``logreg_minilm`` runs the same way.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from axolotl_decselfmask.io.files import read_json
from axolotl_decselfmask.stage2.outputs import replace_metrics

SETFIT_VERSION = "1.2.0"
MISSING_SETFIT = (f"setfit {SETFIT_VERSION} is not importable: run `make setfit` (installs it into .venv-setfit, "
                  "beside the venv, which the runner puts first on the setfit run's PYTHONPATH; grid key "
                  "setfit_packages)")
MISSING_MODEL = ("{folder}: no sentence-transformers model folder (modules.json); run `make setfit-model` "
                 "(axolotl decselfmask models all-minilm-l6-v2 models/all-minilm-l6-v2), or set the "
                 "grid key setfit_model")


MISSING_ENCODER = ("sentence-transformers is not importable: run `make setfit` (installs it into .venv-setfit, "
                   "beside the venv, which the runner puts first on the run's PYTHONPATH; grid key setfit_packages)")
LOGREG = "logreg_minilm"
ENCODE_BATCH = 32


def runspec(grid, tasks: list[dict], output_dir: Path, method: str = "setfit") -> dict:
    """What one setfit (or ``logreg_minilm``) run does (its fingerprint is the run's recipe key):
    ``tasks`` as :func:`.recipes.run_tasks` gives them (``<task>@seed<k>``, train and test files, labels)."""
    multi = [t["task"] for t in tasks if t.get("multi_label")]
    if multi:
        raise SystemExit(f"{method}: multi_label tasks are not supported ({multi}); leave {method} out of the "
                         "grid's methods for this corpus")
    spec_tasks = [{"task": t["task"], "train_file": t["train_file"], "test_file": t["test_file"],
                   "labels": list(t["labels"]), "seed": int(t["task"].rpartition("@seed")[2])} for t in tasks]
    if method == LOGREG:
        from importlib.metadata import version

        settings = {"max_seq_length": grid.setfit.max_seq_length, "encode_batch_size": ENCODE_BATCH, "C": 1.0,
                    "class_weight": None}
        return {"method": LOGREG, "sklearn_version": version("scikit-learn"), "model": grid.setfit_model,
                "settings": settings, "output_dir": str(output_dir), "tasks": spec_tasks}
    return {
        "method": "setfit", "setfit_version": SETFIT_VERSION, "model": grid.setfit_model,
        "settings": grid.setfit.model_dump(), "output_dir": str(output_dir), "tasks": spec_tasks,
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


def _entry(task: dict, spec: dict, out: Path, train, test, proba, classes: list[int], pred_index) -> dict:
    """Write the predictions of one task (``proba``: the columns of ``classes``, label indices) and
    return its metrics entry."""
    import numpy as np

    from axolotl_decselfmask.stage2.metrics import classification_report_dict
    from axolotl_decselfmask.stage2.outputs import write_predictions

    labels = task["labels"]
    full = np.zeros((len(test.texts), len(labels)))
    full[:, classes] = np.asarray(proba, dtype=np.float64)
    pred = [labels[int(i)] for i in np.asarray(pred_index)]
    with np.errstate(divide="ignore"):
        scores = np.log(full)
    write_predictions(out, task["task"], test.ids, test.rows, test.labels, pred, scores, labels)
    report = classification_report_dict(test.labels, pred, labels)
    return {**report, "n_test": len(test.labels), "labels": labels, "n_train": len(train.labels),
            "seed": task["seed"], "method": spec["method"],
            ("setfit" if spec["method"] == "setfit" else "logreg"): spec["settings"],
            "model": Path(spec["model"]).name, "stage1": False, "trained": True}


def _read(task: dict, method: str):
    from axolotl_decselfmask.io.labelled import read_labelled

    labels = task["labels"]
    return (read_labelled(task["train_file"], "text", "label", labels, f"{method}.train_file"),
            read_labelled(task["test_file"], "text", "label", labels, f"{method}.test_file"))


def run_task(task: dict, spec: dict, out: Path) -> dict:
    """Train and evaluate one ``<task>@seed<k>`` with SetFit; writes its predictions, returns its metrics entry."""
    import numpy as np

    labels = task["labels"]
    train, test = _read(task, "setfit")
    model = _fit(train.texts, [labels.index(y) for y in train.labels], spec["model"], spec["settings"], task["seed"], out)
    proba = model.predict_proba(test.texts, as_numpy=True)
    classes = [int(c) for c in model.model_head.classes_]  # the label indices the head saw
    pred = np.asarray(model.predict(test.texts, as_numpy=True))
    return _entry(task, spec, out, train, test, proba, classes, pred)


class Encoder:
    """The frozen sentence-transformers encoder of ``logreg_minilm``; each distinct text embedded once."""

    def __init__(self, folder: str, settings: dict):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(folder)
        self.model.max_seq_length = settings["max_seq_length"]
        self.batch_size = settings["encode_batch_size"]
        self.cache: dict[str, object] = {}

    def __call__(self, texts: list[str]):
        import numpy as np

        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            vectors = self.model.encode(new, batch_size=self.batch_size, convert_to_numpy=True,
                                        show_progress_bar=False)
            self.cache.update(zip(new, np.asarray(vectors, dtype=np.float64)))
        return np.stack([self.cache[t] for t in texts])


def run_logreg_task(task: dict, spec: dict, out: Path, encoder: Encoder) -> dict:
    """``logreg_minilm`` on one ``<task>@seed<k>``: a logistic regression on the frozen embeddings."""
    from sklearn.linear_model import LogisticRegression

    labels = task["labels"]
    train, test = _read(task, LOGREG)
    s = spec["settings"]
    head = LogisticRegression(C=s["C"], class_weight=s["class_weight"], random_state=task["seed"])
    head.fit(encoder(train.texts), [labels.index(y) for y in train.labels])
    x_test = encoder(test.texts)
    classes = [int(c) for c in head.classes_]
    return _entry(task, spec, out, train, test, head.predict_proba(x_test), classes, head.predict(x_test))


def _check_packages(spec: dict) -> None:
    if spec["method"] == LOGREG:
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:
            raise SystemExit(MISSING_ENCODER) from None
        return
    try:
        import setfit
    except ImportError:
        raise SystemExit(MISSING_SETFIT) from None
    if setfit.__version__ != spec["setfit_version"]:
        raise SystemExit(f"setfit {setfit.__version__} found, the run spec wants {spec['setfit_version']}: "
                         "run `make setfit`")


def run(spec_path: str) -> dict:
    """Every task of the run spec at ``spec_path``; returns (and writes) ``metrics.json``."""
    spec = read_json(Path(spec_path))
    if not isinstance(spec, dict) or spec.get("method") not in ("setfit", LOGREG):
        raise SystemExit(f"{spec_path}: not a setfit or {LOGREG} run spec (runner.py writes it)")
    _check_packages(spec)
    _check_model(spec["model"])
    out = Path(spec["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    encoder = Encoder(spec["model"], spec["settings"]) if spec["method"] == LOGREG else None
    tasks = {}
    for task in spec["tasks"]:
        start = time.time()
        entry = run_task(task, spec, out) if encoder is None else run_logreg_task(task, spec, out, encoder)
        tasks[task["task"]] = {**entry, "seconds": round(time.time() - start, 1)}
        print(f"{spec['method']} [{task['task']}]: macro_f1 {tasks[task['task']]['macro_f1']:.4f}", flush=True)
    metrics = {"tasks": tasks, "macro_f1_mean": float(sum(t["macro_f1"] for t in tasks.values()) / len(tasks))}
    if not all(math.isfinite(t["macro_f1"]) for t in tasks.values()):
        raise SystemExit(f"{spec['method']}: a task's Macro F1 is not finite")
    replace_metrics(out, metrics)
    return metrics


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m axolotl_decselfmask.tools.experiments.setfit_run RUNSPEC.json")
    run(argv[0])


if __name__ == "__main__":
    main()
