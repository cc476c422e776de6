"""AttnLRP (our own implementation of the paper's rules): conservation, every family of
tests/test_families.py, restoring the model, padding invariance, the targets."""

import numpy as np
import pytest
import torch
from helpers import COMMON, FAMILIES
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask import compat
from axolotl_decselfmask.relevance import build_relevance_prompt, compute_relevance
from axolotl_decselfmask.relevance.methods import (
    BUILTIN_METHODS,
    GradientXInput,
    MethodNotSupported,
)
from axolotl_decselfmask.relevance.methods.attnlrp import (
    ATTENTION_NAME,
    AttnLRP,
    lrp_rules,
)

LEAD_IN = "Which clinical finding does the text above describe?"
TEXT = ("A 71-year-old man with dilated cardiomyopathy and complete heart block received a "
        "dual-chamber pacemaker. He has type 2 diabetes treated with metformin.")
BIASED = {"qwen2"}  # q/k/v biases: relevance goes to them, so the inputs' sum is not the target


@pytest.fixture(scope="module")
def tok(smollm_path):
    return AutoTokenizer.from_pretrained(smollm_path)


def _build(tok, family, seed=0, **overrides):
    kwargs = {**COMMON, **FAMILIES[family], **overrides}
    config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).double()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def models(tok):
    return {family: _build(tok, family) for family in FAMILIES}


def _prompts(tok):
    return [build_relevance_prompt(tok, TEXT, "Presence of pacemaker", LEAD_IN),
            build_relevance_prompt(tok, TEXT[:50], "Presence of diabetes", LEAD_IN),
            build_relevance_prompt(tok, TEXT[:90], "heart block", LEAD_IN)]


# --- conservation ------------------------------------------------------------------------
def test_conservation_on_a_logit_target_tiny_llama(models, tok):
    """Bias-free float64 Llama, target ``token_logit``, relevance summed over every input
    position (prompt tokens included).

    The target is computed in float32 by the shared target code (base.target_values), so the
    identities below hold to float32 rounding of the target (measured: ~3e-8 relative): rel=1e-6.

    - With the AttnLRP softmax rule the inputs' sum misses exactly what the softmax
      linearisation leaves out (its bias terms, summed row by row in the backward pass):
      target == total + leak. The leak is not small: on this model and prompt (measured)
      first token: target 0.1993, total 0.2197 (leak -10% of the target); middle: 0.0453 vs
      -0.0190 (the target is near 0, the leak is 142% of it); last: 0.2038 vs 0.1679 (18%).
      On SmolLM2 the inputs hold 24-55% of the logit (test_attnlrp_on_smollm2).
    - With the attention weights as constants (``attention_rule="cp"``) every rule left is
      exactly conservative: target == total."""
    model = models["llama"]
    prompt = _prompts(tok)[0]
    measured = {"first": (0.1993, 0.2197), "middle": (0.0453, -0.0190), "last": (0.2038, 0.1679)}
    for position, (target, total) in measured.items():
        c = AttnLRP(model, tok, target="token_logit", token_position=position).conservation(prompt)
        assert c["target"] == pytest.approx(c["total"] + c["softmax_leak"], rel=1e-6, abs=1e-9), (position, c)
        assert (c["target"], c["total"]) == pytest.approx((target, total), abs=1e-4), (position, c)
        cp = AttnLRP(model, tok, target="token_logit", token_position=position,
                     attention_rule="cp").conservation(prompt)
        assert cp["softmax_leak"] == 0
        assert cp["total"] == pytest.approx(cp["target"], rel=1e-6, abs=1e-9), (position, cp)


def test_conservation_on_the_max_logit_target_tiny_llama(models, tok):
    """The authors' target, the largest vocabulary logit at the item token's own position: the
    gradient of a maximum is that of its largest entry, so the identities of token_logit hold
    (target == total + leak; with constant attention target == total), and the target is that
    largest logit of a plain forward pass (the rules change only the backward pass)."""
    model = models["llama"]
    prompt = _prompts(tok)[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt.input_ids])).logits[0].float()
    for position in ("first", "middle", "last"):
        method = AttnLRP(model, tok, target="max_logit", token_position=position)
        (pos,) = method.scored_positions(prompt)
        c = method.conservation(prompt)
        assert c["target"] == pytest.approx(float(logits[pos].max()), rel=1e-6), (position, c)
        assert c["target"] != pytest.approx(float(logits[pos - 1, prompt.input_ids[pos]]), rel=1e-3)  # not token_logit
        assert c["target"] == pytest.approx(c["total"] + c["softmax_leak"], rel=1e-6, abs=1e-9), (position, c)
        assert abs(c["softmax_leak"]) > 1e-6  # the softmax rule does leave something out here
        cp = AttnLRP(model, tok, target="max_logit", token_position=position, attention_rule="cp").conservation(prompt)
        assert cp["softmax_leak"] == 0
        assert cp["total"] == pytest.approx(cp["target"], rel=1e-6, abs=1e-9), (position, cp)


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - BIASED))
def test_every_nonlinearity_of_every_bias_free_family_has_a_rule(models, tok, family):
    """Exact conservation with constant attention on each bias-free family shows that no
    non-linearity escaped the rules (Gemma's soft-caps and (1+w) norms, Qwen3's/Gemma 3's q/k
    norms, Phi-3's fused projections); with the softmax rule, target == total + leak."""
    prompt = _prompts(tok)[1]
    cp = AttnLRP(models[family], tok, target="token_logit", attention_rule="cp").conservation(prompt)
    assert cp["total"] == pytest.approx(cp["target"], rel=1e-6, abs=1e-9), cp
    c = AttnLRP(models[family], tok, target="token_logit").conservation(prompt)
    assert c["target"] == pytest.approx(c["total"] + c["softmax_leak"], rel=1e-6, abs=1e-9), c


def test_gemma2_soft_caps_are_on_in_the_tiny_model(models):
    config = models["gemma2"].config
    assert config.final_logit_softcapping and config.attn_logit_softcapping


# --- every family --------------------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("target", ["token_logit", "sum_logprob"])
def test_runs_on_every_family_and_differs_from_grad_x_input(models, tok, family, target):
    model = models[family]
    prompts = _prompts(tok)[:2]
    lrp = AttnLRP(model, tok, target=target).attribute(prompts)
    gxi = GradientXInput(model, tok, target=target).attribute(prompts)
    for p, a, g in zip(prompts, lrp, gxi):
        assert a.shape == (len(p.text_positions),) and np.isfinite(a).all() and np.abs(a).max() > 0
        assert not np.allclose(a, g, rtol=1e-2, atol=0), family


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text", "phi3"])
def test_fused_attention_equals_the_explicit_eager_form(models, tok, family):
    """The fused path (sdpa with the rules as gradient scales) computes the explicit rules
    (Gemma 2 soft-caps its attention logits, so it always takes the explicit path)."""
    prompts = _prompts(tok)
    for rule in ("attnlrp", "cp"):
        fused = AttnLRP(models[family], tok, target="token_logit", attention_rule=rule).attribute(prompts)
        explicit = AttnLRP(models[family], tok, target="token_logit", attention_rule=rule,
                           attention_path="explicit").attribute(prompts)
        for f, e in zip(fused, explicit):
            np.testing.assert_allclose(f, e, rtol=1e-5, atol=1e-6 * np.abs(e).max())


# --- the model afterwards --------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gemma2"])
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_model_is_restored_after_attribute(models, tok, family, implementation):
    model = models[family]
    model.set_attn_implementation(implementation)
    ids = torch.tensor([_prompts(tok)[0].input_ids])
    embeds = model.get_input_embeddings()(ids).requires_grad_(True)
    before = model(inputs_embeds=embeds).logits
    (grad_before,) = torch.autograd.grad(before[0, -1].sum(), embeds)
    cap = model.config.final_logit_softcapping if family == "gemma2" else None
    AttnLRP(model, tok).attribute(_prompts(tok))
    assert compat.attn_implementation(model) == implementation
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    if family == "gemma2":
        assert model.config.final_logit_softcapping == cap
    after = model(inputs_embeds=embeds).logits
    (grad_after,) = torch.autograd.grad(after[0, -1].sum(), embeds)
    assert torch.equal(before, after) and torch.equal(grad_before, grad_after)
    assert all(p.grad is None for p in model.parameters())


def test_model_is_restored_when_attribute_fails(models, tok):
    model = models["llama"]
    model.set_attn_implementation("sdpa")
    method = AttnLRP(model, tok)
    with pytest.raises(RuntimeError, match="boom"):
        with lrp_rules(model):
            assert compat.attn_implementation(model) == ATTENTION_NAME
            raise RuntimeError("boom")
    assert compat.attn_implementation(model) == "sdpa"
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert method.attribute(_prompts(tok)[:1])[0].size


# --- batching ----------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["sum_logprob", "token_logit", "max_logit"])
def test_a_prompts_map_does_not_depend_on_its_batch_companions(models, tok, target):
    method = AttnLRP(models["llama"], tok, target=target)
    prompts = _prompts(tok)
    batched = compute_relevance(method, prompts, batch_size=3)
    for p, b in zip(prompts, batched):
        np.testing.assert_allclose(b, method.attribute([p])[0], rtol=1e-6, atol=1e-9)
    # two companions of different lengths give the same map of prompt 0
    np.testing.assert_allclose(method.attribute(prompts[:2])[0], method.attribute([prompts[0], prompts[2]])[0],
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("target", ["sum_logprob", "token_logit", "max_logit"])
def test_items_of_one_text_share_their_prefix_with_the_same_maps(models, tok, target):
    """The shared-prefix scoring of GradientXInput, with the rules, equals separate scorings."""
    method = AttnLRP(models["llama"], tok, target=target)
    assert method.scores_items_together
    prompts = [build_relevance_prompt(tok, TEXT, item, LEAD_IN)
               for item in ("Presence of pacemaker", "Presence of diabetes", "heart block")]
    shared = method.attribute(prompts)
    assert method.attribute_shared_prefix(prompts) is not None
    for p, s in zip(prompts, shared):
        np.testing.assert_allclose(s, method.attribute([p])[0], rtol=1e-6, atol=1e-12)


# --- the norms' and activations' rule without an autograd record inside the module ---------------
class _WhereRatio(torch.autograd.Function):
    """The identity rule as first written: ``torch.where(x == 0, 0, y / x)`` saved in the forward."""

    @staticmethod
    def forward(ctx, x, y):
        ratio = torch.where(x == 0, torch.zeros((), dtype=x.dtype), y / x)
        ctx.save_for_backward(ratio)
        return y

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None


def _reference_rules(model):
    """The rules as applied before the modules ran on a detached input: a forward hook on each
    norm and activation ties its output (with the module's own autograd record) to its input."""
    import contextlib

    from axolotl_decselfmask.relevance.methods import attnlrp as lrp

    @contextlib.contextmanager
    def rules():
        plan = lrp.plan_for(model)
        compat.register_attention_function(ATTENTION_NAME, lrp.lrp_attention)
        before, token = compat.attn_implementation(model), lrp._STATE.set(lrp._State())
        hook = lambda m, args, out: _WhereRatio.apply(args[0], out)  # noqa: E731
        handles = [m.register_forward_hook(hook) for m in plan.norms + plan.activations]
        handles += [m.register_forward_pre_hook(lrp._half_input_hook) for m in plan.gated_down_projs]
        model.set_attn_implementation(ATTENTION_NAME)
        try:
            yield
        finally:
            lrp._STATE.reset(token)
            for h in handles:
                h.remove()
            model.set_attn_implementation(before)

    return rules()


@pytest.mark.parametrize("family", ["llama", "qwen3", "phi3"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_maps_equal_the_rules_with_the_modules_own_autograd_record(tok, family, dtype):
    """The norms and activations run on a detached input (no autograd record of their own
    operations, which the rule's backward never used): the maps are those of the rules applied
    on top of the modules' own record, bit for bit in float64 and float32."""
    model = _build(tok, family).to(dtype)
    prompts = _prompts(tok)
    method = AttnLRP(model, tok, share_prefix=False)
    maps = method.attribute(prompts)
    with _reference_rules(model):
        reference = GradientXInput._attribute_batch(method, prompts)
    for m, r in zip(maps, reference):
        np.testing.assert_allclose(m, r, rtol=1e-6, atol=0)
        assert np.abs(r).max() > 0
    # inside the rules a norm's output hangs on the rule alone: nothing recorded within the module
    norm, seen = model.model.norm, {"module": [], "rule": []}
    handles = [norm.register_forward_hook(lambda m, a, out: seen["module"].append(out.grad_fn))]  # runs first
    embeds = model.get_input_embeddings()(torch.tensor([prompts[0].input_ids])).requires_grad_(True)
    try:
        with lrp_rules(model), torch.enable_grad():
            handles.append(norm.register_forward_hook(lambda m, a, out: seen["rule"].append(out.grad_fn)))
            model(inputs_embeds=embeds, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    assert seen["module"] == [None]  # the module's own output: no graph behind it
    assert [type(fn).__name__ for fn in seen["rule"]] == ["_LinearisedBackward"]  # the rule ties it to the input


def test_identity_rule_is_zero_where_the_input_is_zero():
    from axolotl_decselfmask.relevance.methods.attnlrp import linearised

    x = torch.tensor([0.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.silu(x.detach())
    y[3] = 1.0  # a module whose output is not 0 at x == 0 (c / 0 = inf): the rule still gives 0 there
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(linearised(x, y), x, g)
    expected = g * torch.where(x.detach() == 0, torch.zeros((), dtype=x.dtype), y / x.detach())
    assert torch.equal(grad, expected) and grad[0] == 0 and grad[3] == 0


# --- targets, registry, config checks -------------------------------------------------------
def test_sum_logprob_runs_and_differs_from_token_logit(models, tok):
    prompts = _prompts(tok)[:1]
    logprob = AttnLRP(models["llama"], tok, target="sum_logprob").attribute(prompts)[0]
    logit = AttnLRP(models["llama"], tok, target="token_logit").attribute(prompts)[0]
    assert np.isfinite(logprob).all() and np.abs(logprob).max() > 0
    assert not np.allclose(logprob, logit)


def test_registered_and_refuses_unknown_families_before_weights_load():
    assert BUILTIN_METHODS["attnlrp"] is AttnLRP
    with pytest.raises(MethodNotSupported, match="supports the families .*'gpt2'"):
        AttnLRP.check_model_config(AutoConfig.for_model("gpt2"))
    for family in FAMILIES:
        AttnLRP.check_model_config(AutoConfig.for_model(FAMILIES[family]["model_type"]))


def test_attnlrp_on_smollm2(smollm_model, smollm_tok):
    """The real model (Llama family, float32): finite maps, different from grad x input, and
    the relevance of the whole input sums to the logit up to the softmax leak."""
    prompts = [build_relevance_prompt(smollm_tok, TEXT, "Presence of pacemaker", LEAD_IN),
               build_relevance_prompt(smollm_tok, TEXT[:60], "Presence of diabetes", LEAD_IN)]
    for target in ("sum_logprob", "token_logit"):
        lrp = AttnLRP(smollm_model, smollm_tok, target=target).attribute(prompts)
        gxi = GradientXInput(smollm_model, smollm_tok, target=target).attribute(prompts)
        for a, g in zip(lrp, gxi):
            assert np.isfinite(a).all() and np.abs(a).max() > 0
            assert np.corrcoef(a, g)[0, 1] < 0.99
    # float32: the identity to float32 rounding; the inputs hold about half of the logit (measured 0.53)
    c = AttnLRP(smollm_model, smollm_tok, target="token_logit").conservation(prompts[0])
    assert c["target"] == pytest.approx(c["total"] + c["softmax_leak"], rel=1e-4, abs=1e-4), c
    assert 0.2 < c["total"] / c["target"] < 0.8, c


def test_rules_refuse_a_structure_they_do_not_cover(tok):
    """GPT-2 has LayerNorms (mean-centring), for which there is no rule here."""
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=4, n_positions=64)).eval()
    before = compat.attn_implementation(gpt2)
    with pytest.raises(MethodNotSupported, match="no rule for: .*LayerNorm"), lrp_rules(gpt2):
        pass
    assert compat.attn_implementation(gpt2) == before
