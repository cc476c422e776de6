"""The experiment runner on a tiny grid: all six methods through `axolotl train`, resumable,
results.csv / results.md / plots; and the data splits it writes."""

import csv
import json
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_llama
from helpers import experiment_grid

from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import Grid, load_grid
from axolotl_decselfmask.tools.experiments.methods import (
    DEFAULT_METHODS,
    definition_problems,
)
from axolotl_decselfmask.tools.experiments.predictions import (
    load_predictions,
    rows_from_predictions,
)
from axolotl_decselfmask.tools.experiments.report import report_markdown
from axolotl_decselfmask.tools.experiments.runner import plan, run_grid


def test_splits_keep_test_rows_out_of_pool_and_labelled(tmp_path, tiny_llama):
    grid = load_grid(experiment_grid(tmp_path, tiny_llama, test_per_task=20, labelled_per_task=10, pool_size=400,
                           seeds=[0, 1, 2]))
    data = build_data(grid, tmp_path / "out")["abstracts"]
    task = data["tasks"]["neoplasms"]
    read = lambda p: [json.loads(line) for line in open(p)]  # noqa: E731
    test = read(task["test"])
    pool = read(data["pool"])
    test_rows = {r["row"] for r in test}
    assert len(test) == 20 and {r["label"] for r in test} == {"yes", "no"}
    assert not test_rows & {r["row"] for r in pool}
    samples = [read(task["train"][s]) for s in (0, 1, 2)]
    for sample in samples:
        assert len(sample) == 10 and not test_rows & {r["row"] for r in sample}
        assert sum(r["label"] == "yes" for r in sample) == 5  # balanced over the two classes
    assert {r["row"] for r in samples[0]} != {r["row"] for r in samples[1]}  # seeds draw other samples
    # the test split is fixed: the same grid written again gives the same rows
    again = build_data(grid, tmp_path / "out2")["abstracts"]["tasks"]["neoplasms"]
    assert read(again["test"]) == test and read(again["train"][1]) == samples[1]


def test_bad_grid_names_the_key(tmp_path, tiny_llama):
    path = experiment_grid(tmp_path, tiny_llama, methods=["sft", "decselfmsk"])
    with pytest.raises(SystemExit, match="methods"):
        load_grid(path)
    path = experiment_grid(tmp_path, tiny_llama)
    raw = yaml.safe_load(path.read_text())
    raw["corpora"][0]["tasks"][0]["label_column"] = "nope"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SystemExit, match="nope"):
        build_data(load_grid(path), tmp_path / "out")


def _plan(tmp_path, model, **over):
    grid = load_grid(experiment_grid(tmp_path, model, **over))
    out = tmp_path / "out"
    return grid, plan(grid, out, build_data(grid, out))


def test_runner_recipes_set_exactly_the_keys_of_their_method(tmp_path, tiny_llama):
    """The runner's recipes (a grid's default methods) are the methods of METHODS (tools/experiments/methods.py),
    and a grid's decselfmask: overrides change every method alike without turning one into another."""
    over = {"decselfmask": {"spans": {"selector": "top_k"}, "probing": {"enabled": False}}}
    _, runs = _plan(tmp_path, tiny_llama, **over)
    recipes = {r["method"]: r["recipe"] for r in runs}
    assert set(recipes) == set(DEFAULT_METHODS)
    # per run: its folders; zero-shot evaluates one seed only
    problems = definition_problems(recipes, ignore=("output_dir", "dataset_prepared_path", "decselfmask.tasks"))
    assert not problems, "\n".join(problems)
    assert recipes["decselfmask"]["decselfmask"]["spans"]["selector"] == "top_k"
    assert recipes["random_masking"]["decselfmask"]["spans"]["selector"] == "random"
    pseudo = recipes["synthetic_labels"]["decselfmask"]["classification"]["pseudo_labels"]
    assert pseudo["enabled"] and pseudo["max_texts"] == 6 and pseudo["pool_file"].endswith("pool.jsonl")


def test_random_masking_reuses_the_relevance_cache_of_decselfmask(tmp_path, tiny_llama):
    """random_masking draws random spans of the relevance spans' lengths: the same relevance key
    (and cache folder) as decselfmask, so its precompute reuses those shards; other examples."""
    from transformers import AutoTokenizer

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.io.files import texts_fingerprint
    from axolotl_decselfmask.stage1.cache import examples_key, relevance_key

    grid, runs = _plan(tmp_path, tiny_llama)
    recipes = {r["method"]: r["recipe"] for r in runs}
    tok = AutoTokenizer.from_pretrained(grid.model)
    pool_file = Path(recipes["decselfmask"]["datasets"][0]["path"])
    pool = [json.loads(line)["text"] for line in pool_file.read_text().splitlines()]
    keys = {}
    for m in ("random_masking", "decselfmask"):
        cfg = DecSelfMaskConfig(**recipes[m]["decselfmask"])
        rkey = relevance_key(cfg, recipes[m]["base_model"], tok, texts_fingerprint(pool))
        keys[m] = (rkey, examples_key(cfg, rkey), cfg.cache_dir)
    assert keys["random_masking"][0] == keys["decselfmask"][0]
    assert keys["random_masking"][1] != keys["decselfmask"][1]
    assert keys["random_masking"][2] == keys["decselfmask"][2]


@pytest.mark.slow  # six `axolotl train` runs and a resume (make test-slow)
def test_tiny_grid_runs_all_methods_and_resumes(tmp_path):
    model = make_tiny_llama(tmp_path / "tiny")
    grid_path = experiment_grid(tmp_path, model)
    out = tmp_path / "exp"
    rows = run_grid(str(grid_path), str(out))
    assert {r["method"] for r in rows} == set(DEFAULT_METHODS)
    assert len(rows) == len(DEFAULT_METHODS) * 2  # one task x two seeds
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    assert {"corpus", "task", "method", "seed", "macro_f1"} <= set(table[0])
    for r in table:
        assert 0.0 <= float(r["macro_f1"]) <= 1.0 and r["corpus"] == "abstracts" and r["task"] == "neoplasms"
    by_method = {r["method"]: r for r in table}
    # probing: base model (sft) and every stage-1 model; not for zero-shot or synthetic labels
    assert by_method["sft"]["probe_macro_f1"] != "" and by_method["decselfmask"]["probe_macro_f1"] != ""
    assert by_method["zero_shot"]["probe_macro_f1"] == ""
    zero = [r for r in table if r["method"] == "zero_shot"]  # evaluated once, one row per seed
    assert sorted(r["seed"] for r in zero) == ["0", "1"] and zero[0]["macro_f1"] == zero[1]["macro_f1"]
    # the stage-1 methods trained on the same token budget
    for m in ("continual_pretraining", "random_masking", "decselfmask"):
        assert 0 < int(by_method[m]["stage1_tokens"]) <= 600, m
    assert by_method["sft"]["stage1_tokens"] == ""
    assert by_method["synthetic_labels"]["n_pseudo"] != ""
    text = (out / "results.md").read_text()
    assert "| decselfmask |" in text and "vs sft" in text
    for png in ("methods.png", "tasks_decselfmask_vs_sft.png", "tasks_minus_sft.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # the per-note predictions of every run, from which report recomputes the same rows
    records = load_predictions(out / "predictions")
    assert len(records) == (len(DEFAULT_METHODS) - 1) * 2 + 1  # zero_shot: one file for both seeds
    key = lambda r: (r["method"], r["task"], r["seed"])  # noqa: E731
    assert sorted(rows_from_predictions(records), key=key) == sorted(rows, key=key)
    assert "decselfmask minus this [95% CI]" in text and (out / "bootstrap.json").is_file()

    # resumable: a finished run is not run again
    logs = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.log")}
    assert len(logs) == len(DEFAULT_METHODS)
    again = run_grid(str(grid_path), str(out))
    assert again == rows
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.log")} == logs


def test_report_spread_and_difference_from_sft():
    rows = [{"corpus": "c", "task": t, "method": m, "seed": s, "macro_f1": f, "probe_macro_f1": ""}
            for t in ("a", "b") for m, base in (("sft", 0.4), ("decselfmask", 0.5)) for s, f in
            ((0, base), (1, base + 0.1))]
    text = report_markdown(rows, Grid(model="m", corpora=[{"name": "c", "file": "f", "tasks": [
        {"name": "a", "label_column": "l", "question": "q"}]}]))
    # mean, seed spread, decselfmask minus this (no predictions: no interval), tasks won against sft
    assert "| decselfmask | 0.5500 | 0.0707 (n=2) |  | 2/2 |" in text
    assert "| sft | 0.4500 | 0.0707 (n=2) | +0.1000 |  |" in text


@pytest.mark.parametrize("grid_name", ["small_cpu.yml", "full_gpu.yml"])
def test_shipped_grids_write_recipes_that_axolotl_accepts(tmp_path, grid_name):
    """The grids in examples/grids: data splits written, and every run's recipe passes Axolotl's
    own validation with the plugin's schema merged (no model needed)."""
    from conftest import ROOT
    from helpers import validate_recipe

    grid_path = ROOT / "examples" / "grids" / grid_name
    raw = yaml.safe_load(grid_path.read_text())
    missing = [c["file"] for c in raw["corpora"] if not (ROOT / c["file"]).exists()]
    if missing:
        pytest.skip(f"shared corpora not on this machine: {missing}")
    raw.update(pool_size=50, test_per_task=20)  # the same grid, smaller, to keep the test fast
    small = tmp_path / grid_name
    small.write_text(yaml.safe_dump(raw))
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)  # grid paths are relative to the repository root
    try:
        run_grid(str(small), str(tmp_path / "out"), dry_run=True)
    finally:
        os.chdir(cwd)
    recipes = sorted((tmp_path / "out" / "runs").rglob("recipe.yml"))
    per_method = 1 if raw["share_stage1_across_seeds"] else len(raw["seeds"])
    n_runs = len(raw["corpora"]) * ((len(raw["methods"]) - 1) * per_method + 1)  # zero-shot: one run
    assert len(recipes) == n_runs
    for path in recipes:
        recipe = yaml.safe_load(path.read_text())
        cfg = validate_recipe(recipe)
        assert cfg["decselfmask"]["tasks"], path
