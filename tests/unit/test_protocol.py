"""`decselfmask.protocol: paper` resolves every row of the authors' procedure and yields to explicit keys."""

import copy
import logging

import pytest
from helpers import base_recipe, validate_recipe

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.protocol import PRESETS, preset_report

# the authors' scripts, row by row (issue "Stage 2 as the paper trains it")
PAPER_ROWS = {
    ("relevance", "method"): "attnlrp",
    ("relevance", "target"): "max_logit",
    ("relevance", "token_position"): "middle",
    ("relevance", "prompt_style"): "completion",
    ("spans", "sigma"): 1.0,
    ("spans", "truncate"): 1.0,
    ("masking", "mask_token"): "auto",
    ("masking", "spans_per_example"): 1,
    ("classification", "joint"): True,
    ("classification", "prompt"): "mask_fill",
    ("classification", "train_on_inputs"): True,
    ("classification", "batch_size"): 16,
    ("classification", "gradient_accumulation_steps"): 4,
    ("classification", "learning_rate"): 3e-4,
    ("classification", "lr_scheduler"): "cosine",
    ("classification", "warmup_ratio"): 0.1,
    ("classification", "weight_decay"): 0.001,
    ("classification", "num_epochs"): 1.0,
    ("classification", "lora_r"): 32,
    ("classification", "lora_alpha"): 16,  # load_model's default: the YAML's 64 is never passed on
    ("classification", "scorer"): "both",
    ("classification", "lora_dropout"): 0.05,
}


def _get(config, block, key):
    return getattr(getattr(config, block), key)


def test_paper_resolves_every_row():
    config = DecSelfMaskConfig(protocol="paper")
    for (block, key), value in PAPER_ROWS.items():
        assert _get(config, block, key) == value, (block, key)
    assert config.items_per_text == 9
    default = DecSelfMaskConfig()
    # the preset changes something: the project's defaults differ on the costly or legacy rows
    assert default.items_per_text == 1 and default.classification.prompt == "options"
    assert default.relevance.target == "sum_logprob" and default.classification.batch_size == 8
    assert default.spans.sign == "auto" and config.spans.sign == "absolute"  # the scripts take |r|


def test_nine_random_items_per_text():
    config = DecSelfMaskConfig(protocol="paper", items=["a", "b", "c"])
    assert config.items_per_text_count() == 3
    many = DecSelfMaskConfig(protocol="paper", items=[f"item {i}" for i in range(12)])
    assert many.items_per_text_count() == 9
    assert DecSelfMaskConfig(items=["a", "b", "c"]).items_per_text_count() == 1


def test_explicit_keys_win_over_the_preset():
    config = DecSelfMaskConfig(protocol="paper", relevance={"method": "grad_x_input"},
                               classification={"batch_size": 8, "train_file": "x.jsonl"}, items_per_text=2)
    assert config.relevance.method == "grad_x_input" and config.classification.batch_size == 8
    assert config.items_per_text == 2 and config.classification.train_file == "x.jsonl"
    # the rest of each block still comes from the preset
    assert config.relevance.target == "max_logit" and config.classification.gradient_accumulation_steps == 4


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_axolotl_validation_and_stage1_loss_on_the_whole_sequence(tmp_path):
    recipe = base_recipe(tmp_path, "unused-model")
    recipe["decselfmask"]["protocol"] = "paper"
    recipe["decselfmask"]["classification"]["batch_size"] = 2
    handler, logger = _Lines(), logging.getLogger("axolotl_decselfmask.plugin")
    logger.addHandler(handler)
    try:
        cfg = validate_recipe(recipe)
    finally:
        logger.removeHandler(handler)
    assert cfg.train_on_inputs is True  # stage 1: loss on the whole sequence
    block = cfg.decselfmask
    block = block.to_dict() if hasattr(block, "to_dict") else block
    config = DecSelfMaskConfig(**block)
    assert config.classification.batch_size == 2 and config.relevance.method == "attnlrp"
    log = "\n".join(handler.lines)
    assert "classification.batch_size: 2 (recipe)" in log and "relevance.method: 'attnlrp' (preset)" in log
    assert "train_on_inputs: True (preset)" in log

    explicit = copy.deepcopy(recipe)
    explicit["train_on_inputs"] = False
    assert validate_recipe(explicit).train_on_inputs is False


def test_report_names_every_preset_key():
    block = {"protocol": "paper", "spans": {"sigma": 2.0}}
    lines = preset_report({}, block)
    assert any(line.startswith("decselfmask.spans.sigma: 2.0 (recipe)") for line in lines)
    n_keys = sum(len(v) if isinstance(v, dict) else 1 for v in PRESETS["paper"].values())
    assert len(lines) == n_keys + 2  # + Axolotl's train_on_inputs and stage 1's learning rate (no adapter)
    assert "learning_rate: 4e-05 (preset: stage 1 is a full fine-tune)" in lines
    assert len(preset_report({"adapter": "lora"}, block)) == n_keys + 1


def test_stage1_full_finetune_learning_rate_only_without_adapter():
    from axolotl_decselfmask.protocol import apply_recipe_preset

    block = {"protocol": "paper"}
    full = {"base_model": "m"}
    apply_recipe_preset(full, block)
    assert full["learning_rate"] == 4e-5 and full["train_on_inputs"] is True
    lora = {"adapter": "lora"}
    apply_recipe_preset(lora, block)
    assert "learning_rate" not in lora
    own = {"learning_rate": 1e-5}
    apply_recipe_preset(own, block)
    assert own["learning_rate"] == 1e-5
    plain = {}
    apply_recipe_preset(plain, {})
    assert plain == {}


@pytest.mark.parametrize("bad", ["papers", "Paper"])
def test_unknown_protocol_is_an_error(bad):
    with pytest.raises(ValueError, match="protocol"):
        DecSelfMaskConfig(protocol=bad)
