"""The two SFT variants of the comparison's second tier: `sft_mask_fill` (plain SFT whose added mask
token keeps the row the embedding resize gives it, `masking.mask_init: model`, instead of the
plugin's mean) and `sft_options` (plain SFT with the options prompt, no mask at all)."""

import json

import pytest
import torch
import yaml
from axolotl.utils.dict import DictDefault
from conftest import SMOLLM, make_tiny_llama
from helpers import write_corpus
from transformers import AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.mask_token import (
    ADDED_MASK_TEXT,
    BASE_WITH_MASK_RECORD,
    describe_for_run,
)
from axolotl_decselfmask.stage2.model import stage1_model_folder
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import load_grid
from axolotl_decselfmask.tools.experiments.methods import (
    DEFAULT_METHODS,
    METHODS,
    _flat,
    definition_problems,
)
from axolotl_decselfmask.tools.experiments.runner import plan

N = 49152  # SmolLM2's vocabulary: the added mask token's id


def _config(mask_init: str, seed: int = 3) -> DecSelfMaskConfig:
    return DecSelfMaskConfig(stage1=False, items=["x"], seed=seed, classification={"prompt": "mask_fill"},
                             masking={"mask_init": mask_init})


def _row(folder: str):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).get_input_embeddings().weight.detach()


def test_mask_init_model_keeps_the_resized_row_and_mean_the_mean(tmp_path):
    base = make_tiny_llama(tmp_path / "base")
    cfg = DictDefault({"base_model": str(base), "output_dir": str(tmp_path / "out"), "trust_remote_code": False})
    folder, _ = stage1_model_folder(cfg, _config("model"), torch.float32)
    got = _row(folder)
    # what Axolotl's resize gives the new row (mean_resizing_embeddings: false), under decselfmask's seed
    resized = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(3)
    resized.resize_token_embeddings(N + 1, mean_resizing=False)
    expected = resized.get_input_embeddings().weight.detach()
    assert got.shape[0] == N + 1 and torch.equal(got[N], expected[N]) and torch.equal(got[:N], expected[:N])
    mean = got[:N].mean(dim=0)
    assert (got[N] - mean).abs().max() > 10 * (mean.abs().max() + 1e-4)  # not the mean: a random row
    assert AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(ADDED_MASK_TEXT) == N
    record = json.loads((tmp_path / "out" / "base_with_mask" / BASE_WITH_MASK_RECORD).read_text())
    assert record["mask_init"] == "model"
    other_seed, _ = stage1_model_folder(DictDefault({**cfg, "output_dir": str(tmp_path / "o2")}),
                                        _config("model", seed=4), torch.float32)
    assert not torch.equal(_row(other_seed)[N], got[N])  # the row is drawn under the seed

    # the same folder with mean: its record's key differs, so the folder is written again, the row the mean
    folder2, _ = stage1_model_folder(cfg, _config("mean"), torch.float32)
    assert folder2 == folder
    mean_row = _row(folder2)
    assert torch.allclose(mean_row[N], mean_row[:N].mean(dim=0), atol=1e-6) and not torch.equal(mean_row[N], got[N])
    folder3, _ = stage1_model_folder(cfg, _config("model"), torch.float32)  # and back: the resize's row again
    assert torch.equal(_row(folder3)[N], got[N])


def test_mask_init_model_in_stage1_keeps_axolotls_resized_row_and_trains_it(tmp_path):
    from axolotl.loaders import load_tokenizer

    from axolotl_decselfmask.mask_token import (
        POOL_TYPE,
        arrange_recipe,
        prepare_stage1_model,
    )

    base = make_tiny_llama(tmp_path / "base")
    block = {"items": ["x"], "masking": {"mask_init": "model"}}
    raw = {"base_model": str(base), "adapter": "lora", "datasets": [{"path": "p.jsonl", "type": POOL_TYPE}],
           "decselfmask": block}
    arrange_recipe(raw, DecSelfMaskConfig(**block))
    cfg = DictDefault({**raw, "tokenizer_config": str(base)})
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(len(load_tokenizer(cfg)), mean_resizing=False)  # as Axolotl does
    resized = model.get_input_embeddings().weight.detach().clone()
    prepare_stage1_model(cfg, model)
    assert torch.equal(model.get_input_embeddings().weight, resized)  # the row as the resize made it
    assert cfg.peft_trainable_token_indices == {"embed_tokens": [N]}  # and trained in stage 1


def test_mask_init_is_validated_and_named_in_the_card(smollm_path):
    with pytest.raises(Exception, match="mask_init"):
        DecSelfMaskConfig(items=["x"], masking={"mask_init": "zero"})
    line = describe_for_run({"base_model": str(smollm_path)}, _config("model"))
    assert "embedding resize" in line and "mean" not in line


def _recipes(tmp_path, prompt: str) -> dict:
    corpus = write_corpus(tmp_path / "corpus.csv.gz", "abstracts_test.jsonl")
    grid = {"model": str(SMOLLM), "methods": ["sft", "sft_mask_fill", "sft_options", "decselfmask"], "seeds": [0],
            "labelled_per_task": 4, "test_per_task": 4, "pool_size": 4,
            "decselfmask": {"classification": {"prompt": prompt}},
            "corpora": [{"name": "abstracts", "file": str(corpus), "tasks": [
                {"name": "neoplasms", "label_column": "label", "positive": "neoplasms", "question": "Neoplasms?"}]}]}
    path = tmp_path / f"grid-{prompt}.yml"
    path.write_text(yaml.safe_dump(grid))
    g = load_grid(path)
    out = tmp_path / f"out-{prompt}"
    return {r["method"]: r["recipe"] for r in plan(g, out, build_data(g, out))}


IGNORE = ("output_dir", "dataset_prepared_path", "decselfmask.tasks")


def test_recipes_of_the_sft_variants_differ_from_sft_only_in_their_keys(tmp_path):
    recipes = _recipes(tmp_path, "mask_fill")
    assert not definition_problems(recipes, ignore=IGNORE), definition_problems(recipes, ignore=IGNORE)
    configs = {m: DecSelfMaskConfig(**r["decselfmask"]) for m, r in recipes.items()}
    assert configs["sft_mask_fill"].masking.mask_init == "model" and configs["sft"].masking.mask_init == "mean"
    assert configs["sft_mask_fill"].classification.prompt == "mask_fill"
    assert configs["sft_options"].classification.prompt == "options" and configs["sft"].classification.prompt == "mask_fill"
    assert not configs["sft_options"].stage1 and not configs["sft_mask_fill"].stage1
    sft = _flat({k: v for k, v in recipes["sft"].items() if k not in IGNORE})
    for method, key in (("sft_mask_fill", "decselfmask.masking.mask_init"),
                        ("sft_options", "decselfmask.classification.prompt")):
        flat = _flat({k: v for k, v in recipes[method].items() if k not in IGNORE})
        assert sorted(k for k in set(flat) | set(sft) if flat.get(k) != sft.get(k)) == [key]
    assert not {"sft_mask_fill", "sft_options", "logreg_minilm"} & set(DEFAULT_METHODS)
    assert not any(METHODS[m].baseline for m in ("sft_mask_fill", "sft_options", "logreg_minilm"))


def test_in_an_options_grid_sft_options_is_sft(tmp_path):
    """Where every method's prompt is already options, sft_options is sft: definition_problems says so."""
    problems = definition_problems(_recipes(tmp_path, "options"), ignore=IGNORE)
    assert any(p.startswith("sft: decselfmask.classification.prompt is 'options'") and "sft_options" in p
               for p in problems), problems
