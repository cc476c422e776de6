"""The `decselfmask_paper` method of the experiment runner: stage 1 exactly `protocol: paper`'s
stage-1 preset, whatever a grid pins for the other methods; stage 2 the grid's common one."""


import yaml
from conftest import SMOLLM
from helpers import write_corpus

from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import load_grid
from axolotl_decselfmask.tools.experiments.methods import (
    DEFAULT_METHODS,
    METHODS,
    RECIPE_METHODS,
    definition_problems,
    paper_stage1_keys,
)
from axolotl_decselfmask.tools.experiments.runner import plan

# a grid that pins stage-1 settings for every method, and stage-2 ones (loss on the answer only)
PINNED = {
    "items_per_text": 1,
    "relevance": {"method": "grad_x_input", "target": "sum_logprob", "token_position": "last",
                  "prompt_style": "question", "batch_size": 4},
    "spans": {"selector": "top_k", "sigma": 2.0, "high": 0.7},
    "masking": {"spans_per_example": 2},
    "classification": {"train_on_inputs": False, "prompt": "mask_fill", "batch_size": 4, "lora_r": 8,
                       "learning_rate": 1e-4},
    "probing": {"enabled": False},
}


def _runs(tmp_path, decselfmask: dict, recipe: dict | None = None):
    corpus = write_corpus(tmp_path / "corpus.csv.gz", "abstracts_test.jsonl")
    # sft_options is sft where the grid's prompt is options already (the default; test_sft_variants.py)
    mask_fill = (decselfmask.get("classification") or {}).get("prompt") == "mask_fill"
    methods = [m for m in RECIPE_METHODS if mask_fill or m != "sft_options"]
    grid = {"model": str(SMOLLM), "methods": methods, "seeds": [0], "labelled_per_task": 4,
            "test_per_task": 4, "pool_size": 4, "decselfmask": decselfmask, "recipe": recipe or {},
            "corpora": [{"name": "abstracts", "file": str(corpus), "lead_in": "Which topic?", "tasks": [
                {"name": "neoplasms", "label_column": "label", "positive": "neoplasms", "question": "Neoplasms?"}]}]}
    path = tmp_path / "grid.yml"
    path.write_text(yaml.safe_dump(grid))
    g = load_grid(path)
    return {r["method"]: r["recipe"] for r in plan(g, tmp_path / "out", build_data(g, tmp_path / "out"))}


def test_paper_stage1_is_the_preset_and_stage2_the_grids(tmp_path):
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.protocol import PRESETS, apply_recipe_preset

    recipes = _runs(tmp_path, PINNED, recipe={"train_on_inputs": False})
    paper = recipes["decselfmask_paper"]
    cfg = dict(paper)
    apply_recipe_preset(cfg, paper["decselfmask"])
    assert cfg["train_on_inputs"] is True  # stage 1's loss on the whole sequence, over the grid's false
    c = DecSelfMaskConfig(**paper["decselfmask"])
    # the preset takes 9 items a note (the first commit's keep_n_sequences_per_note); the method pins every item,
    # as the comparison of 2026-12-02 ran it, so that its committed runs keep their run key
    assert c.protocol == "paper" and c.items_per_text == "all"
    assert DecSelfMaskConfig(protocol="paper").items_per_text == 9
    r = c.relevance
    assert (r.method, r.target, r.token_position, r.prompt_style) == ("attnlrp", "max_logit", "middle", "completion")
    assert r.batch_size == 4 and r.lead_in == "Which topic?"  # what the preset leaves alone stays the grid's
    s = c.spans
    assert (s.selector, s.sigma, s.high, s.low) == ("hysteresis", 1.0, 0.4, 0.2)
    assert c.masking.spans_per_example == 1
    # stage 2: the grid's values where it pins them, the defaults (never the preset's) elsewhere
    cl = c.classification
    assert (cl.train_on_inputs, cl.prompt, cl.batch_size, cl.lora_r, cl.learning_rate) == (False, "mask_fill", 4, 8, 1e-4)
    assert cl.gradient_accumulation_steps == 1 and cl.lora_alpha == 64
    assert PRESETS["paper"]["classification"]["gradient_accumulation_steps"] == 4  # which the preset would set
    default = DecSelfMaskConfig(**recipes["decselfmask"]["decselfmask"])
    assert default.classification == cl  # stage 2 is the same in both methods
    assert (default.relevance.method, default.items_per_text, default.spans.selector) == ("grad_x_input", 1, "top_k")
    assert recipes["decselfmask"]["train_on_inputs"] is False
    # the runner's recipes are still exactly the methods of METHODS
    problems = definition_problems(recipes, ignore=("output_dir", "dataset_prepared_path", "decselfmask.tasks"))
    assert not problems, "\n".join(problems)


def test_common_block_pins_no_relevance_method(tmp_path):
    recipes = _runs(tmp_path, {})
    for m, recipe in recipes.items():
        relevance = recipe["decselfmask"]["relevance"]
        assert "method" not in relevance or m == "decselfmask_paper", m
    assert recipes["decselfmask"]["decselfmask"]["relevance"] == {"lead_in": "Which topic?"}
    problems = definition_problems(recipes, ignore=("output_dir", "dataset_prepared_path", "decselfmask.tasks"))
    assert not problems, "\n".join(problems)
    assert "decselfmask_paper" not in DEFAULT_METHODS and "setfit" not in DEFAULT_METHODS


def test_a_recipe_that_takes_another_methods_definition_is_found(tmp_path):
    recipes = _runs(tmp_path, {})
    recipes["decselfmask"]["decselfmask"]["protocol"] = "paper"
    for key, value in METHODS["decselfmask_paper"].keys.items():
        if key.startswith("decselfmask.") and key != "decselfmask.stage1":
            node = recipes["decselfmask"]
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
    recipes["decselfmask"]["train_on_inputs"] = True
    problems = definition_problems(recipes, ignore=("output_dir", "dataset_prepared_path", "decselfmask.tasks"))
    assert any("decselfmask: " in p and "the values that define decselfmask_paper" in p for p in problems), problems
