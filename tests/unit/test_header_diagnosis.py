"""scripts/header_diagnosis.py's reading of one note: hand-made id sequences whose header, answer and
mispredicted header tokens are worked out by hand (header [7, 8], special {2}, options yes = (5,), no = (6,))."""

from __future__ import annotations

import pytest
from helpers import script_module

HEADER, SPECIAL, OPTIONS = [7, 8], {2}, {(5,), (6,)}
GOLD = [11, 12, 13, 7, 8, 5, 2]  # note tokens, header, answer "yes", end of turn


def _read(predicted):
    return script_module("header_diagnosis").read_header(predicted, GOLD, HEADER, SPECIAL, OPTIONS)


def test_a_perfect_prediction_reads_the_answer_and_misses_nothing():
    # unshifted: position t predicts token t + 1, so the header sits one position early
    r = _read([12, 13, 7, 8, 5, 2, 2])
    assert r == {"found": True, "answer": (5,), "answer_off": False, "wrong": []}


def test_a_newline_instead_of_the_end_of_turn_loses_the_header_and_names_the_token():
    r = _read([12, 13, 99, 8, 5, 2, 2])  # token 99 predicted where the header's first token belongs
    assert r["found"] is False and r["answer"] is None and r["answer_off"] is False
    assert r["wrong"] == [(0, 99)]


def test_a_header_found_with_a_word_for_an_answer_is_off_the_options():
    r = _read([12, 13, 7, 8, 42, 2, 2])
    assert r["found"] and r["answer"] == (42,) and r["answer_off"] and r["wrong"] == []


def test_a_gold_row_without_its_header_is_an_error():
    with pytest.raises(ValueError, match="no header"):
        script_module("header_diagnosis").read_header([1, 2, 3], [1, 2, 3], HEADER, SPECIAL, OPTIONS)
