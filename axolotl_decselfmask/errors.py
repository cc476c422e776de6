"""The plugin's error types, and each of them as one clear line at the end of an ``axolotl``
command, not an 80-line traceback.

:class:`InputError` (bad input data or settings) lives here; the other error types live beside
the code that raises them and are listed in :data:`PLUGIN_ERRORS`.

The plugin's ``register()`` installs :func:`excepthook` (through
:func:`axolotl_decselfmask.compat.install_excepthook`) in every process of a run. When a
command stops on one of the plugin's own errors (bad input, a missing model folder, a
tokenizer without chat template, stage 1 not finished...), anywhere in the chain of causes,
only its message is printed; ``DECSELFMASK_TRACEBACK=1`` prints the full traceback as before.
Every other exception goes to the previous hook unchanged.
"""

from __future__ import annotations

import os
import sys

TRACEBACK_ENV = "DECSELFMASK_TRACEBACK"


class InputError(ValueError):
    """Bad input data: the message names the file, the row or the key, and the fix."""


#: the plugin's error classes, as (module, class): imported when an error is reported, so that
#: installing the hook imports nothing heavy
PLUGIN_ERRORS = (
    ("axolotl_decselfmask.errors", "InputError"),
    ("axolotl_decselfmask.prompts", "ChatTemplateError"),
    ("axolotl_decselfmask.relevance.prompt", "PromptLayoutError"),
    ("axolotl_decselfmask.relevance.methods.base", "MethodNotSupported"),
    ("axolotl_decselfmask.stage1.checkpoints", "Stage1IncompleteError"),
)

_previous = sys.__excepthook__


def _plugin_classes() -> tuple[type, ...]:
    import importlib

    found = []
    for module, name in PLUGIN_ERRORS:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except Exception:  # noqa: BLE001 - a module that does not import cannot have raised
            continue
    return tuple(found)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _validation_line(exc: BaseException) -> str | None:
    """A pydantic error about the ``decselfmask:`` block only, one ``key: message`` per error."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return None
    ours = exc.title in ("DecSelfMaskConfig", "DecSelfMaskArgs")
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ())]
        if not ours and (not loc or loc[0] != "decselfmask"):
            return None  # not only ours: Axolotl's message as it is
        key = ".".join(loc if not ours else ["decselfmask", *loc])
        message = str(error.get("msg", "")).removeprefix("Value error, ")  # our validators name the key
        parts.append(message if message.startswith(key) else f"{key}: {message}")
    return "; ".join(parts) or None


def one_line(exc: BaseException) -> str | None:
    """The line to print for ``exc``, or None when it is not the plugin's error."""
    try:
        classes = _plugin_classes()
        for link in _chain(exc):
            if classes and isinstance(link, classes):
                return " ".join(str(link).split()) or type(link).__name__
            line = _validation_line(link)
            if line:
                return line
    except Exception:  # noqa: BLE001 - never hide the real error behind one of ours
        return None
    return None


def excepthook(exc_type, exc, tb) -> None:
    """``sys.excepthook``: the plugin's errors as one line (unless DECSELFMASK_TRACEBACK=1)."""
    line = None if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0") else one_line(exc)
    if line is None:
        _previous(exc_type, exc, tb)
        return
    sys.stderr.write(f"decselfmask: {line} ({TRACEBACK_ENV}=1 shows the traceback)\n")
    sys.stderr.flush()


def install() -> None:
    """Make :func:`excepthook` the process's hook, keeping the one it replaces for other errors."""
    global _previous
    if sys.excepthook is not excepthook:
        _previous = sys.excepthook
        sys.excepthook = excepthook
