"""Bad input gets a clear error naming the file, row or key, before any model work."""

import json

import pandas as pd
import pytest
from pydantic import ValidationError

from axolotl_decselfmask.args import DecSelfMaskArgs, DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.labelled import read_labelled
from axolotl_decselfmask.io.tables import clean_texts, read_table
from axolotl_decselfmask.stage2.data import load_task_data

LABELS = ["neoplasms", "cardiovascular diseases"]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _cls(**kw):
    return DecSelfMaskConfig(classification=kw).classification


def test_missing_file_names_key_and_path(tmp_path):
    with pytest.raises(InputError, match=r"decselfmask.classification.train_file: file '.*nope.jsonl' does not exist"):
        load_task_data(_cls(train_file=str(tmp_path / "nope.jsonl")))


def test_missing_column_suggests_closest(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [{"txt": "a", "label": "neoplasms"}])
    with pytest.raises(InputError, match=r"no column 'text'.*Did you mean 'txt'"):
        load_task_data(_cls(train_file=f))
    f = _jsonl(tmp_path / "u.jsonl", [{"text": "a", "lable": "neoplasms"}])
    with pytest.raises(InputError, match=r"label_column.*Did you mean 'lable'"):
        load_task_data(_cls(train_file=f))


def test_label_not_among_options_names_row(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "neoplasms"}, {"text": "b", "label": "flu"}])
    with pytest.raises(InputError, match=r"t.jsonl, row 1: label 'flu' is not among"):
        load_task_data(_cls(train_file=f, labels=LABELS))


def test_single_class_is_refused(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": "neoplasms"}, {"text": "b", "label": "neoplasms"}])
    with pytest.raises(InputError, match="at least 2"):
        load_task_data(_cls(train_file=f))


def test_test_label_outside_train_options(tmp_path):
    tr = _jsonl(tmp_path / "tr.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    te = _jsonl(tmp_path / "te.jsonl", [{"text": "a", "label": "z"}])
    with pytest.raises(InputError, match=r"te.jsonl, row 0: label 'z'"):
        load_task_data(_cls(train_file=tr, test_file=te))


def test_empty_texts_skipped_and_counted_or_error_when_all_empty():
    texts, rows, report = clean_texts(["a", "  ", None, "b", "\n"], "f.jsonl", "text")
    assert texts == ["a", "b"] and rows == [0, 3]
    assert report.skipped_empty == [1, 2, 4]
    assert "3 empty or whitespace-only texts skipped" in report.summary("f.jsonl")
    with pytest.raises(InputError, match="every text in column 'text' is empty"):
        clean_texts(["", " "], "f.jsonl", "text")
    with pytest.raises(InputError, match=r"row 1: column 'text' holds int"):
        clean_texts(["a", 5], "f.jsonl", "text")


def test_formats_csv_parquet_jsonl_and_saved_dataset(tmp_path):
    rows = [{"text": "alpha", "label": "x"}, {"text": "beta", "label": "y"}]
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "a.csv.gz", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "a.parquet")
    _jsonl(tmp_path / "a.jsonl", rows)
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("a.csv", "a.csv.gz", "a.parquet", "a.jsonl", "saved"):
        data = read_labelled(str(tmp_path / name), "text", "label", None, "k")
        assert data.texts == ["alpha", "beta"] and data.labels == ["x", "y"], name
    (tmp_path / "a.xlsx").write_text("x")
    with pytest.raises(InputError, match="use .jsonl"):
        read_table(tmp_path / "a.xlsx", "k")
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(InputError, match="no rows"):
        read_table(tmp_path / "empty.csv", "k")


def test_numeric_labels_read_as_text(tmp_path):
    f = _jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    assert load_task_data(_cls(train_file=f)).labels == ["0", "1"]


@pytest.mark.parametrize("block, message", [
    ({"spans": {"high": 0.2, "low": 0.3}}, "must be below"),
    ({"spans": {"sigma": -1}}, "sigma"),
    ({"relevance": {"target": "middle"}}, "target"),
    ({"classification": {"labels": ["a", "a"]}}, "duplicates"),
    ({"classification": {"lora_r": 0}}, "lora_r"),
    ({"masking": {"spans_per_exampel": 2}}, "spans_per_exampel"),
    ({"itmes": ["x"]}, "itmes"),
])
def test_bad_settings_fail_validation_naming_the_key(block, message):
    with pytest.raises(ValidationError, match=message):
        DecSelfMaskArgs(decselfmask=block)


def test_defaults_are_the_methods():
    c = DecSelfMaskConfig()
    assert (c.spans.sigma, c.spans.high, c.spans.low) == (1.0, 0.4, 0.2)
    assert c.relevance.method == "attnlrp" and c.relevance.target == "sum_logprob" and c.spans.sign == "auto"
    assert (c.classification.lora_r, c.classification.lora_alpha, c.classification.learning_rate) == (32, 64, 3e-4)
    assert c.masking.system_prompt == "Fill in the masked part of the following text."


def test_train_test_overlap_is_reported(tmp_path, caplog):
    tr = _jsonl(tmp_path / "tr.jsonl", [{"text": "Same  Text", "label": "x"}, {"text": "b", "label": "y"}])
    te = _jsonl(tmp_path / "te.jsonl", [{"text": "c", "label": "x"}, {"text": "same text", "label": "y"}])
    with caplog.at_level("WARNING", logger="axolotl_decselfmask"):
        load_task_data(_cls(train_file=tr, test_file=te))
    assert "1 texts of" in caplog.text and "train row 0 = test row 1" in caplog.text


def test_pool_file_checks_before_axolotl_loads_it(tmp_path):
    from axolotl_decselfmask.io.tables import check_pool_file

    good = _jsonl(tmp_path / "pool.jsonl", [{"note": "a"}])
    check_pool_file(good, "note", "datasets[0].path")
    with pytest.raises(InputError, match=r"no column 'text' \(set by datasets\[0\].path\).*\['note'\]"):
        check_pool_file(good, "text", "datasets[0].path")
    with pytest.raises(InputError, match=r"datasets\[0\].path: file .*missing.csv' does not exist"):
        check_pool_file(str(tmp_path / "missing.csv"), "text", "datasets[0].path")
    (tmp_path / "bad.csv").write_bytes(b"text\n\xff\n")
    with pytest.raises(InputError, match=r"line 2 .*0xff"):
        check_pool_file(str(tmp_path / "bad.csv"), "text", "datasets[0].path")
    pd.DataFrame([{"body": "x"}]).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(InputError, match="Did you mean 'body'"):
        check_pool_file(str(tmp_path / "p.parquet"), "bdy", "datasets[0].path")
