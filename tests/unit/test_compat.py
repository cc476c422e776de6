"""Each private-API use of compat.py against the installed transformers: an upgrade that changes one fails here."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from axolotl_decselfmask import compat


def _model(attn="sdpa"):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    config._attn_implementation = attn  # the test builds the model as from_pretrained(attn_implementation=...) would
    return LlamaForCausalLM(config).eval()


def test_attention_implementation_switch_and_restore():
    model = _model("sdpa")
    assert compat.attn_implementation(model) == "sdpa"
    before = compat.ensure_eager_attention(model)
    assert before == "sdpa" and compat.attn_implementation(model) == "eager"
    compat.restore_attention(model, before)
    assert compat.attn_implementation(model) == "sdpa"


def test_cache_round_trip_and_row_repeat():
    model = _model()
    ids = torch.tensor([[1, 2, 3, 4]])
    cache = compat.plain_dynamic_cache(model.config)
    assert cache is not None
    with torch.no_grad():
        model(input_ids=ids, past_key_values=cache, use_cache=True)
        tensors = compat.cache_tensors(cache)
        assert len(tensors) == 2 * model.config.num_hidden_layers and tensors[0].shape[2] == 4
        rebuilt = compat.cache_from_tensors([t.clone() for t in tensors], model.config)
        nxt = torch.tensor([[5]])
        a = model(input_ids=nxt, past_key_values=cache, use_cache=True).logits
        b = model(input_ids=nxt, past_key_values=rebuilt, use_cache=True).logits
        torch.testing.assert_close(a, b)
        full = model(input_ids=torch.tensor([[1, 2, 3, 4, 5]])).logits[:, -1]
        torch.testing.assert_close(a[:, -1], full, rtol=1e-4, atol=1e-5)

        again = compat.plain_dynamic_cache(model.config)
        model(input_ids=ids, past_key_values=again, use_cache=True)
        compat.repeat_cache_rows(again, 3)
        assert compat.cache_tensors(again)[0].shape[0] == 3
        out = model(input_ids=torch.tensor([[5], [6], [5]]), past_key_values=again, use_cache=True).logits
        torch.testing.assert_close(out[0], out[2])


def test_load_trainer_checkpoint(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = _model()
    model.save_pretrained(tmp_path / "ckpt")
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    trainer = Trainer(model=other, args=TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True,
                                                          report_to=[]))
    compat.load_trainer_checkpoint(trainer, str(tmp_path / "ckpt"))
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_install_cli_excepthook(monkeypatch):
    """The plugin's errors end an `axolotl` command in one line: the hook is installed once, and
    keeps the hook it replaced for every other error (tests/e2e/test_traps_cli.py runs the CLI)."""
    import sys

    from axolotl_decselfmask import errors

    def before(*args):
        return None

    monkeypatch.setattr(sys, "excepthook", before)
    monkeypatch.setattr(errors, "_previous", errors._previous)
    compat.install_cli_excepthook()
    compat.install_cli_excepthook()
    assert sys.excepthook is errors.excepthook
    assert errors._previous is before


def test_training_raised_tells_a_failed_stage1_from_a_finished_one():
    """Axolotl 0.20 and 0.21 call ``post_train_unload`` in a ``finally:`` around ``train`` (read in their
    ``axolotl/cli/train.py:do_train``), so the hook also runs while stage 1's error propagates."""
    import pytest

    seen = []

    def do_train(fail: bool):  # the shape of 0.20/0.21's do_train
        try:
            if fail:
                raise RuntimeError("stage 1 failed")
        finally:
            seen.append(compat.training_raised())

    do_train(False)
    with pytest.raises(RuntimeError):
        do_train(True)
    assert seen[0] is None
    assert isinstance(seen[1], RuntimeError) and str(seen[1]) == "stage 1 failed"
    assert compat.training_raised() is None  # the error handled: nothing in flight


def test_installed_axolotl_calls_post_train_unload_as_training_raised_expects():
    """The installed Axolotl's ``do_train`` calls ``post_train_unload`` either after ``train`` returned
    (0.19) or in the ``finally:`` of a ``try:`` around it (0.20, 0.21): the two shapes
    :func:`compat.training_raised` answers for. Another shape fails here."""
    import ast
    import inspect
    import textwrap

    from axolotl.cli import train

    tree = ast.parse(textwrap.dedent(inspect.getsource(train.do_train)))
    body = tree.body[0].body

    def mentions(nodes, name):
        return any(isinstance(n, ast.Attribute) and n.attr == name or isinstance(n, ast.Name) and n.id == name
                   for node in nodes for n in ast.walk(node))

    assert mentions(body, "train_fn") and mentions(body, "post_train_unload"), ast.unparse(tree)
    tries = [n for n in body if isinstance(n, ast.Try) and mentions(n.body, "train_fn")]
    if tries:  # 0.20, 0.21
        assert mentions(tries[0].finalbody, "post_train_unload"), ast.unparse(tries[0])
    else:  # 0.19: after the call, at the top level of do_train
        at = [i for i, n in enumerate(body) if mentions([n], "post_train_unload")]
        trained = [i for i, n in enumerate(body) if mentions([n], "train_fn")]
        assert trained[0] < at[0], ast.unparse(tree)


def test_fallbacks_for_missing_transformers_internals():
    """A model without ``config._attn_implementation`` runs eager attention; a class without
    ``_can_set_attn_implementation`` (older or newer transformers) is assumed to dispatch by name."""
    from types import SimpleNamespace

    bare = SimpleNamespace(config=SimpleNamespace())
    assert compat.attn_implementation(bare) == "eager"
    assert compat.dispatches_attention_by_name(torch.nn.Linear(2, 2)) is True
    # where the probe exists (transformers 5.16 to 5.20), its answer is used: Llama dispatches by name
    assert compat.dispatches_attention_by_name(_model()) is True
