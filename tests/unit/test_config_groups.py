"""``classification``'s keys grouped as TRL groups its configs, and ``tasks[]`` made from them."""

from __future__ import annotations

import inspect
import re
import typing

import pytest
import yaml
from pydantic import ValidationError

from axolotl_decselfmask.args import (
    TASK_KEYS,
    ClassificationConfig,
    DecSelfMaskConfig,
    TaskConfig,
    field_groups,
)
from axolotl_decselfmask.tools import config_reference

GROUPS = field_groups(ClassificationConfig)


def test_every_key_is_in_one_group_and_the_fields_follow_the_groups():
    named = [name for _, names in GROUPS for name in names]
    assert len(GROUPS) >= 5
    assert all(heading.startswith("Parameters that control ") and names for heading, names in GROUPS)
    missing = set(ClassificationConfig.model_fields) - set(named)
    assert not missing, (f"classification keys in no group: {sorted(missing)}; name each under a "
                         "'> Parameters that control ...' heading of ClassificationConfig's docstring")
    assert len(named) == len(set(named)), "a key named in two groups"
    assert named == list(ClassificationConfig.model_fields), "the fields are not declared in their groups' order"


def test_the_comment_banners_in_the_field_list_are_the_docstring_headings():
    """Each field sits under the ``# Parameters that control ...`` comment of its docstring group."""
    banner, under = None, {}
    for line in inspect.getsource(ClassificationConfig).splitlines():
        if m := re.match(r"^    # (Parameters that control .+)$", line):
            banner = m.group(1)
        elif m := re.match(r"^    (\w+): ", line):
            under[m.group(1)] = banner
    assert under == {name: heading for heading, names in GROUPS for name in names}


def test_task_keys_are_the_task_group_and_task_config_is_made_from_them():
    (task_group,) = [names for heading, names in GROUPS if "`tasks`" in heading]
    assert tuple(task_group) == TASK_KEYS
    assert list(TaskConfig.model_fields) == [*TASK_KEYS, "items"]
    for name in TASK_KEYS:
        ours, theirs = TaskConfig.model_fields[name], ClassificationConfig.model_fields[name]
        assert ours.metadata == theirs.metadata, name  # the same range
        if name == "task":
            assert ours.is_required() and ours.annotation is theirs.annotation
            continue
        assert ours.default is None and not ours.is_required(), name  # unset means "inherit"
        assert ours.annotation == typing.Optional[theirs.annotation], name
        assert ours.description and (f"classification.{name}" in ours.description or name == "test_fraction")


def _errors(model, **values):
    with pytest.raises(ValidationError) as info:
        model(**values)
    return [(e["loc"], e["type"], e["msg"]) for e in info.value.errors()]


BAD = [("test_fraction", 1.0), ("test_fraction", 0), ("question", ""), ("label_separator", ""),
       ("label_question", ""), ("multi_label", "sometimes"), ("labels", "a,b"), ("train_file", 3),
       ("text_column", ["text"])]


@pytest.mark.parametrize(("key", "value"), BAD)
def test_a_bad_override_fails_as_the_same_key_of_classification(key, value):
    expected = _errors(ClassificationConfig, **{key: value})
    assert _errors(TaskConfig, task="t", **{key: value}) == expected
    # and in a recipe: the entry's path, before any model work
    with pytest.raises(ValidationError) as info:
        DecSelfMaskConfig(tasks=[{"task": "t", key: value}])
    assert {e["loc"][:3] for e in info.value.errors()} == {("tasks", 0, key)}


def test_the_shared_checks_still_apply_to_a_task():
    with pytest.raises(ValidationError, match=r"decselfmask \[t\]: test_file \(b.jsonl\) and test_fraction"):
        TaskConfig(task="t", test_file="b.jsonl", test_fraction=0.2)
    with pytest.raises(ValidationError, match="task\n  Field required"):
        TaskConfig(train_file="a.jsonl")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TaskConfig(task="t", lora_r=8)  # not a per-task key


def test_unset_overrides_inherit_and_set_ones_win():
    shared = {"train_file": "a.jsonl", "test_file": "b.jsonl", "labels": ["x", "y"], "question": "Which?",
              "label_separator": "|", "lora_r": 8, "calibration": "none"}
    config = DecSelfMaskConfig(classification=shared, tasks=[
        {"task": "one"},
        {"task": "two", "labels": ["p", "q", "r"], "test_fraction": 0.25, "label_separator": ","},
    ])
    one, two = config.task_configs()
    assert one == config.classification.model_copy(update={"task": "one"})
    assert (two.task, two.labels, two.label_separator, two.question) == ("two", ["p", "q", "r"], ",", "Which?")
    assert (two.test_file, two.test_fraction, two.lora_r, two.calibration) == (None, 0.25, 8, "none")


def test_the_reference_shows_the_groups_in_order():
    text = config_reference.render()
    section = text[text.index("## `decselfmask.classification`\n"):text.index("## `decselfmask.classification.head`")]
    assert re.findall(r"^### (.+)$", section, re.M) == [heading for heading, _ in GROUPS]
    for heading, names in GROUPS:  # each key's row under its own heading
        part = section.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
        assert re.findall(r"^\| `classification\.(\w+)` \|", part, re.M) == names
    block = re.search(r"```yaml\n(.*?)```", text, re.S).group(1)
    comments = re.findall(r"^    # (.+)$", block, re.M)
    assert comments == [heading for heading, _ in GROUPS]
    assert DecSelfMaskConfig(**yaml.safe_load(block)["decselfmask"]) == DecSelfMaskConfig()
