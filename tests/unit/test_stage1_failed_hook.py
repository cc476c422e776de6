"""Axolotl 0.20 and 0.21 call ``post_train_unload`` in a ``finally:`` around stage 1's training, so also
while an error of stage 1 propagates: the plugin's hook then returns at once (one line), marks nothing
complete and runs no stage 2."""

from __future__ import annotations

import logging

import pytest


def _cfg(tmp_path):
    from axolotl.utils.dict import DictDefault

    return DictDefault({"base_model": "base", "output_dir": str(tmp_path / "out"), "adapter": "lora",
                        "decselfmask": {"classification": {"task": "t", "train_file": "t.jsonl",
                                                           "labels": ["yes", "no"]}}})


def test_a_failed_stage1_runs_no_stage2_and_writes_no_marker(tmp_path, monkeypatch, caplog):
    from axolotl_decselfmask import plugin
    from axolotl_decselfmask.stage1.checkpoints import STAGE1_MARKER

    ran = []
    monkeypatch.setattr(plugin, "after_stage1", lambda cfg, config: ran.append("stage 2"))
    hook = plugin.DecSelfMaskPlugin()
    hook._stage1_started = True  # post_trainer_create ran: stage 1 began training
    cfg = _cfg(tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(RuntimeError, match="stage 1 broke"):
        try:
            raise RuntimeError("stage 1 broke")
        finally:  # as Axolotl 0.20/0.21's do_train calls the hook
            hook.post_train_unload(cfg)
    assert ran == [] and not (tmp_path / "out" / STAGE1_MARKER).exists()
    assert [r.getMessage() for r in caplog.records if "decselfmask" in r.getMessage()] == [
        "decselfmask: stage 1 stopped (RuntimeError); stage 2 does not run"]

    cfg["decselfmask"]["stage1"] = False  # no weights to record here: the hook, called normally, runs stage 2
    hook.post_train_unload(cfg)
    assert ran == ["stage 2"]
