"""The authors' relevance settings: the max_logit target, the completion-style lead-in, and the
cache keys and configuration around them (and the 3-tap span kernel's key)."""

import numpy as np
import pytest
import torch

from axolotl_decselfmask import compat
from axolotl_decselfmask.args import (
    DEFAULT_COMPLETION_LEAD_IN,
    DEFAULT_LEAD_IN,
    DecSelfMaskConfig,
)
from axolotl_decselfmask.relevance import build_relevance_prompt
from axolotl_decselfmask.relevance.methods import (
    AttentionRelevance,
    GradientXInput,
    IntegratedGradients,
)
from axolotl_decselfmask.stage1.cache import examples_key, relevance_key
from axolotl_decselfmask.stage1.examples import span_settings

TEXT = ("A 71-year-old man with dilated cardiomyopathy and complete heart block received a "
        "dual-chamber pacemaker. He has type 2 diabetes treated with metformin.")


def _logits(model, prompt):
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt.input_ids])).logits[0].float()


# --- the completion-style lead-in ---------------------------------------------------------------
@pytest.mark.parametrize("style,lead_in", [("question", DEFAULT_LEAD_IN), ("completion", DEFAULT_COMPLETION_LEAD_IN)])
@pytest.mark.parametrize("item", ["Presence of pacemaker", "heart block", "x"])
def test_text_and_item_located_in_both_styles_on_smollm2(smollm_tok, style, lead_in, item):
    tok = smollm_tok
    p = build_relevance_prompt(tok, TEXT, item, lead_in, style)
    decoded = tok.decode(p.input_ids)
    assert tok.decode([p.input_ids[i] for i in p.item_positions]).strip() == item
    assert tok.decode([p.input_ids[i] for i in p.text_positions]) == TEXT
    assert "".join(TEXT[s:e] for s, e in p.offsets) == TEXT
    # the lead-in closes the user turn; the item alone is the assistant turn, right after its header
    user, assistant = decoded.split("<|im_start|>assistant\n")
    sep = "\n\n" if style == "question" else "\n "
    assert user.endswith(f"{TEXT}{sep}{lead_in}<|im_end|>\n")
    assert assistant == f"{item}<|im_end|>"
    assert p.item_positions == list(range(p.item_positions[0], p.item_positions[-1] + 1))
    assert p.item_positions[-1] == len(p.input_ids) - 2  # then the end-of-turn token
    assert max(p.text_positions) < p.item_positions[0]


def test_completion_style_changes_only_the_user_turn(smollm_tok):
    q = build_relevance_prompt(smollm_tok, TEXT, "Presence of pacemaker", DEFAULT_LEAD_IN, "question")
    c = build_relevance_prompt(smollm_tok, TEXT, "Presence of pacemaker", DEFAULT_COMPLETION_LEAD_IN, "completion")
    assert q.text_positions == c.text_positions and q.offsets == c.offsets
    assert [q.input_ids[i] for i in q.item_positions] == [c.input_ids[i] for i in c.item_positions]
    assert q.input_ids != c.input_ids
    with pytest.raises(ValueError, match="style"):
        build_relevance_prompt(smollm_tok, TEXT, "x", DEFAULT_LEAD_IN, "chat")


def test_prompt_style_config_and_its_lead_in():
    assert DecSelfMaskConfig().relevance.prompt_style == "question"
    assert DecSelfMaskConfig().relevance.lead_in == DEFAULT_LEAD_IN
    completion = DecSelfMaskConfig(relevance={"prompt_style": "completion"}).relevance
    assert completion.lead_in == DEFAULT_COMPLETION_LEAD_IN  # the question default does not fit
    own = DecSelfMaskConfig(relevance={"prompt_style": "completion", "lead_in": "In this abstract we find"})
    assert own.relevance.lead_in == "In this abstract we find"  # an explicit lead_in wins
    assert DecSelfMaskConfig(relevance={"lead_in": "Which disease?"}).relevance.lead_in == "Which disease?"
    again = DecSelfMaskConfig(relevance=completion.model_dump())
    assert again.relevance.lead_in == DEFAULT_COMPLETION_LEAD_IN  # a dumped config reads back the same
    with pytest.raises(ValueError, match="prompt_style"):
        DecSelfMaskConfig(relevance={"prompt_style": "plain"})


# --- the max_logit target -------------------------------------------------------------------------
def test_max_logit_reads_the_largest_logit_at_the_middle_item_token(smollm_model, smollm_tok):
    """The authors' target: max over the vocabulary of the logits at the middle item token's own
    position. For "pacemaker" the position that predicts the middle token ("pace") has another argmax,
    so token_logit (the logit of "pace" there) and max_logit are different numbers and give
    different maps."""
    model, tok = smollm_model, smollm_tok
    p = build_relevance_prompt(tok, TEXT, "pacemaker", DEFAULT_LEAD_IN)
    ids, logits = p.input_ids, _logits(model, p)
    mid = p.item_positions[(len(p.item_positions) - 1) // 2]
    assert int(logits[mid - 1].argmax()) != ids[mid]  # the item token is not the predicted one
    maxl = GradientXInput(model, tok, target="max_logit")
    tokl = GradientXInput(model, tok, target="token_logit")
    assert maxl.logit_points(p) == [(mid, ids[mid])] and tokl.logit_points(p) == [(mid - 1, ids[mid])]
    with torch.no_grad():
        got_max = float(maxl.scores(maxl.batch([p]), input_ids=maxl.batch([p]).ids)[0])
        got_tok = float(tokl.scores(tokl.batch([p]), input_ids=tokl.batch([p]).ids)[0])
    assert got_max == pytest.approx(float(logits[mid].max()), rel=1e-5)
    assert got_tok == pytest.approx(float(logits[mid - 1, ids[mid]]), rel=1e-5)
    assert got_max > got_tok + 1.0
    a, b = maxl.attribute([p])[0], tokl.attribute([p])[0]
    assert np.abs(a).max() > 0 and np.corrcoef(a, b)[0, 1] < 0.99


def test_max_logit_first_and_last_and_the_shared_prefix_item_blindness(smollm_model, smollm_tok):
    """token_position picks the token; the middle token of "Presence of ..." items is the same
    word, and max_logit at it sees only the item's start: every such item gives the same map."""
    model, tok = smollm_model, smollm_tok
    p = build_relevance_prompt(tok, TEXT, "Presence of pacemaker", DEFAULT_LEAD_IN)
    ips = p.item_positions
    for position, pos in (("first", ips[0]), ("middle", ips[(len(ips) - 1) // 2]), ("last", ips[-1])):
        assert GradientXInput(model, tok, target="max_logit", token_position=position).logit_points(p)[0][0] == pos
    method = GradientXInput(model, tok, target="max_logit")
    prompts = [build_relevance_prompt(tok, TEXT, it, DEFAULT_LEAD_IN) for it in
               ("Presence of pacemaker", "Presence of diabetes")]
    maps = method.attribute(prompts)
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6)
    last = GradientXInput(model, tok, target="max_logit", token_position="last").attribute(prompts)
    assert not np.allclose(last[0], last[1], rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("method_cls", [IntegratedGradients, AttentionRelevance])
def test_other_methods_take_max_logit(smollm_model, smollm_tok, method_cls):
    p = build_relevance_prompt(smollm_tok, TEXT[:80], "pacemaker", DEFAULT_LEAD_IN)
    before = compat.attn_implementation(smollm_model)  # the attention method switches to eager
    try:
        rel = method_cls(smollm_model, smollm_tok, target="max_logit", steps=2).attribute([p])[0]
        other = method_cls(smollm_model, smollm_tok, target="token_logit", steps=2).attribute([p])[0]
    finally:
        compat.restore_attention(smollm_model, before)
    assert rel.shape == (len(p.text_positions),) and np.isfinite(rel).all() and np.abs(rel).max() > 0
    assert not np.allclose(rel, other)


def test_unknown_target_is_refused(smollm_model, smollm_tok):
    with pytest.raises(ValueError, match="max_logit"):
        GradientXInput(smollm_model, smollm_tok, target="max")
    assert DecSelfMaskConfig(relevance={"target": "max_logit"}).relevance.target == "max_logit"


# --- cache keys ---------------------------------------------------------------------------------
def test_cache_keys_follow_the_new_settings(smollm_path, smollm_tok):
    def keys(**block):
        cfg = DecSelfMaskConfig(items=["neoplasms"], **block)
        rk = relevance_key(cfg, str(smollm_path), smollm_tok, "texts")
        return rk, examples_key(cfg, rk)

    base = keys()
    assert keys(relevance={"prompt_style": "completion"})[0] != base[0]
    assert keys(relevance={"target": "max_logit"})[0] != base[0]
    # the kernel: other examples, the same relevance (reused)
    nine = keys(spans={"truncate": 4.0})
    assert nine[0] == base[0] and nine[1] != base[1]
    assert span_settings(DecSelfMaskConfig(spans={"truncate": 4.0})).truncate == 4.0
    assert span_settings(DecSelfMaskConfig()).truncate == 1.0
    with pytest.raises(ValueError, match="truncate"):
        DecSelfMaskConfig(spans={"truncate": 0})


# --- through the precompute -----------------------------------------------------------------------
def test_precompute_scores_the_authors_prompt_and_target(tmp_path, smollm_path, smollm_tok, smollm_model):
    """The cached relevance of a completion-style, max_logit, AttnLRP run is the map of that prompt
    and target (the settings reach the prompt builder and the method), and its spans give examples."""
    from axolotl_decselfmask.relevance.methods import AttnLRP
    from axolotl_decselfmask.stage1.cache import read_records
    from axolotl_decselfmask.stage1.precompute import run_precompute

    texts = [TEXT, TEXT[:90]]
    cfg = DecSelfMaskConfig(items=["pacemaker"], relevance={
        "method": "attnlrp", "target": "max_logit", "prompt_style": "completion", "dtype": "float32",
        "device": "cpu"})
    result = run_precompute(texts, cfg, smollm_tok, str(smollm_path), tmp_path, progress=False)
    assert result.examples and all(ex["masked_text"].count(cfg.masking.mask_token) == 1 for ex in result.examples)
    records, _ = read_records(next(tmp_path.glob("relevance-*")))
    method = AttnLRP(smollm_model, smollm_tok, target="max_logit")
    for rec in records:
        prompt = build_relevance_prompt(smollm_tok, texts[rec["text_index"]], "pacemaker",
                                        DEFAULT_COMPLETION_LEAD_IN, "completion")
        np.testing.assert_allclose(rec["scores"], method.attribute([prompt])[0], rtol=1e-3, atol=1e-5)
        question = build_relevance_prompt(smollm_tok, texts[rec["text_index"]], "pacemaker", DEFAULT_LEAD_IN)
        assert not np.allclose(rec["scores"], method.attribute([question])[0], rtol=1e-2, atol=1e-4)
