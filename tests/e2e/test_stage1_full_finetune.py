"""Stage 1 as a full fine-tune (a recipe without `adapter:`), with the loss on every token
(`train_on_inputs: true`): `axolotl train` on a tiny random Llama trains every weight, saves a whole
model, and the rows Axolotl trains on carry a label on every token; the authors' continual
pretraining through the same command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from axolotl.utils.dict import DictDefault
from conftest import make_tiny_llama
from helpers import PYTHON_LAUNCHER, base_recipe, data_rows, write_rows
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.mask_token import ADDED_MASK_TEXT, CONFIG_ATTR
from axolotl_decselfmask.stage1.checkpoints import STAGE1_MARKER, verify_stage1_output

LORA_KEYS = ("adapter", "lora_r", "lora_alpha", "lora_target_linear", "lora_mlp_kernel", "lora_qkv_kernel",
             "lora_o_kernel", "lora_embedding_kernel")


def _train(recipe: dict, folder: Path) -> str:
    path = folder / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               AXOLOTL_DO_NOT_TRACK="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), "train", str(path), *PYTHON_LAUNCHER],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def _prepared_rows(prepared: Path) -> list[dict]:
    """The tokenised rows Axolotl saved for training (its prepared dataset, not the plugin's cache)."""
    from datasets import load_from_disk

    folders = {p.parent for p in prepared.rglob("*.arrow") if "decselfmask" not in p.parts}
    assert len(folders) == 1, folders
    return load_from_disk(str(folders.pop())).to_list()


def test_full_finetune_trains_every_weight_with_the_loss_on_every_token(tmp_path):
    base = make_tiny_llama(tmp_path / "base", hidden_size=32, layers=2)
    write_rows(tmp_path / "pool.jsonl", [{"text": r["text"][:400]} for r in data_rows("abstracts_unlabelled.jsonl", n=6)])
    recipe = base_recipe(tmp_path, base)
    for key in LORA_KEYS:
        recipe.pop(key, None)  # the kernel keys are the plugin's to set on a CPU (hardware.cpu_kernel_keys)
    recipe.update(train_on_inputs=True, max_steps=2, learning_rate=1e-3)
    recipe["decselfmask"]["classification"] = {"enabled": False}
    _train(recipe, tmp_path)

    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert verify_stage1_output(DictDefault(recipe))["kind"] == "full"
    assert json.loads((out / STAGE1_MARKER).read_text())["files"][0]["name"] == "model.safetensors"

    before = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).state_dict()
    trained_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    trained = trained_model.state_dict()
    assert set(trained) == set(before)
    mask_id = AutoTokenizer.from_pretrained(out).convert_tokens_to_ids(ADDED_MASK_TEXT)
    n = before["model.embed_tokens.weight"].shape[0]
    assert mask_id == n and trained["model.embed_tokens.weight"].shape[0] == n + 1  # the mask's row added
    unchanged = [name for name, w in before.items() if torch.equal(trained[name][: w.shape[0]], w)]
    assert not unchanged  # every weight tensor was trained
    # the mask's row started as the vocabulary's mean (mask_token.py, no LoRA needed) and was trained from there
    assert getattr(trained_model.config, CONFIG_ATTR)["id"] == mask_id
    mean = before["model.embed_tokens.weight"].mean(dim=0)
    assert not torch.allclose(trained["model.embed_tokens.weight"][mask_id], mean)

    rows = _prepared_rows(tmp_path / "prepared")
    assert rows and all(r["labels"] == r["input_ids"] for r in rows)  # no -100: every token, the prompt's too
    assert all(mask_id in r["input_ids"] for r in rows)


def test_continual_pretraining_in_the_authors_form_trains_as_a_full_finetune(tmp_path):
    """The authors' continual pretraining through `axolotl train`: the rows Axolotl trains on are the notes
    in the chat template with every token labelled, and the recipe's vocabulary gets no mask token."""
    base = make_tiny_llama(tmp_path / "base", hidden_size=32, layers=2)
    texts = [r["text"][:400] for r in data_rows("abstracts_unlabelled.jsonl", n=4)]
    write_rows(tmp_path / "pool.jsonl", [{"text": t} for t in texts])
    recipe = base_recipe(tmp_path, base)
    for key in LORA_KEYS:
        recipe.pop(key, None)  # the kernel keys are the plugin's to set on a CPU (hardware.cpu_kernel_keys)
    recipe["datasets"][0]["type"] = "axolotl_decselfmask.continual_pretraining"
    recipe.update(max_steps=1)
    recipe["decselfmask"].update(classification={"enabled": False}, continual_pretraining={"form": "authors"})
    _train(recipe, tmp_path)
    out = tmp_path / "out"
    assert verify_stage1_output(DictDefault(recipe))["kind"] == "full"
    tok = AutoTokenizer.from_pretrained(out)
    assert ADDED_MASK_TEXT not in tok.get_vocab() and len(tok) == len(AutoTokenizer.from_pretrained(base))
    rows = _prepared_rows(tmp_path / "prepared")
    assert len(rows) > len(texts)  # one row per masked example
    for r in rows:
        assert r["labels"] == r["input_ids"]
        shown = tok.decode(r["input_ids"])
        assert shown.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
        assert shown.split("user\n", 1)[1].split("<|im_end|>")[0] in texts
