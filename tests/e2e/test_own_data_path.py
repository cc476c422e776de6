"""The path of docs/own_data.md, walked as a user walks it, on a tiny random Llama
with the embedded model's tokenizer (what is checked here is the path, not what the model learns).

A folder outside the checkout holds a CSV pool with an id column, one labelled CSV (split by
``classification.test_fraction``) with a single-label column and an mtsamples-shaped multi-label
column (specialties joined by ``;``, made up for real abstracts), two tasks on it, and a recipe
made from ``examples/own_data.yml`` (tiny settings); ``axolotl preprocess``, ``axolotl train`` and
``axolotl decselfmask predict`` (and the ``decselfmask predict`` console script) run in it as subprocesses. The predictions carry the
notes' ids and one score per option (per label for the multi-label task), are the evaluation's own
numbers and decisions on the test notes, and ``stage2/`` loads alone with stage 1 included.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT
from helpers import data_rows

BIN = Path(sys.executable).parent
OPTIONS = ["neoplasm", "other"]
SPECIALTIES = ["Hematology - Oncology", "Cardiovascular / Pulmonary", "Neurology", "Consult - History and Phy."]
BY_CLASS = {"neoplasms": SPECIALTIES[0], "cardiovascular diseases": SPECIALTIES[1],
            "nervous system diseases": SPECIALTIES[2]}


def _specialties(row) -> str:
    """Made-up mtsamples-like specialties: the abstract's class, and a consult where patients are mentioned."""
    found = [BY_CLASS[row["label"]]] + ([SPECIALTIES[3]] if "patients" in row["text"].lower() else [])
    return "; ".join(found)


def _run(args, cwd):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


def _write_csv(path, rows, columns):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: r[k] for k in columns} for r in rows)


def _recipe(model_path) -> dict:
    """examples/own_data.yml with the CHANGE lines filled in for this folder, and tiny budgets."""
    recipe = yaml.safe_load((ROOT / "examples" / "own_data.yml").read_text())
    recipe.update(base_model=str(model_path), sequence_len=160, max_steps=1, micro_batch_size=1,
                  gradient_accumulation_steps=1, save_strategy="no", logging_steps=1,
                  bf16=False)  # float32: a note's scores do not depend on the notes batched with it (bf16: ~0.1)
    for key in ("save_steps", "save_total_limit", "auto_resume_from_checkpoints"):
        recipe.pop(key)
    recipe["datasets"][0].update(path="data/notes.csv", ds_type="csv", text_column="note")
    block = recipe["decselfmask"]
    block.update(items=["Neoplasm"], max_texts=3)
    block["classification"].update(
        task="neoplasm", train_file="data/labelled.csv", test_file=None, test_fraction=0.5, text_column="note",
        label_column="finding", id_column="note_id", labels=OPTIONS, question="Is the text above about a neoplasm?",
        max_steps=1, batch_size=4, lora_r=4, lora_alpha=8)
    # the same labelled file, its multi-label column (multi_label: auto finds the `;`): one yes/no question per label
    block["tasks"] = [{"task": "neoplasm"},
                      {"task": "specialty", "label_column": "specialties", "labels": SPECIALTIES,
                       "label_question": "Is the note above about {label}?"}]
    return recipe


@pytest.fixture(scope="module")
def user_run(tmp_path_factory, tiny_llama):
    folder = tmp_path_factory.mktemp("my_project")  # outside the checkout
    (folder / "data").mkdir()
    pool = [dict(r, note_id=f"pool-{r['id']}", note=r["text"]) for r in data_rows("abstracts_unlabelled.jsonl", n=4)]
    _write_csv(folder / "data" / "notes.csv", pool, ["note_id", "note"])
    labelled = [dict(r, note_id=f"lab-{r['id']}", note=r["text"], specialties=_specialties(r),
                     finding="neoplasm" if r["label"] == "neoplasms" else "other")
                for r in data_rows("abstracts_train.jsonl", per_class=2)[:6]]
    assert any(";" in r["specialties"] for r in labelled) and {r["label"] for r in labelled} <= set(BY_CLASS)
    _write_csv(folder / "data" / "labelled.csv", labelled, ["note_id", "note", "finding", "specialties"])
    (folder / "my_recipe.yml").write_text(yaml.safe_dump(_recipe(tiny_llama), sort_keys=False))
    _run([str(BIN / "axolotl"), "preprocess", "my_recipe.yml"], folder)
    _run([str(BIN / "axolotl"), "train", "my_recipe.yml"], folder)
    debug_log = (folder / "outputs" / "own_data" / "debug.log").read_text()
    log = _run([str(BIN / "axolotl"), "decselfmask", "predict", "my_recipe.yml", "data/notes.csv",
                "--out", "labels.csv", "--most-uncertain", "2", "--no-progress"], folder)
    _run([str(BIN / "decselfmask"), "predict", "my_recipe.yml", "data/labelled.csv",
          "--out", "labelled.jsonl", "--no-progress"], folder)
    assert (folder / "outputs" / "own_data" / "debug.log").read_text() == debug_log  # predict starts no run
    return folder, pool, labelled, log


def test_predict_labels_every_note_with_its_id_and_one_score_per_option(user_run):
    folder, pool, _, log = user_run
    with open(folder / "labels.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # every note, in order, by its id, once per task
    assert [(r["id"], r["task"]) for r in rows] == [(p["note_id"], t) for p in pool for t in ("neoplasm", "specialty")]
    single = [r for r in rows if r["task"] == "neoplasm"]
    assert all(r["label"] in OPTIONS for r in single)
    scores = [json.loads(r["scores"]) for r in single]
    assert all(len(s) == len(OPTIONS) and all(v < 0 for v in s) for s in scores)  # summed log-probabilities
    for r in (r for r in rows if r["task"] == "specialty"):  # a label set, joined as the labelled file joins it
        assert set(filter(None, r["label"].split(";"))) <= set(SPECIALTIES)
        per_label = json.loads(r["scores"])  # per label, one score per answer (yes, no)
        assert list(per_label) == SPECIALTIES and all(len(s) == 2 and all(v < 0 for v in s) for s in per_label.values())
    with open(folder / "labels-most-uncertain.csv", encoding="utf-8") as handle:
        most = list(csv.DictReader(handle))
    assert [(m["task"], m["rank"]) for m in most] == [("neoplasm", "1"), ("neoplasm", "2"), ("specialty", "1"),
                                                      ("specialty", "2")]
    assert {m["id"] for m in most} <= {p["note_id"] for p in pool}
    for task in ("neoplasm", "specialty"):
        margins = [float(m["margin"]) for m in most if m["task"] == task]
        assert margins == sorted(margins) and all(0.0 <= m <= 1.0 for m in margins)
    for m in (m for m in most if m["task"] == "specialty"):  # the note's least certain label, and its margin
        posteriors = json.loads(m["posteriors"])
        assert m["uncertain_label"] in SPECIALTIES and list(posteriors) == SPECIALTIES
        assert float(m["margin"]) == pytest.approx(min(abs(a - b) for a, b in posteriors.values()), abs=1e-9)
        assert float(m["margin"]) == pytest.approx(abs(posteriors[m["uncertain_label"]][0]
                                                       - posteriors[m["uncertain_label"]][1]), abs=1e-9)
    assert "most uncertain notes (ids)" in log


def test_the_split_is_saved_and_predict_repeats_the_evaluation(user_run):
    folder, _, labelled, _ = user_run
    split = json.loads((folder / "outputs" / "own_data" / "split-neoplasm.json").read_text())
    assert sorted(split["train_rows"] + split["test_rows"]) == list(range(len(labelled)))
    assert split["counts"] == {"neoplasm": [1, 1], "other": [2, 2]}
    out = folder / "outputs" / "own_data"
    metrics = json.loads((out / "metrics.json").read_text())["tasks"]["neoplasm"]
    assert metrics["n_test"] == len(split["test_rows"]) and metrics["n_train"] == len(split["train_rows"])
    evaluated = {p["id"]: p for p in map(json.loads, (out / "predictions-neoplasm.jsonl").read_text().splitlines())}
    assert set(evaluated) == {labelled[r]["note_id"] for r in split["test_rows"]}
    predicted = {p["id"]: p for p in map(json.loads, (folder / "labelled.jsonl").read_text().splitlines())
                 if p["task"] == "neoplasm"}
    for note_id, p in evaluated.items():  # the same scores and the same decision, without the labelled file
        assert predicted[note_id]["label"] == p["pred"]
        assert predicted[note_id]["scores"] == pytest.approx(p["scores"], abs=1e-3)
    saved = json.loads((out / "stage2" / "calibration-neoplasm.json").read_text())
    assert saved["calibration"]["mode"] == metrics["calibration"]["mode"] == "balanced"
    assert saved["labels"] == OPTIONS and saved["classifier"] == "lora"


def test_predict_repeats_the_multi_label_evaluation(user_run):
    """The multi-label task: one labelled file split by its label sets, evaluated per label; predict
    gives the test notes the evaluation's label sets and per-label scores, without the labelled column."""
    folder, _, labelled, _ = user_run
    out = folder / "outputs" / "own_data"
    split = json.loads((out / "split-specialty.json").read_text())
    assert sorted(split["train_rows"] + split["test_rows"]) == list(range(len(labelled)))
    metrics = json.loads((out / "metrics.json").read_text())["tasks"]["specialty"]
    assert metrics["multi_label"] and metrics["labels"] == SPECIALTIES and list(metrics["per_label"]) == SPECIALTIES
    assert metrics["n_test"] == len(split["test_rows"]) and 0.0 <= metrics["micro_f1"] <= 1.0
    record = json.loads((out / "stage2" / "multilabel-specialty.json").read_text())
    assert all(Path(folder, record["calibrations"][y]).is_file() for y in SPECIALTIES)  # as the recipe names output_dir
    evaluated = {p["id"]: p for p in map(json.loads, (out / "predictions-specialty.jsonl").read_text().splitlines())}
    assert set(evaluated) == {labelled[r]["note_id"] for r in split["test_rows"]}
    predicted = {p["id"]: p for p in map(json.loads, (folder / "labelled.jsonl").read_text().splitlines())
                 if p["task"] == "specialty"}
    assert set(predicted) == {r["note_id"] for r in labelled} and all(isinstance(p["label"], list)
                                                                      for p in predicted.values())
    for note_id, p in evaluated.items():
        assert predicted[note_id]["label"] == p["pred"]
        for label in SPECIALTIES:
            assert predicted[note_id]["scores"][label] == pytest.approx(p["scores"][label], abs=1e-3)


def test_stage2_loads_alone_with_stage1_included(user_run, tiny_llama):
    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    out = user_run[0] / "outputs" / "own_data"
    adapter = json.loads((out / "stage2" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str((out / "stage1_merged").resolve())  # absolute: loads anywhere
    assert Path(os.getcwd()) != user_run[0]
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(out / "stage2"), dtype=torch.float32)
    raw = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    stage1 = load_file(str(out / "adapter_model.safetensors"))
    touched = next(k for k in stage1 if "q_proj.lora_B" in k)
    layer = int(touched.split("layers.")[1].split(".")[0])
    base_q = loaded.get_base_model().model.layers[layer].self_attn.q_proj.base_layer.weight
    assert not torch.equal(base_q, raw.model.layers[layer].self_attn.q_proj.weight)  # stage 1 is in it
