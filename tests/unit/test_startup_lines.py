"""Issue 31: the plugin's line about the start-up lines printed before it loads (on a CPU only), and which
other libraries' lines compat.quiet_foreign_lines drops with and without CUDA.

The device is the input: ``torch.cuda.is_available`` is monkeypatched; the libraries, their loggers, the
filters and the note are the real ones.
"""

from __future__ import annotations

import copy
import logging
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from helpers import base_recipe

from axolotl_decselfmask import compat

TROUBLESHOOTING = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")


def _printed_now() -> list[str]:
    """What torchao and bitsandbytes have printed in this process, once both are imported."""
    import bitsandbytes  # noqa: F401
    import torchao  # noqa: F401

    return compat.printed_startup_lines()


def _torchao_line() -> str:
    """torchao's own message for its first ``_C*.so`` (``torchao/__init__.py``: ``f"Failed to load {file}: {e}"``)."""
    import torchao

    file = sorted(Path(torchao.__file__).parent.glob("_C*.so"))[0]
    try:
        torch.ops.load_library(str(file))
    except Exception as exc:  # noqa: BLE001 - the error torchao logs
        return f"Failed to load {file}: {exc}"
    pytest.skip(f"{file.name} loads here (torch with CUDA): torchao prints no line")


def _drops(logger_name: str, message: str) -> bool:
    logger = logging.getLogger(logger_name)
    return not logger.filter(logger.makeRecord(logger_name, logging.WARNING, __file__, 1, message, None, None))


@pytest.fixture
def fresh_filters(monkeypatch):
    """The loggers compat filters, with no filter yet (as in a new process); restored after the test."""
    names = set(compat.FOREIGN_LINES) | set(compat.CPU_LINES) | set(compat.AFTER_LOAD_LINES)
    for name in names:
        monkeypatch.setattr(logging.getLogger(name), "filters", [])


@pytest.fixture
def keep_excepthook(monkeypatch):
    """register() of a real run installs the plugin's exception hook: undo it after the test."""
    from axolotl_decselfmask import errors

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(errors, "_previous", errors._previous)


def test_the_note_names_the_lines_printed_on_a_cpu_and_says_nothing_with_cuda(monkeypatch):
    printed = _printed_now()
    if torch.version.cuda is None:  # a CPU build of torch: torchao's CUDA kernels cannot load
        assert "torchao" in printed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    note = compat.startup_lines_note(["torchao", "bitsandbytes"])
    assert note.startswith("decselfmask: on this machine without CUDA")
    assert 'torchao\'s "Failed to load .../torchao/_C_*.so"' in note and "kernels-community" in note
    assert f'"{compat.STARTUP_SECTION}"' in note
    assert f"\n### {compat.STARTUP_SECTION}\n" in TROUBLESHOOTING  # the exact title of the entry it names
    only_bnb = compat.startup_lines_note(["bitsandbytes"])
    assert "kernels-community" in only_bnb and "torchao/_C_" not in only_bnb
    assert compat.startup_lines_note([]) is None  # nothing printed before the plugin: nothing to explain

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert compat.startup_lines_note(["torchao", "bitsandbytes"]) is None  # with CUDA torchao's line may matter


def test_register_says_the_note_once_in_a_process_and_not_with_cuda(monkeypatch, caplog, tmp_path, tiny_llama,
                                                                     keep_excepthook):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.plugin import DecSelfMaskPlugin

    printed = _printed_now()
    if not printed:
        pytest.skip("neither torchao nor bitsandbytes printed a start-up line in this environment")
    # what the first quiet_foreign_lines() records when Axolotl imported both libraries before the plugin
    monkeypatch.setattr(compat, "_printed_before_filters", printed)
    monkeypatch.setattr(compat, "_note_said", False)  # a new process
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = base_recipe(tmp_path, tiny_llama)
    with caplog.at_level(logging.INFO, logger="axolotl_decselfmask"):
        for _ in range(2):  # e.g. a second load_cfg in the same process
            cfg = DictDefault(copy.deepcopy(recipe))
            cfg.axolotl_config_path = "recipe.yml"  # as Axolotl's load_cfg hands it over when it runs a command
            DecSelfMaskPlugin().register(cfg)
    said = [r.getMessage() for r in caplog.records if compat.STARTUP_SECTION in r.getMessage()]
    assert said == [compat.startup_lines_note(printed)], said
    assert [r.levelno for r in caplog.records if compat.STARTUP_SECTION in r.getMessage()] == [logging.INFO]

    # with CUDA (what register() would call in a new process): nothing
    monkeypatch.setattr(compat, "_note_said", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="axolotl_decselfmask"):
        compat.say_startup_lines_note(logging.getLogger("axolotl_decselfmask.plugin"))
    assert caplog.records == []


def test_torchao_line_is_dropped_on_a_cpu_only(monkeypatch, fresh_filters):
    line = _torchao_line()
    pytree = "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile as ..."
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    compat.quiet_foreign_lines()
    assert not _drops("torchao", line)  # with CUDA: a torchao that does not match torch, worth reading
    assert _drops("torch.utils._pytree", pytree)
    assert not _drops("axolotl.utils.schemas.config", "bf16 requested, but AMP is not supported on this GPU. ...")

    for name in set(compat.FOREIGN_LINES) | set(compat.CPU_LINES) | set(compat.AFTER_LOAD_LINES):
        monkeypatch.setattr(logging.getLogger(name), "filters", [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    compat.quiet_foreign_lines()
    assert _drops("torchao", line) and _drops("torch.utils._pytree", pytree)
    assert _drops("axolotl.utils.schemas.config", "bf16 requested, but AMP is not supported on this GPU. ...")
    assert not _drops("torchao", "Skipping import of cpp extensions due to incompatible torch version. ...")


def test_after_load_lines_are_dropped_by_their_start_only(monkeypatch, fresh_filters, tiny_llama, tmp_path):
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # dropped with and without CUDA
    compat.quiet_foreign_lines()
    # Axolotl 0.19's line (axolotl/cli/preprocess.py) with the error transformers raises for its pre-download
    with init_empty_weights(include_buffers=True), pytest.raises(Exception) as meta:
        AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    assert _drops("axolotl.cli.preprocess", f"Skipping model pre-download for `{tiny_llama}`: {meta.value}")
    with pytest.raises(Exception) as missing:  # another failure still prints
        AutoModelForCausalLM.from_pretrained(str(tmp_path / "no-such-model"))
    assert not _drops("axolotl.cli.preprocess", f"Skipping model pre-download for `x`: {missing.value}")

    bpe = ("Ignoring clean_up_tokenization_spaces=True for BPE tokenizer TokenizersBackend. The clean_up_tokenization "
           "post-processing step is designed for WordPiece tokenizers ...")
    assert _drops("transformers.tokenization_utils_tokenizers", bpe)
    assert not _drops("transformers.tokenization_utils_tokenizers", "Note: " + bpe)  # the start, exactly
    assert not _drops("transformers.tokenization_utils_base", bpe)  # on its own logger only
