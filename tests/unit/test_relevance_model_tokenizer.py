"""``decselfmask.relevance.model`` with a tokenizer other than the student's (the authors took Llama-3.1-8B
relevance for every student): the relevance model reads the text through its own tokenizer, and its
spans land on the right characters of the text for the student, whose tokenizer splits it otherwise."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import ROOT, require_smollm
from helpers import assert_well_formed, data_rows
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
)

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.prompts import (
    ensure_chat_template,
    reconstruction_messages,
    tokenize_for_training,
)
from axolotl_decselfmask.relevance import build_relevance_prompt
from axolotl_decselfmask.relevance.methods import GradientXInput
from axolotl_decselfmask.stage1.examples import mask_text, unmask
from axolotl_decselfmask.stage1.precompute import run_precompute, scoring_tokenizer

TOKENIZERS = ROOT / "models" / "tokenizers"
ITEMS = ["neoplasms", "cardiovascular diseases"]
TEXTS = [r["text"][:400].rsplit(" ", 1)[0] for r in data_rows("abstracts_test.jsonl", 3)]


def _word_level(folder):
    """A word-level tokenizer built offline (words and punctuation, one token each): it splits every
    text unlike SmolLM2's byte-level BPE."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = sorted({w for t in TEXTS + ITEMS + ["Which clinical finding does the text above describe?"]
                    for w, _ in split(t)})
    specials = ["<unk>", "<pad>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    tok.add_special_tokens({"additional_special_tokens": specials[3:]})
    return tok


def _scorer(kind, folder):
    """A tiny random Llama whose tokenizer is ``kind`` (another family's, or a word-level one)."""
    if kind == "word-level":
        tok = _word_level(folder)
    else:
        path = TOKENIZERS / kind
        if not (path / "tokenizer.json").is_file():
            pytest.skip(f"{path} is missing (`make tokenizers` writes it)")
        tok = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tok)  # Gemma 3 270M and the word-level one have none: the plugin's fallback
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["qwen2.5-coder-0.5b-instruct", "gemma-3-270m", "word-level"])
def test_spans_of_another_tokenizers_model_land_on_the_students_text(tmp_path, kind):
    scorer = _scorer(kind, tmp_path / "scorer")
    scorer_tok = AutoTokenizer.from_pretrained(scorer)
    student = AutoTokenizer.from_pretrained(require_smollm())  # its own copy: the mask token is added to it
    assert [len(scorer_tok(t, add_special_tokens=False)["input_ids"]) for t in TEXTS] != \
        [len(student(t, add_special_tokens=False)["input_ids"]) for t in TEXTS]  # they do split it otherwise
    cfg = DecSelfMaskConfig(items=ITEMS, items_per_text=2,
                            relevance={"method": "grad_x_input", "model": str(scorer), "dtype": "float32", "batch_size": 2},
                            spans={"high": 0.05, "low": 0.01, "max_span_fraction": 1.0})
    result = run_precompute(TEXTS, cfg, student, str(scorer), tmp_path / "cache", progress=False)

    # relevance: the scorer's own tokens and maps, exactly as scoring the scorer's prompts directly
    model = AutoModelForCausalLM.from_pretrained(scorer, dtype=torch.float32).eval().requires_grad_(False)
    method = GradientXInput(model, scorer_tok)
    records = [r for part in sorted((tmp_path / "cache").glob("relevance-*/part-*.json"))
               for r in json.loads(part.read_text())["records"]]
    assert len(records) == len(TEXTS) * len(ITEMS)
    for r in records:
        text = TEXTS[r["text_index"]]
        prompt = build_relevance_prompt(scorer_tok, text, r["item"], cfg.relevance.lead_in)
        assert [tuple(o) for o in r["offsets"]] == prompt.offsets
        assert all(0 <= s < e <= len(text) for s, e in prompt.offsets)
        np.testing.assert_allclose(r["scores"], method.attribute([prompt])[0], rtol=1e-4, atol=1e-7)

    # the student's examples: word-aligned spans of the text's own characters, rebuilt through the student's tokens
    assert result.examples
    mask = cfg.masking.mask_token
    for ex in result.examples:
        text = TEXTS[ex["text_index"]]
        spans = [tuple(s) for s in ex["spans"]]
        assert_well_formed(spans, text)
        assert ex["answer"] == "\n".join(text[s:e] for s, e in spans)
        assert ex["masked_text"] == mask_text(text, spans, mask)
        ids = student(ex["masked_text"], add_special_tokens=False)["input_ids"]
        assert unmask(student.decode(ids), [ex["answer"]], mask) == text
        row = tokenize_for_training(student, reconstruction_messages(ex["masked_text"], ex["answer"],
                                                                     cfg.masking.system_prompt))
        answer = student.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100])
        assert answer.startswith(ex["answer"]) and ex["masked_text"] in student.decode(row["input_ids"])


def test_the_students_tokenizer_is_kept_when_the_relevance_model_shares_it(tmp_path, tiny_llama):
    """A relevance model with the student's tokenizer (Llama-3.1-8B for a Llama 3.2 student) scores through
    the student's tokenizer (its chat template, its added mask token), as when relevance.model is unset."""
    student = AutoTokenizer.from_pretrained(require_smollm())
    student.add_special_tokens({"additional_special_tokens": ["<|decselfmask_mask|>"]})
    student.chat_template = student.chat_template + " "  # the recipe's own template
    for model in (None, str(tiny_llama)):
        cfg = DecSelfMaskConfig(relevance={"model": model} if model else {})
        assert scoring_tokenizer(cfg, student, str(tiny_llama)) is student
    other = _scorer("word-level", tmp_path / "scorer")
    chosen = scoring_tokenizer(DecSelfMaskConfig(relevance={"model": str(other)}), student, str(other))
    assert chosen is not student and chosen.get_vocab() == AutoTokenizer.from_pretrained(other).get_vocab()
