"""The model card written into output_dir after stage 2 (axolotl_decselfmask.stage2.model_card)."""

from __future__ import annotations

import json

import yaml

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.io.files import atomic_write_json
from axolotl_decselfmask.stage2.outputs import write_metrics
from axolotl_decselfmask.stage2.model_card import (
    REDACTED,
    redact,
    run_manifest,
    write_model_card,
)

LABELS = ["neoplasms", "cardiovascular diseases"]


def _cfg(tmp_path, **extra):
    block = {
        "items": ["neoplasms", "cardiovascular diseases"],
        "cache_dir": str(tmp_path / "prepared" / "decselfmask"),
        "relevance": {"method": "integrated_gradients", "ig_steps": 16},
        "spans": {"high": 0.5, "low": 0.25},
        "classification": {"task": "abstracts", "train_file": "train.jsonl", "test_file": "test.jsonl",
                           "labels": LABELS, "lora_r": 8},
    }
    cfg = {
        "base_model": str(tmp_path / "base"),
        "output_dir": str(tmp_path / "out"),
        "adapter": "lora",
        "learning_rate": 0.0003,
        "num_epochs": 1,
        "datasets": [{"path": "pool.jsonl", "type": "axolotl_decselfmask.masked_reconstruction"}],
        "hub_token": "hf_abcdefghijklmnopqrstuvwxyz123456",
        "wandb_api_key": "0123456789abcdef",
        "special_tokens": {"pad_token": "<|im_end|>"},
        "decselfmask": block,
    }
    cfg.update(extra)
    return cfg


def _metrics(out):
    result = {"macro_f1": 0.612345, "accuracy": 0.7, "n_test": 40, "predictions": []}
    write_metrics(out, "abstracts", result,
                  extra={"stage1": True, "labels": LABELS, "n_train": 64, "trained": True})


def _manifest(config: DecSelfMaskConfig, folder, n_examples, mask="<mask>"):
    settings = config.model_dump(mode="json", exclude={"classification", "tasks", "probing"})
    settings["masking"]["mask_token"] = mask
    folder.mkdir(parents=True)
    atomic_write_json(folder / "manifest.json", {"complete": True, "n_examples": n_examples, "n_texts": 30,
                                                 "n_without_spans": 2, "settings": settings})


def test_card_from_a_real_metrics_file(tmp_path):
    cfg = _cfg(tmp_path)
    out = tmp_path / "out"
    _metrics(out)
    config = DecSelfMaskConfig(**cfg["decselfmask"])
    _manifest(config, tmp_path / "prepared" / "decselfmask" / "examples-aaa", 45)
    # another run's examples (other mask token) in the same cache must not be reported
    _manifest(config, tmp_path / "prepared" / "decselfmask" / "examples-bbb", 999, mask="[MASK]")
    _stats(out, tmp_path / "prepared" / "decselfmask" / "examples-aaa")

    path = write_model_card(cfg, config)
    assert path == out / "README.md"
    card = path.read_text(encoding="utf-8")

    front = yaml.safe_load(card.split("---")[1])
    assert "base_model" not in front  # a local folder is no Hub id (the Hub refuses it); the text names it
    assert cfg["base_model"] in card
    assert front["license"] == "unknown" and front["library_name"] == "peft"
    # model-index (huggingface_hub.ModelCardData): one result per task, its Macro F1
    [index] = front["model-index"]
    assert index["name"] == "out"
    [result] = index["results"]
    assert result["dataset"]["name"] == "abstracts" and result["dataset"]["split"] == "test"
    assert result["metrics"] == [{"type": "f1", "value": 0.6123, "name": "Macro F1"}]
    assert "The licence of the base model" in card and "is unknown" in card
    assert "`integrated_gradients` (16 steps)" in card
    assert "sigma 1.0, high 0.5, low 0.25" in card
    assert "neoplasms, cardiovascular diseases" in card
    assert "one LoRA over every task, r 8, alpha 64" in card and "calibration `balanced`" in card
    assert "30, giving 45 masked examples" in card and "999" not in card
    assert "64 labelled training rows" in card and "40 test rows" in card
    assert "| abstracts | neoplasms, cardiovascular diseases | 0.6123 | 0.7000 | 40 |" in card
    assert "@misc{ferrazzi2026decselfmask" in card

    recipe = yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])
    assert recipe["hub_token"] == REDACTED and recipe["wandb_api_key"] == REDACTED
    assert recipe["special_tokens"] == {"pad_token": "<|im_end|>"}
    assert recipe["decselfmask"]["relevance"]["ig_steps"] == 16
    assert "hf_abcdefghijklmnopqrstuvwxyz" not in card and "0123456789abcdef" not in card


def test_card_reads_the_recipe_file_and_a_known_licence(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "decselfmask_materialised.json").write_text(json.dumps({"licence": "Apache-2.0"}))
    recipe = tmp_path / "recipe.yml"
    recipe.write_text("base_model: x\n# a comment\nhf_token: hf_zzzzzzzzzzzzzzzzzzzzzzzzzzzz\nlora_r: 16\n")
    cfg = _cfg(tmp_path, axolotl_config_path=str(recipe))
    card = write_model_card(cfg).read_text(encoding="utf-8")
    assert "license: apache-2.0" in card
    assert "is under Apache-2.0" in card
    shown = yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])
    assert shown == {"base_model": "x", "hf_token": REDACTED, "lora_r": 16}


def test_card_without_metrics_or_cache_still_written(tmp_path):
    cfg = _cfg(tmp_path)
    card = write_model_card(cfg).read_text(encoding="utf-8")
    assert "No `metrics.json` was found" in card
    assert "unlabelled texts and masked examples: not found" in card


def test_card_never_raises(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # output_dir below a regular file cannot be created: the card is skipped, the run goes on
    assert write_model_card(_cfg(tmp_path, output_dir=str(blocker / "out"))) is None


def test_redact_keeps_token_settings():
    cfg = {"tokens": ["<mask>"], "decselfmask": {"masking": {"mask_token": "<mask>"}, "stage1_token_budget": 10},
           "hf_use_auth_token": True, "github_token": "abc", "note": "sk-" + "a" * 30}
    out = redact(cfg)
    assert out["tokens"] == ["<mask>"]
    assert out["decselfmask"]["masking"]["mask_token"] == "<mask>"
    assert out["decselfmask"]["stage1_token_budget"] == 10
    assert out["hf_use_auth_token"] is True
    assert out["github_token"] == REDACTED and out["note"] == REDACTED


def _stats(out, examples_dir):
    """What the stage-1 dataset type writes into output_dir: the examples folder this run used."""
    atomic_write_json(out / "decselfmask_stage1_data.json", {
        "dataset_type": "axolotl_decselfmask.masked_reconstruction", "examples": 1, "tokens": 1,
        "supervised_tokens": 1, "budget": None, "texts": 1, "examples_dir": str(examples_dir)})


def test_each_run_names_its_own_manifest_in_a_shared_cache(tmp_path):
    """Two runs with the same settings share one cache; the newer manifest must not be taken for both."""
    config = DecSelfMaskConfig(**_cfg(tmp_path)["decselfmask"])
    cache = tmp_path / "prepared" / "decselfmask"
    _manifest(config, cache / "examples-first", 11)
    _manifest(config, cache / "examples-second", 22)  # written last
    for run, folder, n in (("a", "examples-first", 11), ("b", "examples-second", 22)):
        _stats(tmp_path / run, cache / folder)
        path, manifest = run_manifest(tmp_path / run)
        assert path == cache / folder / "manifest.json" and manifest["n_examples"] == n


def test_run_manifest_skips_incomplete_and_missing(tmp_path):
    (tmp_path / "examples-x").mkdir()
    atomic_write_json(tmp_path / "examples-x" / "manifest.json", {"complete": False, "settings": {}})
    _stats(tmp_path / "out", tmp_path / "examples-x")
    assert run_manifest(tmp_path / "out") is None
    assert run_manifest(tmp_path / "nothing-here") is None


def test_card_metadata_names_a_hub_base_model_and_the_hub_repository(tmp_path):
    from huggingface_hub import ModelCard

    cfg = _cfg(tmp_path, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    cfg["decselfmask"]["hub_model_id"] = "someone/my-classifier"
    cfg["decselfmask"]["classification"].update(test_file=None, test_fraction=0.25)
    _metrics(tmp_path / "out")
    card = ModelCard.load(write_model_card(cfg))  # huggingface_hub parses what it will validate on upload
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    [result] = card.data.eval_results
    assert card.data.model_name == "someone/my-classifier"
    assert (result.dataset_name, result.metric_name, result.metric_value) == ("abstracts", "Macro F1", 0.6123)
    assert result.dataset_split == "test_fraction 0.25"
    assert "split by test_fraction 0.25" in card.text
