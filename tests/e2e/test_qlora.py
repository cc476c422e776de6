"""QLoRA from end to end on a CPU: `axolotl preprocess`, `axolotl train` and `axolotl decselfmask
predict` with `adapter: qlora`, `load_in_4bit: true` (and relevance in 4 bits). Every stage says it
loaded bitsandbytes Linear4bit layers, the run writes its metrics and no 16-bit copy of the model,
the classifier loads with AutoPeftModelForCausalLM alone, and predict decides as the evaluation did."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_tiny_llama, require_smollm
from helpers import base_recipe, data_rows, write_rows

FOUR_BIT = "4-bit NF4 base"


def _run(args, cwd, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               AXOLOTL_DO_NOT_TRACK="1")
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 or not check, log[-6000:]
    return log if check else (proc.returncode, log)


def _qlora_run(tmp: Path, model: Path, max_steps: int = 3) -> dict:
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=6))
    write_rows(tmp / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    write_rows(tmp / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=2))
    recipe = base_recipe(tmp, model)
    recipe.update(adapter="qlora", load_in_4bit=True, max_steps=max_steps)
    recipe["decselfmask"]["relevance"]["load_in_4bit"] = True
    path = tmp / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    logs = {"preprocess": _run(["preprocess", path], tmp), "train": _run(["train", path], tmp)}
    predict_rc, logs["predict"] = _run(["decselfmask", "predict", path, tmp / "test.jsonl", "--out",
                                        tmp / "labels.jsonl", "--no-progress"], tmp, check=False)
    return {"tmp": tmp, "model": model, "out": tmp / "out", "recipe": recipe, "logs": logs, "predict_rc": predict_rc}


@pytest.fixture(scope="module")
def qlora(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qlora")
    # bitsandbytes quantises in blocks of 64 values: a 64-wide model is the smallest its CPU kernels take
    return _qlora_run(tmp, make_tiny_llama(tmp / "tiny", hidden_size=64))


def _check_run(run: dict) -> None:
    logs, out = run["logs"], run["out"]
    assert f"decselfmask relevance: {FOUR_BIT}" in logs["preprocess"]
    for stage in ("stage 1", "stage 2", "evaluation"):
        assert f"decselfmask {stage}: {FOUR_BIT}" in logs["train"], stage
    assert run["predict_rc"] == 0, logs["predict"][-6000:]
    assert f"decselfmask predict: {FOUR_BIT}" in logs["predict"]
    assert "not quantised" not in logs["train"] + logs["predict"]
    metrics = json.loads((out / "metrics.json").read_text())
    task = metrics["tasks"]["abstracts"]
    assert task["n_test"] == 10 and 0.0 <= task["macro_f1"] <= 1.0
    # no model copy: no stage1_merged/, and every weights file is an adapter, far smaller than the model
    assert not (out / "stage1_merged").exists()
    model_bytes = sum(p.stat().st_size for p in Path(run["model"]).glob("*.safetensors"))
    written = list(out.rglob("*.safetensors"))
    assert {p.relative_to(out).as_posix() for p in written} == {"adapter_model.safetensors",
                                                                 "stage2/adapter_model.safetensors"}
    assert all(p.stat().st_size < 0.1 * model_bytes for p in written), [(p, p.stat().st_size) for p in written]
    # predict labels the test notes as the evaluation decided them
    evaluation = {r["id"]: r for r in map(json.loads, (out / "predictions-abstracts.jsonl").read_text().splitlines())}
    predicted = {r["id"]: r for r in map(json.loads, (run["tmp"] / "labels.jsonl").read_text().splitlines())}
    assert set(predicted) == set(evaluation)
    for i, row in predicted.items():
        assert row["label"] == evaluation[i]["pred"], i
        assert row["scores"] == pytest.approx(evaluation[i]["scores"], abs=1e-4)


def test_every_stage_in_4_bits_no_16_bit_copy(qlora):
    _check_run(qlora)


def _recipe_cfg(recipe: dict):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.protocol import apply_recipe_preset

    cfg = DictDefault(json.loads(json.dumps(recipe)))
    apply_recipe_preset(cfg, cfg["decselfmask"])
    return cfg


def _logits(model, tokenizer, text="The patient had <|decselfmask_mask|> after surgery."):
    ids = tokenizer([text], return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits.float()


def test_classifier_loads_with_autopeft_alone(qlora):
    """The stage-2 folder is one adapter on base_model (stage 1 in it): AutoPeftModelForCausalLM,
    given only the quantisation, gives the model the evaluation and predict score with."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    from axolotl_decselfmask.model_precision import quantised_layers
    from axolotl_decselfmask.stage2 import quantized

    cfg, folder = _recipe_cfg(qlora["recipe"]), qlora["out"] / "stage2"
    settings = json.loads((folder / "adapter_config.json").read_text())
    assert settings["base_model_name_or_path"] == str(Path(qlora["model"]).resolve())
    assert settings["r"] == qlora["recipe"]["lora_r"] + qlora["recipe"]["decselfmask"]["classification"]["lora_r"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ours = quantized.load_classifier(cfg, folder, torch.float32)
    auto = AutoPeftModelForCausalLM.from_pretrained(folder, quantization_config=quantized.bnb_config(cfg, torch.float32),
                                                    dtype=torch.float32).eval()
    assert quantised_layers(auto) == quantised_layers(ours) > 0
    assert torch.allclose(_logits(auto, tokenizer), _logits(ours, tokenizer), atol=1e-5)


def test_one_adapter_is_stage1_plus_stage2_exactly(qlora, tmp_path):
    """The classifier's one adapter (stage 1's and stage 2's stacked) gives the outputs of the two
    adapters applied together, as stage 2 trained them."""
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from axolotl_decselfmask.model_precision import keep_4bit_differentiable
    from axolotl_decselfmask.stage2 import quantized

    cfg, out = _recipe_cfg(qlora["recipe"]), qlora["out"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    start = quantized.load_start(cfg, str(out), torch.float32)
    stage1_only = _logits(start, tokenizer)
    model = quantized.add_trainable_adapter(start, LoraConfig(r=3, lora_alpha=5, target_modules="all-linear",
                                                               task_type="CAUSAL_LM"))
    assert model.active_adapters == [quantized.TRAINED_ADAPTER, quantized.STAGE1_ADAPTER]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(f".{quantized.TRAINED_ADAPTER}." in n for n in trainable)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n and f".{quantized.TRAINED_ADAPTER}." in n:  # as if trained: B is zero at the start
            p.data = torch.randn_like(p) * 0.5
    both = _logits(model.eval(), tokenizer)
    assert (both - stage1_only).abs().max() > 1.0
    model.save_pretrained(str(tmp_path))
    tokenizer.save_pretrained(str(tmp_path))
    quantized.keep_trained_adapter_only(tmp_path)
    assert not (tmp_path / quantized.STAGE1_ADAPTER).exists()
    quantized.write_combined_adapter(model, tmp_path, str(cfg.base_model))
    combined = quantized.load_classifier(cfg, tmp_path, torch.float32)
    keep_4bit_differentiable(combined)  # the kernel the start model runs (not bitsandbytes' AVX512-BF16 one)
    # the same sums in another order (one rank-7 product instead of a rank-4 and a rank-3): float32 rounding
    assert (_logits(combined, tokenizer) - both).abs().max() < 5e-3


@pytest.mark.slow
def test_qlora_on_the_embedded_model(tmp_path):
    """The same on SmolLM2-135M-Instruct (real weights, hidden 576): every stage in 4 bits."""
    _check_run(_qlora_run(tmp_path, require_smollm(), max_steps=2))


def test_relevance_gradient_through_4bit_layers_after_an_inference_forward(qlora):
    """bitsandbytes repacks 4-bit weights for its CPU kernel, which has no backward, at the first
    forward without gradients: the relevance model keeps them differentiable, so the gradient to the
    input is the same whether or not an inference forward came first."""
    from axolotl_decselfmask.relevance.loading import load_relevance_model

    def input_gradient(inference_first: bool):
        model = load_relevance_model(str(qlora["model"]), dtype="float32", device="cpu", load_in_4bit=True)
        ids = torch.tensor([[504, 3158, 761, 216, 990, 5179, 30]])
        if inference_first:
            with torch.no_grad():
                model(ids)
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        model(inputs_embeds=embeds).logits[0, -1].logsumexp(-1).backward()
        return embeds.grad

    first, later = input_gradient(False), input_gradient(True)
    assert first.abs().sum() > 0
    assert torch.allclose(first, later, atol=1e-6)
