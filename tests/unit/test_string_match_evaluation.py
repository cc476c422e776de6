"""``classification.scorer: both`` through the evaluation (stage2/evaluation.py): joint stage 2 of two
tasks (one single-label, one multi-label) on a tiny random Llama with SmolLM2's tokenizer writes the
authors' string-match figures beside the option ones; then the same tasks read from a model that
predicts every next token of its input (a perfect run), one that answers the other option of a
yes/no task (in format, wrong) and one that answers a word that is no option (off format), with
their Macro F1 worked out by hand. The headers the chat templates give, against the authors' strings."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import LABELS, base_recipe, data_rows, run_stage2_captured, write_rows
from sklearn.metrics import f1_score

from axolotl_decselfmask.stage2 import outputs
from axolotl_decselfmask.stage2.string_match import assistant_header, header_and_special


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("string-match")
    test = data_rows("abstracts_test.jsonl", per_class=1)
    train = data_rows("abstracts_train.jsonl", per_class=1)
    write_rows(tmp / "train.jsonl", train)
    write_rows(tmp / "test.jsonl", test)
    yes_no = lambda rows: [dict(r, label="yes" if r["label"] == "neoplasms" else "no") for r in rows]  # noqa: E731
    write_rows(tmp / "train_neo.jsonl", yes_no(train))
    write_rows(tmp / "test_neo.jsonl", yes_no(test))
    sets = lambda rows: [dict(r, label=[r["label"], "neoplasms"]) for r in rows]  # noqa: E731
    write_rows(tmp / "train_ml.jsonl", sets(train))
    write_rows(tmp / "test_ml.jsonl", sets(test))
    recipe = base_recipe(tmp, tiny_llama, stage1=False)
    recipe["sequence_len"] = 256
    block = recipe["decselfmask"]
    block["classification"].update(train=False, scorer="both", max_length=256)
    block["tasks"] = [
        {"task": "neoplasm", "train_file": str(tmp / "train_neo.jsonl"), "test_file": str(tmp / "test_neo.jsonl"),
         "labels": ["yes", "no"], "question": "Is the text above about a neoplasm?"},
        {"task": "topics", "train_file": str(tmp / "train_ml.jsonl"), "test_file": str(tmp / "test_ml.jsonl"),
         "labels": LABELS, "multi_label": True},
    ]
    metrics, log = run_stage2_captured(recipe, tmp / "out")
    return tmp / "out", dict(recipe, output_dir=str(tmp / "out")), metrics, log


def test_metrics_and_predictions_carry_the_string_match_figures(scored, smollm_tok):
    out, _, metrics, log = scored
    header, special, text, rule = header_and_special(smollm_tok)
    assert (text, rule) == ("<|im_end|>\n<|im_start|>assistant\n", "chatml")
    assert f"assistant header {text!r}" in log
    for task in ("neoplasm", "topics"):
        entry = metrics["tasks"][task]
        assert "macro_f1" in entry and entry["string_match"]["header_ids"] == header
        assert entry["string_match"]["shift"] is False
    rows = outputs.read_predictions(out, "neoplasm")
    yes, no = (smollm_tok(w, add_special_tokens=False)["input_ids"] for w in ("yes", "no"))
    for r in rows:  # the gold answer read from the rendered row is the gold label's ids
        assert r["string_match"]["gold"] == "".join(map(str, yes if r["gold"] == "yes" else no))
        assert r["string_match"]["off_format"] == (r["string_match"]["pred"] not in {"".join(map(str, yes)),
                                                                                      "".join(map(str, no))})
    topics = outputs.read_predictions(out, "topics")
    assert set(topics[0]["string_match"]["per_label"]) == set(LABELS)
    # pooled as the authors pool: one Macro F1 over every note of every task, classes = gold and predicted strings
    every = outputs.string_match_notes(out)
    assert set(every) == {"neoplasm", *(f"topics/{y}" for y in LABELS)}
    gold = [n["gold"] for v in every.values() for n in v]
    pred = [n["pred"] for v in every.values() for n in v]
    pooled = metrics["string_match"]
    assert pooled["macro_f1"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert pooled["n"] == len(rows) * (1 + len(LABELS))
    assert pooled["off_format"] == pytest.approx(sum(n["off_format"] for v in every.values() for n in v) / len(gold))


class NextToken(torch.nn.Module):
    """Predicts at each position the input's next token (``swap`` applied), and the newline after the last."""

    def __init__(self, newline: int, vocab: int, swap: dict[int, int] | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.newline, self.vocab, self.swap = newline, vocab, swap or {}

    def forward(self, input_ids, attention_mask):
        nxt = torch.full_like(input_ids, self.newline)
        nxt[:, :-1] = input_ids[:, 1:]
        for i, n in enumerate(attention_mask.sum(1).tolist()):
            nxt[i, n - 1] = self.newline
        nxt = nxt.apply_(lambda t: self.swap.get(t, t))
        logits = torch.nn.functional.one_hot(nxt, self.vocab).float()
        return type("Out", (), {"logits": logits})()


def _rescore(scored, smollm_tok, swap):
    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage2.evaluation import evaluate_string_match
    from axolotl_decselfmask.stage2.run import prepare_tasks

    _, recipe, _, _ = scored
    config = DecSelfMaskConfig(**copy.deepcopy(recipe["decselfmask"]))
    tasks = [t for t in prepare_tasks(DictDefault(recipe), config, smollm_tok) if t.name == "neoplasm"]
    model = NextToken(smollm_tok("\n", add_special_tokens=False)["input_ids"][0], len(smollm_tok), swap)
    return evaluate_string_match(DictDefault(recipe), config, tasks, model, smollm_tok, {}), tasks[0].gold


def test_a_perfect_run_gives_one_and_no_off_format(scored, smollm_tok):
    metrics, _ = _rescore(scored, smollm_tok, None)
    assert metrics["tasks"]["neoplasm"]["string_match"]["macro_f1"] == 1.0
    assert metrics["tasks"]["neoplasm"]["string_match"]["off_format"] == 0.0


def test_a_header_not_predicted_is_said_with_the_token_predicted_instead(scored, smollm_tok, capsys):
    """The end of the user's turn predicted as a newline (what untouched SmolLM2 does, docs/results.md): no
    header in any predicted sequence, every answer off format, and the log and records say which token."""
    (end,) = smollm_tok("<|im_end|>", add_special_tokens=False)["input_ids"]
    (newline,) = smollm_tok("\n", add_special_tokens=False)["input_ids"]
    metrics, gold = _rescore(scored, smollm_tok, {end: newline})
    entry = metrics["tasks"]["neoplasm"]["string_match"]
    assert entry["off_format"] == 1.0 and entry["off_format_no_header"] == 1.0
    rows = outputs.read_predictions(scored[0], "neoplasm")
    assert all(r["string_match"]["header_found"] is False for r in rows)
    assert {(r["string_match"]["header_miss"]["expected"], r["string_match"]["header_miss"]["predicted"])
            for r in rows} == {("<|im_end|>", "\n")}
    assert f"off format {len(gold)}/{len(gold)} ({len(gold)} without the header: '\\n' predicted for " \
           f"'<|im_end|>' {len(gold)}x)" in capsys.readouterr().out
    metrics, _ = _rescore(scored, smollm_tok, None)  # a perfect run finds every header
    assert metrics["tasks"]["neoplasm"]["string_match"]["off_format_no_header"] == 0.0
    assert all(r["string_match"]["header_found"] and "header_miss" not in r["string_match"]
               for r in outputs.read_predictions(scored[0], "neoplasm"))


def test_wrong_and_off_format_answers_by_hand(scored, smollm_tok):
    (yes,), (no,), (maybe,) = (smollm_tok(w, add_special_tokens=False)["input_ids"] for w in ("yes", "no", "maybe"))
    metrics, gold = _rescore(scored, smollm_tok, {yes: no})  # every "yes" answered "no": in format, wrong
    n_yes, n = gold.count("yes"), len(gold)
    assert 0 < n_yes < n
    f1_no = 2 * (n - n_yes) / ((n - n_yes) + n)  # precision (n - n_yes) / n, recall 1
    entry = metrics["tasks"]["neoplasm"]["string_match"]
    assert entry["macro_f1"] == pytest.approx((0.0 + f1_no) / 2) and entry["off_format"] == 0.0
    metrics, _ = _rescore(scored, smollm_tok, {yes: maybe})  # "maybe": a class of its own with F1 0
    entry = metrics["tasks"]["neoplasm"]["string_match"]
    assert entry["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert entry["off_format"] == pytest.approx(n_yes / n)
    rows = outputs.read_predictions(scored[0], "neoplasm")
    assert {r["string_match"]["answer"] for r in rows if r["gold"] == "yes"} == {"maybe"}


@pytest.mark.parametrize("name, expected", [
    ("qwen2.5-coder-0.5b-instruct", ("<|im_end|>\n<|im_start|>assistant\n", "chatml")),  # the authors' Qwen string
])
def test_headers_from_the_chat_templates(name, expected):
    from pathlib import Path

    from transformers import AutoTokenizer

    folder = Path(__file__).resolve().parents[2] / "models" / "tokenizers" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not set up (make tokenizers)")
    tok = AutoTokenizer.from_pretrained(folder)
    assert assistant_header(tok) == expected
    header, special, _, rule = header_and_special(tok)
    assert header == tok(expected[0], add_special_tokens=False)["input_ids"]
    assert (tok("\n", add_special_tokens=False)["input_ids"][0] in special) == (rule == "chatml")


def test_llama3_template_gives_the_authors_llama_header(smollm_tok):
    tok = copy.deepcopy(smollm_tok)
    tok.chat_template = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                         "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
                         "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")  # Llama 3's layout
    assert assistant_header(tok) == ("<|start_header_id|>assistant<|end_header_id|>\n\n", "llama3")
    tok.chat_template = ("{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else "
                         "m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}"
                         "<start_of_turn>model\n{% endif %}")  # Gemma's layout: the authors' Gemma string
    assert assistant_header(tok) == ("<start_of_turn>model\n", "template")


def test_records_written_before_header_found_give_no_share():
    from axolotl_decselfmask.stage2.evaluation import _figures

    notes = [{"gold": "1", "pred": "1", "off_format": False, "header_found": True},
             {"gold": "2", "pred": "9", "off_format": True, "header_found": False}]
    assert _figures(notes, {})["off_format_no_header"] == 0.5
    assert _figures([*notes, {"gold": "2", "pred": "2", "off_format": False}], {})["off_format_no_header"] is None
