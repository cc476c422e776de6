"""The authors' string-match scorer (stage2/string_match.py) on hand-made predictions, Macro F1 worked out
by hand; and the teacher-forced argmax on a tiny random Llama against a manual forward."""

from __future__ import annotations

import pytest

from axolotl_decselfmask.stage2.string_match import (
    answer_ids, answer_string, macro_f1, score_string_match, teacher_forced_argmax,
)

H = [1, 2]        # assistant-header ids of a made-up template
EOS = 0           # the only special id
SPECIAL = {EOS}
A, B = [10], [11]  # two answers of one item: strings "10" and "11"


def seq(*answer, header=True, prompt=(7, 8)):
    """A labelled sequence: prompt ids, the header, the answer, eos."""
    return [*prompt, *(H if header else []), *answer, EOS]


def test_perfect_run_gives_one():
    gold = [seq(*A), seq(*B), seq(*A)]
    s = score_string_match(gold, gold, H, SPECIAL)
    assert s.macro_f1 == 1.0 and s.off_format == 0.0 and s.per_item["all"]["macro_f1"] == 1.0


def test_off_format_answer_lowers_macro_f1():
    gold = [seq(*A), seq(*A), seq(*B), seq(*B)]
    # the fourth prediction is "1213", none of the gold answers: an extra class with no gold example
    off = [seq(*A), seq(*A), seq(*B), seq(12, 13)]
    # classes {10, 11, 1213}:
    #   "10":   tp 2, fp 0, fn 0 -> F1 = 2*2/(2*2+0+0) = 1
    #   "11":   tp 1, fp 0, fn 1 -> F1 = 2/(2+0+1)     = 2/3
    #   "1213": tp 0, fp 1, fn 0 -> F1 = 0
    #   Macro = (1 + 2/3 + 0) / 3 = 5/9
    s = score_string_match(off, gold, H, SPECIAL)
    assert s.macro_f1 == pytest.approx(5 / 9)
    assert s.off_format == pytest.approx(1 / 4)
    # the same mistake in format ("10" for a "11"): classes {10, 11}
    #   "10": tp 2, fp 1, fn 0 -> 4/5;  "11": tp 1, fp 0, fn 1 -> 2/3;  Macro = (4/5 + 2/3) / 2 = 11/15
    wrong = [seq(*A), seq(*A), seq(*B), seq(*A)]
    s_in = score_string_match(wrong, gold, H, SPECIAL)
    assert s_in.macro_f1 == pytest.approx(11 / 15) and s_in.off_format == 0.0
    assert s.macro_f1 < s_in.macro_f1  # 5/9 < 11/15: the off-format answer costs more than the wrong option


def test_missing_header_makes_the_whole_sequence_the_answer():
    # no header in the prediction: all of it, eos dropped, is the answer: "7" "8" "10" -> "7810"
    assert answer_ids(seq(*A, header=False), H, SPECIAL) == [7, 8, 10]
    assert answer_string(seq(*A, header=False), H, SPECIAL) == "7810"
    # the header is looked for inside the predicted sequence itself, wherever it is (here one place early)
    assert answer_string([7, *H, 10, EOS, EOS], H, SPECIAL) == "10"
    # without a header, a prediction that is exactly the answer still matches
    assert answer_string([10, EOS], H, SPECIAL) == "10"
    gold = [seq(*A), seq(*B)]
    pred = [seq(*A), seq(*B, header=False)]  # second answer read as "7811": off format
    # classes {10, 11, 7811}: "10" 1, "11" 0 (never predicted), "7811" 0 -> Macro = 1/3
    s = score_string_match(pred, gold, H, SPECIAL)
    assert s.macro_f1 == pytest.approx(1 / 3) and s.off_format == pytest.approx(1 / 2)


def test_answers_are_joined_without_separator():
    # [1, 23] and [12, 3] are one string, "123", as in the authors' comparison
    assert answer_string([*H, 1, 23], H, SPECIAL) == answer_string([*H, 12, 3], H, SPECIAL) == "123"


def test_pooled_and_per_item():
    yes, no = [20], [21]
    gold = [seq(*yes), seq(*no), seq(*yes), seq(*no)]
    pred = [seq(*yes), seq(*no), seq(*yes), seq(*yes)]
    items = ["x", "x", "y", "y"]
    # item x: perfect -> 1
    # item y: "20" tp 1, fp 1, fn 0 -> 2/3; "21" tp 0, fn 1 -> 0; Macro = 1/3
    # pooled (one class per string across items): "20" tp 2, fp 1 -> 4/5; "21" tp 1, fn 1 -> 2/3;
    #   Macro = (4/5 + 2/3) / 2 = 11/15, not the mean of the per-item figures, (1 + 1/3) / 2 = 2/3
    s = score_string_match(pred, gold, H, SPECIAL, items=items)
    assert s.per_item["x"]["macro_f1"] == pytest.approx(1.0)
    assert s.per_item["y"]["macro_f1"] == pytest.approx(1 / 3)
    assert s.macro_f1 == pytest.approx(11 / 15)
    assert s.mean_per_item_macro_f1 == pytest.approx(2 / 3)
    assert s.per_item["y"]["n"] == 2 and s.n == 4
    # micro F1 of single-label answers is the accuracy: 3 of 4
    assert s.micro_f1 == pytest.approx(3 / 4)
    # an answer valid for the item but absent from its test gold is in format only when declared so
    maybe = [seq(*yes), seq(*no), seq(*yes), seq(22)]
    assert score_string_match(maybe, gold, H, SPECIAL, items=items).off_format == pytest.approx(1 / 4)
    declared = {"x": {"20", "21"}, "y": {"20", "21", "22"}}
    assert score_string_match(maybe, gold, H, SPECIAL, items=items, valid_answers=declared).off_format == 0.0


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="empty answer"):
        score_string_match([seq(*A)], [seq()], H, SPECIAL)
    with pytest.raises(ValueError, match="1 predicted sequences but 2 gold"):
        score_string_match([seq(*A)], [seq(*A), seq(*B)], H, SPECIAL)
    with pytest.raises(ValueError, match="header id sequence is empty"):
        answer_ids([1, 2], [], SPECIAL)
    with pytest.raises(ValueError, match="no entry for item"):
        score_string_match([seq(*A)], [seq(*A)], H, SPECIAL, items=["z"], valid_answers={"x": {"10"}})
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0


def _rows(tokenizer, train_on_inputs):
    from axolotl_decselfmask.prompts import classification_messages, tokenize_for_training

    texts = ["Patient with a tumour of the colon.", "Chest pain at rest, troponin raised, two days."]
    labels = ["neoplasms", "cardiovascular diseases"]
    return [tokenize_for_training(tokenizer, classification_messages(t, "Which class?", labels, "Classify.",
                                                                     answer=y), train_on_inputs=train_on_inputs)
            for t, y in zip(texts, labels)]


@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_teacher_forced_argmax_matches_a_manual_forward(tiny_llama, train_on_inputs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype="float32").eval()
    rows = _rows(tok, train_on_inputs)
    assert len(rows[0]["input_ids"]) != len(rows[1]["input_ids"])  # the batch is padded
    predicted, gold = teacher_forced_argmax(model, tok, rows, batch_size=2)
    unshifted, _ = teacher_forced_argmax(model, tok, rows, batch_size=2, shift=False)
    for row, p, g, u in zip(rows, predicted, gold, unshifted):
        with torch.no_grad():
            argmax = model(input_ids=torch.tensor([row["input_ids"]])).logits[0].argmax(-1).tolist()
        labelled = [t for t, y in enumerate(row["labels"]) if y != -100 and t > 0]
        assert p == [argmax[t - 1] for t in labelled]
        assert g == [row["input_ids"][t] for t in labelled]
        everything = [t for t, y in enumerate(row["labels"]) if y != -100]
        assert u == [argmax[t] for t in everything]


@pytest.mark.parametrize("train_on_inputs", [True, False])
@pytest.mark.parametrize("row_chunk, batch_size", [(8, 2), (2, 1), (1, 3)])
def test_shared_prefix_argmax_is_that_of_one_forward_per_row(tiny_llama, row_chunk, batch_size, train_on_inputs):
    """Rows of several questions on the same notes (the string-match rows of tasks that share their test notes):
    grouped by note, each note's common prefix run once and each row's rest on a copy of its cache, they give the
    argmax of one forward per row; a note with one row, and notes of different lengths, in the same call. With the
    answer alone labelled, the prefixes' logits are not computed, and the labelled positions' argmax is the same."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from axolotl_decselfmask.prompts import classification_messages, tokenize_for_training

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype="float32").eval()
    notes = ["Patient with a tumour of the colon.", "Chest pain at rest, troponin raised, two days, then relief.",
             "Fever."]
    questions = [("Is it a tumour?", "yes"), ("Is the heart named in the text above?", "no"), ("Any pain?", "no")]
    rows, groups = [], []
    for q, y in questions:
        for n, text in enumerate(notes if q != "Any pain?" else notes[:2]):  # note 3 has two rows, the others 3
            rows.append(tokenize_for_training(tok, classification_messages(text, q, ["yes", "no"], "Classify.",
                                                                           answer=y), train_on_inputs=train_on_inputs))
            groups.append(text)
    rows.append(_rows(tok, train_on_inputs)[0])  # a row alone in its group
    groups.append("alone")
    shared, gold = teacher_forced_argmax(model, tok, rows, batch_size=batch_size, shift=False, groups=groups,
                                         row_chunk=row_chunk)
    plain, plain_gold = teacher_forced_argmax(model, tok, rows, batch_size=batch_size, shift=False)
    assert shared == plain and gold == plain_gold
    shifted, _ = teacher_forced_argmax(model, tok, rows, batch_size=batch_size, groups=groups, row_chunk=row_chunk)
    assert shifted == teacher_forced_argmax(model, tok, rows, batch_size=batch_size)[0]
    with torch.no_grad():  # and the first row against a forward of it alone, on its labelled positions
        argmax = model(input_ids=torch.tensor([rows[0]["input_ids"]])).logits[0].argmax(-1).tolist()
    assert shared[0] == [argmax[t] for t, y in enumerate(rows[0]["labels"]) if y != -100]


def test_chatml_header_ids_read_the_gold_answer(smollm_tok):
    """SmolLM2's ChatML header '<|im_start|>assistant\\n': with every position labelled (the authors' rows),
    the gold answer read after it is the label's own ids."""
    header = smollm_tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    special = set(smollm_tok.added_tokens_decoder)
    for row, label in zip(_rows(smollm_tok, True), ["neoplasms", "cardiovascular diseases"]):
        assert answer_ids(row["labels"], header, special) == smollm_tok(label, add_special_tokens=False)["input_ids"]
    # with the labels on the answer only, the header is not among the labelled positions: whole-sequence rule
    answer_only = [y for y in _rows(smollm_tok, False)[0]["labels"] if y != -100]
    assert answer_ids(answer_only, header, special) == smollm_tok("neoplasms", add_special_tokens=False)["input_ids"]


def test_header_miss_names_the_first_header_token_mispredicted():
    """Unshifted argmax: the header [7, 8] of a gold row [11, 12, 7, 8, 5] is predicted one position early."""
    from axolotl_decselfmask.stage2.string_match import header_miss, header_start

    gold = [11, 12, 7, 8, 5]
    assert header_start(gold, [7, 8]) == 2 and header_start([1, 2], [7, 8]) == -1
    assert header_miss([12, 7, 8, 5, 2], gold, [7, 8]) is None  # the header is there: nothing missed
    assert header_miss([12, 99, 8, 5, 2], gold, [7, 8]) == (0, 99)  # a newline, say, for the end of turn
    assert header_miss([12, 7, 3, 5, 2], gold, [7, 8]) == (1, 3)
    assert header_miss([12, 99, 8, 5, 2], [7, 8, 5], [7, 8]) is None  # no position before the gold header
