"""SIGKILL during stage 1 or stage 2 of `axolotl train`: resume through Axolotl's checkpoints,
and stage 2 never starts from unfinished or changed stage-1 weights.

Real runs through the `axolotl` CLI on a tiny random model and tiny data.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import base_recipe, data_rows, write_rows

MARKER = "decselfmask_stage1_complete.json"
MAX_STEPS = 40


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("faults")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=6))
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=1))
    write_rows(tmp / "test.jsonl", data_rows("abstracts_test.jsonl", n=5))
    recipe = base_recipe(tmp, tiny_llama)
    recipe.update({"max_steps": MAX_STEPS, "save_strategy": "steps", "save_steps": 5, "micro_batch_size": 1,
                   "auto_resume_from_checkpoints": True})
    recipe["decselfmask"]["classification"]["batch_size"] = 5
    path = tmp / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    return tmp, path, recipe


def _start(recipe_path, log_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    log = open(log_path, "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "axolotl"), "train", str(recipe_path)],
                            cwd=recipe_path.parent, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    return proc


def _kill_when(proc, log_path, ready, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before {what}:\n" + log_path.read_text()[-4000:]
    assert ready(), f"timed out waiting for {what}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _finish(proc, log_path, timeout=600):
    proc.wait(timeout=timeout)
    log = log_path.read_text()
    assert proc.returncode == 0, log[-6000:]
    return log


def _complete_checkpoints(out):
    return sorted((p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").is_file()),
                  key=lambda p: int(p.name.split("-")[-1]))


def _stage2_args(recipe, output_dir):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig

    cfg = DictDefault(dict(recipe, output_dir=str(output_dir)))
    return cfg, DecSelfMaskConfig(**recipe["decselfmask"])


def _assert_clear_error(exc, out):
    text = str(exc)
    assert f"Stage 1 did not finish in {out}" in text
    assert "resume_from_checkpoint:" in text and "auto_resume_from_checkpoints: true" in text
    assert "axolotl train" in text


@pytest.mark.slow  # four `axolotl train` runs killed and resumed (make test-slow); the Ctrl-C test stays in the suite
def test_sigkill_in_stage1_then_auto_resume_then_sigkill_in_stage2(work):
    from axolotl_decselfmask.stage1.checkpoints import Stage1IncompleteError
    from axolotl_decselfmask.stage2.model import load_stage1_model

    tmp, path, recipe = work
    out = tmp / "out"

    # 1. stage 1 killed after its first complete checkpoint
    log1 = tmp / "run1.log"
    proc = _start(path, log1)
    _kill_when(proc, log1, lambda: bool(_complete_checkpoints(out)), "a stage-1 checkpoint")
    saved = _complete_checkpoints(out)
    last = saved[-1]
    assert int(last.name.split("-")[-1]) < MAX_STEPS
    assert (out / "adapter_config.json").is_file()  # Axolotl pre-saves it before training
    assert not (out / MARKER).exists() and not (out / "metrics.json").exists()
    cfg, config = _stage2_args(recipe, out)
    with pytest.raises(Stage1IncompleteError) as err:
        load_stage1_model(cfg, config, None)
    _assert_clear_error(err.value, out)
    assert last.name in str(err.value)

    # a checkpoint killed while it was being written (no trainer_state.json, truncated weights)
    torn = out / f"checkpoint-{int(last.name.split('-')[-1]) + 1000}"
    shutil.copytree(last, torn)
    (torn / "trainer_state.json").unlink()
    weights = torn / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    # 2. the same command again: resumes from the newest complete checkpoint, finishes both stages
    log2 = tmp / "run2.log"
    text = _finish(_start(path, log2), log2)
    assert f"resume from checkpoint at {last}" in text
    assert f"incomplete-{torn.name}" in text and (out / f"incomplete-{torn.name}").is_dir()
    # only the remaining steps ran (Axolotl logs one loss line per step with logging_steps: 1)
    done = int(last.name.split("-")[-1])
    assert text.count("{'loss': ") == MAX_STEPS - done < MAX_STEPS
    state = json.loads((out / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS
    # Axolotl keeps the newest 4 checkpoints unless the recipe sets save_total_limit
    assert [p.name for p in _complete_checkpoints(out)] == [f"checkpoint-{n}" for n in (25, 30, 35, 40)]
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "lora" and marker["resumed_from"] == str(last)
    assert [f["name"] for f in marker["files"]] == ["adapter_model.safetensors"]
    assert marker["files"][0]["size"] == (out / "adapter_model.safetensors").stat().st_size
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks"]["abstracts"]["n_test"] == 5
    assert "starting from LoRA adapter" in text

    # 3. stage 2 killed: no metrics.json claims a finished run; the same command again redoes stage 2
    #    from the same stage-1 weights (no step past max_steps)
    log3 = tmp / "run3.log"
    proc = _start(path, log3)
    _kill_when(proc, log3, lambda: "decselfmask stage 2: starting from" in log3.read_text(), "stage 2")
    assert not (out / "metrics.json").exists() and not (out / "predictions-abstracts.jsonl").exists()
    assert (out / MARKER).is_file()  # stage 1 had finished
    log4 = tmp / "run4.log"
    text = _finish(_start(path, log4), log4)
    final = out / f"checkpoint-{MAX_STEPS}"
    assert f"resume from checkpoint at {final}" in text
    assert f"stage 1 already reached max_steps ({MAX_STEPS})" in text and "{'loss': " not in text
    assert not list(out.glob(f"checkpoint-{MAX_STEPS + 1}"))
    assert _tensors(out / "adapter_model.safetensors") == _tensors(final / "adapter_model.safetensors")
    assert json.loads((out / MARKER).read_text())["resumed_from"] == str(final)
    assert "decselfmask stage 2 [joint]: classifier saved" in text
    assert json.loads((out / "metrics.json").read_text())["tasks"]["abstracts"]["n_test"] == 5
    assert len((out / "predictions-abstracts.jsonl").read_text().splitlines()) == 5


def _tensors(path):
    from safetensors.torch import load_file

    return {k: v.tolist() for k, v in load_file(str(path)).items()}


def _finished_output(folder, model):
    """A stage-1 output folder as the plugin leaves it: LoRA adapter, tokenizer, completion record."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage1.checkpoints import write_stage1_marker

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(model),
                          LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    peft.save_pretrained(folder)
    AutoTokenizer.from_pretrained(model).save_pretrained(folder)
    write_stage1_marker(folder, adapter=True)
    return folder


def test_stage2_refuses_changed_or_unrecorded_stage1_weights(work, tiny_llama):
    from axolotl_decselfmask.stage1.checkpoints import (
        Stage1IncompleteError,
        verify_stage1_output,
    )
    from axolotl_decselfmask.stage2.run import run_stage2

    tmp, _, recipe = work
    finished = _finished_output(tmp / "finished", tiny_llama)
    cfg, _ = _stage2_args(recipe, finished)
    assert verify_stage1_output(cfg)["files"][0]["name"] == "adapter_model.safetensors"

    def refused(folder, *expected):
        cfg, config = _stage2_args(recipe, folder)
        with pytest.raises(Stage1IncompleteError) as err:
            run_stage2(cfg, config, progress=False)
        _assert_clear_error(err.value, folder)
        for part in expected:
            assert part in str(err.value)
        assert not (folder / "stage2").exists() and not (folder / "metrics.json").exists()

    truncated = tmp / "truncated"
    shutil.copytree(finished, truncated)
    weights = truncated / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    refused(truncated, "adapter_model.safetensors has", "bytes")

    changed = tmp / "changed"  # same size, different bytes: a stale adapter from another run
    shutil.copytree(finished, changed)
    data = bytearray((changed / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (changed / "adapter_model.safetensors").write_bytes(bytes(data))
    refused(changed, "sha256 differs")

    unrecorded = tmp / "unrecorded"  # complete-looking adapter, but stage 1 never reported finishing
    shutil.copytree(finished, unrecorded)
    (unrecorded / MARKER).unlink()
    refused(unrecorded, f"there is no {MARKER}", "no Axolotl checkpoints")


def test_ctrl_c_in_stage1_leaves_weights_that_stage2_refuses(work):
    """Axolotl's SIGINT handler saves the half-trained model to output_dir and exits: no marker."""
    from axolotl_decselfmask.stage1.checkpoints import Stage1IncompleteError
    from axolotl_decselfmask.stage2.model import load_stage1_model

    tmp, _, recipe = work
    out = tmp / "out_int"
    recipe = dict(recipe, output_dir=str(out))
    path = tmp / "recipe_int.yml"
    path.write_text(yaml.safe_dump(recipe))
    log = tmp / "int.log"
    proc = _start(path, log)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not _complete_checkpoints(out):
        time.sleep(0.05)
    assert proc.poll() is None, log.read_text()[-4000:]
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=120)
    text = log.read_text()
    assert _tensors(out / "adapter_model.safetensors")  # a complete, readable, half-trained adapter
    assert not (out / MARKER).exists() and not (out / "metrics.json").exists()
    assert "decselfmask stage 2" not in text
    cfg, config = _stage2_args(recipe, out)
    with pytest.raises(Stage1IncompleteError) as err:
        load_stage1_model(cfg, config, None)
    _assert_clear_error(err.value, out)


def test_explicit_resume_from_a_torn_checkpoint_is_refused(work):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask import DecSelfMaskPlugin
    from axolotl_decselfmask.stage1.checkpoints import Stage1IncompleteError

    tmp, _, recipe = work
    out = tmp / "out_torn"
    (out / "checkpoint-5").mkdir(parents=True)
    (out / "checkpoint-5" / "trainer_state.json").write_text('{"global_step": 5}')
    (out / "checkpoint-10").mkdir()  # killed before trainer_state.json was written
    cfg = DictDefault(dict(recipe, output_dir=str(out), resume_from_checkpoint=str(out / "checkpoint-10")))
    with pytest.raises(Stage1IncompleteError, match="checkpoint-10 is incomplete .*: checkpoint-5"):
        DecSelfMaskPlugin().post_trainer_create(cfg, trainer=None)
