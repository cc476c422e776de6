"""The memory model (axolotl_decselfmask/memory.py): its terms, the recipes' predicted peaks, the start check."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, require_smollm

from axolotl_decselfmask import memory
from axolotl_decselfmask.memory import GB, KNOWN_SHAPES, STAGES, Run, Shape

LLAMA_8B = KNOWN_SHAPES["meta-llama/Llama-3.1-8B-Instruct"]
RECIPES = sorted((ROOT / "recipes").glob("*.yml"))


class LiveBytes:
    """The bytes of CPU tensor storages alive, and their peak, while active: every storage an
    operation returns (autograd's backward ones too) counted from its creation until it is freed."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker.count(out)
                return out

        self.mode, self.live, self.peak, self.alive = Mode(), 0, 0, set()

    def count(self, out):
        import weakref

        import torch
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.alive:
                    self.alive.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self.freed, key, storage.nbytes())

    def freed(self, key, nbytes):
        self.alive.discard(key)
        self.live -= nbytes

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_the_logits_term_is_batch_seq_vocab_float32():
    shape = KNOWN_SHAPES["Qwen/Qwen3-8B"]
    assert memory.logits_bytes(shape, 8, 1024) == 8 * 1024 * 151936 * 4
    run = Run(weights="nf4", compute="bf16", batch=8, seq=1024, rank=32, device="cpu")
    terms = memory.stage_terms("stage2", shape, run)
    assert terms["logits"] == pytest.approx(8 * 1024 * 151936 * 4 * memory.LOGITS_COPIES)


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_a_training_steps_logits_peak_is_logits_copies_float32_copies(dtype):
    """The loss of a causal LM (transformers' own, as a trainer calls it: the loss kept, the outputs
    dropped before the backward pass) holds at most LOGITS_COPIES float32 copies of the logits at once,
    and reaches that many: the live tensors of a one-layer model whose logits dwarf the rest, counted
    operation by operation, forward and backward."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).to(getattr(torch, dtype))
    model.requires_grad_(False)
    model.model.layers[0].mlp.down_proj.weight.requires_grad_(True)  # a trained matrix, as a LoRA's
    batch, seq = 4, 64
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    logits = batch * seq * config.vocab_size
    with LiveBytes() as live:
        before = live.live
        loss = model(input_ids=ids, labels=ids).loss
        forward = live.peak - before
        loss.backward()
        peak = live.peak - before
    other = sum(p.numel() * p.element_size() for p in model.parameters()) + 2 * batch * seq * 32 * 4 * 8
    assert peak >= memory.LOGITS_COPIES * 4 * logits
    assert peak <= memory.LOGITS_COPIES * 4 * logits + other
    assert forward < peak  # the compute-precision logits are gone before the backward pass's peak


def test_the_known_shapes_have_the_models_parameter_counts():
    assert LLAMA_8B.params / 1e9 == pytest.approx(8.03, abs=0.01)
    assert KNOWN_SHAPES["meta-llama/Llama-3.2-1B-Instruct"].params / 1e9 == pytest.approx(1.24, abs=0.01)
    assert KNOWN_SHAPES["mistralai/Mistral-7B-Instruct-v0.3"].params / 1e9 == pytest.approx(7.25, abs=0.01)
    smol = memory.shape_from_config(json.loads((require_smollm() / "config.json").read_text()))
    assert smol.params / 1e6 == pytest.approx(134.5, abs=0.5)  # SmolLM2-135M


def test_lora_params_match_peft(tmp_path):
    """The LoRA count of the formula is PEFT's, on a real model (all-linear)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(require_smollm())
    shape = memory.shape_from_config(model.config.to_dict())
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert shape.lora_params(8) == trained


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("field,values", [
    ("batch", [1, 2, 4, 8]), ("seq", [128, 512, 2048]), ("rank", [0, 8, 64]),
    ("weights", ["nf4", "bf16", "fp32"]), ("optimiser", ["sgd", "paged_adamw_8bit", "adamw"]),
    ("options", [1, 2, 8]),
])
def test_every_peak_is_monotone_in_each_input(stage, field, values):
    base = Run(weights="bf16", compute="bf16", batch=2, seq=512, rank=16)
    peaks = [memory.peak_bytes(stage, LLAMA_8B, replace(base, **{field: v})) for v in values]
    assert peaks == sorted(peaks), (stage, field, peaks)
    used = {"rank": ("stage1", "stage2"), "optimiser": ("stage1", "stage2"), "options": ("evaluation",)}
    if stage in used.get(field, STAGES):
        assert peaks[-1] > peaks[0]  # the input matters where the stage uses it
    else:
        assert peaks[-1] == peaks[0]


def test_the_evaluations_cache_is_repeated_for_its_options():
    """Every option scored together gets its own copy of the prompt's key/value cache
    (scoring.score_questions); the recipe's labels (a yes/no question per label for a multi-label
    task) set how many, at most classification.option_chunk."""
    run = Run(batch=4, seq=1024, rank=0, options=1)
    one = memory.kv_cache_bytes(LLAMA_8B, run)
    assert one == 2 * 32 * 4 * 1024 * 8 * 128 * 2
    assert memory.kv_cache_bytes(LLAMA_8B, replace(run, options=3)) == 3 * one
    block = {"classification": {"labels": ["yes", "no"]}}
    assert memory.scored_options(block) == 2
    assert memory.scored_options({"classification": {"labels": list("abcdefghij")}}) == 8  # option_chunk
    assert memory.scored_options({"classification": {"labels": list("abc"), "option_chunk": 2}}) == 2
    assert memory.scored_options({"classification": {"labels": list("abc"), "multi_label": True}}) == 6
    assert memory.scored_options({"classification": {}}) == 8  # labels unknown: the chunk
    assert memory.scored_options({"classification": {"labels": ["yes", "no"]},
                                  "tasks": [{"labels": list("abcd")}, {}]}) == 4
    cfg = yaml.safe_load((ROOT / "recipes" / "llama-3.1-8b-instruct.yml").read_text())
    evaluation = {p.stage: p for p in memory.predict_recipe(cfg)}["evaluation"]
    assert evaluation.run.options == len(cfg["decselfmask"]["classification"]["labels"])


@pytest.mark.parametrize("field", ["vocab", "hidden", "layers", "intermediate"])
def test_every_peak_grows_with_the_models_size(field):
    run = Run(batch=2, seq=512)
    for stage in STAGES:
        small = memory.peak_bytes(stage, LLAMA_8B, run)
        large = memory.peak_bytes(stage, replace(LLAMA_8B, **{field: getattr(LLAMA_8B, field) * 2}), run)
        assert large > small, (stage, field)


def test_a_recipes_predicted_peak():
    """Llama 3.1 8B's stage 1 (QLoRA, micro_batch_size 2 of 1024 tokens, r 16, AdamW) term by term."""
    cfg = yaml.safe_load((ROOT / "recipes" / "llama-3.1-8b-instruct.yml").read_text())
    stage1 = {p.stage: p for p in memory.predict_recipe(cfg)}["stage1"]
    assert stage1.run.weights == "nf4" and stage1.run.batch == cfg["micro_batch_size"] and stage1.run.rank == 16
    linear = 32 * (4096 * 128 * (2 * 32 + 2 * 8) + 3 * 4096 * 14336)
    assert stage1.terms["weights"] == pytest.approx(linear * memory.NF4_BYTES + 2 * 128256 * 4096 * 2)
    assert stage1.terms["lora"] == pytest.approx(LLAMA_8B.lora_params(16) * 16)
    assert stage1.terms["logits"] == pytest.approx(cfg["micro_batch_size"] * 1024 * 128256 * 4 * memory.LOGITS_COPIES)
    assert stage1.peak == pytest.approx(sum(stage1.terms.values()))
    assert 8 * GB < stage1.peak < 16 * GB


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_fits_24gb_and_says_so_in_its_comments(path):
    cfg = yaml.safe_load(path.read_text())
    predictions = memory.predict_recipe(cfg)
    assert predictions, f"{path.name}: no shape for {cfg['base_model']}"
    text = path.read_text()
    for p in predictions:
        assert p.peak < 24 * GB, p.line()
        assert f"{p.stage} {p.peak / GB:.1f} GB" in text, f"{path.name} does not state {p.stage}'s predicted peak"


def test_the_16gb_variant_fits_16gb():
    path = ROOT / "recipes" / "16gb" / "llama-3.1-8b-instruct.yml"
    for p in memory.predict_recipe(yaml.safe_load(path.read_text())):
        assert p.peak < 16 * GB, p.line()


def test_the_start_check_names_the_stage_and_the_key():
    cfg = yaml.safe_load((ROOT / "recipes" / "llama-3.2-1b-instruct.yml").read_text())
    assert memory.start_check(cfg, memory=(24 * GB, "24 GB")) is None
    cfg["decselfmask"]["classification"]["batch_size"] = 64
    line = memory.start_check(cfg, memory=(24 * GB, "this GPU's 24.0 GB"))
    assert line.startswith("decselfmask: stage2 is predicted to need")
    assert "lower decselfmask.classification.batch_size (now 64)" in line and "logits" in line
    assert "\n" not in line
    # weights that dominate: the key is the 4-bit load, not the batch
    bf16 = dict(cfg, adapter="lora", load_in_4bit=False, base_model="meta-llama/Llama-3.1-8B-Instruct")
    bf16["decselfmask"] = dict(cfg["decselfmask"], classification=dict(cfg["decselfmask"]["classification"],
                                                                        batch_size=1))
    line = memory.start_check(bf16, memory=(16 * GB, "16 GB"), stages=("evaluation",))
    assert "load_in_4bit: true" in line


def test_the_start_check_is_wired_in_the_plugin(tmp_path, caplog):
    """`register` on a recipe whose stage 2 cannot fit this machine's RAM logs the one line."""
    import psutil

    from axolotl_decselfmask.plugin import DecSelfMaskPlugin

    cfg = yaml.safe_load((ROOT / "recipes" / "qwen3-1.7b.yml").read_text())
    available = psutil.virtual_memory().available
    rows = int(available / (1024 * 151936 * 4 * 3)) + 1  # stage 2's logits alone exceed the free RAM
    cfg["decselfmask"]["classification"]["batch_size"] = rows
    cfg["axolotl_config_path"] = str(tmp_path / "recipe.yml")
    cfg["output_dir"] = str(tmp_path / "out")
    with caplog.at_level(logging.WARNING, logger="axolotl_decselfmask"):
        try:
            DecSelfMaskPlugin().register(cfg)
        except Exception:  # noqa: BLE001 - the recipe's data files do not exist here; the check ran first
            pass
    lines = [r.getMessage() for r in caplog.records if "is predicted to need" in r.getMessage()]
    assert lines and "available RAM" in lines[0]
    if not lines[0].startswith("decselfmask: stage2"):
        # little RAM free (other work holds it): an earlier stage leads the line, stage 2 follows it
        assert "; also " in lines[0] and "stage2 " in lines[0].split("; also ", 1)[1]
    else:
        assert f"decselfmask.classification.batch_size (now {rows})" in lines[0]


def test_the_benchmarks_predictions_need_no_model_folder(tmp_path, monkeypatch):
    """Without the model's folder (a clean checkout runs no `make qwen-model`) the prediction comes from
    the shape recorded with the row, and without either the error names the file and the command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_model", ROOT / "benchmarks" / "memory_model.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = json.loads((ROOT / "benchmarks" / "results" / "memory_model.json").read_text())["rows"][-1]
    monkeypatch.setitem(bench.MODELS, row["model"], tmp_path / "absent")
    again = bench.predicted(row["model"], row["precision"], row["stage"], row["shape"])
    assert again["predicted_gb"] == row["predicted_gb"]
    with pytest.raises(FileNotFoundError, match="make qwen-model"):
        bench.predicted(row["model"], row["precision"], row["stage"])


def test_the_benchmarks_errors_are_stated():
    """benchmarks/results/memory_model.json: the 16 CPU measurements (two models, two precisions,
    four stages) beside the memory model's predictions as it is now, within the stated error, which
    is their largest error, also in docs/recipes.md."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("memory_model", ROOT / "benchmarks" / "memory_model.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = json.loads((ROOT / "benchmarks" / "results" / "memory_model.json").read_text())
    rows = [r for r in report["rows"] if r["status"] == "ok"]
    assert {(r["model"], r["precision"], r["stage"]) for r in rows} == {
        (m, p, s) for m in bench.MODELS for p in bench.PRECISIONS for s in STAGES}
    for r in rows:
        assert r["measured_gb"] > r["weights_measured_gb"] > 0
        # the model as it is now, on the shape recorded with the row (the Qwen folder is made only by
        # `make qwen-model`, which `make test` does not run)
        again = bench.predicted(r["model"], r["precision"], r["stage"], r["shape"])
        assert r["predicted_gb"] == again["predicted_gb"], (r["model"], r["precision"], r["stage"])
        assert r["error"] == pytest.approx((r["predicted_gb"] - r["measured_gb"]) / r["measured_gb"], abs=2e-3)
        folder = bench.MODELS[r["model"]] / "config.json"
        if folder.is_file():  # the recorded shape is the model's own
            assert dataclasses.asdict(bench.model_shape(r["model"])) == r["shape"]
    largest = max(abs(r["error"]) for r in rows)
    assert report["summary"]["max_abs_error"] == pytest.approx(largest, abs=1e-3)
    assert largest <= memory.STATED_ERROR < largest + 0.01
    assert f"{memory.STATED_ERROR:.0%}" in (ROOT / "docs" / "recipes.md").read_text()
