"""A rerun never mixes old and new stages, seeds never meet, stage 1 is reproducible (issue 33).

Real `axolotl train` runs on a tiny random Llama (the SmolLM2 tokenizer) and tiny data:

- two runs of one recipe give the same stage-1 weights, bit for bit;
- a stage 2 with `classification.save_steps` whose stage 1 changed (only stage 1's
  `learning_rate`) starts over and says why: its adapter is retrained on the new stage 1;
- `kill -9` during stage 2, then the same command: stage 1 trains again to the same weights, and
  stage 2 resumes only from checkpoints made on those weights;
- tasks of two seeds (the comparison runner's tasks over one shared stage 1) get one stage-2 LoRA
  each, trained on that seed's labelled notes only.
"""

import copy
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import PYTHON_LAUNCHER, base_recipe, data_rows, write_rows

MARKER = "decselfmask_stage1_complete.json"
RUN_RECORD = "decselfmask_stage2_run.json"


def _env():
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", HF_HUB_OFFLINE="1",
                AXOLOTL_DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")


def _command(path):
    return [str(Path(sys.executable).parent / "axolotl"), "train", str(path), *PYTHON_LAUNCHER]


def _train(recipe: dict, path: Path) -> str:
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(_command(path), cwd=path.parent, env=_env(), capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rerun-data")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=6))
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=1))
    write_rows(tmp / "train2.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    write_rows(tmp / "test.jsonl", data_rows("abstracts_test.jsonl", n=5))
    return tmp


def _recipe(data: Path, run: Path, model, stage2: bool = True) -> dict:
    recipe = base_recipe(data, model)
    recipe.update(output_dir=str(run / "out"), dataset_prepared_path=str(run / "prepared"), max_steps=4)
    recipe["decselfmask"]["classification"]["enabled"] = stage2
    return recipe


@pytest.mark.slow  # two `axolotl train` runs (make test-slow)
def test_two_runs_of_one_recipe_give_the_same_stage1_weights(data, tmp_path, tiny_llama):
    shas = []
    for n in (1, 2):  # each from nothing: its own relevance, prepared data and output folder
        run = tmp_path / f"run{n}"
        run.mkdir()
        _train(_recipe(data, run, tiny_llama, stage2=False), run / "recipe.yml")
        marker = json.loads((run / "out" / MARKER).read_text())
        shas.append([(f["name"], f["sha256"]) for f in marker["files"]])
        assert _sha(run / "out" / "adapter_model.safetensors") == marker["files"][0]["sha256"]
    assert shas[0] == shas[1]  # bit for bit: the LoRA, the added mask row and the training all seeded


def _stage2_recipe(data, run, model):
    recipe = _recipe(data, run, model)
    recipe["decselfmask"]["classification"].update(save_steps=1, max_steps=2, batch_size=2)
    return recipe


def _stage2_key(out: Path) -> str:
    from axolotl_decselfmask.stage1.checkpoints import stage1_weights_key

    return stage1_weights_key(out)


@pytest.mark.slow  # three `axolotl train` runs (make test-slow)
def test_changed_only_stage1_learning_rate_retrains_stage2(data, tmp_path, tiny_llama):
    out = tmp_path / "out"
    recipe = _stage2_recipe(data, tmp_path, tiny_llama)
    _train(recipe, tmp_path / "recipe.yml")
    adapter = out / "stage2" / "adapter_model.safetensors"
    first = _sha(adapter), json.loads((out / "metrics.json").read_text()), _stage2_key(out)
    merged = lambda: json.loads((out / "stage1_merged" / "decselfmask_merged.json").read_text())["key"]  # noqa: E731
    merged_key = merged()
    assert sorted(p.name for p in (out / "stage2").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((out / "stage2" / RUN_RECORD).read_text())["start"] == first[2]

    log = _train(recipe, tmp_path / "recipe.yml")  # unchanged: the same stage 1, stage 2's last checkpoint
    assert "stage 2 already reached max_steps (2)" in log and "not resuming" not in log
    assert _sha(adapter) == first[0] and _stage2_key(out) == first[2]  # no step past max_steps

    changed = copy.deepcopy(recipe)
    changed["learning_rate"] = recipe["learning_rate"] * 3  # stage 1's only
    log = _train(changed, tmp_path / "recipe.yml")
    assert _stage2_key(out) != first[2] and merged() != merged_key  # a new stage 1, merged again
    line = f"decselfmask stage 2 [joint]: not resuming from {out / 'stage2' / 'checkpoint-2'}: the stage-1 " \
           "weights it starts from changed since it was saved; its 2 checkpoint(s) removed, stage 2 starts over"
    assert line in log
    assert "resuming from" not in log.replace("not resuming from", "")
    assert re.search(r"classifier saved to .*stage2 \(\d+ examples, 2 steps\)", log)  # retrained, not step 3
    assert _sha(adapter) != first[0]  # retrained on the new stage 1
    assert json.loads((out / "stage2" / RUN_RECORD).read_text())["start"] == _stage2_key(out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["abstracts"]["stage1_model"] == first[1]["tasks"]["abstracts"]["stage1_model"]
    assert metrics != first[1]  # recomputed: the scores of the new classifier


@pytest.mark.slow  # two `axolotl train` runs, one killed (make test-slow)
def test_sigkill_in_stage2_then_rerun_resumes_only_on_the_same_stage1(data, tmp_path, tiny_llama):
    out = tmp_path / "out"
    recipe = _stage2_recipe(data, tmp_path, tiny_llama)
    recipe["decselfmask"]["classification"].update(max_steps=40, batch_size=1)
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    log_path = tmp_path / "run1.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(_command(path), cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.time() + 600
    ready = lambda: (out / "stage2" / "checkpoint-2" / "trainer_state.json").is_file()  # noqa: E731
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None and ready(), log_path.read_text()[-4000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_stage1 = json.loads((out / MARKER).read_text())["files"]
    assert not (out / "metrics.json").exists()

    log = _train(recipe, path)  # the same command
    # stage 1 trained again (no stage-1 checkpoint) to the same weights, so stage 2's checkpoints still
    # belong to it: resumed, and recorded under those weights
    assert json.loads((out / MARKER).read_text())["files"] == killed_stage1
    assert re.search(r"decselfmask stage 2 \[joint\]: resuming from .*stage2/checkpoint-\d+", log), log[-4000:]
    assert "not resuming" not in log
    assert re.search(r"classifier saved to .*stage2 \(\d+ examples, 40 steps\)", log)
    assert json.loads((out / "stage2" / RUN_RECORD).read_text())["start"] == _stage2_key(out)
    assert (out / "metrics.json").is_file()


@pytest.mark.slow  # one `axolotl train` run, stage 1 off (make test-slow)
def test_seeds_never_meet_in_joint_stage2(data, tmp_path, tiny_llama):
    recipe = _recipe(data, tmp_path, tiny_llama)
    recipe["decselfmask"]["stage1"] = False
    recipe["decselfmask"]["tasks"] = [  # as the comparison runner writes a run of two seeds
        {"task": "abstracts@seed0", "train_file": str(data / "train.jsonl"), "seed": 0},
        {"task": "abstracts@seed1", "train_file": str(data / "train2.jsonl"), "seed": 1},
    ]
    log = _train(recipe, tmp_path / "recipe.yml")
    out = tmp_path / "out"
    n0, n1 = (len(data_rows("abstracts_train.jsonl", per_class=k)) for k in (1, 2))
    for seed, n in ((0, n0), (1, n1)):
        folder = out / "stage2" / f"seed{seed}"
        assert re.findall(rf"classifier saved to {re.escape(str(folder))} \((\d+) examples", log) == [str(n)]
    assert "classifier saved to " + str(out / "stage2") + " (" not in log  # no LoRA over both seeds
    assert not (out / "stage2" / "adapter_model.safetensors").exists()
    assert _sha(out / "stage2" / "seed0" / "adapter_model.safetensors") != \
        _sha(out / "stage2" / "seed1" / "adapter_model.safetensors")
    metrics = json.loads((out / "metrics.json").read_text())["tasks"]
    assert metrics["abstracts@seed0"]["n_train"] == n0 and metrics["abstracts@seed1"]["n_train"] == n1
    assert metrics["abstracts@seed0"]["stage2_adapter"] == str(out / "stage2" / "seed0")
    assert metrics["abstracts@seed1"]["stage2_seed"] == 1
