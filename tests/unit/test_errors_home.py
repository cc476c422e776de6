"""InputError lives in errors.py with the one-line error report; its old path still works."""

from __future__ import annotations

from axolotl_decselfmask import errors
from axolotl_decselfmask.errors import InputError


def test_input_error_is_defined_in_errors_and_reexported_from_its_old_home():
    from axolotl_decselfmask.io import tables

    assert InputError.__module__ == "axolotl_decselfmask.errors"
    assert tables.InputError is InputError  # code that catches it by the old path keeps working
    assert issubclass(InputError, ValueError)


def test_an_input_error_anywhere_in_the_chain_is_reported_as_its_message():
    try:
        try:
            raise InputError("data.csv, row 3: no label; fill the label column")
        except InputError as exc:
            raise RuntimeError("stage 2 failed") from exc
    except RuntimeError as outer:
        assert errors.one_line(outer) == "data.csv, row 3: no label; fill the label column"
    assert errors.one_line(ValueError("not ours")) is None
