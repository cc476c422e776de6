"""Applying the defaults rule (docs/results.md, amendment D1): scripts/apply_defaults.py maps the rule's choice onto
the plugin's defaults (the factors of its rung and those before it, its classifier; today's default sets nothing),
every possible choice giving keys the plugin accepts; and the file it writes is what the ``default`` protocol
fills in (a recipe's own keys still win), a broken file an error that names it."""

import json
from pathlib import Path

import pytest
from helpers import script_module

from axolotl_decselfmask import protocol
from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.protocol import apply_recipe_preset, install_measured_defaults, preset_report

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return script_module("apply_defaults")


def _choice(rung, classifier="options", method="decselfmask", **extra):
    return {"rung": rung, "method": method, "classifier": classifier, "mean": 0.6, "low": 0.55, "high": 0.65,
            "seeds": [0], **extra}


def test_todays_default_sets_nothing():
    keys = _script().setting_keys(_choice(1))
    assert keys["decselfmask"] == {} and keys["recipe"] == {} and keys["full_finetune"] == {}


def test_a_rung_sets_its_factors_and_those_before_it_and_the_measured_prompt():
    ad = _script()
    two = ad.setting_keys(_choice(2))
    assert two["decselfmask"] == {"classification": {"prompt": "mask_fill", "train_on_inputs": True, "lora_alpha": 16,
                                                     "gradient_accumulation_steps": 8}}
    assert two["recipe"] == {} and two["left_to_the_user"] == {}
    three = ad.setting_keys(_choice(3))
    assert three["recipe"] == {"train_on_inputs": True} and three["decselfmask"] == two["decselfmask"]
    five = ad.setting_keys(_choice(5, "package"))
    assert five["decselfmask"]["relevance"] == {"method": "attnlrp", "target": "max_logit", "token_position": "middle",
                                                "prompt_style": "completion"}
    assert five["decselfmask"]["spans"] == {"sign": "absolute"}
    assert five["decselfmask"]["classification"]["method"] == "head"
    assert five["decselfmask"]["classification"]["head"] == {"style": "package"}
    assert set(five["already_default"]) == {"pool_size", "stage1_token_budget"}  # rung 4: no key to set
    assert "save_steps" not in five["recipe"]  # how the ladder resumes, no factor
    seven = ad.setting_keys(_choice(7, "authors"))
    assert seven["full_finetune"] == {"learning_rate": 4e-5}
    assert set(seven["left_to_the_user"]) == {"decselfmask.relevance.model", "recipe.adapter"}
    assert "model" not in seven["decselfmask"]["relevance"]  # a teacher is no default
    assert seven["decselfmask"]["classification"]["head"] == {"style": "authors", "epochs": 50}


def test_the_arm_s_settings():
    ad = _script()
    early = ad.setting_keys(_choice("arm", method="decselfmask_early_stop", stage1_rung=4))
    assert early["decselfmask"]["classification"]["early_stopping"] == {"enabled": True}
    assert early["recipe"] == {"train_on_inputs": True}
    head = ad.setting_keys(_choice("arm", method="decselfmask_head_authors", stage1_rung=2))
    assert head["decselfmask"]["classification"]["head"] == {"style": "authors", "epochs": 50}
    with pytest.raises(SystemExit, match="sft_early_stop is not a DecSelfMask setting"):
        ad.setting_keys(_choice("arm", method="sft_early_stop", stage1_rung=2))


@pytest.mark.parametrize("rung", range(1, 8))
@pytest.mark.parametrize("classifier", ["options", "package", "authors"])
def test_every_possible_choice_is_a_block_the_plugin_accepts(rung, classifier):
    keys = _script().setting_keys(_choice(rung, classifier))
    DecSelfMaskConfig(**keys["decselfmask"])


def test_the_rule_must_be_applied_and_the_measurement_is_written():
    ad = _script()
    with pytest.raises(SystemExit, match="not applied yet"):
        ad.measured_defaults({"applied": False})
    rule = {"applied": True, "choice": _choice(3), "why": "its interval excludes zero",
            "difference": {"mean": 0.05, "low": 0.02, "high": 0.08, "excludes_zero": True, "seeds": [0]}}
    out = ad.measured_defaults(rule)
    assert out["measurement"]["chosen"] == "rung 3's decselfmask (options)"
    assert out["measurement"]["minus_todays_default"] == {"mean": 0.05, "low": 0.02, "high": 0.08}
    assert out["recipe"] == {"train_on_inputs": True}


def test_the_written_file_is_what_the_default_protocol_fills_in(tmp_path, monkeypatch):
    ad = _script()
    path = tmp_path / "measured_defaults.json"
    path.write_text(ad.render(ad.measured_defaults({"applied": True, "choice": _choice(3, "package"),
                                                    "why": "x", "difference": None})))
    for table in (protocol.PRESETS, protocol.RECIPE_KEYS, protocol.FULL_FINETUNE_KEYS):
        monkeypatch.setitem(table, "default", table["default"])  # restored after the test
    assert install_measured_defaults(path)["measurement"]["chosen"] == "rung 3's decselfmask (package head)"
    config = DecSelfMaskConfig()
    assert config.classification.prompt == "mask_fill" and config.classification.method == "head"
    assert DecSelfMaskConfig(classification={"prompt": "options"}).classification.prompt == "options"  # the recipe wins
    cfg = {}
    apply_recipe_preset(cfg, {})
    assert cfg == {"train_on_inputs": True}
    cfg = {"train_on_inputs": False}
    apply_recipe_preset(cfg, {})
    assert cfg == {"train_on_inputs": False}
    assert "decselfmask.classification.method: 'head' (measured default: docs/results.md, amendment D1)" in preset_report({}, {})


def test_no_file_changes_nothing_and_a_broken_file_is_an_error_naming_it(tmp_path, monkeypatch):
    for table in (protocol.PRESETS, protocol.RECIPE_KEYS, protocol.FULL_FINETUNE_KEYS):
        monkeypatch.setitem(table, "default", table["default"])
    before = dict(protocol.PRESETS["default"])
    assert install_measured_defaults(tmp_path / "absent.json") is None and protocol.PRESETS["default"] == before
    broken = tmp_path / "measured_defaults.json"
    broken.write_text(json.dumps({"decselfmask": ["not", "a", "mapping"]}))
    with pytest.raises(RuntimeError, match="measured_defaults.json: not the file scripts/apply_defaults.py writes"):
        install_measured_defaults(broken)
    for text in ("{", "[1, 2]"):
        broken.write_text(text)
        with pytest.raises(RuntimeError, match="measured_defaults.json: not the file"):
            install_measured_defaults(broken)


def test_writing_twice_gives_the_same_file(tmp_path, monkeypatch):
    """The setting is compared with the plugin's built-in defaults, not with a file already installed: --write
    after --write changes nothing (and --check holds right after it)."""
    ad = _script()
    for table in (protocol.PRESETS, protocol.RECIPE_KEYS, protocol.FULL_FINETUNE_KEYS):
        monkeypatch.setitem(table, "default", table["default"])
    rule = {"applied": True, "choice": _choice(3, "package"), "why": "x", "difference": None}
    first = ad.render(ad.measured_defaults(rule))
    path = tmp_path / "measured_defaults.json"
    path.write_text(first)
    install_measured_defaults(path)
    assert ad.render(ad.measured_defaults(rule)) == first and '"prompt": "mask_fill"' in first


def test_the_committed_defaults_are_what_the_committed_rule_gives():
    """Once the committed report applies the rule, the defaults must be written from it (and stay so)."""
    ad = _script()
    rule = json.loads(ad.LADDER_JSON.read_text())["defaults_rule"]
    if ad.OUT.exists():
        assert ad.main(["--check"]) == 0, "run `python scripts/apply_defaults.py --write` and commit the file"
    else:
        assert not rule["applied"], ("the committed ladder report applies the defaults rule: write its defaults with "
                                     "`python scripts/apply_defaults.py --write` and commit them")


def test_the_readme_says_so_when_sft_or_a_head_beats_every_decselfmask_setting():
    """The plan: if plain SFT or a head on the untouched model beats every DecSelfMask setting, the README says so
    plainly: the committed rule's sentence, word for word, once the rule is applied."""
    rule = json.loads(_script().LADDER_JSON.read_text())["defaults_rule"]
    if rule["readme_sentence"]:
        assert rule["readme_sentence"] in (ROOT / "README.md").read_text(), (
            f"the README must say: {rule['readme_sentence']!r} (docs/results.md, the defaults rule)")
