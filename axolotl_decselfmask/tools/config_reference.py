"""The configuration reference (docs/configuration.md), generated from the pydantic schema.

``axolotl decselfmask config-reference > docs/configuration.md``, or
``axolotl decselfmask config-reference --write`` (writes docs/configuration.md under the
working directory, a checkout's root, or the path given with ``--out``). A test compares the
file with a fresh rendering, so the page cannot drift from :mod:`.args`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from axolotl_decselfmask.args import DecSelfMaskConfig, field_groups

COMMAND = "axolotl decselfmask config-reference --write"
DEFAULT_PATH = Path("docs") / "configuration.md"  # relative to the working directory: a checkout's root

HEADER = """\
# Configuration reference: the `decselfmask:` block

<!-- Generated from axolotl_decselfmask/args.py by `{command}`. Do not edit by hand:
     tests/unit/test_config_reference.py fails when this page and the schema differ. -->

Every key the plugin reads sits under one `decselfmask:` block of an ordinary Axolotl recipe.
The block is validated by pydantic with unknown keys forbidden, so a misspelt key or a value out
of range stops `axolotl preprocess`/`axolotl train` with the key's name (the rest of the recipe
is Axolotl's, and Axolotl drops keys it does not know without a word: see
[troubleshooting](troubleshooting.md)).

Columns: the key's path inside `decselfmask:`, its type, its default (`required` when it has
none), the allowed range, and what it does. Nested blocks have their own section; a long block's
keys are grouped under "Parameters that control ..." headings, as in its docstring.
"""


def _type_name(annotation) -> str:
    """A short, YAML-minded name of a field's type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        name = " \\| ".join(_type_name(a) for a in inner)
        return f"{name} or null" if len(inner) < len(args) else name
    if origin in (list, typing.List):  # noqa: UP006 - both spellings may appear
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, typing.Dict):  # noqa: UP006
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "block"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return "(block)"
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if value is None:
        return "null"
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _range(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        min_length = getattr(meta, "min_length", None)
        if min_length:
            parts.append(f"length >= {min_length}")
    return ", ".join(parts)


# Descriptions of keys whose Field() has none (args.py's own description wins once it has one).
FALLBACK_DESCRIPTIONS = {
    "classification.lora_dropout": "Stage-2 LoRA dropout.",
    "classification.gradient_accumulation_steps": "Stage-2 gradient accumulation steps.",
    "classification.eval_batch_size": "Batch size of the evaluation.",
    "probing.learning_rate": "Learning rate of the probing classifier.",
    "probing.weight_decay": "Weight decay of the probing classifier.",
}


def _description(model: type[BaseModel], path: str, name: str, info: FieldInfo) -> str:
    if info.description:
        return info.description
    key = f"{path}.{name}" if path else name
    return FALLBACK_DESCRIPTIONS.get(key, "")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _blocks(model: type[BaseModel], path: str) -> list[tuple[str, type[BaseModel]]]:
    """``(path, model)`` for the model and every nested block, depth first."""
    out = [(path, model)]
    for name, info in model.model_fields.items():
        annotation = info.annotation
        child = None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            child, suffix = annotation, ""
        elif typing.get_origin(annotation) is list:
            (arg,) = typing.get_args(annotation)
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                child, suffix = arg, "[]"
        if child is not None:
            out.extend(_blocks(child, f"{path}.{name}{suffix}" if path else f"{name}{suffix}"))
    return out


def _table(model: type[BaseModel], path: str, names: list[str]) -> list[str]:
    """The Markdown table of the keys ``names`` of ``model`` (the block at ``path``)."""
    lines = ["| key | type | default | range | description |", "| --- | --- | --- | --- | --- |"]
    for name in names:
        info = model.model_fields[name]
        key = f"{path}.{name}" if path else name
        description = _cell(_description(model, path, name, info))
        annotation = info.annotation
        nested = _type_name(annotation) == "block" or (
            typing.get_origin(annotation) is list and _type_name(typing.get_args(annotation)[0]) == "block")
        if nested:
            target = f"{key}[]" if typing.get_origin(annotation) is list else key
            description = (description + " " if description else "") + f"See [`decselfmask.{target}`](#{_anchor(target)})."
        type_name = "list of blocks" if typing.get_origin(annotation) is list and nested else _type_name(annotation)
        lines.append(f"| `{key}` | {type_name} | {_default(info)} | {_range(info)} | {description} |")
    return lines + [""]


def render() -> str:
    """The whole page, as Markdown."""
    lines = [HEADER.format(command=COMMAND)]
    blocks = _blocks(DecSelfMaskConfig, "")
    lines.append("Sections: " + ", ".join(
        f"[`{p or 'decselfmask'}`](#{_anchor(p)})" for p, _ in blocks) + ".\n")
    for path, model in blocks:
        title = f"decselfmask.{path}" if path else "decselfmask"
        lines.append(f"## `{title}`\n")
        groups = field_groups(model)
        # a grouped docstring: its text before "Parameters:" here, its groups as the tables' headings
        doc = " ".join(((model.__doc__ or "").split("Parameters:")[0] if groups else (model.__doc__ or "")).split())
        if doc:
            lines.append(doc + "\n")
        if path.endswith("[]"):
            lines.append(f"A list: each entry of `{title[:-2]}` is a block with these keys.\n")
        for heading, names in groups or [("", list(model.model_fields))]:
            if heading:
                lines.append(f"### {heading}\n")
            lines.extend(_table(model, path, names))
    lines.append("## The whole block with its defaults\n")
    lines.append("Copy what you need; a key left out keeps its default.\n")
    lines.append("```yaml\n" + defaults_yaml() + "```\n")
    return "\n".join(lines).rstrip() + "\n"


def defaults_yaml() -> str:
    """The ``decselfmask:`` block with every default, as YAML."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper, value):
        style = '"' if "\n" in value or value.strip() != value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    block = DecSelfMaskConfig().model_dump(mode="json")
    text = yaml.dump({"decselfmask": block}, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return _group_comments(text)


def _group_comments(text: str) -> str:
    """The defaults' YAML with each group's heading as a comment above the group's first key."""
    models = dict(_blocks(DecSelfMaskConfig, ""))
    out, stack = [], []
    for line in text.splitlines(keepends=True):
        match = re.match(r"^( *)(\w+):", line)
        if match:
            depth = len(match.group(1)) // 2
            stack[depth:] = [match.group(2)]
            model = models.get(".".join(stack[1:depth]))  # stack[0] is "decselfmask"
            for heading, names in field_groups(model) if model is not None else []:
                if names and names[0] == match.group(2):
                    out.append(f"{match.group(1)}# {heading}\n")
        out.append(line)
    return "".join(out)


def _anchor(path: str) -> str:
    """GitHub's heading anchor for ``## `decselfmask.<path>` ``."""
    title = f"decselfmask.{path}" if path else "decselfmask"
    return "".join(ch for ch in title.lower() if ch.isalnum() or ch in "-_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="axolotl decselfmask config-reference",
        description="Print (or --write) the configuration reference of the decselfmask: block.",
    )
    parser.add_argument("--write", action="store_true", help="write the page instead of printing it")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help=f"with --write: the file (default {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
