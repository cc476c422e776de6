import pytest

from axolotl_decselfmask.stage1.examples import build_examples, mask_text, unmask

TEXT = "A man with dilated cardiomyopathy received a dual-chamber pacemaker in 2019."


def _span(word):
    s = TEXT.index(word)
    return (s, s + len(word))


def test_one_example_per_span_with_one_mask_each():
    spans = [_span("dilated cardiomyopathy"), _span("pacemaker")]
    exs = build_examples(TEXT, spans, "<mask>")
    assert [e.answer for e in exs] == ["dilated cardiomyopathy", "pacemaker"]
    assert exs[0].masked_text == "A man with <mask> received a dual-chamber pacemaker in 2019."
    assert all(e.masked_text.count("<mask>") == 1 for e in exs)
    for e in exs:
        assert unmask(e.masked_text, [e.answer], "<mask>") == TEXT


def test_several_spans_per_example_join_answers():
    spans = [_span("man"), _span("cardiomyopathy"), _span("pacemaker")]
    exs = build_examples(TEXT, spans, "[M]", spans_per_example=2, separator=" | ")
    assert len(exs) == 2
    assert exs[0].masked_text.count("[M]") == 2 and exs[0].answer == "man | cardiomyopathy"
    assert unmask(exs[0].masked_text, exs[0].answer.split(" | "), "[M]") == TEXT
    assert exs[1].answer == "pacemaker"


def test_bad_spans_are_rejected():
    with pytest.raises(ValueError):
        mask_text(TEXT, [(10, 20), (15, 25)], "<mask>")
    with pytest.raises(ValueError):
        mask_text(TEXT, [(5, 5)], "<mask>")
    with pytest.raises(ValueError):
        mask_text(TEXT, [(0, len(TEXT) + 1)], "<mask>")
