"""Every use of another library's private or internal API, in one place.

Each function names the version it was written against. ``tests/unit/test_compat.py`` runs each
one against the installed libraries, so that an upgrade that changes them fails there, with
the function's name, rather than deep inside a run. Outside this module the package uses
public APIs only (``tests/unit/test_layout.py`` checks it).

The tests run Axolotl 0.19.0 (transformers 5.16.1). Every symbol used here was also read in the
sources of Axolotl 0.20.0 and 0.21.0 and of the transformers they pin (5.17.0, 5.20.1): the table
is in docs/hardening.md, "Axolotl 0.19 to 0.21".
"""

from __future__ import annotations

import sys

# ------------------------------------------------------------------------- transformers 5.16

def attn_implementation(model) -> str:
    """The attention implementation a loaded model runs (``config._attn_implementation``,
    transformers 5.16; there is no public getter)."""
    return getattr(model.config, "_attn_implementation", None) or "eager"


def ensure_eager_attention(model) -> str:
    """Switch ``model`` to eager attention (public ``set_attn_implementation``) if it runs
    another one; returns the implementation it ran before, for :func:`restore_attention`."""
    before = attn_implementation(model)
    if before != "eager":
        model.set_attn_implementation("eager")
    return before


def restore_attention(model, before: str) -> None:
    if attn_implementation(model) != before:
        model.set_attn_implementation(before)


def dispatches_attention_by_name(model) -> bool:
    """Whether the model's attention layers look their attention function up by name in
    ``ALL_ATTENTION_FUNCTIONS`` (so that a registered function can take their place).

    transformers 5.16: ``PreTrainedModel._can_set_attn_implementation()`` (a classmethod that
    reads the modelling module's source) answers this; ``set_attn_implementation`` only warns,
    and then changes nothing, for models that do not."""
    probe = getattr(type(model), "_can_set_attn_implementation", None)
    return bool(probe()) if callable(probe) else True


def register_attention_function(name: str, function) -> None:
    """Register ``function`` as the attention implementation ``name``, with sdpa's masks.

    transformers 5.16: ``AttentionInterface.register`` is public, but a name that is not also in
    ``AttentionMaskInterface`` gets no mask at all (``masking_utils`` returns None for names
    missing from its mask registry, meant for external backends), so the name is registered
    there as well, with ``sdpa_mask`` (what ``sdpa`` gets). Idempotent: registering the same
    key again replaces the entry."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, function)
    AttentionMaskInterface.register(name, sdpa_mask)


def takes_logits_to_keep(model) -> bool:
    """Whether ``model``'s forward takes ``logits_to_keep`` (transformers' causal LMs do; a remote-code model or a
    hand-made stand-in may not): then the caller computes every position's logits. A PEFT wrapper's forward takes
    ``**kwargs`` and hands them to the model it wraps, so the wrapped model's forward decides."""
    import inspect

    inner = getattr(model, "get_base_model", None)
    if callable(inner) and inner() is not model:
        return takes_logits_to_keep(inner())
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "logits_to_keep" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def forward_keeping(model, keep, **inputs):
    """``model(**inputs)`` with logits at the ``keep`` positions only, as transformers' ``logits_to_keep`` reads it:
    an int k keeps the last k positions (0 keeps all), a 1-D tensor of positions keeps those. A forward that does not
    take the argument (:func:`takes_logits_to_keep`) computes every position's logits, and the output's ``logits``
    are then cut to the same positions, so the caller indexes them alike either way (only the memory differs). A
    forward that takes ``**kwargs`` but drops the argument is cut the same way, told apart by the width of its
    logits: ``keep``'s positions are then to be distinct and in order (every caller's are), since a permutation of
    every position has the width of all of them."""
    takes = takes_logits_to_keep(model)
    out = model(**inputs, logits_to_keep=keep) if takes else model(**inputs)
    logits = getattr(out, "logits", None)
    if logits is None:
        return out
    # cut where the forward could not take the argument, and where it took it into **kwargs and computed every
    # position (its width then tells: transformers' own always returns as many positions as it keeps)
    if isinstance(keep, int):
        if keep and (not takes or logits.shape[1] != keep):
            out.logits = logits[:, -keep:]
    elif not takes or logits.shape[1] != len(keep):
        runs = len(keep) > 0 and bool((keep.diff() == 1).all())  # consecutive positions: a view, not a copy
        out.logits = logits[:, int(keep[0]): int(keep[-1]) + 1] if runs else logits[:, keep]
    return out


def plain_dynamic_cache(config):
    """A ``DynamicCache`` for ``config`` whose layers are all plain ``DynamicLayer`` s (keys and
    values kept whole, no sliding window or quantisation), else None. ``cache.layers`` and
    ``transformers.cache_utils.DynamicLayer`` are internals of transformers 5.16's cache."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    return cache


def cache_tensors(cache) -> list:
    """Keys and values of every layer, in layer order (``layer.keys``/``layer.values``, transformers 5.16)."""
    return [t for layer in cache.layers for t in (layer.keys, layer.values)]


def cache_from_tensors(tensors: list, config):
    """A ``DynamicCache`` holding ``tensors`` as produced by :func:`cache_tensors` (keys and values
    alternating, layer by layer; the ``ddp_cache_data`` argument of transformers 5.16)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(zip(tensors[::2], tensors[1::2])), config=config)


def repeat_cache_rows(cache, n: int) -> None:
    """Repeat every row of the cache ``n`` times in place (each prompt's cache shared by its
    ``n`` continuations; ``layer.batch_repeat_interleave``, transformers 5.16)."""
    for layer in cache.layers:
        layer.batch_repeat_interleave(n)


def load_trainer_checkpoint(trainer, checkpoint: str) -> None:
    """Load a checkpoint's weights into a Trainer's model without training
    (``Trainer._load_from_checkpoint``, transformers 5.16, the same through 5.20.1;
    ``train(resume_from_checkpoint=...)`` would also take a step)."""
    trainer._load_from_checkpoint(checkpoint)


# ------------------------------------------------------------------------ axolotl 0.19 to 0.21

def training_raised() -> BaseException | None:
    """The exception stage 1's training is raising when Axolotl calls ``post_train_unload``, else None.

    Axolotl 0.19.0 calls the hook only after ``train`` returned (``axolotl/cli/train.py:do_train``);
    0.20.0 and 0.21.0 call it in a ``finally:`` around ``train``, so that it also runs while an error
    of stage 1 (or Ctrl-C) propagates. Inside that ``finally:`` the propagating exception is the one
    ``sys.exc_info()`` reports, to the hook as to any function it calls; on 0.19 it is None there.
    """
    return sys.exc_info()[1]


def install_cli_excepthook() -> None:
    """Print the plugin's errors as one line at the end of an ``axolotl`` command
    (:mod:`axolotl_decselfmask.errors`).

    Axolotl 0.19.0 has no error hook for plugins (nor have 0.20.0 and 0.21.0, read: the same paths
    below), but none of its commands catches an exception:
    ``axolotl preprocess`` runs in the ``axolotl`` process (click, ``axolotl.cli.main``), and
    ``axolotl train`` in the process that ``accelerate launch -m axolotl.cli.train`` starts
    (``fire.Fire``); the exception reaches ``sys.excepthook`` of that process, and the plugins'
    ``register()`` runs in it (``axolotl.cli.config.load_cfg``) before anything else of the run
    can fail. Telemetry's ``send_errors`` re-raises. (Under ``accelerate launch`` the launcher
    then reports the child's exit status with its own, short traceback.)
    """
    from axolotl_decselfmask import errors

    if sys.excepthook is not errors.excepthook:
        errors.install()


# ----------------------------- other libraries' start-up lines (torch 2.13, torchao 0.17, bnb 0.50, transformers 5.16)

#: lines other libraries log that a user of the plugin cannot act on: logger name -> pieces of the message
#: (all must be in it). torch 2.13 calls deprecated the way torchao (imported by Axolotl 0.19-0.21) registers
#: two enums with its pytree; bitsandbytes 0.50 looks for its CPU 4-bit kernel on the hub at import, which
#: offline it cannot.
FOREIGN_LINES = {
    "torch.utils._pytree": [("is an Enum subclass and is now natively supported by torch.compile",)],
    "bitsandbytes.backends.cpu.ops": [("Failed to load CPU gemm_4bit_forward from kernels-community",)],
}
#: on a machine without CUDA only: torchao cannot load its CUDA kernels (``torchao/_C_*.so``), which a CPU
#: cannot run (with CUDA the same line means a torchao that does not match torch: worth reading there);
#: Axolotl's validation (``check_bf16``, 0.19-0.21) reads a CPU as a GPU without AMP, though bf16 training
#: on a CPU runs (the plugin's precision line says what runs)
CPU_LINES = {
    "torchao": [("Failed to load ", "torchao", "Could not load this library")],
    "axolotl.utils.schemas.config": [("bf16 requested, but AMP is not supported on this GPU",)],
}
#: lines printed after the plugin has loaded that say nothing about the run, with or without CUDA: logger name
#: -> entries whose first piece starts the message and whose other pieces are in it.
#: transformers 5.16 (``TokenizersBackend._decode``): a BPE tokenizer whose ``tokenizer_config.json`` sets
#: ``clean_up_tokenization_spaces`` (SmolLM2's does) says at its first decode that it ignores the setting;
#: the text is decoded as without it. Axolotl 0.19 (``axolotl/cli/preprocess.py``): the model pre-download
#: loads the model inside a meta-device context, which transformers 5 refuses for every model.
AFTER_LOAD_LINES = {
    "transformers.tokenization_utils_tokenizers": [("Ignoring clean_up_tokenization_spaces=True for BPE tokenizer ",)],
    "axolotl.cli.preprocess": [("Skipping model pre-download for `",
                                "You are using `from_pretrained` with a meta device context manager")],
}
#: kernels (bitsandbytes' hub kernel) warns, through ``warnings``, that offline it skips a trust check
FOREIGN_WARNINGS = [r"Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'"]
#: the entry of docs/troubleshooting.md on the lines printed before Axolotl loads the plugin
STARTUP_SECTION = "Lines from torchao, torch and bitsandbytes at the start of `axolotl preprocess` and `axolotl train`"

_printed_before_filters: list[str] | None = None  # printed_startup_lines() at the first quiet_foreign_lines()
_note_said = False


class _DropLines:
    """A logging filter that drops the records whose message holds every piece of one entry of ``entries``,
    or starts with the first piece of one entry of ``starts`` and holds its other pieces."""

    def __init__(self, entries, starts=()):
        self.entries = list(entries)
        self.starts = list(starts)

    def filter(self, record) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        if any(all(piece in message for piece in entry) for entry in self.entries):
            return False
        return not any(message.startswith(entry[0]) and all(piece in message for piece in entry[1:])
                       for entry in self.starts)


def quiet_foreign_lines(cuda: bool | None = None) -> None:
    """Silence :data:`FOREIGN_LINES`, :data:`AFTER_LOAD_LINES`, :data:`FOREIGN_WARNINGS` and, without CUDA,
    :data:`CPU_LINES` (narrowly: by logger and message). Idempotent. Runs where the plugin is imported, before
    Axolotl: lines a library writes before that (``axolotl`` imports them first) stay; the first call records
    which (:func:`printed_startup_lines`), for :func:`startup_lines_note`."""
    import logging
    import warnings

    global _printed_before_filters
    if _printed_before_filters is None:
        _printed_before_filters = printed_startup_lines()
    lines = dict(FOREIGN_LINES)
    if cuda is None:
        import importlib.util

        cuda = importlib.util.find_spec("torch") is not None and _cuda_available()
    if not cuda:
        lines.update(CPU_LINES)
    for name in set(lines) | set(AFTER_LOAD_LINES):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(lines.get(name, []), AFTER_LOAD_LINES.get(name, [])))
    for message in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def printed_startup_lines() -> list[str]:
    """Which of ``"torchao"`` and ``"bitsandbytes"`` have printed their start-up line about a kernel they could
    not load, in this process so far (a library not imported yet has printed nothing).

    torchao 0.17 (``torchao/__init__.py``) loads each ``torchao/_C*.so`` with ``torch.ops.load_library``, unless
    its ``skip_loading_so_files``, and logs ``Failed to load <file>: ...`` for each that fails; torch 2.13 keeps
    the files it loaded in ``torch.ops.loaded_libraries``. bitsandbytes 0.50
    (``bitsandbytes/backends/cpu/ops.py``), on a CPU with AVX512-BF16, sets ``gemm_4bit_forward_kernel`` to None
    when it logged ``Failed to load CPU gemm_4bit_forward from kernels-community: ...``.
    """
    from pathlib import Path

    printed = []
    torchao = sys.modules.get("torchao")
    if torchao is not None and torchao.__file__ and not getattr(torchao, "skip_loading_so_files", True):
        import torch

        loaded = {str(Path(p).resolve()) for p in torch.ops.loaded_libraries}
        if any(str(f.resolve()) not in loaded for f in Path(torchao.__file__).parent.glob("_C*.so")):
            printed.append("torchao")
    cpu_ops = sys.modules.get("bitsandbytes.backends.cpu.ops")
    if cpu_ops is not None and getattr(cpu_ops, "gemm_4bit_forward_kernel", False) is None:
        printed.append("bitsandbytes")
    return printed


def startup_lines_note(printed: list[str] | None = None) -> str | None:
    """One line that says what the torchao and bitsandbytes lines printed before the plugin loaded mean, on a
    machine without CUDA; None with CUDA (there torchao's line may mean a torchao that does not match torch)
    and when none of them printed. ``printed``: :func:`printed_startup_lines` as the first
    :func:`quiet_foreign_lines` found it."""
    printed = _printed_before_filters if printed is None else printed
    if not printed or _cuda_available():
        return None
    what = {"torchao": "torchao's \"Failed to load .../torchao/_C_*.so\" (kernels for CUDA GPUs, which a CPU cannot "
                       "run)",
            "bitsandbytes": "bitsandbytes' \"Failed to load CPU gemm_4bit_forward from kernels-community\" (it uses "
                            "its built-in CPU code instead)"}
    said = " and ".join(what[name] for name in ("torchao", "bitsandbytes") if name in printed)
    return (f"decselfmask: on this machine without CUDA, the lines printed above before Axolotl loaded the plugin are "
            f"harmless: {said}; docs/troubleshooting.md, \"{STARTUP_SECTION}\"")


def say_startup_lines_note(log) -> None:
    """Log :func:`startup_lines_note` on ``log`` (INFO), once in a process."""
    global _note_said
    if _note_said:
        return
    _note_said = True
    note = startup_lines_note()
    if note:
        log.info(note)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()
