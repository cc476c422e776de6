"""Issue 33's small cases: what each kept artefact is keyed by, the runner's seeds, a tokenizer that does
not fit its model, a folder pool with a broken line, an empty notes file, a multi-label task's log line."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from conftest import ROOT, require_smollm

from axolotl_decselfmask.args import ClassificationConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage1.checkpoints import STAGE1_MARKER, stage1_weights_key
from axolotl_decselfmask.stage2.training import RUN_RECORD, _resume_point

ROWS = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]


def _checkpoint(folder, step):
    ckpt = folder / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (ckpt / "adapter_model.safetensors").write_bytes(b"x")
    return ckpt


def _marker(out, sha, completed_at="2026-01-01T00:00:00+00:00"):
    out.mkdir(parents=True, exist_ok=True)
    (out / STAGE1_MARKER).write_text(json.dumps({"kind": "lora", "completed_at": completed_at, "files": [
        {"name": "adapter_model.safetensors", "size": 10, "sha256": sha}]}))
    return stage1_weights_key(out)


def test_stage1_weights_key_is_the_weights_not_the_time(tmp_path):
    a = _marker(tmp_path / "a", "0" * 64)
    assert a == _marker(tmp_path / "a", "0" * 64, completed_at="2027-01-01T00:00:00+00:00")  # rerun, same bytes
    assert a != _marker(tmp_path / "a", "1" * 64)
    assert stage1_weights_key(tmp_path / "none") is None


def test_stage2_resume_keyed_by_the_stage1_weights(tmp_path, capsys):
    c, out = ClassificationConfig(save_steps=1), tmp_path / "stage2"
    assert _resume_point(out, ROWS, c, 0, "stage1-A", "joint") is None  # first run: the keys recorded
    assert json.loads((out / RUN_RECORD).read_text())["start"] == "stage1-A"
    _checkpoint(out, 1)
    last = _checkpoint(out, 2)
    assert _resume_point(out, ROWS, c, 0, "stage1-A", "joint") == last  # same stage 1, rows, settings: resumes
    capsys.readouterr()
    assert _resume_point(out, ROWS, c, 0, "stage1-B", "joint") is None  # stage 1 changed: starts over
    said = capsys.readouterr().out.strip()
    assert said == (f"decselfmask stage 2 [joint]: not resuming from {last}: the stage-1 weights it starts from "
                    "changed since it was saved; its 2 checkpoint(s) removed, stage 2 starts over")
    assert not list(out.glob("checkpoint-*"))
    assert json.loads((out / RUN_RECORD).read_text())["start"] == "stage1-B"


def test_stage2_resume_keyed_by_rows_settings_and_seed(tmp_path, capsys):
    c, out = ClassificationConfig(save_steps=1), tmp_path / "stage2"
    _resume_point(out, ROWS, c, 0, "s1", "t")
    for change in ((ROWS[:1], c, 0), (ROWS, ClassificationConfig(save_steps=1, learning_rate=1e-3), 0), (ROWS, c, 1)):
        _resume_point(out, ROWS, c, 0, "s1", "t")  # the recorded run again
        _checkpoint(out, 1)
        assert _resume_point(out, ROWS, c, 0, "s1", "t") == out / "checkpoint-1"
        capsys.readouterr()
        assert _resume_point(out, *change, "s1", "t") is None
        assert "its labelled examples, settings or seed changed since it was saved" in capsys.readouterr().out
        assert not list(out.glob("checkpoint-*"))


def test_runner_seeds_never_meet_with_a_shared_stage1(tmp_path):
    from axolotl_decselfmask.tools.experiments.recipes import run_tasks

    class Task:
        name = "t"

    class Corpus:
        tasks = [Task()]

    data = {"tasks": {"t": {"train": {0: "a.jsonl", 1: "b.jsonl"}, "test": "test.jsonl", "labels": ["x", "y"],
                            "question": "Q?", "items": ["x"]}}}
    shared = run_tasks(Corpus(), data, [0, 1])
    assert [(t["task"], t["train_file"], t["seed"]) for t in shared] == [("t@seed0", "a.jsonl", 0),
                                                                          ("t@seed1", "b.jsonl", 1)]
    assert "seed" not in run_tasks(Corpus(), data, [1])[0]  # one seed a run: its recipe (and run key) as before


def test_seed_groups_keep_seeds_apart():
    from axolotl_decselfmask.stage2.run import seed_groups
    from axolotl_decselfmask.stage2.tasks import Task

    def task(name, seed):
        return Task(ClassificationConfig(task=name, seed=seed), None, None, 64, [], [], None, None)

    tasks = [task("a@seed0", 0), task("b@seed0", 0), task("a@seed1", 1), task("c", None)]
    groups = [(s, [t.name for t in g]) for s, g in seed_groups(tasks, 0)]
    assert groups == [(0, ["a@seed0", "b@seed0", "c"]), (1, ["a@seed1"])]


def _model_folder(tmp_path, vocab_size):
    folder = tmp_path / f"model-{vocab_size}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": vocab_size}))
    return folder


def test_tokenizer_that_does_not_fit_the_embedding_is_a_clear_error(tmp_path):
    from transformers import AutoTokenizer

    from axolotl_decselfmask.relevance.loading import check_model_tokenizers, check_tokenizer_fits

    smollm = require_smollm()
    tokens = len(AutoTokenizer.from_pretrained(smollm))
    small = _model_folder(tmp_path, 1000)
    with pytest.raises(InputError) as err:
        check_tokenizer_fits(str(small), str(smollm), "tokenizer_config")
    text = str(err.value)
    assert text.startswith("tokenizer_config:") and str(small) in text and str(smollm) in text
    assert f"{tokens:,} tokens" in text and "1,000-row embedding" in text
    check_tokenizer_fits(str(_model_folder(tmp_path, tokens + 64)), str(smollm), "base_model")  # padding rows: fine

    relevance = _model_folder(tmp_path, 2000)  # a folder whose tokenizer files are another model's
    for f in smollm.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(f, relevance / f.name)
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig

    config = DecSelfMaskConfig(relevance={"model": str(relevance)})
    with pytest.raises(InputError, match=r"decselfmask.relevance.model: the tokenizer in .* has [\d,]+ tokens, "
                                         r"but the model .* has a 2,000-row embedding"):
        check_model_tokenizers(DictDefault(base_model=str(smollm)), config)


def test_folder_pool_with_a_broken_line_names_file_and_line(tmp_path):
    from axolotl_decselfmask.io.tables import check_pool_file

    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "part-0.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    (pool / "part-1.jsonl").write_text('{"text": "c"}\n{"text": "d"\n{"text": "e"}\n')
    (pool / ".hidden.jsonl").write_text("not json\n")  # skipped, as `datasets` skips it
    with pytest.raises(InputError, match=r"datasets\[0\]\.path: .*part-1\.jsonl, line 2 is not valid JSON"):
        check_pool_file(str(pool), "text", "datasets[0].path")
    (pool / "part-1.jsonl").write_text('{"body": "c"}\n')
    with pytest.raises(InputError, match=r"part-1\.jsonl: no column 'text'"):
        check_pool_file(str(pool), "text", "datasets[0].path")
    (pool / "part-1.jsonl").write_text('{"text": "c"}\n')
    check_pool_file(str(pool), "text", "datasets[0].path")


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_notes_file_is_a_plain_message(tmp_path, content):
    from axolotl_decselfmask.io.tables import read_table

    notes = tmp_path / "notes.csv"
    notes.write_text(content)
    with pytest.raises(InputError) as err:
        read_table(notes, "NOTES")
    assert str(err.value).startswith(f"NOTES: {notes}") and "No columns to parse" not in str(err.value)


def test_multilabel_task_logs_its_labels(tmp_path, caplog):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.run import check_inputs

    rows = [{"text": f"note {i}", "label": ["fever", "cough"][: i % 3]} for i in range(6)]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    for f in (train, test):
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = DecSelfMaskConfig(classification={"task": "symptoms", "train_file": str(train), "test_file": str(test)})
    smollm = require_smollm()
    cfg = DictDefault(base_model=str(smollm), tokenizer_config=str(smollm), output_dir=str(tmp_path / "out"),
                      sequence_len=256)
    with caplog.at_level(logging.INFO, logger="axolotl_decselfmask"):
        check_inputs(cfg, config)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("decselfmask [symptoms]"))
    assert line.endswith("labels ['cough', 'fever']") and "'yes'" not in line


def test_docs_say_what_each_cache_and_checkpoint_depends_on():
    text = (ROOT / "docs" / "resuming.md").read_text()
    assert "stage 2 saves no checkpoints of its own" not in text
    for artefact in ("relevance-", "stage1_merged", "decselfmask_stage2_run.json", "base_with_mask",
                     "split-<task>.json"):
        assert artefact in text, artefact
    trouble = (ROOT / "docs" / "troubleshooting.md").read_text()
    for message in ("not resuming from", "-row embedding", "is empty (0 bytes)"):
        assert message in trouble, message
