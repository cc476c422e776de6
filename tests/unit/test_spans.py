"""Tests for axolotl_decselfmask.stage1.spans: scores -> token spans -> whole-word character spans."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
from conftest import SMOLLM as SMOLLM_DIR
from helpers import assert_well_formed
from scipy.ndimage import gaussian_filter1d

from axolotl_decselfmask.stage1.spans import (
    SpanSettings,
    gaussian_smooth,
    hysteresis_spans,
    normalise,
    select_spans,
    widen_to_words,
)

TEXT = (
    "Echocardiography showed dilated cardiomyopathy with thrombocytopenia; "
    "the patient's pacemaker, implanted in 2019, was replaced after a beta-blocker trial."
)

TRAINING_SENTENCES = [
    TEXT,
    "The echocardiogram showed a reduced ejection fraction and mitral regurgitation.",
    "A pacemaker was implanted because of complete heart block.",
    "Hypertrophic cardiomyopathy is a common cause of sudden cardiac death.",
    "Aspirin and a beta-blocker were started after the myocardial infarction.",
    "Thrombocytopenia was noted on the full blood count.",
]


# --------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def smollm_tokenizer():
    if not (SMOLLM_DIR / "tokenizer.json").is_file():
        pytest.skip(f"local SmolLM2 tokenizer folder missing: {SMOLLM_DIR} (run the models materialiser)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(SMOLLM_DIR))


@pytest.fixture(scope="module")
def wordpiece_tokenizer():
    """A small BERT-style WordPiece tokenizer trained offline; adds [CLS]/[SEP] with (0, 0) offsets."""
    from tokenizers import (
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"], show_progress=False
    )
    tok.train_from_iterator(TRAINING_SENTENCES, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]"
    )


@pytest.fixture(scope="module")
def char_tokenizer():
    """A character-level tokenizer (BPE trained with no merges): every character, spaces
    included, is its own token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="isolated")
    alphabet = sorted(set("".join(TRAINING_SENTENCES)))
    trainer = trainers.BpeTrainer(
        vocab_size=1, special_tokens=["<unk>"], initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(TRAINING_SENTENCES, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def encode(tokenizer, text):
    enc = tokenizer(text, return_offsets_mapping=True)
    return tokenizer.convert_ids_to_tokens(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def word_tokens(offsets, text, word):
    """Indices of the tokens whose characters lie inside the only occurrence of ``word``."""
    assert text.count(word) == 1
    w0 = text.index(word)
    w1 = w0 + len(word)
    idx = [i for i, (s, e) in enumerate(offsets) if e > s and s < w1 and e > w0 and text[s:e].strip()]
    return idx, (w0, w1)






# --------------------------------------------------------------------------- normalise


def test_normalise_is_sign_insensitive_and_scaled_to_one():
    out = normalise([1.0, -4.0, 2.0, 0.0])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [0.25, 1.0, 0.5, 0.0])


def test_normalise_positive_keeps_only_what_raises_the_target():
    np.testing.assert_allclose(normalise([1.0, -4.0, 2.0, 0.0], "positive"), [0.5, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(normalise([-1.0, -3.0], "positive"), [0.0, 0.0])  # nothing positive
    with pytest.raises(ValueError, match="sign"):
        normalise([1.0], "signed")


def test_span_sign_decides_which_peak_is_masked(smollm_tokenizer):
    enc = smollm_tokenizer(TEXT, return_offsets_mapping=True, add_special_tokens=False)
    offsets = enc["offset_mapping"]
    scores = np.zeros(len(offsets))
    scores[3] = -5.0  # a large negative peak (lowers the item's score)
    scores[len(offsets) - 6] = 1.0  # a smaller positive one
    absolute = select_spans(scores, offsets, TEXT, SpanSettings(sign="absolute"))
    positive = select_spans(scores, offsets, TEXT, SpanSettings(sign="positive"))
    assert len(absolute) == 1 and absolute[0][0] <= offsets[3][0] < absolute[0][1]
    assert len(positive) == 1 and positive[0][0] <= offsets[len(offsets) - 6][0] < positive[0][1]
    with pytest.raises(ValueError, match="sign"):
        SpanSettings(sign="both")


def test_span_sign_auto_follows_the_method():
    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.examples import span_settings

    assert span_settings(DecSelfMaskConfig()).sign == "positive"  # the default method, attnlrp
    assert span_settings(DecSelfMaskConfig(relevance={"method": "grad_x_input"})).sign == "absolute"
    assert span_settings(DecSelfMaskConfig(relevance={"method": "grad_x_input"},
                                           spans={"sign": "positive"})).sign == "positive"
    assert span_settings(DecSelfMaskConfig(protocol="paper")).sign == "absolute"


def test_normalise_all_zero_gives_zeros():
    out = normalise(np.zeros(5, dtype=np.float32))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, np.zeros(5))
    assert normalise([]).shape == (0,)


def test_normalise_accepts_torch_bfloat16():
    torch = pytest.importorskip("torch")
    out = normalise(torch.tensor([2.0, -8.0], dtype=torch.bfloat16, requires_grad=True))
    np.testing.assert_allclose(out, [0.25, 1.0])


@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "infinite"), (-np.inf, "infinite")])
def test_normalise_rejects_non_finite(bad, word):
    with pytest.raises(ValueError, match=word):
        normalise([0.1, bad, 0.3])


def test_normalise_does_not_modify_input():
    x = np.array([-2.0, 1.0])
    normalise(x)
    np.testing.assert_array_equal(x, [-2.0, 1.0])


# --------------------------------------------------------------------------- smoothing


@pytest.mark.parametrize("truncate", [1.0, 4.0, 2.3])
@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 1.7, 2.5, 6.0])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 40])
def test_gaussian_smooth_matches_scipy(sigma, n, truncate):
    x = np.random.default_rng(n).normal(size=n)
    expected = gaussian_filter1d(x, sigma, mode="reflect", truncate=truncate)
    np.testing.assert_allclose(gaussian_smooth(x, sigma, truncate), expected, rtol=1e-12, atol=1e-12)


def test_default_kernel_is_the_authors_three_taps():
    """sigma 1, truncate 1 (the defaults): radius int(1 * 1 + 0.5) = 1, weights exp(-x^2 / 2)
    normalised over x = -1, 0, 1; truncate 4 (scipy's default, the earlier one) has 9 taps."""
    impulse = np.zeros(11)
    impulse[5] = 1.0
    three = gaussian_smooth(impulse)  # an impulse response is the kernel
    np.testing.assert_allclose(three[4:7], [0.274068619, 0.451862762, 0.274068619], rtol=1e-8)
    assert np.count_nonzero(three) == 3 and three.sum() == pytest.approx(1.0)
    nine = gaussian_smooth(impulse, 1.0, 4.0)
    assert np.count_nonzero(nine) == 9 and nine[5] == pytest.approx(0.398943, abs=1e-6)
    assert SpanSettings().truncate == 1.0 and SpanSettings().sigma == 1.0
    with pytest.raises(ValueError, match="truncate"):
        gaussian_smooth(impulse, 1.0, -1.0)
    with pytest.raises(ValueError, match="truncate"):
        SpanSettings(truncate=float("nan"))


def test_gaussian_smooth_sigma_zero_is_identity_copy():
    x = np.array([0.0, 1.0, 0.5])
    out = gaussian_smooth(x, 0)
    np.testing.assert_array_equal(out, x)
    out[0] = 9.0
    assert x[0] == 0.0


def test_gaussian_smooth_rejects_negative_sigma():
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth([1.0, 2.0], -1.0)


def test_smoothing_joins_two_peaks_separated_by_one_low_token():
    x = np.array([0, 0, 1, 0, 1, 0, 0], dtype=float)
    assert hysteresis_spans(x) == [(2, 3), (4, 5)]
    assert hysteresis_spans(gaussian_smooth(x, 1.0)) == [(1, 6)]


# --------------------------------------------------------------------------- hysteresis


def test_run_above_low_but_never_above_high_gives_no_span():
    assert hysteresis_spans([0.0, 0.3, 0.35, 0.39, 0.3, 0.0]) == []


def test_run_with_one_value_above_high_grows_while_above_low():
    assert hysteresis_spans([0.1, 0.25, 0.3, 0.9, 0.21, 0.2, 0.3, 0.5]) == [(1, 5), (6, 8)]


def test_two_separated_peaks_give_two_spans():
    assert hysteresis_spans([0.9, 0.1, 0.0, 0.5, 0.45, 0.0]) == [(0, 1), (3, 5)]


def test_thresholds_are_strict_and_configurable():
    x = [0.0, 0.4, 0.2, 0.6, 0.0]
    assert hysteresis_spans(x) == [(3, 4)]  # 0.4 is not > 0.4, 0.2 is not > 0.2
    assert hysteresis_spans(x, high=0.3, low=0.1) == [(1, 4)]
    assert hysteresis_spans(x, high=0.5, low=0.5) == [(3, 4)]
    assert hysteresis_spans(x, high=0.7, low=0.1) == []
    with pytest.raises(ValueError, match="high"):
        hysteresis_spans(x, high=0.1, low=0.3)


def test_hysteresis_edges_and_empty():
    assert hysteresis_spans([]) == []
    assert hysteresis_spans([1.0]) == [(0, 1)]
    assert hysteresis_spans([1.0, 1.0, 1.0]) == [(0, 3)]


# --------------------------------------------------------------------------- widening


@pytest.mark.parametrize("tok_fixture", ["smollm_tokenizer", "wordpiece_tokenizer", "char_tokenizer"])
@pytest.mark.parametrize("word", ["Echocardiography", "cardiomyopathy", "thrombocytopenia", "beta-blocker"])
def test_middle_token_widens_to_exactly_the_word(request, tok_fixture, word):
    tokenizer = request.getfixturevalue(tok_fixture)
    tokens, offsets = encode(tokenizer, TEXT)
    idx, (w0, w1) = word_tokens(offsets, TEXT, word)
    mid = idx[len(idx) // 2]
    if len(idx) > 1:  # SmolLM2 keeps e.g. " cardiomyopathy" whole: then only stripping is checked
        assert (offsets[mid][0], offsets[mid][1]) != (w0, w1)
    assert widen_to_words([(mid, mid + 1)], offsets, TEXT) == [(w0, w1)]
    # every single piece of the word, and the whole run, gives the same span
    for i in idx:
        assert widen_to_words([(i, i + 1)], offsets, TEXT) == [(w0, w1)], tokens[i]
    assert widen_to_words([(idx[0], idx[-1] + 1)], offsets, TEXT) == [(w0, w1)]


def test_multi_token_words_exist_in_each_tokenizer(smollm_tokenizer, wordpiece_tokenizer, char_tokenizer):
    """Guards the widening test above against silently skipping everything."""
    for tok in (smollm_tokenizer, wordpiece_tokenizer, char_tokenizer):
        _, offsets = encode(tok, TEXT)
        assert len(word_tokens(offsets, TEXT, "cardiomyopathy")[0]) >= 2 or len(
            word_tokens(offsets, TEXT, "Echocardiography")[0]
        ) >= 3


@pytest.mark.parametrize("tok_fixture", ["smollm_tokenizer", "wordpiece_tokenizer", "char_tokenizer"])
def test_punctuation_is_not_swallowed(request, tok_fixture):
    tokens, offsets = encode(request.getfixturevalue(tok_fixture), TEXT)
    idx, (w0, w1) = word_tokens(offsets, TEXT, "pacemaker,")
    idx = [i for i in idx if TEXT[offsets[i][0] : offsets[i][1]].strip() != ","]
    mid = idx[len(idx) // 2]
    assert widen_to_words([(mid, mid + 1)], offsets, TEXT) == [(w0, w1 - 1)]
    assert TEXT[w0 : w1 - 1] == "pacemaker"


def test_apostrophe_inside_word_is_part_of_the_word(smollm_tokenizer):
    tokens, offsets = encode(smollm_tokenizer, TEXT)
    idx, (w0, w1) = word_tokens(offsets, TEXT, "patient's")
    assert len(idx) >= 2
    assert widen_to_words([(idx[0], idx[0] + 1)], offsets, TEXT) == [(w0, w1)]


def test_leading_space_in_offsets_is_stripped(smollm_tokenizer):
    tokens, offsets = encode(smollm_tokenizer, TEXT)
    i = next(i for i, t in enumerate(tokens) if t == "Ġdilated")
    assert TEXT[offsets[i][0] : offsets[i][1]] == " dilated"
    s, e = widen_to_words([(i, i + 1)], offsets, TEXT)[0]
    assert TEXT[s:e] == "dilated"


def test_span_starting_at_punctuation_does_not_grab_previous_word():
    text = "pacemaker, and"
    offsets = [(0, 9), (9, 10), (10, 14)]
    assert widen_to_words([(1, 3)], offsets, text) == [(9, 14)]


def test_hyphen_and_quotes_at_word_edges_are_not_swallowed():
    text = "pre- and 'quoted' post-operative"
    offsets = [(0, 3), (3, 4), (4, 8), (8, 10), (10, 16), (16, 17), (17, 22), (22, 23), (23, 32)]
    assert widen_to_words([(0, 1)], offsets, text) == [(0, 3)]  # "pre", not "pre-"
    assert widen_to_words([(4, 5)], offsets, text) == [(10, 16)]  # "quoted", no quotes
    assert widen_to_words([(6, 7)], offsets, text) == [(18, 32)]  # "post-operative"


def test_touching_spans_merge_whitespace_separated_do_not():
    text = "heart failure and renal-failure"
    offsets = [(0, 5), (5, 13), (13, 17), (17, 23), (23, 24), (24, 31)]
    # "heart" and " failure": whitespace between -> separate spans
    assert widen_to_words([(0, 1), (1, 2)], offsets, text) == [(0, 5), (6, 13)]
    # "renal" and "failure" widen to the same hyphenated word -> merged into one
    assert widen_to_words([(3, 4), (5, 6)], offsets, text) == [(18, 31)]
    # touching: "13.5" as "13" + ".5" tokens selected separately
    text2 = "Hb 13.5 today"
    offsets2 = [(0, 2), (2, 5), (5, 7), (7, 13)]
    assert widen_to_words([(1, 2), (2, 3)], offsets2, text2) == [(3, 7)]
    # overlapping spans and unsorted input
    assert widen_to_words([(2, 4), (1, 3)], offsets2, text2) == [(3, 13)]


def test_special_and_empty_offsets_are_ignored(wordpiece_tokenizer):
    tokens, offsets = encode(wordpiece_tokenizer, TEXT)
    assert tokens[0] == "[CLS]" and offsets[0] == (0, 0)
    assert widen_to_words([(0, 1)], offsets, TEXT) == []
    assert widen_to_words([(len(offsets) - 1, len(offsets))], offsets, TEXT) == []
    # a span including [CLS] and the first piece of "Echocardiography"
    idx, (w0, w1) = word_tokens(offsets, TEXT, "Echocardiography")
    assert widen_to_words([(0, idx[0] + 1)], offsets, TEXT) == [(w0, w1)]


def test_whitespace_only_span_is_dropped():
    text = "a  b"
    offsets = [(0, 1), (1, 3), (3, 4)]
    assert widen_to_words([(1, 2)], offsets, text) == []


def test_token_span_outside_offsets_raises():
    with pytest.raises(ValueError, match="token span"):
        widen_to_words([(0, 5)], [(0, 1)], "a")


def test_offsets_of_prompt_shifted_before_text_are_ignored():
    text = "mitral regurgitation"
    offsets = [(-7, -1), (0, 6), (6, 20)]  # first token belonged to the prompt
    assert widen_to_words([(0, 1)], offsets, text) == []
    assert widen_to_words([(0, 2)], offsets, text) == [(0, 6)]


# --------------------------------------------------------------------------- select_spans


def test_select_spans_end_to_end_smollm(smollm_tokenizer):
    tokens, offsets = encode(smollm_tokenizer, TEXT)
    scores = np.full(len(tokens), 0.01)
    cardio, (c0, c1) = word_tokens(offsets, TEXT, "cardiomyopathy")
    echo, (e0, e1) = word_tokens(offsets, TEXT, "Echocardiography")
    scores[cardio[len(cardio) // 2]] = -5.0  # negative relevance counts
    scores[echo[1]] = 4.0
    settings = SpanSettings(sigma=0.0)
    assert select_spans(scores, offsets, TEXT, settings) == [(e0, e1), (c0, c1)]
    # max_spans keeps the strongest, by position
    assert select_spans(scores, offsets, TEXT, SpanSettings(sigma=0.0, max_spans=1)) == [(c0, c1)]
    assert select_spans(scores, offsets, TEXT, SpanSettings(sigma=0.0, max_spans=0)) == []
    # smoothed (and rescaled, as lone peaks fall below `high` otherwise) spans grow
    # into neighbours but stay word aligned
    spans = select_spans(scores, offsets, TEXT, SpanSettings(rescale_after_smoothing=True))
    assert_well_formed(spans, TEXT)
    assert any(s <= c0 and c1 <= e for s, e in spans)
    assert any(s <= e0 and e1 <= e for s, e in spans)


def test_lone_peak_seeds_a_span_with_three_taps_not_with_nine(wordpiece_tokenizer):
    """No rescaling: the 3-tap default lowers a lone 1 to 0.452 (> high 0.4), a span; the 9-tap
    kernel (truncate 4) to 0.399, none; rescale_after_smoothing brings it back to 1."""
    tokens, offsets = encode(wordpiece_tokenizer, TEXT)
    idx, (w0, w1) = word_tokens(offsets, TEXT, "pacemaker")
    scores = np.zeros(len(tokens))
    scores[idx[0]] = 1.0
    default = select_spans(scores, offsets, TEXT)
    assert len(default) == 1
    assert default[0][0] <= w0 and w1 <= default[0][1]
    nine = SpanSettings(truncate=4.0)
    assert not SpanSettings().rescale_after_smoothing
    assert select_spans(scores, offsets, TEXT, nine) == []
    spans = select_spans(scores, offsets, TEXT, SpanSettings(truncate=4.0, rescale_after_smoothing=True))
    assert len(spans) == 1
    s, e = spans[0]
    assert s <= w0 and w1 <= e
    # the same on the bare scores: 3 taps seed a span, 9 taps do not
    x = np.zeros(9)
    x[4] = 1.0
    assert hysteresis_spans(gaussian_smooth(x)) == [(3, 6)]
    assert hysteresis_spans(gaussian_smooth(x, 1.0, 4.0)) == []


def test_select_spans_ignores_special_token_scores(wordpiece_tokenizer):
    tokens, offsets = encode(wordpiece_tokenizer, TEXT)
    idx, (w0, w1) = word_tokens(offsets, TEXT, "thrombocytopenia")
    scores = np.zeros(len(tokens))
    scores[0] = 100.0  # [CLS] attention sink would dwarf everything if it counted
    scores[idx] = 1.0
    assert select_spans(scores, offsets, TEXT, SpanSettings(sigma=0.0)) == [(w0, w1)]


def test_select_spans_all_zero_and_length_mismatch():
    offsets = [(0, 3), (3, 7)]
    assert select_spans([0.0, 0.0], offsets, "abc defg") == []
    with pytest.raises(ValueError, match="offsets"):
        select_spans([1.0], offsets, "abc defg")
    with pytest.raises(ValueError, match="NaN"):
        select_spans([1.0, np.nan], offsets, "abc defg")


def test_select_spans_drops_over_long_spans():
    text = "aa bb cc dd"
    offsets = [(0, 2), (2, 5), (5, 8), (8, 11)]
    everything = [1.0, 1.0, 1.0, 1.0]
    assert select_spans(everything, offsets, text, SpanSettings(sigma=0)) == []  # 11 > 0.5 * 11
    assert select_spans(everything, offsets, text, SpanSettings(sigma=0, max_span_fraction=1.0)) == [(0, 11)]
    assert select_spans([1.0, 0, 0, 1.0], offsets, text, SpanSettings(sigma=0)) == [(0, 2), (9, 11)]


def test_span_settings_validation():
    with pytest.raises(ValueError):
        SpanSettings(high=0.1, low=0.3)
    with pytest.raises(ValueError):
        SpanSettings(sigma=-1)
    with pytest.raises(ValueError):
        SpanSettings(max_span_fraction=0)
    with pytest.raises(ValueError):
        SpanSettings(max_spans=-1)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("tok_fixture", ["smollm_tokenizer", "wordpiece_tokenizer", "char_tokenizer"])
def test_random_scores_give_well_formed_spans(request, tok_fixture):
    tokenizer = request.getfixturevalue(tok_fixture)
    rng = np.random.default_rng(1234)
    texts = TRAINING_SENTENCES + [" ".join(TRAINING_SENTENCES[:3]) + "  (ICD) -- ok's 'quoted' well_done ."]
    encoded = [(t, encode(tokenizer, t)[1]) for t in texts]
    for trial in range(200):
        text, offsets = encoded[trial % len(encoded)]
        n = len(offsets)
        scores = rng.normal(size=n) * rng.exponential(size=n) ** 3
        if trial % 7 == 0:
            scores[rng.random(n) < 0.8] = 0.0
        low = float(rng.uniform(0.0, 0.6))
        settings = SpanSettings(
            sigma=float(rng.choice([0.0, 0.5, 1.0, 2.0])),
            high=low + float(rng.uniform(0.0, 0.4)),
            low=low,
            max_spans=None if trial % 3 else int(rng.integers(0, 4)),
            max_span_fraction=float(rng.uniform(0.1, 1.0)),
        )
        spans = select_spans(scores, offsets, text, settings)
        assert_well_formed(spans, text)
        assert all(e - s <= settings.max_span_fraction * len(text) for s, e in spans)
        if settings.max_spans is not None:
            assert len(spans) <= settings.max_spans
        # widen_to_words on arbitrary token spans is well formed too
        cuts = np.sort(rng.choice(np.arange(n + 1), size=min(6, n + 1), replace=False))
        token_spans = [(int(a), int(b)) for a, b in zip(cuts[::2], cuts[1::2]) if a < b]
        assert_well_formed(widen_to_words(token_spans, offsets, text), text)
