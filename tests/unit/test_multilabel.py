"""Multi-label tasks (stage2/multilabel.py): label sets read from lists and joined text, their
checks, the expansion into one yes/no sub-task per label (options and mask-fill prompts), and the
scoring of every label question on a note's shared prompt prefix."""

import csv
import gzip
import json

import numpy as np
import pytest
from conftest import ROOT
from helpers import data_rows, write_rows

from axolotl_decselfmask.args import ClassificationConfig, DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.label_sets import (
    detect_multi_label,
    is_multi_label,
    parse_label_set,
)
from axolotl_decselfmask.stage2.data import load_any_task_data, read_label_sets
from axolotl_decselfmask.stage2.training import task_rows

MTSAMPLES = ROOT.parent / "shared" / "data" / "mtsamples.csv.gz"


@pytest.mark.parametrize("value, expected", [
    ("Surgery; Cardiology", ["Surgery", "Cardiology"]),
    ("  Surgery ;Cardiology ;  ", ["Surgery", "Cardiology"]),  # spaces around labels, a trailing separator
    ("Surgery;;Surgery", ["Surgery"]),  # each label once
    ('["Surgery", " Cardiology "]', ["Surgery", "Cardiology"]),  # a JSON list in a text cell (CSV)
    (["Surgery", "Cardiology"], ["Surgery", "Cardiology"]),  # a list (JSON Lines)
    (np.array(["a", "b"]), ["a", "b"]),  # a Parquet list column
    ("Surgery", ["Surgery"]),
    ([1.0, 2], ["1", "2"]),  # numbers as the single-label reader writes them
    (np.int64(3), ["3"]),
    ("", []), ("  ", []), ("[]", []), ([], []), (None, []), (float("nan"), []),  # the empty set
    ("[draft]", ["[draft]"]),  # brackets that are not JSON: a label
])
def test_parse_label_set(value, expected):
    assert parse_label_set(value, ";") == expected


def test_parse_label_set_other_separator_and_bad_entries():
    assert parse_label_set("a | b|c", "|") == ["a", "b", "c"]
    assert parse_label_set("a; b", "|") == ["a; b"]
    with pytest.raises(InputError, match=r"notes.csv, row 3: a label list holds \['x'\]"):
        parse_label_set([["x"]], ";", "notes.csv, row 3")


def test_detect_multi_label():
    assert detect_multi_label(["a", "a; b", "b"], ";")
    assert detect_multi_label([["a"], []], ";")
    assert detect_multi_label(['["a", "b"]', "[]"], ";")
    assert not detect_multi_label(["yes", "no", "[draft]"], ";")
    assert not detect_multi_label([np.int64(0), np.int64(1), 1.0], ";")  # numbers of a Parquet column
    assert detect_multi_label([np.array(["a"]), np.array([], dtype=object)], ";")
    assert not detect_multi_label(["a; b", "c"], ";", options=["a; b", "c"])  # an option holds the separator


def _config(tmp_path, train, test=None, **over) -> ClassificationConfig:
    return ClassificationConfig(task="topics", train_file=str(train), test_file=str(test) if test else None,
                                label_column="topics", **over)


def _csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_label_sets_from_csv_and_jsonl(tmp_path):
    train = _csv(tmp_path / "train.csv", [
        {"id": "n1", "text": "first note", "topics": "heart; lung"},
        {"id": "n2", "text": "second note", "topics": ""},  # no label: the empty set
        {"id": "n3", "text": "third note", "topics": " lung "},
    ])
    test = tmp_path / "test.jsonl"
    write_rows(test, [{"id": 7, "text": "a test note", "topics": ["lung"]}, {"id": 8, "text": "another", "topics": []}])
    c = _config(tmp_path, train, test)
    assert c.multi_label == "auto" and is_multi_label(c)
    d = load_any_task_data(c)
    assert d.multi_label
    assert d.label_set == ["heart", "lung"] and d.labels == ["yes", "no"]
    assert d.train.labels == [["heart", "lung"], [], ["lung"]] and d.train.ids == ["n1", "n2", "n3"]
    assert d.test.labels == [["lung"], []] and d.test.ids == [7, 8]
    # a single-label file is not multi-label under auto, and is read as before
    plain = _csv(tmp_path / "plain.csv", [{"text": "x", "topics": "heart"}, {"text": "y", "topics": "lung"}])
    assert not is_multi_label(_config(tmp_path, plain))
    assert load_any_task_data(_config(tmp_path, plain)).train.labels == ["heart", "lung"]
    # a Parquet list column (numpy arrays)
    import pandas as pd

    pd.DataFrame({"text": ["x", "y"], "topics": [["heart", "lung"], []]}).to_parquet(tmp_path / "t.parquet")
    assert load_any_task_data(_config(tmp_path, tmp_path / "t.parquet")).train.labels == [["heart", "lung"], []]
    # multi_label: true reads a file without any separator as sets of one label
    assert load_any_task_data(_config(tmp_path, plain, multi_label=True)).train.labels == [["heart"], ["lung"]]


def test_a_label_outside_the_label_set_names_file_and_row(tmp_path):
    train = _csv(tmp_path / "train.csv", [{"text": "a", "topics": "heart; lung"}, {"text": "b", "topics": "lung"}])
    c = _config(tmp_path, train, labels=["heart", "kidney"])
    with pytest.raises(InputError, match=r"train.csv, row 0: label 'lung' .*not among the task's labels"):
        load_any_task_data(c)
    # a test label the training file never has (the labels found there): the test file's row
    test = tmp_path / "test.jsonl"
    write_rows(test, [{"text": "c", "topics": ["lung"]}, {"text": "d", "topics": ["liver", "lung"]}])
    with pytest.raises(InputError, match=r"test.jsonl, row 1: label 'liver'"):
        load_any_task_data(_config(tmp_path, train, test))
    # labels that differ only in case are refused when the label set is found in the file
    same = _csv(tmp_path / "same.csv", [{"text": "a", "topics": "Heart; lung"}, {"text": "b", "topics": "heart"}])
    with pytest.raises(InputError, match="differ only in case"):
        load_any_task_data(_config(tmp_path, same))


def test_test_fraction_splits_a_multi_label_file_by_its_rarest_labels(tmp_path):
    rows = [{"id": f"n{i}", "text": f"note number {i}", "topics": ["heart", "lung"] if i % 4 == 0 else
             ["lung"] if i % 4 in (1, 2) else []} for i in range(32)]  # strata: heart 8, lung 16, none 8
    path = write_rows(tmp_path / "labelled.jsonl", rows)
    c = ClassificationConfig(task="topics", train_file=path, label_column="topics", test_fraction=0.25)
    d = load_any_task_data(c, tmp_path / "out", 0)
    assert d.multi_label and sorted(d.train.rows + d.test.rows) == list(range(32))
    # a quarter of each stratum (the rarest label of each note, or none)
    strata_of_test = [sum(r % 4 == 0 for r in d.test.rows), sum(r % 4 in (1, 2) for r in d.test.rows),
                      sum(r % 4 == 3 for r in d.test.rows)]
    assert strata_of_test == [2, 4, 2]
    for side in (d.train, d.test):
        assert side.labels == [rows[r]["topics"] for r in side.rows] and side.ids == [rows[r]["id"] for r in side.rows]
    assert (tmp_path / "out" / "split-topics.json").is_file()
    assert load_any_task_data(c, tmp_path / "out", 0).test.rows == d.test.rows  # the saved split, reused
    # the checks that keep test texts out of the unlabelled pools split the file the same way
    from axolotl_decselfmask.io.labelled import split_test_texts

    assert split_test_texts(c, 0) == d.test.texts
    assert split_test_texts(c, 1) != d.test.texts  # another seed, another split


def test_settings_are_checked():
    with pytest.raises(ValueError, match="label_question must contain"):
        ClassificationConfig(label_question="Is it about this?")
    with pytest.raises(ValueError, match="two distinct answers"):
        ClassificationConfig(label_answers=["yes", "yes"])
    with pytest.raises(ValueError, match=r"tasks\[0\].label_question"):
        DecSelfMaskConfig(tasks=[{"task": "a", "label_question": "no placeholder"}])


@pytest.mark.skipif(not MTSAMPLES.is_file(), reason="shared/data/mtsamples.csv.gz is not on this machine")
def test_mtsamples_specialties_are_read_as_label_sets(tmp_path):
    with gzip.open(MTSAMPLES, "rt", newline="") as f:
        rows = [r for _, r in zip(range(40), csv.DictReader(f))]
    path = _csv(tmp_path / "mt.csv", [{"text": r["text"], "specialties": r["specialties"]} for r in rows])
    c = ClassificationConfig(task="specialty", train_file=str(path), label_column="specialties", label_separator="; ")
    assert is_multi_label(c)
    data = read_label_sets(str(path), c, None, "decselfmask.classification.train_file")
    assert data.labels == [[s.strip() for s in r["specialties"].split(";") if s.strip()] for r in rows]
    assert any(len(s) > 1 for s in data.labels)


# ------------------------------------------------------------------------ expansion into sub-tasks

LABELS = ["neoplasms", "cardiovascular diseases", "treatment"]


def _sets(row):
    """Made-up label sets of the shipped abstracts: their class (two of them) and a word."""
    return [y for y in LABELS[:2] if row["label"] == y] + (["treatment"] if "treatment" in row["text"].lower() else [])


def _prepared(tmp_path, tok, prompt="options"):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.stage2.run import prepare_tasks

    train = data_rows("abstracts_train.jsonl", per_class=2)
    write_rows(tmp_path / "train.jsonl", [{"text": r["text"], "topics": _sets(r)} for r in train])
    write_rows(tmp_path / "single.jsonl", train)
    config = DecSelfMaskConfig(items=["x"], masking={"mask_token": "<mask>"}, classification={
        "prompt": prompt, "label_column": "topics"}, tasks=[
        {"task": "abstracts", "train_file": str(tmp_path / "single.jsonl"), "label_column": "label"},
        {"task": "topics", "train_file": str(tmp_path / "train.jsonl"), "labels": LABELS}])
    cfg = DictDefault({"sequence_len": 96, "output_dir": str(tmp_path / "out"), "datasets": []})
    return prepare_tasks(cfg, config, tok), train


def test_a_multi_label_task_becomes_one_yes_no_task_per_label(tmp_path, smollm_tok):
    tasks, train = _prepared(tmp_path, smollm_tok)
    assert [t.name for t in tasks] == ["abstracts", "topics/neoplasms", "topics/cardiovascular diseases",
                                       "topics/treatment"]
    single, parts = tasks[0], tasks[1:]
    assert single.parent is None and len(single.data.labels) == 5
    for i, t in enumerate(parts):
        label = LABELS[i]
        assert t.label == label and t.parent.name == t.group == "topics" and t.parent.data.label_set == LABELS
        assert t.data.labels == ["yes", "no"] and t.prompt.question == f"Does the text above concern {label}?"
        assert t.train_labels == ["yes" if label in _sets(r) else "no" for r in train]
        assert t.train_texts is parts[0].train_texts  # every question asks about the same (cut) text
    # each label question of a note fits the prompt: the text is cut for the longest question
    for t in parts:
        row = task_rows(smollm_tok, t)[0]
        assert len(row["input_ids"]) <= 96
    assert sum(len(task_rows(smollm_tok, t)) for t in tasks) == 10 + 3 * 10


def test_mask_fill_asks_each_label_question_before_the_mask(tmp_path, smollm_tok):
    tasks, _ = _prepared(tmp_path, smollm_tok, prompt="mask_fill")
    t = tasks[2]
    assert t.prompt.style == "mask_fill" and t.prompt.question == "Does the text above concern cardiovascular diseases? <mask>"
    assert t.prompt.system_prompt == DecSelfMaskConfig().masking.system_prompt


# ------------------------------------------------------------------------------ shared-prefix scoring

def _whole_prompt_scores(model, tok, text, question, options, system_prompt):
    """Reference: each option scored by running its question's whole prompt and the answer as one sequence."""
    import torch

    from axolotl_decselfmask.prompts import classification_messages, render

    out = []
    for option in options:
        turns = render(tok, classification_messages(text, question, options, system_prompt, answer=option))
        p = tok(turns.prompt, add_special_tokens=False)["input_ids"]
        a = tok(turns.answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = model(input_ids=torch.tensor([p + a])).logits[0].float().log_softmax(-1)
        out.append(sum(lp[len(p) + k - 1, a[k]].item() for k in range(len(a))))
    return out


def test_shared_prefix_scores_equal_one_prompt_per_question(tiny_llama):
    """score_questions (the one scorer) runs a note's prefix once for all its questions; its scores
    are those of running each question's whole prompt and answer as one sequence, whatever the batch
    and chunk sizes; score_options is the same scorer with one question."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage2.scoring import score_options, score_questions

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    texts = [r["text"][:300] for r in data_rows("abstracts_test.jsonl", n=3)] + ["A short note."]
    questions = [f"Does the text above concern {y}?" for y in LABELS]
    options = ["yes", "no"]
    expected = np.array([[_whole_prompt_scores(model, tok, x, q, options, "Answer.") for q in questions] for x in texts])
    one = score_options(model, tok, texts, options, questions[1], "Answer.", progress=False, batch_size=3)
    np.testing.assert_allclose(one, expected[:, 1], atol=2e-4, rtol=0)
    for batch_size, chunk in ((2, 1), (8, 3), (3, 8)):
        got = score_questions(model, tok, texts, questions, options, "Answer.", progress=False,
                              batch_size=batch_size, option_chunk=chunk)
        assert got.shape == (4, 3, 2)
        np.testing.assert_allclose(got, expected, atol=2e-4, rtol=0)
    assert not np.allclose(expected[:, 0], expected[:, 1])  # the questions do change the scores


# ------------------------------------------------------------------------------ the experiment runner

def test_runner_writes_label_sets_and_recipes_with_one_question_per_label(tmp_path):
    from axolotl_decselfmask.tools.experiments import Grid, build_data, plan

    rows = data_rows("abstracts_test.jsonl") + data_rows("abstracts_train.jsonl")
    corpus = _csv(tmp_path / "corpus.csv", [{"text": r["text"], "topics": "; ".join(_sets(r))} for r in rows])
    grid = Grid(model=str(tmp_path), seeds=[0], labelled_per_task=12, test_per_task=20, pool_size=10,
                methods=["sft"], corpora=[{"name": "abs", "file": str(corpus), "tasks": [
                    {"name": "topics", "label_column": "topics", "multi_label": True, "min_class_rows": 5,
                     "question": "Is the abstract above about {label}?"}]}])
    data = build_data(grid, tmp_path / "out")
    task = data["abs"]["tasks"]["topics"]
    assert task["labels"] == sorted(LABELS) and task["multi_label"]
    test = [json.loads(line) for line in open(task["test"])]
    train = [json.loads(line) for line in open(task["train"][0])]
    assert len(test) == 20 and len(train) == 12 and not {r["row"] for r in test} & {r["row"] for r in train}
    by_row = {i: _sets(r) for i, r in enumerate(rows)}
    assert all(sorted(r["label"]) == sorted(by_row[r["row"]]) for r in test + train)  # the rows' own label sets
    for label in LABELS:  # every label has notes with it and without it in the labelled sample
        assert 0 < sum(label in r["label"] for r in train) < len(train)
    (run,) = plan(grid, tmp_path / "out", data)
    config = DecSelfMaskConfig(**run["recipe"]["decselfmask"])
    (c,) = config.task_configs()
    assert c.multi_label is True and c.label_question == "Is the abstract above about {label}?"
    assert is_multi_label(c) and load_any_task_data(c).label_set == sorted(LABELS)
    with pytest.raises(ValueError, match="question holds {label}"):
        Grid(model="m", corpora=[{"name": "c", "file": "f", "tasks": [
            {"name": "t", "label_column": "l", "multi_label": True, "question": "Which?"}]}])


def test_results_rows_of_a_multi_label_task_are_one_per_label():
    from axolotl_decselfmask.tools.experiments.results import rows_of_entry
    entry = {"multi_label": True, "macro_f1": 0.5, "accuracy": 0.25, "n_test": 4, "n_train": 8,
             "labels": ["a", "b"], "per_label": {
                 "a": {"macro_f1": 0.6, "accuracy": 0.75, "n_test": 4, "probe_macro_f1": 0.4},
                 "b": {"macro_f1": 0.4, "accuracy": 0.5, "n_test": 4}}}
    rows = rows_of_entry("topics", entry)
    assert [(r["task"], r["macro_f1"], r["accuracy"], r["multi_label_task"]) for r in rows] == [
        ("topics/a", 0.6, 0.75, "topics"), ("topics/b", 0.4, 0.5, "topics")]
    assert rows[0]["probe_macro_f1"] == 0.4 and rows[1]["probe_macro_f1"] == "" and rows[0]["n_labels"] == 2
    (plain,) = rows_of_entry("abstracts", {"macro_f1": 0.3, "accuracy": 0.5, "n_test": 9, "labels": ["x", "y", "z"]})
    assert plain["task"] == "abstracts" and plain["n_labels"] == 3 and plain["multi_label_task"] == ""


# ------------------------------------------------------------------------------------------- docs

def _blocks(text: str, lang: str) -> list[str]:
    return [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith(lang + "\n")]


def test_own_data_docs_example_reads_as_documented(tmp_path):
    """docs/own_data.md, "Several labels per note": its CSV read with its recipe block gives the
    label sets it describes; its predictions row has a score pair per label."""
    import yaml

    section = (ROOT / "docs" / "own_data.md").read_text().split("## Several labels per note", 1)[1].split("\n## ", 1)[0]
    (tmp_path / "train.csv").write_text(_blocks(section, "csv")[0])
    block = yaml.safe_load(_blocks(section, "yaml")[0])["decselfmask"]
    block["classification"].update(train_file=str(tmp_path / "train.csv"), test_file=None)
    (c,) = DecSelfMaskConfig(**block).task_configs()
    assert is_multi_label(c) and is_multi_label(c.model_copy(update={"multi_label": "auto"}))
    d = load_any_task_data(c)
    assert d.train.labels == [["Orthopedic", "Surgery"], ["Cardiovascular / Pulmonary", "Neurology"], []]
    assert d.label_set == c.labels
    row = json.loads(_blocks(section, "json")[0])
    assert list(row["scores"]) == c.labels and all(len(v) == 2 for v in row["scores"].values())
    assert set(row["gold"]) <= set(c.labels)


def test_experiments_docs_grid_is_a_valid_grid():
    import yaml

    from axolotl_decselfmask.tools.experiments import Grid

    text = (ROOT / "docs" / "experiments.md").read_text()
    raw = next(yaml.safe_load(b) for b in _blocks(text, "yaml") if "corpora:" in b)
    tasks = {t.name: t for c in Grid(**raw).corpora for t in c.tasks}
    assert tasks["specialty"].multi_label and "{label}" in tasks["specialty"].question


def test_the_plugin_checks_a_multi_label_task_before_stage1(tmp_path, tiny_llama):
    """``load_datasets`` (before any model work) reads a multi-label file as label sets, and
    names the file and row of a label outside the label set."""
    from axolotl.utils.config import normalize_config
    from helpers import base_recipe, validate_recipe

    from axolotl_decselfmask.plugin import DecSelfMaskPlugin

    train = data_rows("abstracts_train.jsonl", per_class=2)
    write_rows(tmp_path / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    write_rows(tmp_path / "train.jsonl", train)
    _csv(tmp_path / "topics.csv", [{"text": r["text"], "topics": "; ".join(_sets(r))} for r in train])
    raw = base_recipe(tmp_path, tiny_llama)
    raw["decselfmask"]["classification"]["test_file"] = None
    raw["decselfmask"]["tasks"] = [{"task": "abstracts"}, {"task": "topics", "train_file": str(tmp_path / "topics.csv"),
                                                           "label_column": "topics", "labels": LABELS}]
    cfg = validate_recipe(raw)
    normalize_config(cfg)
    assert DecSelfMaskPlugin().load_datasets(cfg, preprocess=True) is None
    raw["decselfmask"]["tasks"][1]["labels"] = LABELS[:2]
    cfg = validate_recipe(raw)
    normalize_config(cfg)
    with pytest.raises(InputError, match=r"topics.csv, row \d+: label 'treatment'.*multi_label: false"):
        DecSelfMaskPlugin().load_datasets(cfg, preprocess=True)
