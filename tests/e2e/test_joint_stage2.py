"""Joint stage 2 (the paper's): one LoRA over every task's labelled examples, on a tiny
random Llama with the embedded model's tokenizer.

`axolotl train` with stage 1 (a LoRA, one step) and two tasks over one pool: one stage-2 adapter in
`stage2/`, trained on both tasks' examples, whose base is the stage-1 model, so that PEFT loads it
alone with stage 1 included; both tasks evaluated. The same run with `joint: false` trains two.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import LABELS, PYTHON_LAUNCHER, base_recipe, data_rows, write_rows


def _rows(kind, per_class):
    return data_rows(f"abstracts_{kind}.jsonl", per_class=per_class)


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("joint")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    write_rows(tmp / "train.jsonl", _rows("train", 2))
    write_rows(tmp / "test.jsonl", _rows("test", 1))
    yes_no = lambda rows: [dict(r, label="yes" if r["label"] == "neoplasms" else "no") for r in rows]  # noqa: E731
    write_rows(tmp / "train_neo.jsonl", yes_no(_rows("train", 1)))
    write_rows(tmp / "test_neo.jsonl", yes_no(_rows("test", 1)))
    recipe = base_recipe(tmp, tiny_llama)
    recipe.update(sequence_len=160, max_steps=1, micro_batch_size=1)
    block = recipe["decselfmask"]
    block["max_texts"] = 2
    block["classification"].update(batch_size=4, max_test_examples=5, max_length=160, prompt="mask_fill")
    block["tasks"] = [
        {"task": "abstracts"},
        {"task": "neoplasm", "train_file": str(tmp / "train_neo.jsonl"), "test_file": str(tmp / "test_neo.jsonl"),
         "labels": ["yes", "no"], "question": "Is the text above about a neoplasm?", "items": ["neoplasms"]},
    ]
    path = tmp / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), "train", str(path), *PYTHON_LAUNCHER],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return tmp, recipe, log


def _trained_examples(log, folder):
    found = re.findall(rf"classifier saved to {re.escape(str(folder))} \((\d+) examples", log)
    return [int(n) for n in found]


def test_one_adapter_over_both_tasks_with_stage1_as_its_base(joint_run, tiny_llama):
    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    tmp, recipe, log = joint_run
    out = tmp / "out"
    n_abstracts, n_neo = len(_rows("train", 2)), len(_rows("train", 1))
    assert _trained_examples(log, out / "stage2") == [n_abstracts + n_neo]  # one classifier, both tasks' rows
    assert not (out / "stage2" / "abstracts").exists() and not (out / "stage2" / "neoplasm").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"abstracts", "neoplasm"}
    for name, task in metrics["tasks"].items():
        assert task["stage2_joint"] is True and task["stage2_adapter"] == str(out / "stage2")
        assert task["n_test"] == 5 and 0.0 <= task["macro_f1"] <= 1.0
    neo = metrics["tasks"]["neoplasm"]
    assert neo["labels"] == ["yes", "no"] and set(neo["per_class_f1"]) == {"yes", "no"}
    assert neo["confusion_matrix"]["labels"] == ["yes", "no"] and sum(map(sum, neo["confusion_matrix"]["matrix"])) == 5
    assert 0.0 <= neo["macro_f1_argmax"] <= 1.0 and neo["calibration"]["mode"] == "balanced"
    preds = [json.loads(line) for line in (out / "predictions-neoplasm.jsonl").read_text().splitlines()]
    test_ids = [r["id"] for r in _rows("test", 1)][:5]
    assert [p["id"] for p in preds] == test_ids and [p["row"] for p in preds] == list(range(5))
    assert all(len(p["scores"]) == 2 and p["pred"] in ("yes", "no") for p in preds)

    adapter = json.loads((out / "stage2" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(out / "stage1_merged")
    # PEFT loads the stage-2 folder alone; its base holds stage 1 (differs from the raw base model)
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(out / "stage2"), dtype=torch.float32)
    raw = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    stage1 = load_file(str(out / "adapter_model.safetensors"))
    touched = next(k for k in stage1 if "q_proj.lora_B" in k)
    layer = int(re.search(r"layers\.(\d+)\.", touched).group(1))
    base_q = loaded.get_base_model().model.layers[layer].self_attn.q_proj.base_layer.weight
    assert not torch.equal(base_q, raw.model.layers[layer].self_attn.q_proj.weight)


def test_mask_fill_prompt_uses_the_stage1_mask_token(joint_run):
    """The one-token mask of stage 1's examples is the token after the question of the mask-fill prompt."""
    from transformers import AutoTokenizer

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.mask_token import choose_mask_token
    from axolotl_decselfmask.prompts import classification_messages, render
    from axolotl_decselfmask.stage2.task_prompt import task_prompt

    tmp, recipe, _ = joint_run
    tok = AutoTokenizer.from_pretrained(str(tmp / "out"))  # as stage 1 saved it
    mask = choose_mask_token(tok)
    assert tok(mask.text, add_special_tokens=False)["input_ids"] == [mask.id]
    examples = [json.loads(line) for f in (tmp / "prepared").rglob("examples.jsonl")
                for line in f.read_text().splitlines()]
    assert examples and all(ex["masked_text"].count(mask.text) == 1 for ex in examples)
    config = DecSelfMaskConfig(**recipe["decselfmask"])
    for n, expected in ((0, "Which category does the text above belong to?"), (1, "neoplasms?")):
        prompt = task_prompt(config, n, tok)
        assert prompt.question == f"{expected} {mask.text}" and prompt.system_prompt == config.masking.system_prompt
        text = render(tok, classification_messages("A note.", prompt.question, ["yes", "no"], prompt.system_prompt,
                                                   answer="yes")).prompt
        assert tok(text, add_special_tokens=False)["input_ids"].count(mask.id) == 1


def test_joint_false_trains_one_adapter_per_task(joint_run):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.run import run_stage2

    tmp, recipe, _ = joint_run
    out = tmp / "out"
    recipe = json.loads(json.dumps(recipe))
    recipe["decselfmask"]["classification"]["joint"] = False
    recipe["output_dir"] = str(out)
    (out / "metrics.json").unlink()
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run_stage2(DictDefault(recipe), DecSelfMaskConfig(**recipe["decselfmask"]), progress=False)
    log = buffer.getvalue()
    for name, per_class in (("abstracts", 2), ("neoplasm", 1)):
        folder = out / "stage2" / name
        assert _trained_examples(log, folder) == [len(_rows("train", per_class))]
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
            out / "stage1_merged")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"abstracts", "neoplasm"}
    assert all(t["stage2_joint"] is False for t in metrics["tasks"].values())
    assert set(LABELS) == set(metrics["tasks"]["abstracts"]["labels"])
