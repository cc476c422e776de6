"""``decselfmask.hub_model_id``: one classifier to share. After stage 2 the plugin builds ``output_dir/hub``
(the classifier at its root, its decisions, results, recipe and card) and uploads it in one
``HfApi.upload_folder`` call. No hub is reachable here: ``HfApi``'s network methods are replaced by
recorders (the hub is not what is tested); the folder is real, built from a real tiny stage-2 run, and
loaded back with the documented call."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging

import huggingface_hub
import pytest
import torch
import yaml
from helpers import base_recipe, data_rows, write_rows

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.hub import push_results, start_warnings, token_warning, upload_arguments

REPO = "someone/notes-classifier"


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_llama):
    """A finished stage 2 (stage 1 off, one LoRA step on real abstracts) with metrics and predictions."""
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.stage2.run import run_stage2

    tmp = tmp_path_factory.mktemp("hub")
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    test = data_rows("abstracts_test.jsonl", per_class=2)
    write_rows(tmp / "test.jsonl", test)
    write_rows(tmp / "notes.jsonl", [{"id": r["id"], "text": r["text"]} for r in test])
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["decselfmask"]["classification"].update(batch_size=4, max_steps=2, learning_rate=0.05)
    recipe["decselfmask"]["hub_model_id"] = REPO
    recipe["hub_token"] = "hf_abcdefghijklmnopqrstuvwxyz123456"  # never written to the shared folder
    cfg = DictDefault(recipe)
    with contextlib.redirect_stdout(io.StringIO()):
        run_stage2(cfg, DecSelfMaskConfig(**recipe["decselfmask"]), progress=False)
    return tmp, cfg


class Recorder:
    def __init__(self, monkeypatch, fail: Exception | None = None, token="hf_test", offline=False):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail = fail
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
        for name in ("create_repo", "create_branch", "upload_folder"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, self._method(name))

    def _method(self, name):
        def record(api, *args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "upload_folder":
                if self.fail:
                    raise self.fail
                return huggingface_hub.CommitInfo(commit_url="https://huggingface.co/x/commit/1", commit_message="m",
                                                  commit_description="", oid="1" * 40)
            return None
        return record

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def _config(cfg, **block):
    return DecSelfMaskConfig(**{**cfg["decselfmask"], **block})


def test_one_folder_uploaded_whole_and_its_root_is_the_classifier(run, monkeypatch):
    tmp, cfg = run
    config = _config(cfg, hub_revision="run-1")
    hub = Recorder(monkeypatch)
    assert push_results(cfg, config) == "https://huggingface.co/x/commit/1"
    [(_, args, repo)] = hub.named("create_repo")
    assert args == (REPO,) and repo == {"private": True, "repo_type": "model", "exist_ok": True}
    [(_, _, branch)] = hub.named("create_branch")
    assert branch["branch"] == "run-1"
    [(_, _, upload)] = hub.named("upload_folder")
    folder = tmp / "out" / "hub"
    assert upload == upload_arguments(cfg, config) and upload["folder_path"] == str(folder)
    assert upload["repo_id"] == REPO and upload["revision"] == "run-1" and "allow_patterns" not in upload
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json", "stage2/calibration-abstracts.json",
            "metrics.json", "predictions-abstracts.jsonl", "README.md", "recipe.yml", "predict.yml"} <= files
    # the root is not a PEFT adapter (AutoPeftModel would quietly load the wrong model) and holds no checkpoint
    assert not any(f.startswith("adapter_") or "checkpoint-" in f for f in files)
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in (folder / "recipe.yml").read_text()


def test_the_folder_loads_with_the_documented_call_and_predicts_as_the_run_did(run, monkeypatch):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    from axolotl_decselfmask.stage2.predict import predict, read_recipe

    tmp, cfg = run
    Recorder(monkeypatch)
    push_results(cfg, _config(cfg))
    folder = tmp / "out" / "hub"
    model = AutoModelForCausalLM.from_pretrained(folder)  # the documented call (README.md, docs/own_data.md)
    run_model = AutoPeftModelForCausalLM.from_pretrained(tmp / "out" / "stage2").merge_and_unload()
    base = AutoModelForCausalLM.from_pretrained(cfg.base_model)
    mine, theirs, untouched = model.state_dict(), run_model.state_dict(), base.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # stage 2 merged in, as the evaluation had it
    assert any(not torch.equal(mine[k], untouched[k]) for k in untouched)  # not the base model
    monkeypatch.chdir(folder)  # predict.yml reads the model and decisions from the folder it is in
    with contextlib.redirect_stdout(io.StringIO()):
        predict(read_recipe("predict.yml"), str(tmp / "notes.jsonl"), tmp / "labels.jsonl", progress=False)
    labels = [json.loads(line) for line in (tmp / "labels.jsonl").read_text().splitlines()]
    evaluated = [json.loads(line) for line in (tmp / "out" / "predictions-abstracts.jsonl").read_text().splitlines()]
    assert [r["id"] for r in labels] == [p["id"] for p in evaluated]
    assert [r["label"] for r in labels] == [p["pred"] for p in evaluated]
    for r, p in zip(labels, evaluated):
        assert r["scores"] == pytest.approx(p["scores"], abs=1e-4)


def test_the_card_says_what_it_is_and_how_to_load_it(run, monkeypatch):
    from huggingface_hub import ModelCard

    tmp, cfg = run
    Recorder(monkeypatch)
    push_results(cfg, _config(cfg))
    card = ModelCard.load(tmp / "out" / "hub" / "README.md")
    assert card.data.get("pipeline_tag") is None  # no pipeline turns it into the classifier
    assert card.data.library_name == "transformers"
    assert {"decselfmask", "classifier-by-option-scoring", "load-with-automodelforcausallm"} <= set(card.data.tags)
    assert "AutoModelForCausalLM.from_pretrained(" in card.text and "## How to load" in card.text
    assert card.data.model_name == REPO and card.data.eval_results[0].metric_name == "Macro F1"


def test_offline_or_without_a_token_the_folder_is_built_and_the_run_does_not_fail(run, monkeypatch, caplog):
    tmp, cfg = run
    for offline, token, why in ((True, "hf_test", "HF_HUB_OFFLINE is set"), (False, None, "finds no token")):
        hub = Recorder(monkeypatch, token=token, offline=offline)
        (tmp / "out" / "hub" / "README.md").unlink(missing_ok=True)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert push_results(cfg, _config(cfg)) is None
        assert hub.calls == [] and (tmp / "out" / "hub" / "README.md").is_file()
        [line] = [r.getMessage() for r in caplog.records if "not uploaded" in r.getMessage()]
        assert why in line and f"hf upload {REPO} {tmp / 'out' / 'hub'} ." in line
        assert why in token_warning(_config(cfg))  # and said at start (check_inputs)


def test_a_failed_upload_says_how_to_upload_by_hand(run, monkeypatch):
    _, cfg = run
    Recorder(monkeypatch, fail=ConnectionError("hub unreachable"))
    with pytest.raises(InputError, match=r"the upload failed \(ConnectionError: hub unreachable\); the classifier"):
        push_results(cfg, _config(cfg))


def test_no_upload_and_no_folder_without_the_key(run, monkeypatch):
    _, cfg = run
    hub = Recorder(monkeypatch, offline=True)
    config = _config(cfg, hub_model_id=None)
    assert push_results(cfg, config) is None and hub.calls == [] and token_warning(config) is None


def test_start_warnings_name_the_same_repository_twice():
    block = {"hub_model_id": REPO}
    [line] = start_warnings({"hub_model_id": REPO}, block)
    assert "stage-1 model (a mask-filler" in line and "Remove hub_model_id" in line
    assert start_warnings({"hub_model_id": "someone/stage1"}, block) == []
    assert start_warnings({"hub_model_id": REPO}, {}) == []
    [joint] = start_warnings({}, {"hub_model_id": REPO, "classification": {"joint": False}})
    assert "stage2/<task>/" in joint


def test_the_config_check_warns_at_start_offline(tmp_path, tiny_llama, monkeypatch, caplog):
    """The plugin's config check (``load_datasets`` calls ``check_inputs``) says it before any model work."""
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.stage2.run import check_inputs

    write_rows(tmp_path / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    write_rows(tmp_path / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=2))
    recipe = copy.deepcopy(base_recipe(tmp_path, tiny_llama, stage1=False))
    recipe["decselfmask"]["hub_model_id"] = REPO
    recipe["tokenizer_config"] = recipe["base_model"]  # as Axolotl's validation sets it
    Recorder(monkeypatch, offline=True)
    with caplog.at_level(logging.WARNING):
        check_inputs(DictDefault(recipe), DecSelfMaskConfig(**recipe["decselfmask"]))
    [line] = [r.getMessage() for r in caplog.records if "hub_model_id" in r.getMessage()]
    assert "HF_HUB_OFFLINE is set" in line and "will build the folder to share and not upload it" in line


def test_troubleshooting_and_own_data_name_the_new_messages():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    trouble = (docs / "troubleshooting.md").read_text(encoding="utf-8")
    for phrase in ("will build the folder to share and not upload it", "hub_model_id and decselfmask.hub_model_id are both",
                   "the upload failed", "fused LoRA kernels (lora_mlp_kernel", "AMP is not supported on this GPU",
                   "2 from now on in this pass"):
        assert phrase in trouble, phrase
    own = (docs / "own_data.md").read_text(encoding="utf-8")
    section = own.split("## Sharing the classifier", 1)[1].split("\n## ", 1)[0]
    assert "AutoModelForCausalLM.from_pretrained(folder)" in section and 'folder = "outputs/my_run/hub"' in section
    assert "predict.yml" in section and "pipeline_tag" in section
