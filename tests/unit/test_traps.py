"""The traps a new user walks into, and bad input refused clearly, early and with the line or key.

One test per item of the issue "The traps a new user walks into, and bad input that is not yet
refused clearly"; docs/troubleshooting.md lists every message with its fix.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import sys

import numpy as np
import pytest
import yaml
from axolotl.utils.dict import DictDefault
from conftest import ROOT
from helpers import LABELS, base_recipe, data_rows, validate_recipe, write_rows

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError

DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
TROUBLESHOOTING = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
QUICKSTART_LIMITS = ("max_steps", "max_texts", "max_test_examples")


def _cls(**kw):
    return DecSelfMaskConfig(classification=kw).classification


def _run_cfg(raw: dict) -> DictDefault:
    """A raw recipe as Axolotl's ``load_cfg`` hands it to ``register()`` when it runs a command."""
    cfg = DictDefault(copy.deepcopy(raw))
    cfg.axolotl_config_path = "recipe.yml"
    return cfg


def _plugin():
    from axolotl_decselfmask.plugin import DecSelfMaskPlugin

    return DecSelfMaskPlugin()


def _schema_keys() -> set[str]:
    """Every top-level key of Axolotl's schema with the plugin's (as tests/e2e/test_recipes.py)."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.integrations.config import merge_input_args

    prepare_plugins(DictDefault({"plugins": ["axolotl_decselfmask.DecSelfMaskPlugin"]}))
    _, input_config = merge_input_args()
    return {key for name, f in input_config.model_fields.items() for key in (name, f.alias) if key}


@pytest.fixture()
def keep_excepthook(monkeypatch):
    """register() of a real run installs the plugin's exception hook: undo it after the test."""
    from axolotl_decselfmask import errors

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(errors, "_previous", errors._previous)


# ------------------------------------------------------------------------------------ the docs


def test_own_data_doc_starts_from_its_own_recipe_without_quickstart_limits():
    own = (DOCS / "own_data.md").read_text(encoding="utf-8")
    checklist = own.split("## A checklist", 1)[1]
    assert "examples/own_data.yml" in checklist
    assert "Start from `examples/quickstart.yml`" not in own
    raw = yaml.safe_load((ROOT / "examples" / "own_data.yml").read_text(encoding="utf-8"))
    block = raw["decselfmask"]
    assert not [k for k in QUICKSTART_LIMITS if k in raw or k in block or k in block["classification"]]
    assert raw["num_epochs"] >= 1 and block["classification"]["num_epochs"] >= 1
    assert raw["sequence_len"] >= 512
    cfg = validate_recipe(raw)  # Axolotl's schema, with the plugin's block
    assert cfg["datasets"][0]["type"] == "axolotl_decselfmask.masked_reconstruction"
    assert not set(raw) - _schema_keys(), "keys Axolotl would drop without a word"
    # shipped in the wheel and written by the quickstart, next to the quickstart's recipes
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"own_data.yml"' in pyproject.split("[tool.setuptools.package-data]", 1)[1]
    from axolotl_decselfmask.tools.quickstart import RECIPES

    assert "own_data.yml" in RECIPES


def test_readme_full_fine_tuning_adapter_value_validates(tiny_llama, tmp_path):
    line = next(l for l in README.splitlines() if l.startswith("adapter: qlora"))
    assert "none" not in line.split("#", 1)[1]
    assert "adapter: null" in line  # what the README offers for full fine-tuning
    raw = base_recipe(tmp_path, tiny_llama)
    raw["adapter"] = yaml.safe_load("adapter: null")["adapter"]
    assert validate_recipe(raw)["adapter"] is None
    raw["adapter"] = "none"  # what it used to offer
    with pytest.raises(Exception, match="not built in"):
        validate_recipe(raw)


def test_install_instructions_do_not_point_at_pypi():
    """The package is not on PyPI: install from a checkout or a built wheel."""
    command = re.compile(r"(^|`)\s*pip install [^`\n]*\baxolotl-decselfmask\b", re.M)
    pages = [ROOT / "README.md"] + [p for p in DOCS.glob("*.md") if p.name not in ("benchmark.md", "experiments.md")]
    found = {p.name: command.findall(p.read_text(encoding="utf-8")) for p in pages}
    assert not {k: v for k, v in found.items() if v}
    assert "pip install -e ." in README and "pip install dist/axolotl_decselfmask-" in README


def test_docs_say_recipes_and_grids_are_not_in_the_wheel():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    shipped = pyproject.split("[tool.setuptools.package-data]", 1)[1].split("[tool.pytest", 1)[0]
    assert "recipes" not in shipped and "grids" not in shipped  # what the docs below say
    recipes_doc = (DOCS / "recipes.md").read_text(encoding="utf-8")
    for text in (README, recipes_doc):
        assert re.search(r"not in the wheel[^.]*`recipes/`[^.]*`examples/grids/`", text), text[:200]


def test_no_huggingface_cli_in_examples_recipes_or_docs():
    """`huggingface-cli` no longer works in huggingface_hub 1.x: the command is `hf download`."""
    files = [ROOT / "README.md", *(p for p in DOCS.glob("*.md") if p.name != "troubleshooting.md"),  # it quotes the warning
             *(ROOT / "examples").rglob("*.yml"), *(ROOT / "recipes").rglob("*.yml")]
    assert not [str(p.relative_to(ROOT)) for p in files if "huggingface-cli" in p.read_text(encoding="utf-8")]
    assert "hf download meta-llama/Llama-3.2-1B-Instruct" in (ROOT / "examples" / "grids" / "full_gpu.yml").read_text()


def test_troubleshooting_says_accelerate_must_be_on_path():
    assert "No such file or directory: b'/bin/accelerate'" in TROUBLESHOOTING
    assert "source .venv/bin/activate" in TROUBLESHOOTING and "--launcher python" in TROUBLESHOOTING


def test_preprocess_warns_when_accelerate_is_not_on_path(tmp_path, tiny_llama, monkeypatch, caplog, keep_excepthook):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with caplog.at_level(logging.WARNING, logger="axolotl_decselfmask"):
        _plugin().register(_run_cfg(base_recipe(tmp_path, tiny_llama)))
    assert "`accelerate` is not on PATH" in caplog.text and "source" in caplog.text


# ------------------------------------------------------------------------------- bad input


def _pool(tmp_path, lines: list[str], name="pool.jsonl"):
    path = tmp_path / name
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return str(path)


def test_jsonl_pool_with_one_invalid_line_names_the_line(tmp_path):
    from axolotl_decselfmask.io.tables import check_pool_file

    good = [json.dumps({"text": f"note {i}"}) for i in range(5)]
    path = _pool(tmp_path, good[:3] + ['{"text": "broken"'] + good[3:])
    with pytest.raises(InputError, match=r"datasets\[0\]\.path: .*pool.jsonl, line 4 is not valid JSON"):
        check_pool_file(path, "text", "datasets[0].path")
    path = _pool(tmp_path, good[:2] + ['["a list"]'] + good[2:], name="list.jsonl")
    with pytest.raises(InputError, match=r"list.jsonl, line 3 is not a JSON object"):
        check_pool_file(path, "text", "datasets[0].path")
    # JSON lines under a .json suffix are checked the same way
    path = _pool(tmp_path, good[:1] + ["{oops}"], name="lines.json")
    with pytest.raises(InputError, match=r"lines.json, line 2 is not valid JSON"):
        check_pool_file(path, "text", "datasets[0].path")


def test_jsonl_train_file_with_one_invalid_line_names_the_line(tmp_path):
    from axolotl_decselfmask.stage2.data import load_task_data

    rows = [json.dumps({"text": f"note {i}", "label": LABELS[i % 2]}) for i in range(6)]
    path = _pool(tmp_path, rows[:4] + ['{"text": "x", "label": "neoplasms",}'] + rows[4:], name="train.jsonl")
    with pytest.raises(InputError, match=r"decselfmask.classification.train_file: .*train.jsonl, line 5 is not valid JSON"):
        load_task_data(_cls(train_file=path))


def test_csv_with_byte_order_mark_is_accepted_by_every_reader_and_check(tmp_path):
    """Spreadsheets write UTF-8 CSV with a byte-order mark; every reader and check strips it,
    and Axolotl's loader (datasets' csv and json builders) does not see it either."""
    from datasets import Dataset

    from axolotl_decselfmask.io.labelled import read_labelled
    from axolotl_decselfmask.io.tables import check_pool_file, iter_column, read_table
    from axolotl_decselfmask.stage1.masked_reconstruction import load
    from axolotl_decselfmask.stage1.pool import read_pool_as_axolotl

    bom = "\ufeff"
    csv_file = tmp_path / "pool.csv"
    csv_file.write_text(bom + "text,label\nfirst note,neoplasms\nsecond note,cardiovascular diseases\n", encoding="utf-8")
    jsonl = tmp_path / "pool.jsonl"
    jsonl.write_text(bom + '{"text": "first note", "label": "neoplasms"}\n'
                     '{"text": "second note", "label": "cardiovascular diseases"}\n', encoding="utf-8")
    for path, ds_type in ((csv_file, "csv"), (jsonl, "json")):
        check_pool_file(str(path), "text", "datasets[0].path")
        assert list(read_table(path, "k")[0]) == ["text", "label"]
        assert [v for chunk in iter_column(path, "text", "k") for v in chunk] == ["first note", "second note"]
        assert read_labelled(str(path), "text", "label", None, "decselfmask.classification.train_file").labels == \
            ["neoplasms", "cardiovascular diseases"]
        entry = {"path": str(path), "ds_type": ds_type, "type": "axolotl_decselfmask.masked_reconstruction"}
        assert read_pool_as_axolotl(entry, DictDefault({}), "text") == ["first note", "second note"]
        strategy = load(None, DictDefault({}), DictDefault(entry))  # the dataset type Axolotl calls
        assert strategy.text_column(Dataset.from_dict({"text": ["a"]})) == (str(path), "text")


def test_missing_base_model_folder_names_the_key_and_path(tmp_path, tiny_llama, monkeypatch, keep_excepthook):
    raw = base_recipe(tmp_path, tiny_llama)
    raw["base_model"] = str(tmp_path / "models" / "no-such-model")
    with pytest.raises(InputError, match=r"base_model: .*no-such-model' is not a folder"):
        _plugin().register(_run_cfg(raw))
    # relative to a folder that exists, offline: a path, not a hub name
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw["base_model"] = "models/smollm2-135m"
    with pytest.raises(InputError, match=r"base_model: 'models/smollm2-135m' is not a folder .*working directory"):
        _plugin().register(_run_cfg(raw))
    raw["decselfmask"]["relevance"]["model"] = "./scorer"
    raw["base_model"] = str(tiny_llama)
    with pytest.raises(InputError, match=r"decselfmask.relevance.model: './scorer' is not a folder"):
        _plugin().register(_run_cfg(raw))
    # validating a recipe alone (no run) does not look at the file system: recipes name folders
    # that an earlier step writes, and hub models that are not downloaded yet
    raw["base_model"] = str(tmp_path / "models" / "no-such-model")
    validate_recipe(raw)


def test_model_folder_without_tokenizer_files_names_the_missing_files(tmp_path, tiny_llama, keep_excepthook):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((tiny_llama / name).read_bytes())
    raw = base_recipe(tmp_path, folder)
    with pytest.raises(InputError, match=r"base_model: the folder .*weights-only has no tokenizer files "
                                         r"\(none of tokenizer.json, tokenizer.model.*it has config.json, model.safetensors\)"):
        _plugin().register(_run_cfg(raw))
    raw["tokenizer_config"] = str(tiny_llama)  # a tokenizer from elsewhere is fine
    _plugin().register(_run_cfg(raw))


def test_sequence_len_too_short_for_the_classification_prompt_is_refused_before_stage1(tmp_path, tiny_llama):
    from axolotl.utils.config import normalize_config

    write_rows(tmp_path / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    write_rows(tmp_path / "train.jsonl", data_rows("abstracts_train.jsonl", per_class=2))
    write_rows(tmp_path / "test.jsonl", data_rows("abstracts_test.jsonl", per_class=1))
    raw = base_recipe(tmp_path, tiny_llama)
    raw["sequence_len"] = 80
    cfg = validate_recipe(raw)
    normalize_config(cfg)
    with pytest.raises(InputError, match=r"abstracts.*classification prompt .* takes \d+ tokens.*"
                                         r"classification.max_length defaults to sequence_len \(80\).*at least \d+"):
        _plugin().load_datasets(cfg, preprocess=True)
    raw["decselfmask"]["classification"]["max_length"] = 512  # its own limit: fine
    cfg = validate_recipe(raw)
    normalize_config(cfg)
    assert _plugin().load_datasets(cfg, preprocess=True) is None


def test_labels_equal_up_to_case_or_spacing_are_refused_with_rows_and_spellings(tmp_path):
    from axolotl_decselfmask.stage2.data import load_task_data

    rows = [{"text": "a", "label": "Heart failure"}, {"text": "b", "label": "stroke"},
            {"text": "c", "label": "heart  failure"}, {"text": "d", "label": "Heart failure"}]
    path = write_rows(tmp_path / "train.jsonl", rows)
    with pytest.raises(InputError, match=r"train.jsonl: the labels 'Heart failure' \(rows \[0, 3\]\) and "
                                         r"'heart  failure' \(rows \[2\]\) differ only in case or spacing"):
        load_task_data(_cls(train_file=path))
    load_task_data(_cls(train_file=write_rows(tmp_path / "ok.jsonl", rows[:2])))


def test_listed_label_without_training_rows_is_warned_naming_label_and_file(tmp_path, caplog):
    from axolotl_decselfmask.stage2.data import load_task_data

    path = write_rows(tmp_path / "train.jsonl", [{"text": "a", "label": "neoplasms"}, {"text": "b", "label": "stroke"}])
    with caplog.at_level(logging.WARNING, logger="axolotl_decselfmask"):
        load_task_data(_cls(train_file=path, labels=["neoplasms", "stroke", "epilepsy"]))
    assert re.search(r"label 'epilepsy' of decselfmask.classification.labels has no rows in .*train.jsonl", caplog.text)


def test_changing_only_test_file_changes_the_prepared_dataset(tmp_path, tiny_llama, keep_excepthook):
    """Stage 1's examples depend on the test files (test texts are refused or dropped from the
    pool), so a new test file gets its own prepared dataset and the overlap check runs again."""
    write_rows(tmp_path / "test.jsonl", data_rows("abstracts_test.jsonl", n=3))
    write_rows(tmp_path / "test2.jsonl", data_rows("abstracts_test.jsonl", n=4))
    raw = base_recipe(tmp_path, tiny_llama)

    def prepared(recipe):
        cfg = DictDefault(copy.deepcopy(recipe))
        _plugin().register(cfg)
        return cfg["dataset_prepared_path"]

    first = prepared(raw)
    assert prepared(raw) == first
    other = copy.deepcopy(raw)
    other["decselfmask"]["classification"]["test_file"] = str(tmp_path / "test2.jsonl")
    assert prepared(other) != first
    write_rows(tmp_path / "test.jsonl", data_rows("abstracts_test.jsonl", n=5))  # same name, new rows
    assert prepared(raw) != first


def test_tsv_pool_is_refused_before_axolotl_loads_it(tmp_path):
    from axolotl_decselfmask.io.tables import check_pool_file

    (tmp_path / "notes.tsv").write_text("text\tid\nfirst note\t1\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"datasets\[0\]\.path: .*notes.tsv is a TSV file.*Convert it to CSV or JSON Lines"):
        check_pool_file(str(tmp_path / "notes.tsv"), "text", "datasets[0].path")


def test_task_names_whose_file_names_collide_are_refused():
    from pydantic import ValidationError

    tasks = [{"task": "heart failure", "labels": ["a", "b"]}, {"task": "heart_failure", "labels": ["a", "b"]}]
    with pytest.raises(ValidationError, match=r"task names 'heart failure' and 'heart_failure' both become the file "
                                              r"name 'heart_failure'"):
        DecSelfMaskConfig(tasks=tasks)
    with pytest.raises(ValidationError, match="become the file names 'Stroke' and 'stroke', one file where case"):
        DecSelfMaskConfig(tasks=[{"task": "Stroke"}, {"task": "stroke"}])  # one file on macOS and Windows
    DecSelfMaskConfig(tasks=[{"task": "heart failure"}, {"task": "stroke"}])


def test_chunked_option_scores_equal_unchunked(tiny_llama):
    """The evaluation scores at most ``classification.option_chunk`` options of a prompt at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.args import ClassificationConfig
    from axolotl_decselfmask.stage2.scoring import score_options

    assert ClassificationConfig().option_chunk == 8
    assert ClassificationConfig.model_fields["option_chunk"].description
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    labels = [f"option {i}" for i in range(7)] + ["a much longer option name"]
    texts = ["Tumour growth in the colon.", "A long note. " * 6 + "Seizures.", "Short."]
    rows = []
    forward = model.forward

    def counting(*args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    model.forward = counting
    whole = score_options(model, tok, texts, labels, "Which?", "Answer.", progress=False, batch_size=2,
                          option_chunk=len(labels))
    assert max(rows) == 2 * len(labels)
    rows.clear()
    chunked = score_options(model, tok, texts, labels, "Which?", "Answer.", progress=False, batch_size=2,
                            option_chunk=3)
    assert max(rows) == 2 * 3  # never more than batch_size x option_chunk rows
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)


def test_plugin_errors_end_in_one_line_unless_the_traceback_is_asked_for(monkeypatch, capsys, keep_excepthook,
                                                                         tmp_path, tiny_llama):
    from pydantic import ValidationError

    from axolotl_decselfmask import errors

    _plugin().register(_run_cfg(base_recipe(tmp_path, tiny_llama)))
    assert sys.excepthook is errors.excepthook  # installed by register() in a real run

    def raised(exc):
        try:
            raise exc
        except BaseException as caught:  # noqa: BLE001
            return caught

    monkeypatch.delenv("DECSELFMASK_TRACEBACK", raising=False)
    try:
        try:
            raise InputError("datasets[0].path: pool.jsonl, line 4 is not valid JSON")
        except InputError as inner:
            raise RuntimeError("wrapped by a library") from inner
    except RuntimeError as outer:
        chained = outer
    errors.excepthook(type(chained), chained, chained.__traceback__)
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "decselfmask: datasets[0].path: pool.jsonl, line 4 is not valid JSON "
        "(DECSELFMASK_TRACEBACK=1 shows the traceback)"]
    bad = base_recipe(tmp_path, tiny_llama)
    bad["decselfmask"]["relevnce"] = {}
    with pytest.raises(ValidationError) as info:  # Axolotl's validation of the recipe, with our block
        validate_recipe(bad)
    errors.excepthook(info.type, info.value, info.tb)
    assert capsys.readouterr().err.startswith("decselfmask: decselfmask.relevnce: Extra inputs are not permitted")
    other = raised(KeyError("not ours"))
    errors.excepthook(type(other), other, other.__traceback__)
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("DECSELFMASK_TRACEBACK", "1")
    errors.excepthook(type(chained), chained, chained.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith("RuntimeError: wrapped by a library")


def test_troubleshooting_lists_every_new_message():
    for phrase in ("is not valid JSON", "is not a JSON object", "is a TSV file", "is not a folder",
                   "has no tokenizer files", "classification.max_length defaults to sequence_len",
                   "differ only in case or spacing", "has no rows in", "both become the file name",
                   "`accelerate` is not on PATH", "DECSELFMASK_TRACEBACK", "option_chunk",
                   "Adapter 'none' is not built in", "byte-order mark"):
        assert phrase in TROUBLESHOOTING, phrase
