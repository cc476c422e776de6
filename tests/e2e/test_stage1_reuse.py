"""A grid's ``stage1_models``: methods that start stage 2 (or a head) from a stage-1 model another
grid's run saved, instead of training stage 1 again (the ladder's arm, docs/results.md), and the
head methods (``head``, ``head_authors``, ``decselfmask_head``, ``decselfmask_head_authors``)."""

import json
import shutil

import pytest
import yaml
from helpers import experiment_grid

from axolotl_decselfmask.stage2.model import MERGED_DIR, MERGED_RECORD
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import load_grid
from axolotl_decselfmask.tools.experiments.methods import METHODS
from axolotl_decselfmask.tools.experiments.results import run_key
from axolotl_decselfmask.tools.experiments.runner import plan, run_grid

TEMPLATE = "{root}/runs/{{corpus}}/decselfmask-seed{{seed}}/output/stage1_merged"


def _saved_stage1(root, model, seed: int, key: str):
    """A stage-1 model folder as a run saves it: the model's files and the merged record."""
    folder = root / "runs" / "abstracts" / f"decselfmask-seed{seed}" / "output" / MERGED_DIR
    shutil.copytree(model, folder)
    (folder / MERGED_RECORD).write_text(json.dumps({"key": key, "stage1_adapter": "x", "dtype": "torch.float32"}))
    return folder


def _reuse_grid(tmp_path, model, root, methods=("decselfmask_head",), **over):
    return experiment_grid(tmp_path, model, methods=list(methods), seeds=[0, 1], share_stage1_across_seeds=False,
                 stage1_models={m: TEMPLATE.format(root=root) for m in methods if METHODS[m].stage1}, **over)


def test_reused_stage1_sets_the_base_model_and_its_key_is_the_models(tmp_path, tiny_llama):
    root = tmp_path / "earlier"
    for seed in (0, 1):
        _saved_stage1(root, tiny_llama, seed, f"key{seed}")
    grid = load_grid(_reuse_grid(tmp_path, tiny_llama, root, methods=("head", "decselfmask_head")))
    out = tmp_path / "out"
    runs = {(r["method"], r["seeds"][0]): r for r in plan(grid, out, build_data(grid, out))}
    reused = runs[("decselfmask_head", 1)]
    assert reused["recipe"]["base_model"] == str(root / "runs/abstracts/decselfmask-seed1/output/stage1_merged")
    assert reused["recipe"]["decselfmask"]["stage1"] is False
    assert reused["recipe"]["decselfmask"]["classification"]["method"] == "head"
    assert reused["stage1_model"]["key"] == "key1"
    # the method that names no saved model keeps the grid's model
    assert runs[("head", 1)]["recipe"]["base_model"] == grid.model and "stage1_model" not in runs[("head", 1)]

    # the run key follows the saved model's key, not the folder it lies in
    before = run_key(reused)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    grid2 = load_grid(_reuse_grid(tmp_path, tiny_llama, moved, methods=("head", "decselfmask_head")))
    runs2 = {(r["method"], r["seeds"][0]): r for r in plan(grid2, out, build_data(grid2, out))}
    assert run_key(runs2[("decselfmask_head", 1)]) == before
    record = moved / "runs/abstracts/decselfmask-seed1/output/stage1_merged" / MERGED_RECORD
    record.write_text(json.dumps({"key": "retrained"}))
    runs3 = {(r["method"], r["seeds"][0]): r for r in plan(grid2, out, build_data(grid2, out))}
    assert run_key(runs3[("decselfmask_head", 1)]) != before


def test_a_full_fine_tune_is_known_by_its_completion_record(tmp_path, tiny_llama):
    """A stage 1 without adapter saves no merged record: its key is that of the completion record stage 1
    writes once its weights are saved; a folder without it (a stage 1 that did not finish: Axolotl writes
    config.json before training) is missing, as is a stage1_merged folder without its merged record."""
    from axolotl_decselfmask.stage1.checkpoints import write_stage1_marker
    from axolotl_decselfmask.tools.experiments.runner import stage1_model_key

    folder = tmp_path / "full"
    shutil.copytree(tiny_llama, folder)
    assert stage1_model_key(folder) == "missing"  # config.json and weights, but no completion record
    write_stage1_marker(folder, adapter=False)
    key = stage1_model_key(folder)
    assert key != "missing" and stage1_model_key(shutil.copytree(folder, tmp_path / "copy")) == key
    weights = next(folder.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of the weights, recorded anew: another model
    weights.write_bytes(bytes(data))
    write_stage1_marker(folder, adapter=False)
    assert stage1_model_key(folder) != key
    assert stage1_model_key(tmp_path / "nothing") == "missing"
    merged = tmp_path / "stage1_merged"
    shutil.copytree(tiny_llama, merged)
    assert stage1_model_key(merged) == "missing"


@pytest.mark.parametrize("over, message", [
    ({"stage1_models": {"head": "x/{seed}"}}, "head has no stage 1"),
    ({"stage1_models": {"decselfmask": "x/{seed}"}}, "not one of the grid's methods"),
    ({"stage1_models": {"decselfmask_head": "x/{task}/{seed}"}}, "only {corpus} and {seed}"),
    ({"stage1_models": {"decselfmask_head": "x/{seed}"}, "share_stage1_across_seeds": True},
     "set share_stage1_across_seeds: false"),
])
def test_bad_stage1_models_name_the_key(tmp_path, tiny_llama, over, message):
    over = {"share_stage1_across_seeds": False, **over}
    path = experiment_grid(tmp_path, tiny_llama, methods=["head", "decselfmask_head"], **over)
    with pytest.raises(SystemExit, match="stage1_models") as err:
        load_grid(path)
    assert message in str(err.value)


def test_a_missing_stage1_model_stops_the_grid_before_any_run(tmp_path, tiny_llama):
    root = tmp_path / "earlier"
    _saved_stage1(root, tiny_llama, 0, "key0")  # seed 1's is not there
    path = _reuse_grid(tmp_path, tiny_llama, root, methods=("head", "decselfmask_head"))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        run_grid(str(path), str(out))
    text = str(err.value)
    assert "decselfmask_head-seed1" in text and "decselfmask-seed1/output/stage1_merged" in text
    assert "--seeds" in text and "decselfmask_head-seed0" not in text
    assert not list(out.rglob("run.log"))  # nothing ran, not even the runs that could


@pytest.mark.slow  # four `axolotl train` runs, about 4 min (make test-slow)
def test_head_methods_and_a_reused_stage1_run_end_to_end(tmp_path, tiny_llama):
    """A real stage 1 (decselfmask, seed 0) saved by one grid; a second grid puts both heads on it and on
    the untouched model, without training stage 1 again."""
    first = tmp_path / "first"
    first.mkdir()
    run_grid(str(experiment_grid(first, tiny_llama, methods=["decselfmask"], seeds=[0], share_stage1_across_seeds=False,
                       probing=False)), str(first / "exp"))
    saved = first / "exp/runs/abstracts/decselfmask-seed0/output" / MERGED_DIR
    assert (saved / MERGED_RECORD).is_file()

    second = tmp_path / "second"
    second.mkdir()
    methods = ["head", "head_authors", "decselfmask_head_authors"]
    path = experiment_grid(second, tiny_llama, methods=methods, seeds=[0], share_stage1_across_seeds=False,
                 stage1_models={"decselfmask_head_authors": TEMPLATE.format(root=first / "exp")},
                 decselfmask={"relevance": {"batch_size": 4}, "classification": {"head": {"folds": 3}}})
    rows = run_grid(str(path), str(second / "exp"))
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == set(methods)
    for m in methods:
        assert 0.0 <= by_method[m]["macro_f1"] <= 1.0, m
        assert by_method[m]["stage1_tokens"] in (None, ""), m  # no stage 1 trained here
    runs = second / "exp/runs/abstracts"
    recipe = yaml.safe_load((runs / "decselfmask_head_authors-seed0/recipe.yml").read_text())
    assert recipe["base_model"] == str(saved) and recipe["decselfmask"]["stage1"] is False
    assert recipe["decselfmask"]["classification"]["head"] == {"style": "authors", "epochs": 50, "folds": 3}
    for m in methods:
        entry = json.loads((runs / f"{m}-seed0/output/metrics.json").read_text())["tasks"]["neoplasms@seed0"]
        assert entry["head_decision_scores"] == "out_of_fold (3 folds)", m  # the decision: out-of-fold scores
        assert entry["head_style"] == ("package" if m == "head" else "authors"), m
        assert entry["stage1_model"] == (str(saved) if m.startswith("decselfmask") else str(tiny_llama)), m
    assert not (runs / "decselfmask_head_authors-seed0/output" / MERGED_DIR).exists()
