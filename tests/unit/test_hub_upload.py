"""``decselfmask.hub_model_id``: after stage 2 and the model card, the plugin uploads the results in one
``HfApi.upload_folder`` call. No hub is reachable here, so ``HfApi``'s network methods are replaced
by recorders (the hub is not what is tested) and the files the patterns select are computed with
huggingface_hub's own filter, as ``upload_folder`` applies it."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import yaml
from huggingface_hub.utils import filter_repo_objects

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2.hub import push_results, upload_arguments

FILES = [
    "stage2/adapter_config.json", "stage2/adapter_model.safetensors", "stage2/calibration-t.json",
    "stage2/checkpoint-2/adapter_model.safetensors", "stage2/heads/t.json", "stage2/other/checkpoint-1/x.bin",
    "stage2/other/adapter_model.safetensors", "metrics.json", "predictions-t.jsonl", "split-t.json", "README.md",
    "adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "stage1_merged/model.safetensors", "checkpoint-5/adapter_model.safetensors", "runs/decselfmask/events",
    "decselfmask_stage1_complete.json", "debug.log", "prepared/decselfmask/manifest.json",
]
UPLOADED = {
    "stage2/adapter_config.json", "stage2/adapter_model.safetensors", "stage2/calibration-t.json",
    "stage2/heads/t.json", "stage2/other/adapter_model.safetensors", "metrics.json", "predictions-t.jsonl",
    "split-t.json", "README.md", "adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
    "tokenizer_config.json",
}


def _cfg(tmp_path, **block):
    from axolotl.utils.dict import DictDefault

    out = tmp_path / "out"
    for name in FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("x")
    block = {"hub_model_id": "someone/notes-classifier",
             "classification": {"task": "t", "train_file": "t.jsonl", "labels": ["yes", "no"]}, **block}
    return DictDefault({"base_model": "base", "output_dir": str(out), "adapter": "lora", "decselfmask": block})


class Recorder:
    def __init__(self, monkeypatch, fail: Exception | None = None, token="hf_test"):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail = fail
        self.card_at_upload = None
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: token)
        for name in ("create_repo", "create_branch", "upload_folder"):
            monkeypatch.setattr(huggingface_hub.HfApi, name, self._method(name))

    def _method(self, name):
        def record(api, *args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "upload_folder":
                if self.fail:
                    raise self.fail
                readme = kwargs["folder_path"] + "/README.md"
                self.card_at_upload = open(readme, encoding="utf-8").read()
                return huggingface_hub.CommitInfo(commit_url="https://huggingface.co/x/commit/1", commit_message="m",
                                                  commit_description="", oid="1" * 40)
            return None
        return record

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def test_the_results_folder_and_arguments(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, hub_revision="run-1")
    config = DecSelfMaskConfig(**cfg["decselfmask"])
    hub = Recorder(monkeypatch)
    assert push_results(cfg, config) == "https://huggingface.co/x/commit/1"
    [(_, args, repo)] = hub.named("create_repo")
    assert args == ("someone/notes-classifier",) and repo == {"private": True, "repo_type": "model", "exist_ok": True}
    [(_, _, branch)] = hub.named("create_branch")
    assert branch["branch"] == "run-1" and branch["exist_ok"] is True
    [(_, _, upload)] = hub.named("upload_folder")
    assert upload["repo_id"] == "someone/notes-classifier" and upload["folder_path"] == cfg.output_dir
    assert upload["revision"] == "run-1" and upload["repo_type"] == "model" and "token" not in upload
    chosen = set(filter_repo_objects(FILES, allow_patterns=upload["allow_patterns"],
                                     ignore_patterns=upload["ignore_patterns"]))
    assert chosen == UPLOADED  # no checkpoint, no merged stage-1 model, no cache, no logs


def test_without_a_stage1_lora_only_the_results_go(tmp_path):
    cfg = _cfg(tmp_path, stage1=False, hub_private=False)
    kwargs = upload_arguments(cfg, DecSelfMaskConfig(**cfg["decselfmask"]))
    chosen = set(filter_repo_objects(FILES, allow_patterns=kwargs["allow_patterns"],
                                     ignore_patterns=kwargs["ignore_patterns"]))
    assert chosen == {f for f in UPLOADED if f.startswith("stage2/") or f in (
        "metrics.json", "predictions-t.jsonl", "split-t.json", "README.md")}
    assert kwargs["revision"] is None


def test_no_upload_without_a_repository_and_clear_errors(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, hub_model_id=None)
    hub = Recorder(monkeypatch)
    assert push_results(cfg, DecSelfMaskConfig(**cfg["decselfmask"])) is None and hub.calls == []
    cfg = _cfg(tmp_path)
    config = DecSelfMaskConfig(**cfg["decselfmask"])
    Recorder(monkeypatch, token=None)
    with pytest.raises(InputError, match=r"no Hugging Face token \(set HF_TOKEN.*hf upload someone/notes-classifier"):
        push_results(cfg, config)
    Recorder(monkeypatch, fail=ConnectionError("hub unreachable"))
    with pytest.raises(InputError, match=r"the upload failed \(ConnectionError: hub unreachable\); the results stay in"):
        push_results(cfg, config)


def test_the_plugin_uploads_once_after_the_model_card(tmp_path, monkeypatch):
    from axolotl_decselfmask import plugin
    from axolotl_decselfmask.stage2 import run
    from axolotl_decselfmask.stage2.outputs import write_metrics

    cfg = _cfg(tmp_path, stage1=False)
    (tmp_path / "out" / "README.md").unlink()

    def stage2(cfg, config):  # stands in for training: what run_stage2 leaves in output_dir
        result = {"macro_f1": 0.75, "accuracy": 0.8, "n_test": 10}
        write_metrics(cfg.output_dir, "t", result, extra={"labels": ["yes", "no"]})
        return {}

    monkeypatch.setattr(run, "run_stage2", stage2)
    hub = Recorder(monkeypatch)
    p = plugin.DecSelfMaskPlugin()
    p.post_train_unload(cfg)
    p.post_train_unload(cfg)  # Axolotl may call the hook again: one upload
    assert len(hub.named("upload_folder")) == 1
    front = yaml.safe_load(hub.card_at_upload.split("---")[1])  # the card was written before the upload
    [result] = front["model-index"][0]["results"]
    assert front["model-index"][0]["name"] == "someone/notes-classifier"
    assert result["metrics"] == [{"type": "f1", "value": 0.75, "name": "Macro F1"}]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["tasks"]["t"]["macro_f1"] == 0.75
