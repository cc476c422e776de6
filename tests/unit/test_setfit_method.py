"""The `setfit` method of the experiment runner: SetFit on all-MiniLM-L6-v2, trained and evaluated
by the runner itself (tools/experiments/setfit_run.py), its metrics.json, predictions and done.json
in the decoder runs' form, and its rows in results.csv. Needs `make setfit` and `make setfit-model`."""

import csv
import json

import pytest
from helpers import SETFIT_MODEL, SETFIT_PACKAGES, setfit_grid

from axolotl_decselfmask.io.files import safe_filename
from axolotl_decselfmask.tools.experiments.results import row_key
from axolotl_decselfmask.tools.experiments.runner import plan, run_grid


def _require_setfit():
    import importlib.util

    if not (SETFIT_MODEL / "modules.json").is_file():
        pytest.skip("models/all-minilm-l6-v2 is missing: run `make setfit-model`")
    if not (SETFIT_PACKAGES / "setfit").is_dir() and importlib.util.find_spec("setfit") is None:
        pytest.skip("setfit is not installed: run `make setfit`")


def test_setfit_run_writes_decoder_form_outputs_and_results_rows(tmp_path):
    _require_setfit()
    out = tmp_path / "exp"
    rows = run_grid(str(setfit_grid(tmp_path, ["setfit"])), str(out))
    run_dir = out / "runs" / "abstracts" / "setfit"
    metrics = json.loads((run_dir / "output" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"neoplasms@seed0", "neoplasms@seed1"}  # the decoder's <task>@seed<k>
    for key, m in metrics["tasks"].items():
        assert 0.0 <= m["macro_f1"] <= 1.0 and m["n_test"] == 10 and m["n_train"] == 8
        assert sorted(m["labels"]) == ["no", "yes"]
        preds = [json.loads(line) for line in (run_dir / "output" / f"predictions-{safe_filename(key)}.jsonl").read_text().splitlines()]
        assert len(preds) == 10 and set(preds[0]) == {"id", "row", "gold", "pred", "scores"}
        assert all(p["pred"] in ("yes", "no") and len(p["scores"]) == 2 for p in preds)
        # the decision is the head's argmax of its log-probabilities (0.5 for two labels)
        assert all(p["pred"] == m["labels"][int(p["scores"][1] > p["scores"][0])] for p in preds)
        test = [json.loads(line) for line in open(json.loads((run_dir / "runspec.json").read_text())["tasks"][0]["test_file"])]
        assert [p["gold"] for p in preds] == [r["label"] for r in test]
    assert abs(metrics["macro_f1_mean"] - sum(m["macro_f1"] for m in metrics["tasks"].values()) / 2) < 1e-9
    done = json.loads((run_dir / "done.json").read_text())
    assert done["seconds"] > 0 and done["metrics"] == metrics
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted(row_key(r) for r in table) == [("abstracts", "neoplasms", "setfit", "0"),
                                                 ("abstracts", "neoplasms", "setfit", "1")]
    assert [r["stage1_tokens"] for r in table] == ["", ""] and len(rows) == 2
    # resumable like a decoder run: the finished run is not run again
    stamp = (run_dir / "run.log").stat().st_mtime_ns
    assert run_grid(str(setfit_grid(tmp_path, ["setfit"])), str(out)) == rows
    assert (run_dir / "run.log").stat().st_mtime_ns == stamp


def test_setfit_rows_are_keyed_like_a_decoder_methods(tmp_path):
    """The run spec's tasks are the decoder recipe's tasks (the same files, keys and labels)."""
    from axolotl_decselfmask.tools.experiments.data import build_data
    from axolotl_decselfmask.tools.experiments.grid import load_grid

    grid = load_grid(setfit_grid(tmp_path, ["sft", "setfit"]))
    out = tmp_path / "out"
    runs = {r["method"]: r for r in plan(grid, out, build_data(grid, out))}
    decoder = runs["sft"]["recipe"]["decselfmask"]["tasks"]
    spec = runs["setfit"]["recipe"]["tasks"]
    assert [(t["task"], t["train_file"], t["test_file"], t["labels"]) for t in decoder] == \
        [(t["task"], t["train_file"], t["test_file"], t["labels"]) for t in spec]
    assert runs["setfit"]["recipe"]["settings"] == {"num_iterations": 1, "num_epochs": 1, "batch_size": 16,
                                                    "max_seq_length": 128}


def test_missing_setfit_model_is_a_clear_error(tmp_path):
    from axolotl_decselfmask.tools.experiments.setfit_run import run

    spec = {"method": "setfit", "setfit_version": "1.2.0", "model": str(tmp_path / "nope"), "settings": {},
            "output_dir": str(tmp_path / "o"), "tasks": []}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(SystemExit, match="make setfit"):
        run(str(tmp_path / "spec.json"))
