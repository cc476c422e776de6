"""docs/configuration.md is generated from the pydantic schema and must not drift from it."""

from __future__ import annotations

import re
import typing

import yaml
from conftest import ROOT
from pydantic import BaseModel

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.tools import config_reference

DOC = ROOT / "docs" / "configuration.md"


def _leaf_keys(model: type[BaseModel], path: str = "") -> list[str]:
    """Every key of the schema, nested, as the page writes it (``a.b``, ``tasks[].x``)."""
    keys = []
    for name, info in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        keys.append(key)
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _leaf_keys(annotation, key)
        elif typing.get_origin(annotation) is list:
            (arg,) = typing.get_args(annotation)
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                keys += _leaf_keys(arg, f"{key}[]")
    return keys


def data_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([^`]+)` \|(.*)\|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in re.split(r"(?<!\\)\|", m.group(2))]
    return rows


def test_configuration_md_matches_the_schema():
    expected = config_reference.render()
    actual = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    assert actual == expected, (
        "docs/configuration.md is out of date with axolotl_decselfmask/args.py; regenerate it with "
        f"`{config_reference.COMMAND}` (or `decselfmask config-reference > docs/configuration.md`)"
    )


def test_every_key_has_a_row_with_type_default_and_description():
    rows = data_rows(config_reference.render())
    keys = _leaf_keys(DecSelfMaskConfig)
    assert set(rows) == set(keys), set(keys) ^ set(rows)
    for key, (type_name, default, _range, description) in rows.items():
        assert type_name and default and description, f"{key}: {rows[key]}"


def test_rows_show_the_schema_values():
    rows = data_rows(config_reference.render())
    assert rows["relevance.method"][:2] == ["string", '`"attnlrp"`']
    assert rows["relevance.ig_steps"][2] == ">= 2, <= 1024"
    assert rows["spans.low"][2] == ">= 0.0, < 1.0"
    assert rows["relevance.dtype"][0] == "`auto` \\| `float32` \\| `bfloat16` \\| `float16`"
    assert rows["max_texts"][:2] == ["integer or null", "null"]
    assert rows["tasks[].task"][1] == "required"
    assert rows["classification.lora_r"][1] == "`32`"
    assert "classification.train_file" in rows["tasks[].train_file"][3]


def test_defaults_block_validates_and_equals_the_defaults():
    text = config_reference.render()
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    loaded = yaml.safe_load(block)["decselfmask"]
    assert DecSelfMaskConfig(**loaded) == DecSelfMaskConfig()
    assert loaded["masking"]["answer_separator"] == "\n"


def test_write_then_check_round_trip(tmp_path):
    out = tmp_path / "configuration.md"
    assert config_reference.main(["--write", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_reference.render()
