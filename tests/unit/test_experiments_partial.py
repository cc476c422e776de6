"""The experiment runner's corpus look-up (``--data-dir``), a ``--methods`` subset that keeps the
other methods' rows of results.csv, and empty label cells (no labelled or test example)."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers import data_rows

from axolotl_decselfmask.io.files import atomic_write_json
from axolotl_decselfmask.tools.experiments.cli import main
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import load_grid
from axolotl_decselfmask.tools.experiments.results import DONE_FILE, read_csv, run_key
from axolotl_decselfmask.tools.experiments.runner import plan, run_grid


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _corpus(path: Path, blank_every: int = 0) -> Path:
    """Real abstracts with their 5-class label; every ``blank_every``-th label cell left empty."""
    rows = data_rows("abstracts_test.jsonl") + data_rows("abstracts_train.jsonl")
    return _write_csv(path, [{"text": r["text"], "label": "" if blank_every and i % blank_every == 0 else r["label"]}
                             for i, r in enumerate(rows)])


def _grid(folder: Path, corpus_file: str, **over) -> Path:
    grid = {"model": "models/smollm2-135m-instruct", "methods": ["sft", "decselfmask"], "seeds": [0, 1],
            "labelled_per_task": 10, "test_per_task": 20, "pool_size": 30,
            "corpora": [{"name": "abstracts", "file": corpus_file, "tasks": [
                {"name": "category", "label_column": "label", "question": "Which category?"},
                {"name": "neoplasms", "label_column": "label", "positive": "neoplasms",
                 "question": "Is the abstract above about neoplasms?"}]}]}
    grid.update(over)
    path = folder / "grid.yml"
    path.write_text(yaml.safe_dump(grid))
    return path


# ------------------------------------------------------------------------------------ --data-dir

def test_data_dir_is_where_the_corpus_files_are_looked_up(tmp_path):
    data_dir = tmp_path / "corpora"
    data_dir.mkdir()
    _corpus(data_dir / "abstracts.csv")
    grid_dir = tmp_path / "grids"
    grid_dir.mkdir()
    grid_path = _grid(grid_dir, "../shared/data/abstracts.csv")  # as a grid in this repository names it
    with pytest.raises(SystemExit, match="--data-dir"):  # not there: the error says how to point at it
        load_grid(grid_path)
    grid = load_grid(grid_path, data_dir)
    assert grid.corpora[0].file == str((data_dir / "abstracts.csv").resolve())
    with pytest.raises(SystemExit, match=r"abstracts\.csv is not in --data-dir"):
        load_grid(grid_path, tmp_path)
    with pytest.raises(SystemExit, match="no such folder"):
        load_grid(grid_path, tmp_path / "nowhere")
    # the command line: a dry run builds the data from the corpus in --data-dir
    out = tmp_path / "out"
    main(["run", str(grid_path), "--out", str(out), "--data-dir", str(data_dir), "--dry-run"])
    test = [json.loads(line) for line in open(out / "data" / "abstracts" / "test-category.jsonl")]
    assert len(test) == 20 and all(r["text"] for r in test)
    assert (out / "runs" / "abstracts" / "decselfmask" / "recipe.yml").is_file()


def test_without_data_dir_paths_are_from_the_current_folder_else_the_grid_folder(tmp_path, monkeypatch):
    _corpus(tmp_path / "abstracts.csv")
    (tmp_path / "grids").mkdir()
    grid_path = _grid(tmp_path / "grids", "../abstracts.csv")  # from the grid file's folder
    monkeypatch.chdir(tmp_path / "grids")
    assert load_grid(grid_path).corpora[0].file == str((tmp_path / "abstracts.csv").resolve())
    monkeypatch.chdir(tmp_path)
    here = _grid(tmp_path / "grids", "abstracts.csv")  # from the current folder
    assert load_grid(here).corpora[0].file == str((tmp_path / "abstracts.csv").resolve())


# ------------------------------------------------------------------------------------ --methods

def _finish(run: dict, f1: float) -> None:
    """A finished run as ``execute`` leaves it: done.json with the recipe's fingerprint and metrics."""
    tasks = {}
    for t in run["recipe"]["decselfmask"]["tasks"]:
        tasks[t["task"]] = {"macro_f1": f1, "accuracy": 0.5, "n_test": 20, "n_train": 10, "labels": t["labels"]}
    run["dir"].mkdir(parents=True, exist_ok=True)
    atomic_write_json(run["dir"] / DONE_FILE, {"run_key": run_key(run), "seconds": 1.0,
                                               "stage1_tokens": None, "metrics": {"tasks": tasks}})


def test_a_methods_subset_never_drops_or_changes_the_other_methods_rows(tmp_path):
    corpus = _corpus(tmp_path / "abstracts.csv")
    grid_path = _grid(tmp_path, str(corpus))
    out = tmp_path / "out"
    grid = load_grid(grid_path)
    runs = plan(grid, out, build_data(grid, out))
    for r in runs:
        _finish(r, {"sft": 0.25, "decselfmask": 0.5}[r["method"]])
    run_grid(str(grid_path), str(out))  # everything finished: nothing runs, results written
    before = read_csv(out)
    assert {r["method"] for r in before} == {"sft", "decselfmask"} and len(before) == 2 * 2 * 2

    # decselfmask again with a new result; sft's run folders deleted (say, for disk space)
    for r in runs:
        if r["method"] == "decselfmask":
            _finish(r, 0.75)
        else:
            (r["dir"] / DONE_FILE).unlink()
    rows = run_grid(str(grid_path), str(out), methods=["decselfmask"])
    after = read_csv(out)
    assert after == rows
    sft = [r for r in after if r["method"] == "sft"]
    assert sft == [r for r in before if r["method"] == "sft"]  # kept exactly
    assert {r["macro_f1"] for r in after if r["method"] == "decselfmask"} == {0.75}  # the subset's rows are new
    assert len(after) == len(before)
    md = (out / "results.md").read_text()
    assert "| sft | 0.2500" in md and "| decselfmask | 0.7500" in md and "+0.5000" in md  # from all rows
    assert (out / "tasks_decselfmask_vs_sft.png").is_file()
    with pytest.raises(SystemExit, match="not among the grid's methods"):
        run_grid(str(grid_path), str(out), methods=["decselfmsk"])


def test_results_csv_read_back_equals_the_collected_rows(tmp_path):
    from axolotl_decselfmask.tools.experiments.results import collect, write_csv

    corpus = _corpus(tmp_path / "abstracts.csv")
    grid = load_grid(_grid(tmp_path, str(corpus), methods=["zero_shot", "sft"]))
    runs = plan(grid, tmp_path / "out", build_data(grid, tmp_path / "out"))
    for r in runs:
        _finish(r, 0.4)
    rows = collect(grid, runs)
    write_csv(tmp_path, rows)
    assert read_csv(tmp_path) == rows and read_csv(tmp_path / "none") == []


# ------------------------------------------------------------------------------------ empty label cells

def test_an_empty_label_cell_is_no_labelled_or_test_example(tmp_path):
    corpus = _corpus(tmp_path / "abstracts.csv", blank_every=3)
    with open(corpus, newline="") as f:
        blank_rows = {i for i, r in enumerate(csv.DictReader(f)) if r["label"] == ""}
    assert blank_rows
    grid = load_grid(_grid(tmp_path, str(corpus), seeds=[0, 1, 2], test_per_task=40, pool_size=400))
    data = build_data(grid, tmp_path / "out")["abstracts"]
    read = lambda p: [json.loads(line) for line in open(p)]  # noqa: E731
    category = data["tasks"]["category"]
    assert "" not in category["labels"] and len(category["labels"]) == 5
    for task in data["tasks"].values():
        for path in [task["test"], *task["train"].values()]:
            rows = read(path)
            assert rows and not {r["row"] for r in rows} & blank_rows
            assert all(r["label"] for r in rows)
    assert {r["label"] for r in read(data["tasks"]["neoplasms"]["test"])} == {"yes", "no"}
    assert {r["row"] for r in read(data["pool"])} & blank_rows  # unlabelled notes are pool notes


# ------------------------------------------------------------------------------------ committed predictions

def _finish_predicting(run: dict, rng, error: float, seconds: float = 2.0) -> None:
    """A finished run with its per-note predictions: metrics.json's entries and predictions files
    as the plugin writes them (stage2.metrics), from predictions wrong on about ``error`` of the notes."""
    import numpy as np

    from axolotl_decselfmask.io.files import read_jsonl
    from axolotl_decselfmask.stage2.metrics import classification_report_dict
    from axolotl_decselfmask.stage2.outputs import write_predictions

    out = run["dir"] / "output"
    tasks = {}
    for t in run["recipe"]["decselfmask"]["tasks"]:
        gold = [r["label"] for r in read_jsonl(t["test_file"])]
        labels = t["labels"]
        pred = [g if rng.random() > error else labels[int(rng.integers(len(labels)))] for g in gold]
        rep = classification_report_dict(gold, pred, labels)
        tasks[t["task"]] = {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"], "n_test": len(gold),
                            "n_train": 10, "labels": labels}
        n = len(gold)
        write_predictions(out, t["task"], list(range(n)), list(range(n)), gold, pred, np.zeros((n, len(labels))),
                          labels)
    atomic_write_json(out / "metrics.json", {"tasks": tasks})
    atomic_write_json(run["dir"] / DONE_FILE, {"run_key": run_key(run), "seconds": seconds,
                                               "stage1_tokens": 321 if run["method"] == "decselfmask" else None,
                                               "metrics": {"tasks": tasks}})


def _row_sort(rows):
    return sorted(rows, key=lambda r: (r["corpus"], r["method"], r["task"], r["seed"]))


def test_report_from_the_committed_predictions_alone_gives_the_rows_of_metrics_json(tmp_path):
    import shutil

    import numpy as np

    from axolotl_decselfmask.tools.experiments.predictions import (
        load_predictions,
        rows_from_predictions,
    )
    from axolotl_decselfmask.tools.experiments.results import collect

    corpus = _corpus(tmp_path / "abstracts.csv")
    grid_path = _grid(tmp_path, str(corpus), methods=["zero_shot", "sft", "decselfmask"])
    out, committed = tmp_path / "out", tmp_path / "docs" / "predictions"
    grid = load_grid(grid_path)
    runs = plan(grid, out, build_data(grid, out))
    rng = np.random.default_rng(0)
    for r in runs:
        _finish_predicting(r, rng, {"zero_shot": 0.6, "sft": 0.5, "decselfmask": 0.2}[r["method"]],
                           seconds={"zero_shot": 3.0, "sft": 5.0, "decselfmask": 7.0}[r["method"]])
    main(["run", str(grid_path), "--out", str(out), "--predictions-dir", str(committed), "--resamples", "300"])
    files = sorted(p.relative_to(committed).as_posix() for p in committed.rglob("*.jsonl.gz"))
    assert files == ["abstracts/decselfmask-seed0.jsonl.gz", "abstracts/decselfmask-seed1.jsonl.gz",
                     "abstracts/sft-seed0.jsonl.gz", "abstracts/sft-seed1.jsonl.gz", "abstracts/zero_shot-seed0.jsonl.gz"]
    from_metrics = collect(grid, runs)
    assert len(from_metrics) == 3 * 2 * 2
    assert _row_sort(rows_from_predictions(load_predictions(committed))) == _row_sort(from_metrics)

    shutil.rmtree(out / "runs")  # the runs are gone; the committed predictions are enough
    shutil.rmtree(out / "data")
    fresh = tmp_path / "report"
    main(["report", str(grid_path), "--out", str(fresh), "--predictions-dir", str(committed), "--resamples", "300"])
    assert _row_sort(read_csv(fresh)) == _row_sort(from_metrics)
    md = (fresh / "results.md").read_text()
    assert "decselfmask minus this [95% CI]" in md and "300 resamples" in md
    sft_line = next(line for line in md.splitlines() if line.startswith("| sft |"))
    assert sft_line.count("[") == 2 and " * |" in sft_line  # its interval and the difference's, above zero
    boot = json.loads((fresh / "bootstrap.json").read_text())
    assert boot["scopes"]["all"]["difference"]["sft"]["low"] > 0
    claim = next(line for line in md.splitlines() if line.startswith("| sft | +19.9 | all |"))
    d = boot["scopes"]["all"]["difference"]["sft"]
    assert f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}," in claim and "decselfmask better" in claim
    assert claim.endswith("| yes |") == (d["low"] <= 0.199 <= d["high"])
    assert "| continual_pretraining | +6.3 | all |  | not in these runs |  |" in md
    per_corpus = [line for line in md.splitlines() if line.startswith("| abstracts | 2 |")]
    # the cost column: each run once (stage 1 shared: one run holds both seeds' files)
    assert [line.rsplit("|", 2)[1].strip() for line in per_corpus] == ["3", "5", "7"]
    assert (fresh / "methods.png").is_file() and (fresh / "tasks_minus_sft.png").is_file()
    with pytest.raises(SystemExit, match="no predictions"):
        main(["report", str(grid_path), "--out", str(tmp_path / "empty")])


def test_a_methods_run_leaves_the_other_methods_prediction_files_alone(tmp_path):
    import numpy as np

    corpus = _corpus(tmp_path / "abstracts.csv")
    grid_path = _grid(tmp_path, str(corpus))
    out = tmp_path / "out"
    grid = load_grid(grid_path)
    runs = plan(grid, out, build_data(grid, out))
    rng = np.random.default_rng(1)
    for r in runs:
        _finish_predicting(r, rng, 0.4)
    run_grid(str(grid_path), str(out), resamples=100)
    pred = out / "predictions" / "abstracts"
    stamp = lambda p: (p.read_bytes(), p.stat().st_mtime_ns)  # noqa: E731
    before = {p.name: stamp(p) for p in pred.iterdir()}
    assert sorted(before) == ["decselfmask-seed0.jsonl.gz", "decselfmask-seed1.jsonl.gz", "sft-seed0.jsonl.gz",
                              "sft-seed1.jsonl.gz"]
    run_grid(str(grid_path), str(out), resamples=100)  # the same content: no file rewritten
    assert {p.name: stamp(p) for p in pred.iterdir()} == before

    for r in runs:  # decselfmask again with other predictions; sft's run folders deleted
        if r["method"] == "decselfmask":
            _finish_predicting(r, rng, 0.1)
        else:
            (r["dir"] / DONE_FILE).unlink()
    run_grid(str(grid_path), str(out), methods=["decselfmask"], resamples=100)
    after = {p.name: stamp(p) for p in pred.iterdir()}
    assert sorted(after) == sorted(before)
    assert all(after[n] == before[n] for n in before if n.startswith("sft"))
    assert all(after[n][0] != before[n][0] for n in before if n.startswith("decselfmask"))
    assert "decselfmask minus this" in (out / "results.md").read_text()


def test_a_predictions_file_of_22_tasks_x_200_notes_is_small(tmp_path):
    import numpy as np

    from axolotl_decselfmask.io.files import atomic_write_jsonl
    from axolotl_decselfmask.stage2.outputs import write_predictions
    from axolotl_decselfmask.tools.experiments.predictions import (
        export_run,
        read_predictions,
    )

    rng = np.random.default_rng(0)
    rows = sorted(rng.choice(2376, 200, replace=False).tolist())
    test_file = tmp_path / "test.jsonl"
    atomic_write_jsonl(test_file, [{"text": "x", "label": "no", "row": r} for r in rows])
    run = {"corpus": "mtsamples", "method": "sft", "dir": tmp_path / "run",
           "recipe": {"decselfmask": {"tasks": [{"task": f"t{i}@seed0", "test_file": str(test_file)}
                                                for i in range(22)]}}}
    tasks = {}
    for i in range(22):
        gold = rng.choice(["yes", "no"], 200).tolist()
        pred = [g if rng.random() < 0.7 else ("yes" if g == "no" else "no") for g in gold]
        write_predictions(run["dir"] / "output", f"t{i}@seed0", list(range(200)), list(range(200)), gold, pred,
                          rng.normal(size=(200, 2)), ["yes", "no"])
        tasks[f"t{i}@seed0"] = {"labels": ["yes", "no"], "n_train": 16}
    (path,) = export_run(run, {"seconds": 12.5, "stage1_tokens": None, "metrics": {"tasks": tasks}}, tmp_path / "p",
                         [0, 1, 2])
    size = path.stat().st_size
    print(f"predictions file, 22 tasks x 200 notes: {size} bytes")
    assert size < 16_000
    rec = read_predictions(path)
    assert rec["seconds"] == 12.5 and rec["seeds"] == [0] and len(rec["tasks"]) == 22
    assert rec["tasks"][0]["row"] == rows  # the notes' corpus rows, from the test file


def test_tasks_of_a_shared_test_set_are_one_group_of_the_bootstrap(tmp_path):
    import numpy as np

    from axolotl_decselfmask.tools.experiments.bootstrap import prepare
    from axolotl_decselfmask.tools.experiments.predictions import (
        load_predictions,
        rows_from_predictions,
    )
    from axolotl_decselfmask.tools.experiments.results import collect

    corpus = _corpus(tmp_path / "abstracts.csv")
    grid_path = _grid(tmp_path, str(corpus), test_notes=30, test_min_positives=5)
    out = tmp_path / "out"
    grid = load_grid(grid_path)
    runs = plan(grid, out, build_data(grid, out))
    rng = np.random.default_rng(2)
    for r in runs:
        _finish_predicting(r, rng, 0.3)
    run_grid(str(grid_path), str(out), resamples=100)
    records = load_predictions(out / "predictions")
    assert _row_sort(rows_from_predictions(records)) == _row_sort(collect(grid, runs))
    (c,) = prepare(records, ["sft", "decselfmask"])
    assert [g.tasks for g in c.groups] == [["category", "neoplasms"]]  # one note weight vector for both
    test_rows = [json.loads(line)["row"] for line in open(runs[0]["recipe"]["decselfmask"]["tasks"][0]["test_file"])]
    assert c.groups[0].rows.tolist() == sorted(test_rows)  # the corpus rows of the shared test notes


def test_a_multi_label_task_is_one_yes_no_task_per_label_as_in_results_csv(tmp_path):
    from axolotl_decselfmask.io.files import atomic_write_jsonl
    from axolotl_decselfmask.stage2.metrics import classification_report_dict
    from axolotl_decselfmask.tools.experiments.predictions import (
        export_run,
        load_predictions,
        rows_from_predictions,
    )
    from axolotl_decselfmask.tools.experiments.results import _rows_of

    gold = [["a"], ["a", "b"], [], ["b"], ["a"], []]
    pred = [["a"], ["b"], ["b"], ["b"], [], []]
    per_label = {}
    for y in ("a", "b"):
        g = ["yes" if y in s else "no" for s in gold]
        p = ["yes" if y in s else "no" for s in pred]
        rep = classification_report_dict(g, p, ["yes", "no"])
        per_label[y] = {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"], "n_test": 6, "n_pseudo": 0}
    entry = {"multi_label": True, "labels": ["a", "b"], "label_answers": ["yes", "no"], "per_label": per_label,
             "macro_f1": 0.5, "accuracy": 0.5, "n_test": 6, "n_train": 8}
    run = {"corpus": "c", "method": "sft", "dir": tmp_path / "run", "recipe": {}}
    atomic_write_jsonl(tmp_path / "run" / "output" / "predictions-topics_seed1.jsonl",
                       [{"id": i, "row": i, "gold": g, "pred": p, "scores": {}} for i, (g, p) in
                        enumerate(zip(gold, pred))])
    record = {"seconds": 3.0, "stage1_tokens": None, "metrics": {"tasks": {"topics@seed1": entry}}}
    export_run(run, record, tmp_path / "p", [0, 1])
    got = rows_from_predictions(load_predictions(tmp_path / "p"))
    assert [r["task"] for r in got] == ["topics/a", "topics/b"]
    assert _row_sort(got) == _row_sort(_rows_of(None, run, record))


def test_report_of_two_grids_pools_their_corpora_even_without_the_corpus_files(tmp_path):
    import numpy as np

    corpus = _corpus(tmp_path / "abstracts.csv")
    committed = tmp_path / "committed"
    rng = np.random.default_rng(3)
    grids = []
    for name in ("abstracts", "other"):
        folder = tmp_path / name
        folder.mkdir()
        g = yaml.safe_load(_grid(folder, str(corpus)).read_text())
        g["corpora"][0]["name"] = name
        (folder / "grid.yml").write_text(yaml.safe_dump(g))
        grid = load_grid(folder / "grid.yml")
        runs = plan(grid, folder / "out", build_data(grid, folder / "out"))
        for r in runs:
            _finish_predicting(r, rng, {"sft": 0.5, "decselfmask": 0.3}[r["method"]])
        run_grid(str(folder / "grid.yml"), str(folder / "out"), predictions_dir=str(committed), resamples=50)
        grids.append(str(folder / "grid.yml"))
    corpus.unlink()  # neither the corpus nor the runs are needed by the report
    rows = main(["report", *grids, "--out", str(tmp_path / "both"), "--predictions-dir", str(committed),
                 "--resamples", "200"]) or read_csv(tmp_path / "both")
    assert {r["corpus"] for r in rows} == {"abstracts", "other"} and len(rows) == 2 * 2 * 2 * 2
    boot = json.loads((tmp_path / "both" / "bootstrap.json").read_text())
    assert set(boot["scopes"]) == {"all", "abstracts", "other"} and boot["scopes"]["all"]["n_tasks"] == 4
    assert "| other | 2 | sft |" in (tmp_path / "both" / "results.md").read_text()


def test_a_fresh_checkout_counts_runs_with_committed_predictions_of_the_same_recipe_as_finished(
        tmp_path, capsys, monkeypatch):
    import shutil

    import numpy as np

    from axolotl_decselfmask.tools.experiments.predictions import export_finished
    from axolotl_decselfmask.tools.experiments.results import collect

    monkeypatch.chdir(tmp_path)  # the grid's model path resolves from here, in every step
    corpus = _corpus(tmp_path / "abstracts.csv")
    grid_path = _grid(tmp_path, str(corpus), share_stage1_across_seeds=False,  # one run per seed
                      methods=["zero_shot", "sft", "decselfmask"])
    out, committed = tmp_path / "out", tmp_path / "docs" / "predictions"
    grid = load_grid(grid_path)
    runs = plan(grid, out, build_data(grid, out))
    assert [(r["method"], r["seeds"]) for r in runs] == [("zero_shot", [0]), ("sft", [0]), ("sft", [1]),
                                                          ("decselfmask", [0]), ("decselfmask", [1])]
    rng = np.random.default_rng(2)
    for r in runs[:4]:  # four of the five runs finished before the checkout was lost
        _finish_predicting(r, rng, 0.3)
    from_metrics = collect(grid, runs)
    assert len(export_finished(runs, committed, grid.seeds)) == 4  # as run_grid does after each run
    shutil.rmtree(out)  # a fresh checkout: outputs/ is gone, the predictions are committed
    out = Path("out")  # the grid may go to another --out, here a relative one ("out" is in "output_dir" too)
    stale = out / "runs" / "abstracts" / "sft-seed1" / DONE_FILE
    stale.parent.mkdir(parents=True)
    atomic_write_json(stale, {"run_key": "an older recipe", "seconds": 1.0, "metrics": {}})  # loses to the files
    capsys.readouterr()
    run_grid(str(grid_path), str(out), predictions_dir=str(committed), dry_run=True)
    printed = capsys.readouterr().out
    assert "5 runs (4 already done)" in printed
    assert printed.count("would run:") == 1 and runs[4]["dir"].name in printed.split("would run:")[1]

    # the fifth finishes; nothing else runs, and the rows of the other four (zero-shot: every seed)
    # come from their files
    runs = plan(grid, out, build_data(grid, out))
    _finish_predicting(runs[4], rng, 0.3)
    rows = run_grid(str(grid_path), str(out), predictions_dir=str(committed), resamples=50)
    assert _row_sort(rows) == _row_sort(from_metrics + collect(grid, runs[4:]))
    assert len(rows) == 3 * 2 * 2

    # a third seed: the runs of seeds 0 and 1 stay finished (their data files are unchanged)
    shutil.rmtree(out)
    grid_path = _grid(tmp_path, str(corpus), share_stage1_across_seeds=False, seeds=[0, 1, 2],
                      methods=["zero_shot", "sft", "decselfmask"])
    capsys.readouterr()
    run_grid(str(grid_path), str(out), predictions_dir=str(committed), dry_run=True)
    printed = capsys.readouterr().out
    assert "7 runs (5 already done)" in printed  # the five, from their committed files
    assert {line.split("/")[-2] for line in printed.splitlines() if "would run" in line} == {
        "sft-seed2", "decselfmask-seed2"}

    # another recipe (more labelled examples): the committed files no longer count
    shutil.rmtree(out)
    grid_path = _grid(tmp_path, str(corpus), share_stage1_across_seeds=False, labelled_per_task=12)
    capsys.readouterr()
    run_grid(str(grid_path), str(out), predictions_dir=str(committed), dry_run=True)
    assert "4 runs (0 already done)" in capsys.readouterr().out


def test_a_run_key_is_the_same_under_another_out_folder_and_changes_with_a_data_file(tmp_path, monkeypatch):
    from axolotl_decselfmask.tools.experiments.results import run_key

    corpus = _corpus(tmp_path / "abstracts.csv")
    grid = load_grid(_grid(tmp_path, str(corpus), share_stage1_across_seeds=False))
    monkeypatch.chdir(tmp_path)
    keys = {}
    for out in (Path("out"), Path("o"), tmp_path / "abs" / "out"):
        runs = plan(grid, out, build_data(grid, out))
        keys[str(out)] = [run_key(r) for r in runs]
    assert len({tuple(k) for k in keys.values()}) == 1  # "o" is in "output_dir", "lora_dropout": no matter
    train = next(Path(t["train_file"]) for t in runs[0]["recipe"]["decselfmask"]["tasks"])
    train.write_text(train.read_text().replace("a", "b", 1))
    after = [run_key(r) for r in runs]  # sft-seed0, sft-seed1, decselfmask-seed0, decselfmask-seed1
    assert [a != b for a, b in zip(after, keys["out"])] == [True, False, True, False]  # seed 0's file only


def test_a_claims_verdict_follows_the_interval_not_the_point():
    from axolotl_decselfmask.tools.experiments.report import claims_lines, verdict

    assert verdict({"mean": 0.02, "low": 0.001, "high": 0.04}).startswith("decselfmask better")
    assert verdict({"mean": 0.05, "low": -0.001, "high": 0.1}).startswith("undecided")
    assert verdict({"mean": -0.02, "low": -0.04, "high": -0.001}).startswith("decselfmask worse")
    boot = {"scopes": {"all": {"difference": {"setfit": {"mean": -0.1, "low": -0.15, "high": -0.05}}},
                       "mtsamples": {"difference": {"setfit": {"mean": -0.2, "low": -0.3, "high": -0.1}}}}}
    lines = claims_lines(boot)
    assert "| setfit |  | all | -10.0 [-15.0, -5.0] | decselfmask worse (interval below zero) |  |" in lines
    assert "| setfit |  | mtsamples | -20.0 [-30.0, -10.0] | decselfmask worse (interval below zero) |  |" in lines
    assert "| sft | +19.9 | all |  | not in these runs |  |" in lines
    assert not any("| sft | +19.9 | mtsamples |" in line for line in lines)  # absent per corpus: no line


def test_a_seeds_subset_of_a_grid_sharing_stage_1_must_hold_all_of_a_runs_seeds(tmp_path):
    corpus = _corpus(tmp_path / "abstracts.csv")
    grid_path = _grid(tmp_path, str(corpus), share_stage1_across_seeds=True)
    with pytest.raises(SystemExit, match=r"shares stage 1 across seeds.*each hold seeds \[0, 1\]"):
        main(["run", str(grid_path), "--out", str(tmp_path / "out"), "--dry-run", "--seeds", "0"])
    with pytest.raises(SystemExit, match="comma-separated integers"):
        main(["run", str(grid_path), "--out", str(tmp_path / "out"), "--seeds", ","])


def test_a_seeds_subset_runs_only_those_seeds_runs(tmp_path, capsys):
    corpus = _corpus(tmp_path / "abstracts.csv")
    grid_path = _grid(tmp_path, str(corpus), share_stage1_across_seeds=False, methods=["zero_shot", "sft", "decselfmask"])
    out = tmp_path / "out"
    main(["run", str(grid_path), "--out", str(out), "--dry-run", "--seeds", "1", "--methods", "sft,decselfmask"])
    printed = capsys.readouterr().out
    assert "2 runs (0 already done)" in printed
    assert "sft-seed1" in printed and "decselfmask-seed1" in printed and "seed0" not in printed
    main(["run", str(grid_path), "--out", str(out), "--dry-run", "--seeds", "0"])
    printed = capsys.readouterr().out
    assert "3 runs (0 already done)" in printed and "zero_shot-seed0" in printed and "seed1" not in printed
    with pytest.raises(SystemExit, match=r"--seeds: \[5\] not among the grid's seeds \[0, 1\]"):
        main(["run", str(grid_path), "--out", str(tmp_path / "never"), "--seeds", "0,5"])
    assert not (tmp_path / "never" / "data").exists()  # refused before any data is written
    with pytest.raises(SystemExit, match="comma-separated integers"):
        main(["run", str(grid_path), "--out", str(out), "--seeds", "one"])


def _records(method: str, correct: float, rng, notes: int = 60) -> dict:
    gold = [i % 2 for i in range(notes)]
    tasks = [{"task": t, "row": list(range(notes)), "labels": ["no", "yes"], "gold": gold,
              "pred": [g if rng.random() < correct else 1 - g for g in gold]} for t in ("a", "b", "c")]
    return {"corpus": "c", "method": method, "run": f"{method}-seed0", "seed": 0, "seconds": 1.0, "tasks": tasks}


def test_the_mask_token_contrasts_follow_the_predictions_and_need_both_methods():
    import numpy as np

    from axolotl_decselfmask.tools.experiments.report import contrast_lines, contrasts

    rng = np.random.default_rng(0)
    records = [_records("sft", 0.95, rng), _records("sft_mask_fill", 0.5, rng), _records("sft_options", 0.95, rng)]
    out = contrasts(records, resamples=500)
    assert set(out) == {"sft minus sft_mask_fill", "sft minus sft_options"}
    worse = out["sft minus sft_mask_fill"]["all"]
    assert worse["low"] > 0.2 and worse["excludes_zero"]  # chance against 95% right: about +0.45
    same = out["sft minus sft_options"]["all"]
    assert same["low"] < 0 < same["high"] and not same["excludes_zero"]
    lines = contrast_lines({"contrasts": out})
    assert any(line.startswith("| sft minus sft_mask_fill | all | +") and line.endswith("| yes |") for line in lines)
    assert contrasts([records[0], records[2]], resamples=10).keys() == {"sft minus sft_options"}
    assert contrasts(records[1:], resamples=10) == {} and contrast_lines({"contrasts": {}}) == []
