"""The `logreg_minilm` method of the experiment runner: a logistic regression on the frozen
all-MiniLM-L6-v2 embeddings, run by the runner like `setfit` (tools/experiments/setfit_run.py),
its metrics.json, predictions and done.json in the decoder runs' form, and its rows in
results.csv. Needs `make setfit` (sentence-transformers is installed beside the venv) and
`make setfit-model`."""

import csv
import json
import sys

import numpy as np
import pytest
from helpers import SETFIT_MODEL, SETFIT_PACKAGES, setfit_grid

from axolotl_decselfmask.io.files import safe_filename
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import load_grid
from axolotl_decselfmask.tools.experiments.results import row_key
from axolotl_decselfmask.tools.experiments.runner import plan, run_grid


def _embed(texts: list[str]):
    """all-MiniLM-L6-v2's sentence embedding without sentence-transformers: the encoder's token states
    averaged over the note's first 128 word pieces (its Pooling module), scaled to length 1 (Normalize)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(SETFIT_MODEL), AutoModel.from_pretrained(SETFIT_MODEL).eval()
    batch = tok(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()


def _require_encoder():
    if not (SETFIT_MODEL / "modules.json").is_file():
        pytest.skip("models/all-minilm-l6-v2 is missing: run `make setfit-model`")
    if not (SETFIT_PACKAGES / "sentence_transformers").is_dir():
        pytest.skip("sentence-transformers is not installed beside the venv: run `make setfit`")


def test_logreg_run_writes_decoder_form_outputs_and_results_rows(tmp_path):
    _require_encoder()
    out = tmp_path / "exp"
    rows = run_grid(str(setfit_grid(tmp_path, ["logreg_minilm"])), str(out))
    run_dir = out / "runs" / "abstracts" / "logreg_minilm"
    metrics = json.loads((run_dir / "output" / "metrics.json").read_text())
    spec = json.loads((run_dir / "runspec.json").read_text())
    assert spec["settings"] == {"max_seq_length": 128, "encode_batch_size": 32, "C": 1.0, "class_weight": None}
    assert set(metrics["tasks"]) == {"neoplasms@seed0", "neoplasms@seed1"}
    for key, m in metrics["tasks"].items():
        assert 0.0 <= m["macro_f1"] <= 1.0 and m["n_test"] == 10 and m["n_train"] == 8
        assert sorted(m["labels"]) == ["no", "yes"] and m["method"] == "logreg_minilm" and not m["stage1"]
        preds = [json.loads(line) for line in
                 (run_dir / "output" / f"predictions-{safe_filename(key)}.jsonl").read_text().splitlines()]
        assert len(preds) == 10 and set(preds[0]) == {"id", "row", "gold", "pred", "scores"}
        assert all(abs(sum(np.exp(p["scores"])) - 1) < 1e-9 for p in preds)  # log-probabilities of the labels
        assert all(p["pred"] == m["labels"][int(np.argmax(p["scores"]))] for p in preds)
        test = [json.loads(line) for line in open(spec["tasks"][0]["test_file"])]
        assert [p["gold"] for p in preds] == [r["label"] for r in test]
    # seed 0's probabilities: scikit-learn's default regression fitted here on the frozen embeddings
    from sklearn.linear_model import LogisticRegression

    task = spec["tasks"][0]
    train = [json.loads(line) for line in open(task["train_file"])]
    head = LogisticRegression(random_state=0).fit(_embed([r["text"] for r in train]),
                                                  [task["labels"].index(r["label"]) for r in train])
    proba = head.predict_proba(_embed([r["text"] for r in test]))
    preds = [json.loads(line) for line in (run_dir / "output" / f"predictions-{safe_filename(task['task'])}.jsonl")
             .read_text().splitlines()]
    assert task["task"] == "neoplasms@seed0" and np.allclose(np.exp([p["scores"] for p in preds]), proba, atol=1e-4)
    done = json.loads((run_dir / "done.json").read_text())
    assert done["seconds"] > 0 and done["metrics"] == metrics
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted(row_key(r) for r in table) == [("abstracts", "neoplasms", "logreg_minilm", "0"),
                                                 ("abstracts", "neoplasms", "logreg_minilm", "1")]
    assert [r["stage1_tokens"] for r in table] == ["", ""] and len(rows) == 2
    assert len(list((out / "predictions").rglob("*logreg_minilm*"))) == 2  # one committed file per seed
    stamp = (run_dir / "run.log").stat().st_mtime_ns  # resumable: the finished run is not run again
    assert run_grid(str(setfit_grid(tmp_path, ["logreg_minilm"])), str(out)) == rows
    assert (run_dir / "run.log").stat().st_mtime_ns == stamp


def test_logreg_spec_has_the_decoder_tasks(tmp_path):
    grid = load_grid(setfit_grid(tmp_path, ["sft", "logreg_minilm"]))
    out = tmp_path / "out"
    runs = {r["method"]: r for r in plan(grid, out, build_data(grid, out))}
    decoder = runs["sft"]["recipe"]["decselfmask"]["tasks"]
    spec = runs["logreg_minilm"]["recipe"]
    assert spec["method"] == "logreg_minilm" and "setfit_version" not in spec
    assert [(t["task"], t["train_file"], t["test_file"], t["labels"]) for t in decoder] == \
        [(t["task"], t["train_file"], t["test_file"], t["labels"]) for t in spec["tasks"]]


def test_missing_encoder_model_is_a_clear_error(tmp_path):
    from axolotl_decselfmask.tools.experiments.setfit_run import run

    if (SETFIT_PACKAGES / "sentence_transformers").is_dir():
        sys.path.insert(0, str(SETFIT_PACKAGES))  # as the runner's PYTHONPATH
    spec = {"method": "logreg_minilm", "model": str(tmp_path / "nope"), "settings": {}, "output_dir": str(tmp_path),
            "tasks": []}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    try:
        with pytest.raises(SystemExit, match="make setfit"):
            run(str(tmp_path / "spec.json"))
    finally:
        if sys.path[0] == str(SETFIT_PACKAGES):
            sys.path.pop(0)
