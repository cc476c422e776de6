"""Single-label tasks that share their test notes (one test set per corpus) are scored on one
prompt prefix per note (stage2/scoring.py ``shared_test_scorers``, used by stage2/run.py's
``_run_group``): their scores, decisions, metrics.json and predictions files are those of one
prompt per (task, note), with the options and the mask-fill prompt, in batches of notes of
different lengths (left padding)."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import QUESTIONS, shared_test_tasks

RTOL = 1e-4


def _close(a, b, where=""):
    """Equal, floats within RTOL relative."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, str):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-6), f"{where}: {a} != {b}"
    else:
        assert a == b, where


@pytest.mark.parametrize(("prompt", "sequence_len"), [("options", 256), ("mask_fill", 256), ("mask_fill", 108)])
def test_tasks_sharing_test_notes_score_as_one_prompt_per_task(tmp_path, tiny_llama, prompt, sequence_len, capsys):
    """At sequence_len 108 the longest notes are cut for the longest question only: the tasks still
    share the prefix (the tokens the cuts have in common), each scored on its own cut."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.stage2.evaluation import evaluate_task
    from axolotl_decselfmask.stage2.run import _run_group, prepare_tasks
    from axolotl_decselfmask.stage2.scoring import Scorer, shared_test_scorers

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    config, cfg = shared_test_tasks(tmp_path, prompt, sequence_len)
    tasks = prepare_tasks(cfg("each"), config, tok)
    by_note = list(zip(*(t.test_texts for t in tasks[:3])))
    cut = sum(len(set(x)) > 1 for x in by_note)
    assert (cut > 0) == (sequence_len < 256) and cut < len(by_note)
    assert len({t.prompt.style for t in tasks}) == 1 and tasks[0].prompt.style == prompt
    if prompt == "mask_fill":
        assert tasks[0].prompt.question.endswith("<mask>")
    shared = shared_test_scorers(model, tok, tasks, progress=False)
    assert sorted(shared) == sorted(QUESTIONS)  # "other" has its own test notes
    expected = {t.name: Scorer.of(model, tok, t, progress=False)(t.test_texts) for t in tasks}
    for name, scorer in shared.items():
        t = next(t for t in tasks if t.name == name)
        np.testing.assert_allclose(scorer(t.test_texts), expected[name], rtol=RTOL)
        np.testing.assert_array_equal(scorer(t.train_texts), Scorer.of(model, tok, t, progress=False)(t.train_texts))
    assert not np.allclose(expected["neoplasms"], expected["heart"])  # the questions do change the scores
    # the evaluation as before (one prompt per task and note), then the shared one through _run_group
    for t in tasks:
        evaluate_task(cfg("each"), config, t, Scorer.of(model, tok, t, progress=False), t.calibration_pool)
    capsys.readouterr()
    _run_group(cfg("shared"), config, prepare_tasks(cfg("shared"), config, tok), tok, str(tiny_llama),
               torch.float32, tmp_path / "shared" / "stage2", "joint", progress=False)
    assert f"3 tasks share their 6 test notes ({cut} cut differently for their prompts): one prompt prefix per note" \
        in capsys.readouterr().out
    before, after = (json.loads((tmp_path / f / "metrics.json").read_text()) for f in ("each", "shared"))
    assert sorted(before["tasks"]) == sorted(after["tasks"]) == sorted([*QUESTIONS, "other"])
    _close(before, after, "metrics")
    for task in [*QUESTIONS, "other"]:
        rows = [[json.loads(line) for line in open(tmp_path / f / f"predictions-{task}.jsonl")]
                for f in ("each", "shared")]
        assert [r["pred"] for r in rows[0]] == [r["pred"] for r in rows[1]]
        _close(rows[0], rows[1], f"predictions-{task}")
