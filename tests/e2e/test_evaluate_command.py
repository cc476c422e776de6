"""``axolotl decselfmask evaluate`` on a trained tiny run (a tiny random Llama trained by ``run_stage2``
as the plugin runs it, stage 1 off, real abstracts; a task with a test file, a yes/no task with a
``test_fraction`` split, and a multi-label task): without a file it gives the run's own
``metrics.json`` figures, training nothing; with a file it scores every row of it; a confusion matrix
and a reliability diagram per task are drawn beside the JSON."""

import contextlib
import copy
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import base_recipe, data_rows, write_rows

BIN = Path(sys.executable).parent
TOPICS = ["neoplasms", "cardiovascular diseases", "treatment"]
COMPARED = ("macro_f1", "accuracy", "n_test", "macro_f1_argmax", "accuracy_argmax", "per_class_f1",
            "confusion_matrix", "calibration", "micro_f1", "label_accuracy")


def _topics(row):
    return [y for y in TOPICS[:2] if row["label"] == y] + (["treatment"] if "treatment" in row["text"].lower() else [])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llama):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.run import run_stage2

    tmp = tmp_path_factory.mktemp("evaluate_command")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    train = data_rows("abstracts_train.jsonl", per_class=2)
    write_rows(tmp / "train.jsonl", train)
    write_rows(tmp / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=2))
    write_rows(tmp / "train_neo.jsonl", [dict(r, label="yes" if r["label"] == "neoplasms" else "no") for r in train])
    write_rows(tmp / "train_topics.jsonl", [{"id": r["id"], "text": r["text"], "topics": _topics(r)} for r in train])
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["decselfmask"]["classification"].update(batch_size=4, max_steps=1)
    recipe["decselfmask"]["tasks"] = [
        {"task": "abstracts"},
        {"task": "neoplasm", "train_file": str(tmp / "train_neo.jsonl"), "test_file": None, "test_fraction": 0.5,
         "labels": ["yes", "no"], "question": "Is the text above about a neoplasm?"},
        {"task": "topics", "train_file": str(tmp / "train_topics.jsonl"), "test_file": None, "test_fraction": 0.5,
         "label_column": "topics", "labels": TOPICS}]
    with contextlib.redirect_stdout(io.StringIO()):
        run_stage2(DictDefault(copy.deepcopy(recipe)), DecSelfMaskConfig(**recipe["decselfmask"]), progress=False)
    (tmp / "recipe.yml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return tmp, recipe


def _evaluate(tmp, *args):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    return subprocess.run([str(BIN / "axolotl"), "decselfmask", "evaluate", str(tmp / "recipe.yml"), *map(str, args),
                           "--no-progress"], env=env, capture_output=True, text=True, timeout=900)


def _close(a, b) -> bool:
    """The same figures (floats within 1e-6), the same everything else."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, abs=1e-6)
    return a == b


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_without_a_file_it_gives_the_runs_metrics_without_training(trained):
    tmp, recipe = trained
    run_dir = Path(recipe["output_dir"])
    before = _digest(run_dir)
    proc = _evaluate(tmp, "--out", tmp / "again")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert _digest(run_dir) == before  # nothing trained, fitted or written in the run's folder
    run = json.loads((run_dir / "metrics.json").read_text())
    mine = json.loads((tmp / "again" / "metrics.json").read_text())
    assert sorted(mine["tasks"]) == sorted(run["tasks"]) == ["abstracts", "neoplasm", "topics"]
    for task, entry in run["tasks"].items():
        assert set(mine["tasks"][task]) == set(entry) | {"evaluated_file"}  # the same shape
        for key in COMPARED:
            if key in entry:
                assert _close(mine["tasks"][task][key], entry[key]), (task, key, mine["tasks"][task][key], entry[key])
    for y, per_label in run["tasks"]["topics"]["per_label"].items():
        assert mine["tasks"]["topics"]["per_label"][y]["confusion_matrix"] == per_label["confusion_matrix"]
    assert mine["macro_f1_mean"] == pytest.approx(run["macro_f1_mean"], abs=1e-6)
    for task in ("abstracts", "neoplasm", "topics"):
        theirs = [json.loads(line) for line in (run_dir / f"predictions-{task}.jsonl").read_text().splitlines()]
        ours = [json.loads(line) for line in (tmp / "again" / f"predictions-{task}.jsonl").read_text().splitlines()]
        assert [(r["id"], r["pred"]) for r in ours] == [(r["id"], r["pred"]) for r in theirs]
        for picture in (f"confusion-{task}.png", f"reliability-{task}.png"):
            from PIL import Image

            with Image.open(tmp / "again" / picture) as image:
                assert image.format == "PNG" and min(image.size) > 100


def test_with_a_file_it_scores_every_row(trained):
    tmp, recipe = trained
    rows = data_rows("abstracts_test.jsonl")[:7] + [{"id": "blank", "text": "  ", "label": "neoplasms"}]
    write_rows(tmp / "new_labels.jsonl", [dict(r, id=f"new-{r['id']}") for r in rows])
    refused = _evaluate(tmp, tmp / "new_labels.jsonl", "--out", tmp / "new")
    assert refused.returncode == 2 and "say with --task" in refused.stderr
    proc = _evaluate(tmp, tmp / "new_labels.jsonl", "--task", "abstracts", "--out", tmp / "new")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    metrics = json.loads((tmp / "new" / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["abstracts"]
    entry = metrics["tasks"]["abstracts"]
    assert entry["n_test"] == 7 and entry["evaluated_file"] == str(tmp / "new_labels.jsonl")  # the blank note skipped
    assert sum(map(sum, entry["confusion_matrix"]["matrix"])) == 7
    predictions = [json.loads(line) for line in (tmp / "new" / "predictions-abstracts.jsonl").read_text().splitlines()]
    assert [p["id"] for p in predictions] == [f"new-{r['id']}" for r in rows[:7]]
    assert entry["accuracy"] == pytest.approx(sum(p["pred"] == p["gold"] for p in predictions) / 7)
    wrong = _evaluate(tmp, tmp / "new_labels.jsonl", "--task", "nope", "--out", tmp / "nope")
    assert wrong.returncode == 2 and "its tasks are ['abstracts', 'neoplasm', 'topics']" in wrong.stderr
    over = _evaluate(tmp, "--out", recipe["output_dir"])
    assert over.returncode == 2 and "that is the run's output_dir" in over.stderr
