"""AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML 2024), implemented here from the paper's rules; no external LRP library.

Relevance is gradient x input, with the backward pass changed so that it equals LRP: the
relevance of a tensor ``z`` is ``z * g_z`` where ``g_z`` is the *modified* gradient of the target.
Each rule is a local change of one operation's backward; in that form they are:

- **linear layers** (projections, ``lm_head``, the fused ``qkv_proj``/``gate_up_proj`` of Phi-3,
  rotary embeddings, embedding scales, residual sums): the epsilon rule, which for bias-free
  layers *is* the plain gradient (``sum_i x_i (W^T g)_i = sum_j y_j g_j``); ``epsilon`` -> 0.
- **normalisation** (every ``*RMSNorm``, incl. Gemma's ``(1 + w)`` one and Qwen3's/Gemma 3's
  query/key norms): the identity rule with the normalising factor as a constant. RMSNorm is
  ``y = x * c(x)`` elementwise, so its backward becomes ``g * y / x`` (``1/rms`` and the weight,
  constant). No supported family has a LayerNorm (mean-centring); a model with one is refused.
- **elementwise non-linearities** (SiLU, GELU and every activation module in the MLP, gated or
  not; also Gemma 2's tanh soft-capping of attention logits and of the final logits): the
  identity rule, backward ``g * f(x) / x``.
- **products of two inputs** (``act(gate) * up`` in gated MLPs, ``Q K^T``, ``softmax(..) V``):
  the uniform rule, each input gets half. For a bilinear product the plain gradient gives each
  input the whole relevance, so the rule is the plain gradient times 0.5 at the product's output.
- **softmax**: the AttnLRP rule ``R_in = x (R_out - s sum(R_out))``. With ``R_out = s g`` this is
  ``x_i (s_i g_i - s_i sum_j s_j g_j)``, i.e. ``x`` times the *plain* softmax gradient: the rule
  is the softmax's own backward. The causal/padding mask is a constant bias on ``x``: it takes no
  relevance and masked entries have ``s = 0``, so there is no ``-inf * 0`` anywhere (the
  relevance is only ever formed at the input embeddings).

**Conservation.** Every rule above except the softmax conserves relevance exactly: with a
bias-free model, summed over all input positions, the input relevance equals the target logit.
The softmax rule is a linearisation and leaves out its bias term (``sum(s g) - sum(x s (g - s.g))``
per row); tests/test_attnlrp.py measures what that leaves out (on SmolLM2 the inputs hold
24-55% of the logit), and shows exact conservation
when the attention weights are treated as constants (``attention_rule="cp"``, the
"conservative propagation" of Ali et al., ICML 2022: relevance flows through the values only).

**How it is applied**, for one :meth:`AttnLRP.attribute` call and undone afterwards (training
in the same process is unaffected), through transformers' and PyTorch's extension points only:

- the attention: a function registered as ``"decselfmask_lrp"`` in transformers'
  ``AttentionInterface`` (with sdpa's masks) and selected with ``model.set_attn_implementation``;
  the model's own implementation (eager, sdpa, ...) is restored afterwards. So whatever the
  model was loaded with, sdpa or eager is never what runs inside attribute(): this function
  is. It calls PyTorch's fused ``scaled_dot_product_attention`` with the rules folded into
  gradient scales (uniform at ``softmax(..) V``: 1/2 to the values and to the softmax; plain
  softmax gradient; uniform at ``Q K^T``: another 1/2, so 1/4 to the queries and keys). That is
  the same arithmetic as the explicit eager form (``attention_path="explicit"``, which computes
  ``Q K^T``, the softmax and ``A V`` one by one with the rules), which is used whenever the
  layer soft-caps its logits (Gemma 2). tests/test_attnlrp.py checks that both paths agree.
- norms and activations: a forward pre-hook hands the module a detached input, so nothing of
  its own operations is recorded for autograd (the rule's backward never used that record), and
  a forward hook ties its output back to the original input with the rule's backward; found by
  ``isinstance`` (``nn.RMSNorm``, transformers' activation classes, PyTorch's elementwise
  activations) or by class name (``*RMSNorm``).
- the gated product: a forward pre-hook on the MLP's ``down_proj``, whose input is that product
  in every supported family (``gate_proj``/``up_proj`` or Phi-3's fused ``gate_up_proj``).
- the final logit soft-cap (Gemma 2): switched off in the config for the call and applied in
  the target with the identity rule.

**Targets.** ``token_logit``: the relevance sums (up to the softmax terms) to that logit.
``max_logit`` (the authors' target): the gradient of a maximum is that of its largest entry, so
the relevance sums (up to the softmax terms) to the largest logit, as for ``token_logit``.
``sum_logprob``: the gradient passes through ``log_softmax`` normally (its plain derivative),
with the LRP rules inside the network; such maps do not sum to the log-probability
(``log_softmax`` is neither linear nor handled by a rule).

Batching (right padding), targets and the shared-prefix scoring of several items of one text
are those of :class:`GradientXInput` (subclassed): the rules change only backward passes, and
the chain rule through a shared prefix's cache holds for them as for plain gradients
(tests/test_attnlrp.py compares shared and separate scorings).

Cost: one forward and one backward pass, as grad x input, plus a division and a multiplication
per norm and activation; the modules' own autograd records that grad x input keeps are left out,
which pays for them (docs/benchmark.md, "AttnLRP's cost": 2.31 forward equivalents a note, as grad x
input, against 2.51 before, on the same machine).

Notice: the authors of LRP (Fraunhofer HHI) state that LRP is a patented technology that can
be used free of charge for personal and scientific purposes; check before other use.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from axolotl_decselfmask import compat
from axolotl_decselfmask.relevance.methods.base import MethodNotSupported
from axolotl_decselfmask.relevance.methods.grad_x_input import GradientXInput

ATTENTION_NAME = "decselfmask_lrp"

#: the families checked in tests/test_families.py and tests/test_attnlrp.py (SmolLM2 is llama)
FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "mistral", "phi3")

ATTENTION_RULES = ("attnlrp", "cp")
ATTENTION_PATHS = ("fused", "explicit")


# ---------------------------------------------------------------------------------------
# the rules, as autograd functions
# ---------------------------------------------------------------------------------------
class _Linearised(torch.autograd.Function):
    """Forward: ``y = f(x)`` as computed by the model (passed in, unchanged). Backward:
    ``g * y / x`` elementwise: the identity rule (``f`` elementwise) or a norm with its
    normalising factor as a constant (``y = x * c``). Where ``x == 0`` exactly, the ratio is
    taken as 0 (that entry carries no relevance there either)."""

    @staticmethod
    def forward(ctx, x, y):
        if x.dtype in (torch.float16, torch.bfloat16):
            xf, yf = x.float(), y.float()
        else:
            xf, yf = x, y.to(x.dtype)
        # y / x, and 0 where x == 0 (0/0 and c/0 give nan and inf, both set to 0 in place): the same
        # values as torch.where(x == 0, 0, y / x) wherever y / x is finite, in one pass less
        ratio = torch.div(yf, xf).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
        ctx.save_for_backward(ratio)
        return y

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return (grad * ratio).to(grad.dtype), None


def linearised(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y`` with the backward ``g * y / x`` (see :class:`_Linearised`)."""
    if not (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)):
        return y
    return _Linearised.apply(x, y)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, gradient times a constant."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1.0 or not (torch.is_grad_enabled() and x.requires_grad):
        return x
    return _ScaleGrad.apply(x, factor)


def softcap_identity(x: torch.Tensor, cap: float) -> torch.Tensor:
    """``cap * tanh(x / cap)`` with the identity rule."""
    with torch.no_grad():
        y = torch.tanh(x / cap) * cap
    return linearised(x, y)


# ---------------------------------------------------------------------------------------
# the attention function
# ---------------------------------------------------------------------------------------
@dataclass
class _State:
    rule: str = "attnlrp"
    path: str = "fused"
    calls: int = 0
    unsupported: list[str] = field(default_factory=list)
    #: diagnostics (explicit path only): relevance each softmax leaves out, summed in the backward pass
    record_leak: bool = False
    softmax_leak: list[torch.Tensor] = field(default_factory=list)


_STATE: contextvars.ContextVar[_State | None] = contextvars.ContextVar("decselfmask_lrp_state", default=None)


def _repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    if groups == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


def _record_leak(state, scores, weights):
    """Accumulate ``sum(R_out) - sum(R_in)`` of the softmax (``R_out = s g_s``, ``R_in = x g_x``,
    ``x`` without the mask) into ``state.softmax_leak`` during the backward pass."""
    if not (torch.is_grad_enabled() and scores.requires_grad):
        return

    def out_hook(grad):
        state.softmax_leak.append((weights.detach().double() * grad.double()).sum())

    def in_hook(grad):
        state.softmax_leak.append(-(scores.detach().double() * grad.double()).sum())

    weights.register_hook(out_hook)
    scores.register_hook(in_hook)


def _explicit_attention(module, query, key, value, attention_mask, scaling, softcap, rule, state=None):
    """Eager attention with the rules spelt out: uniform at ``Q K^T``, identity at the
    soft-cap, AttnLRP softmax (its own gradient), uniform at ``A V`` (``rule="cp"``: the
    attention weights are constants, the values get all the relevance)."""
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if rule == "cp":
        query, key = query.detach(), key.detach()
    scores = scale_grad(torch.matmul(query, key.transpose(2, 3)), 0.5) * scaling
    if softcap is not None:
        scores = softcap_identity(scores, softcap)
    q_len, kv_len = scores.shape[-2:]
    unmasked = scores
    if attention_mask is None:
        if q_len > 1:  # what sdpa's is_causal means: upper-left aligned causal mask
            causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=scores.device).tril()
            scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
    elif attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attention_mask[..., :kv_len], torch.finfo(scores.dtype).min)
    else:
        scores = scores + attention_mask[..., :kv_len]
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if state is not None and state.record_leak and rule != "cp":
        _record_leak(state, unmasked, weights)
    if rule == "cp":
        weights = weights.detach()
        out = torch.matmul(weights, value)
    else:
        out = scale_grad(torch.matmul(weights, value), 0.5)
    return out.transpose(1, 2).contiguous(), weights


def lrp_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, softcap=None, **kwargs):
    """The attention function registered as ``"decselfmask_lrp"`` (transformers'
    ``AttentionInterface`` signature). Outside :func:`lrp_rules` it is plain sdpa."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    state = _STATE.get()
    if state is None:  # selected by someone outside attribute(): no rules
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=dropout,
                                               scaling=scaling, **kwargs)
    state.calls += 1
    for name in ("s_aux", "sinks", "position_bias"):
        if kwargs.get(name) is not None:
            state.unsupported.append(f"{type(module).__name__} passes {name}")
    if dropout:
        state.unsupported.append("attention dropout (the model is in training mode)")
    if softcap is not None or state.path == "explicit" or kwargs.get("output_attentions"):
        return _explicit_attention(module, query, key, value, attention_mask, scaling, softcap, state.rule, state)
    if state.rule == "cp":
        query, key = query.detach(), key.detach()
    else:
        # uniform at A V (1/2 to A and to V), plain softmax gradient, uniform at Q K^T (another 1/2)
        query, key, value = scale_grad(query, 0.25), scale_grad(key, 0.25), scale_grad(value, 0.5)
    return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask, dropout=0.0,
                                           scaling=scaling, **kwargs)


# ---------------------------------------------------------------------------------------
# finding the modules the rules apply to
# ---------------------------------------------------------------------------------------
def _activation_classes() -> tuple[type, ...]:
    from transformers import activations

    classes = set()
    for value in activations.ACT2CLS.values():
        cls = value[0] if isinstance(value, tuple) else value
        if isinstance(cls, type):
            classes.add(cls)
    classes.update((nn.SiLU, nn.GELU, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Mish, nn.LeakyReLU, nn.ELU, nn.Softplus,
                    nn.Hardswish, nn.ReLU6, nn.PReLU))
    return tuple(classes)


_OTHER_NORMS = ("LayerNorm", "GroupNorm")


def _is_rms_norm(module) -> bool:
    return isinstance(module, getattr(nn, "RMSNorm", ())) or type(module).__name__.endswith("RMSNorm")


@dataclass
class Plan:
    """The modules of a model that get a rule."""

    norms: list[nn.Module]
    activations: list[nn.Module]
    gated_down_projs: list[nn.Linear]


def plan_for(model) -> Plan:
    """Find the norms, activations and gated MLPs; raise :class:`MethodNotSupported` for a
    structure the rules here do not cover (another normalisation, a gated or expert MLP of
    another layout). An activation in a module without a gate is an ungated MLP: identity
    rule only."""
    acts = _activation_classes()
    plan = Plan([], [], [])
    problems = []
    for name, module in model.named_modules():
        if _is_rms_norm(module):
            plan.norms.append(module)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or type(module).__name__.endswith(_OTHER_NORMS):
            problems.append(f"{name} ({type(module).__name__}: an unknown normalisation)")
        children = dict(module.named_children())
        act_children = [c for c in children.values() if isinstance(c, acts)]
        if not act_children:
            continue
        plan.activations.extend(act_children)
        down = children.get("down_proj")
        gated = isinstance(down, nn.Linear) and (
            (isinstance(children.get("gate_proj"), nn.Linear) and isinstance(children.get("up_proj"), nn.Linear))
            or isinstance(children.get("gate_up_proj"), nn.Linear))
        if gated and len(act_children) == 1:
            plan.gated_down_projs.append(down)
        elif any(k in children or hasattr(module, k) for k in ("gate_proj", "gate_up_proj", "experts")):
            problems.append(f"{name} ({type(module).__name__}: a gated or expert MLP of an unknown layout)")
    if problems:
        raise MethodNotSupported("relevance.method attnlrp has no rule for: " + "; ".join(problems))
    return plan


# ---------------------------------------------------------------------------------------
# applying and undoing the rules
# ---------------------------------------------------------------------------------------
class _DetachedRule:
    """A norm or activation run on a detached copy of its input, its output tied back to the
    input by :func:`linearised`: the rule's backward (``g * y / x``) is all that reaches the
    input, so the module's own operations need no autograd record (their saved tensors and
    graph were built and never used). A forward pre-hook detaches the input and keeps the
    original, the forward hook takes it back (a stack: a module may be called again inside
    its own call)."""

    def __init__(self):
        self.inputs: list[torch.Tensor | None] = []

    def pre(self, module, args):
        x = args[0] if args else None
        if not (isinstance(x, torch.Tensor) and torch.is_grad_enabled() and x.requires_grad):
            self.inputs.append(None)
            return None
        self.inputs.append(x)
        return (x.detach(), *args[1:])

    def post(self, module, args, output):
        x = self.inputs.pop() if self.inputs else None
        return linearised(args[0] if x is None else x, output)

    def attach(self, module) -> list:
        return [module.register_forward_pre_hook(self.pre), module.register_forward_hook(self.post)]


def _half_input_hook(module, args):
    return (scale_grad(args[0], 0.5), *args[1:])


def final_logit_softcap(model) -> float | None:
    return getattr(model.config.get_text_config(), "final_logit_softcapping", None)


@contextlib.contextmanager
def lrp_rules(model, rule: str = "attnlrp", path: str = "fused"):
    """Apply the AttnLRP rules to ``model`` for the duration of the block; undo everything
    afterwards (hooks removed, the attention implementation and the final soft-cap restored).
    Inside, the caller applies the final logit soft-cap itself (:func:`final_logit_softcap`,
    :func:`softcap_identity`)."""
    if rule not in ATTENTION_RULES:
        raise ValueError(f"attention_rule {rule!r}: one of {ATTENTION_RULES}")
    if path not in ATTENTION_PATHS:
        raise ValueError(f"attention_path {path!r}: one of {ATTENTION_PATHS}")
    if not compat.dispatches_attention_by_name(model):
        raise MethodNotSupported(f"relevance.method attnlrp: {type(model).__name__} does not select its attention "
                                 "through transformers' AttentionInterface")
    plan = plan_for(model)
    compat.register_attention_function(ATTENTION_NAME, lrp_attention)
    before = compat.attn_implementation(model)
    text_config = model.config.get_text_config()
    cap = final_logit_softcap(model)
    handles = []
    state = _State(rule=rule, path=path)
    token = _STATE.set(state)
    try:
        for m in plan.norms + plan.activations:
            handles += _DetachedRule().attach(m)
        handles += [m.register_forward_pre_hook(_half_input_hook) for m in plan.gated_down_projs]
        if cap is not None:
            text_config.final_logit_softcapping = None
        if before != ATTENTION_NAME:
            model.set_attn_implementation(ATTENTION_NAME)
        if compat.attn_implementation(model) != ATTENTION_NAME:
            raise MethodNotSupported(f"relevance.method attnlrp: {type(model).__name__} did not take the attention "
                                     f"function {ATTENTION_NAME!r}")
        yield state
        if state.unsupported:
            raise MethodNotSupported("relevance.method attnlrp has no rule for: " + "; ".join(
                sorted(set(state.unsupported))))
    finally:
        _STATE.reset(token)
        for h in handles:
            h.remove()
        if cap is not None:
            text_config.final_logit_softcapping = cap
        if before is not None and compat.attn_implementation(model) != before:
            model.set_attn_implementation(before)


# ---------------------------------------------------------------------------------------
# the method
# ---------------------------------------------------------------------------------------
class AttnLRP(GradientXInput):
    """AttnLRP relevance (see the module docstring): gradient x input of the input embeddings
    with the LRP rules in the backward pass, batched and targeted as :class:`GradientXInput`.

    Options: ``attention_rule`` (``"attnlrp"``, the default, or ``"cp"``: attention weights as
    constants), ``attention_path`` (``"fused"``, the default, or ``"explicit"``: the eager
    reference form), ``share_prefix`` and ``fast_backward`` as for grad x input."""

    name = "attnlrp"
    needs_eager_attention = False  # it installs its own attention function for the call

    def __init__(self, model, tokenizer, target="sum_logprob", token_position="middle", **options):
        super().__init__(model, tokenizer, target, token_position, **options)
        self.attention_rule = options.get("attention_rule", "attnlrp")
        self.attention_path = options.get("attention_path", "fused")
        self._cap: float | None = None

    @classmethod
    def check_model_config(cls, config) -> None:
        model_type = getattr(config, "model_type", "?")
        if model_type not in FAMILIES:
            raise MethodNotSupported(
                f"relevance.method attnlrp supports the families {sorted(FAMILIES)}; this model is {model_type!r}. "
                "Use grad_x_input or integrated_gradients.")

    def target_values(self, logits, targets, rows, n):
        if self._cap is not None:
            logits = softcap_identity(logits.float(), self._cap)
        return super().target_values(logits, targets, rows, n)

    def conservation(self, prompt) -> dict[str, float]:
        """Diagnostics for one prompt: the target, the sum of the relevance of *all* its input
        positions (prompt tokens included), and what the softmax rule left out (summed over
        every softmax row; computed on the explicit attention path). With a bias-free model
        ``target == total + softmax_leak`` up to rounding."""
        self.check_model_config(self.model.config)
        batch = self.batch([prompt])
        self._cap = final_logit_softcap(self.model)
        try:
            with lrp_rules(self.model, self.attention_rule, "explicit") as state:
                state.record_leak = True
                embeds = self.embedding(batch.ids).detach().requires_grad_(True)
                with torch.enable_grad():
                    score = self.scores(batch, inputs_embeds=embeds).sum()
                    (grad,) = torch.autograd.grad(score, embeds)
        finally:
            self._cap = None
        total = (embeds.detach().double() * grad.double()).sum()
        leak = sum(state.softmax_leak, torch.zeros((), dtype=torch.float64))
        return {"target": float(score.detach()), "total": float(total), "softmax_leak": float(leak)}

    def attribute(self, prompts) -> list[np.ndarray]:
        self.check_model_config(self.model.config)
        self._cap = final_logit_softcap(self.model)
        try:
            with lrp_rules(self.model, self.attention_rule, self.attention_path) as state:
                out = super().attribute(prompts)
                if state.calls == 0:
                    raise MethodNotSupported(f"relevance.method attnlrp: {type(self.model).__name__} never called "
                                             f"the attention function {ATTENTION_NAME!r}")
        finally:
            self._cap = None
        return out
