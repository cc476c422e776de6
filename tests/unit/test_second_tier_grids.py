"""The second tier of the many-task comparison (docs/results.md, "## Plan", "Second tier"):
examples/grids/comparison_second_*.yml and comparison_budget_hallmarks_*.yml are their core grid
but for ``methods`` (and ``labelled_per_task``), build the same notes (where the shared corpora are
here), and ``report`` pools the core and second-tier methods of one corpus, while ``report --budget``
gives the label-budget curve from each budget grid's own predictions folder."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.tools.experiments.cli import main
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import Grid, load_grid
from axolotl_decselfmask.tools.experiments.results import read_csv
from axolotl_decselfmask.tools.experiments.runner import plan

ROOT = Path(__file__).resolve().parents[2]
GRIDS = ROOT / "examples" / "grids"
SHARED = ROOT.parent / "shared" / "data"
SECOND = ["continual_pretraining", "sft_mask_fill", "sft_options", "logreg_minilm", "synthetic_labels"]
BUDGETS = (8, 32, 128)


def _schema(name: str) -> Grid:
    return Grid(**yaml.safe_load((GRIDS / name).read_text()))  # what load_grid validates; unknown keys are errors


def _differences(a: Grid, b: Grid) -> set[str]:
    da, db = a.model_dump(), b.model_dump()
    assert set(da) == set(db)
    return {k for k in da if da[k] != db[k]}


@pytest.mark.parametrize("corpus", ["hallmarks", "mtsamples"])
def test_a_second_tier_grid_is_its_core_grid_but_for_methods(corpus):
    core, second = _schema(f"comparison_core_{corpus}.yml"), _schema(f"comparison_second_{corpus}.yml")
    assert _differences(core, second) == {"methods"}
    assert second.methods == SECOND and not set(second.methods) & set(core.methods)


def test_the_budget_grids_are_the_hallmarks_core_grid_but_for_methods_and_labels():
    core = _schema("comparison_core_hallmarks.yml")
    for n in BUDGETS:
        g = _schema(f"comparison_budget_hallmarks_{n}.yml")
        assert _differences(core, g) == {"methods", "labelled_per_task"}
        assert g.methods == ["sft", "decselfmask", "setfit"] and g.labelled_per_task == n


def test_the_float32_grid_is_the_hallmarks_core_grid_but_for_methods_and_precision():
    core, f32 = _schema("comparison_core_hallmarks.yml"), _schema("comparison_float32_hallmarks.yml")
    assert _differences(core, f32) == {"methods", "recipe"}
    assert f32.methods == ["sft", "decselfmask"] and set(f32.methods) < set(core.methods)
    rc, rf = core.model_dump()["recipe"], f32.model_dump()["recipe"]
    assert {k for k in set(rc) | set(rf) if rc.get(k) != rf.get(k)} == {"bf16"}
    assert rc["bf16"] == "auto" and rf["bf16"] is False

def _notes(grid: Grid, out: Path) -> dict:
    """The built data as corpus rows: the test notes of each task, each task's labelled notes per
    seed, the pool."""
    (info,) = build_data(grid, out).values()
    rows = lambda p: sorted(json.loads(line)["row"] for line in open(p))  # noqa: E731
    return {"pool": rows(info["pool"]), "n_test": info["n_test"],
            "test": {t: rows(d["test"]) for t, d in info["tasks"].items()},
            "train": {t: {s: rows(p) for s, p in d["train"].items()} for t, d in info["tasks"].items()}}


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared corpora ({SHARED}) are not here")
@pytest.mark.parametrize("corpus", ["hallmarks", "mtsamples"])
def test_a_second_tier_grid_builds_the_core_grids_notes(corpus, tmp_path):
    core = load_grid(GRIDS / f"comparison_core_{corpus}.yml")  # the runner's loader: paths resolved
    second = load_grid(GRIDS / f"comparison_second_{corpus}.yml")
    assert _differences(core, second) == {"methods"}
    a, b = _notes(core, tmp_path / "core"), _notes(second, tmp_path / "second")
    assert a == b and a["pool"] and all(len(v) == 16 for t in a["train"].values() for v in t.values())
    # the runs: 5 methods x 3 seeds; every decoder run ends in the core's stage 2 (its sft run's, the
    # method's own keys aside)
    sft = {tuple(r["seeds"]): r["recipe"]["decselfmask"]["classification"]
           for r in plan(core, tmp_path / "core", build_data(core, tmp_path / "core")) if r["method"] == "sft"}
    runs = plan(second, tmp_path / "second", build_data(second, tmp_path / "second"))
    assert sorted((r["method"], r["seeds"]) for r in runs) == sorted((m, [s]) for m in SECOND for s in second.seeds)
    own = {"sft_options": {"prompt"}, "synthetic_labels": {"pseudo_labels"}}
    for r in runs:
        if r["method"] == "logreg_minilm":
            continue
        DecSelfMaskConfig(**r["recipe"]["decselfmask"])  # valid
        stage2 = r["recipe"]["decselfmask"]["classification"]
        common = sft[tuple(r["seeds"])]
        differ = {k for k in set(stage2) | set(common) if stage2.get(k) != common.get(k)}
        assert differ == own.get(r["method"], set()), (r["method"], differ)


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared corpora ({SHARED}) are not here")
def test_the_budget_grids_share_the_core_test_and_pool_notes_and_nest_their_labels(tmp_path):
    core = _notes(load_grid(GRIDS / "comparison_core_hallmarks.yml"), tmp_path / "core")
    built = {16: core}
    for n in BUDGETS:
        grid = load_grid(GRIDS / f"comparison_budget_hallmarks_{n}.yml")
        built[n] = notes = _notes(grid, tmp_path / str(n))
        assert (notes["test"], notes["pool"], notes["n_test"]) == (core["test"], core["pool"], 152)
        assert all(len(v) == n for t in notes["train"].values() for v in t.values())
    for small, large in zip((8, 16, 32), (16, 32, 128)):  # a seed's labelled notes grow, none replaced
        for task, seeds in built[small]["train"].items():
            for seed, rows in seeds.items():
                assert set(rows) < set(built[large]["train"][task][seed])


# ------------------------------------------------------------------------------------ report

TASKS = ["t_a", "t_b", "t_c"]
N_NOTES = 60


def _write_grid(path: Path, methods: list[str], labelled: int = 16) -> str:
    grid = {"model": "models/smollm2-135m-instruct", "methods": methods, "seeds": [0, 1], "labelled_per_task": labelled,
            "test_notes": 50, "corpora": [{"name": "hm", "file": "nowhere/hm.csv.gz", "tasks": [
                {"name": t, "label_column": t, "positive": 1, "question": f"{t}?"} for t in TASKS]}]}
    path.write_text(yaml.safe_dump(grid))
    return str(path)


def _write_predictions(folder: Path, method: str, seed: int, error: float, rng, n_train: int = 16,
                       **head_extra) -> dict:
    """A predictions file of the format predictions.py documents; returns each task's (gold, pred)."""
    rows = list(range(100, 100 + N_NOTES))  # one shared test set: the same corpus rows for every task
    lines, truth = [], {}
    for t in TASKS:
        gold = (np.arange(N_NOTES) % 3 == TASKS.index(t)).astype(int)
        pred = np.where(rng.random(N_NOTES) < error, 1 - gold, gold)
        truth[t] = (gold, pred)
        lines.append({"task": t, "labels": ["no", "yes"], "row": rows, "gold": gold.tolist(), "pred": pred.tolist(),
                      "n_train": n_train, "n_pseudo": "", "probe_macro_f1": "", "multi_label_task": ""})
    head = {"format": 1, "corpus": "hm", "method": method, "seed": seed, "seeds": [seed], "run": f"{method}-seed{seed}",
            "seconds": 10.0, "stage1_tokens": None, **head_extra}
    path = folder / "hm" / f"{method}-seed{seed}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(json.dumps(x) + "\n" for x in [head, *lines]).encode()))
    return truth


def _mean_f1(truths: list[dict]) -> float:
    """Mean over tasks of the mean over seeds of Macro F1 (what the table and the bootstrap's point are)."""
    from sklearn.metrics import f1_score

    return float(np.mean([np.mean([f1_score(*tr[t], average="macro") for tr in truths]) for t in TASKS]))


def test_report_pools_the_core_and_second_tier_methods_of_one_corpus(tmp_path):
    rng = np.random.default_rng(0)
    pred = tmp_path / "predictions"
    error = {"sft": 0.4, "decselfmask": 0.2, "continual_pretraining": 0.3, "logreg_minilm": 0.45}
    truth = {m: [_write_predictions(pred, m, s, e, rng) for s in (0, 1)] for m, e in error.items()}
    _write_predictions(pred / "comparison_budget_x", "sft", 0, 0.0, rng)  # a budget grid's folder: not read
    core = _write_grid(tmp_path / "core.yml", ["sft", "decselfmask"])
    second = _write_grid(tmp_path / "second.yml", ["continual_pretraining", "logreg_minilm"])
    out = tmp_path / "report"
    main(["report", core, second, "--out", str(out), "--predictions-dir", str(pred), "--resamples", "200"])
    rows = read_csv(out)
    keys = [(r["corpus"], r["task"], r["method"], r["seed"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(error) * len(TASKS) * 2  # each (corpus, task, method, seed) once
    assert {r["method"] for r in rows} == set(error)
    boot = json.loads((out / "bootstrap.json").read_text())
    assert set(boot["scopes"]) == {"all", "hm"} and boot["scopes"]["all"]["n_tasks"] == len(TASKS)
    diff = boot["scopes"]["all"]["difference"]
    assert set(diff) == {"sft", "continual_pretraining", "logreg_minilm"}  # decselfmask minus every other method
    for m in error:
        assert boot["scopes"]["all"]["methods"][m]["mean"] == pytest.approx(_mean_f1(truth[m]), abs=1e-9)
    assert diff["logreg_minilm"]["mean"] == pytest.approx(_mean_f1(truth["decselfmask"]) -
                                                         _mean_f1(truth["logreg_minilm"]), abs=1e-9)
    md = (out / "results.md").read_text()
    assert "| continual_pretraining |" in md and "| logreg_minilm |" in md


def test_report_budget_plots_each_grid_from_its_own_predictions_folder(tmp_path):
    rng = np.random.default_rng(1)
    pred = tmp_path / "predictions"
    methods = ["sft", "decselfmask", "setfit"]
    grids, truth = [], {}
    for n, error in ((8, 0.4), (16, 0.3), (32, 0.2)):
        folder = pred if n == 16 else pred / f"budget_{n}"  # the core grid's files at the top, as committed
        extra = ["zero_shot"] if n == 16 else []  # the core grid's other methods are not on the curve
        grids.append(_write_grid(tmp_path / f"budget_{n}.yml" if n != 16 else tmp_path / "core.yml",
                                 extra + methods, labelled=n))
        truth[n] = {m: [_write_predictions(folder, m, s, error / (2 if m == "decselfmask" else 1), rng, n)
                        for s in (0, 1)] for m in methods}
    _write_grid(tmp_path / "budget_64.yml", methods, labelled=64)  # not run yet: left out
    out = tmp_path / "curve"
    main(["report", "--budget", grids[2], grids[0], grids[1], str(tmp_path / "budget_64.yml"), "--out", str(out),
          "--predictions-dir", str(pred), "--resamples", "200"])
    curve = json.loads((out / "budget.json").read_text())
    assert curve["methods"] == methods and [p["labelled_per_task"] for p in curve["points"]] == [8, 16, 32]
    for p in curve["points"]:
        n = p["labelled_per_task"]
        assert p["files"] == 6 and p["predictions"] == str(pred if n == 16 else pred / f"budget_{n}")
        for m in methods:
            v = p["methods"][m]
            assert v["mean"] == pytest.approx(_mean_f1(truth[n][m]), abs=1e-9) and v["low"] <= v["mean"] <= v["high"]
        assert set(p["difference"]) == {"sft", "setfit"}
    assert (out / "budget.png").stat().st_size > 1000
    md = (out / "budget.md").read_text()
    assert "| method | 8 | 16 | 32 |" in md and "| decselfmask minus sft |" in md

    (pred / "budget_8").rename(pred / "elsewhere")  # not run: 8's point is left out, not given the 16-label files
    main(["report", "--budget", grids[0], grids[1], "--out", str(out), "--predictions-dir", str(pred),
          "--resamples", "50"])
    assert [p["labelled_per_task"] for p in json.loads((out / "budget.json").read_text())["points"]] == [16]
    _write_predictions(pred / "budget_8", "sft", 0, 0.1, rng, n_train=16)  # in 8's own folder: the wrong one
    with pytest.raises(SystemExit, match="not its grid's labelled_per_task 8"):
        main(["report", "--budget", grids[0], grids[1], "--out", str(out), "--predictions-dir", str(pred),
              "--resamples", "50"])


def test_the_qwen_grid_is_the_hallmarks_core_grid_but_for_the_model_and_the_decoder_methods():
    core, qwen = _schema("comparison_core_hallmarks.yml"), _schema("comparison_qwen_hallmarks.yml")
    assert _differences(core, qwen) == {"model", "methods"}
    assert qwen.model == "models/qwen2.5-coder-0.5b-instruct"  # where make qwen-model writes it
    assert qwen.methods == ["zero_shot", "sft", "random_masking", "decselfmask"]


def test_report_precision_gives_a_minus_b_per_method_and_pooled_on_the_same_draws(tmp_path):
    rng = np.random.default_rng(2)
    pred = tmp_path / "predictions"
    a = _write_grid(tmp_path / "float32.yml", ["sft", "decselfmask"])
    b = _write_grid(tmp_path / "core.yml", ["zero_shot", "sft", "decselfmask", "setfit"])
    error_a, error_b = {"sft": 0.1, "decselfmask": 0.3}, {"sft": 0.4, "decselfmask": 0.3}
    truth_a = {m: [_write_predictions(pred / "float32", m, s, e, rng, dtype="float32") for s in (0, 1)]
               for m, e in error_a.items()}
    truth_b = {m: [_write_predictions(pred, m, s, e, rng) for s in (0, 1)] for m, e in error_b.items()}
    _write_predictions(pred, "setfit", 0, 0.0, rng)  # B's alone: not compared
    out = tmp_path / "report"
    main(["report", "--precision", a, b, "--out", str(out), "--predictions-dir", str(pred), "--resamples", "300"])
    result = json.loads((out / "precision.json").read_text())
    assert result["a"]["precision"] == "float32" and result["b"]["precision"] == "bf16: auto"
    assert result["a"]["predictions"] == str(pred / "float32") and result["b"]["predictions"] == str(pred)
    effects = result["effects"]
    assert set(effects) == {"sft", "decselfmask", "pooled"}
    diffs = {}
    for m in error_a:
        e = effects[m]
        assert e["n_tasks"] == len(TASKS) and e["files"] == [2, 2]
        assert e["a"]["mean"] == pytest.approx(_mean_f1(truth_a[m]), abs=1e-9)
        assert e["b"]["mean"] == pytest.approx(_mean_f1(truth_b[m]), abs=1e-9)
        diffs[m] = e["difference"]["mean"]
        assert diffs[m] == pytest.approx(e["a"]["mean"] - e["b"]["mean"], abs=1e-9)
        assert e["difference"]["low"] <= diffs[m] <= e["difference"]["high"]
    assert effects["sft"]["difference"]["excludes_zero"]  # 10% against 40% errors
    pooled = effects["pooled"]
    assert pooled["n_tasks"] == 2 * len(TASKS)  # every (task, method) a slot
    assert pooled["difference"]["mean"] == pytest.approx((diffs["sft"] + diffs["decselfmask"]) / 2, abs=1e-9)
    md = (out / "precision.md").read_text()
    assert "| pooled | 6 | 4 / 4 |" in md and "| sft | 3 | 2 / 2 |" in md

    with pytest.raises(SystemExit, match="same predictions folder"):  # A without a folder of its own
        main(["report", "--precision", b, b, "--out", str(out), "--predictions-dir", str(pred)])
    with pytest.raises(SystemExit, match="two grids"):
        main(["report", "--precision", a, "--out", str(out), "--predictions-dir", str(pred)])
