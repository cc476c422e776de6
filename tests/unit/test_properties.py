"""Property tests (hypothesis) for span selection and masking on real tokenizer offsets."""

import numpy as np
import pytest
from helpers import assert_well_formed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from axolotl_decselfmask.stage1.examples import build_examples, unmask
from axolotl_decselfmask.stage1.spans import SpanSettings, select_spans

WORDS = ["pacemaker", "dual-chamber", "patient's", "cardiomyopathy", "mg", "2019", "(AF)", "échographie",
         "of", "a", ",", ".", "thrombocytopenia", "beta-blocker", "  ", "\n", "—", "x_y"]

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=40).map(
    lambda ws: "".join(w if w in {",", ".", "  ", "\n"} else " " + w for w in ws).strip() or "pacemaker")


@pytest.fixture(scope="module")
def tok(smollm_tok):
    return smollm_tok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, seed=st.integers(0, 2**32 - 1), sigma=st.sampled_from([0.0, 0.5, 1.0, 2.0]),
       high=st.floats(0.05, 1.0), gap=st.floats(0.0, 0.9), rescale=st.booleans(),
       per_example=st.integers(1, 4))
def test_spans_and_masking_properties(tok, text, seed, sigma, high, gap, rescale, per_example):
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    scores = np.random.default_rng(seed).normal(size=len(offsets))
    low = high * (1 - gap)
    spans = select_spans(scores, offsets, text, SpanSettings(sigma=sigma, high=high, low=low,
                                                             rescale_after_smoothing=rescale))
    assert spans == sorted(spans)
    assert_well_formed(spans, text)  # in bounds, ordered, non-overlapping, word aligned
    for ex in build_examples(text, spans, "<mask>", per_example, separator="\u241e"):
        answers = ex.answer.split("\u241e")
        assert len(answers) == ex.masked_text.count("<mask>") == len(ex.spans)
        assert unmask(ex.masked_text, answers, "<mask>") == text  # masked text + spans == original
