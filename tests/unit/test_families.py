"""Every relevance method on tiny random models of several families; quantised relevance."""

import numpy as np
import pytest
import torch
from helpers import COMMON, FAMILIES
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.relevance import build_relevance_prompt, load_relevance_model
from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS, MethodNotSupported
from axolotl_decselfmask.relevance.methods.attnlrp import AttnLRP
from axolotl_decselfmask.stage1.precompute import check_method

TEXT = "A 71-year-old man with dilated cardiomyopathy received a pacemaker. He has type 2 diabetes."


@pytest.fixture(scope="module")
def family_models(tmp_path_factory, smollm_path):
    tok = AutoTokenizer.from_pretrained(smollm_path)
    folders = {}
    for name, extra in FAMILIES.items():
        kwargs = {**COMMON, **extra}
        config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **kwargs)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_method_runs_on_every_family(family_models, family):
    folder = family_models[family]
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = [build_relevance_prompt(tok, TEXT, "Presence of pacemaker", "Which finding?"),
               build_relevance_prompt(tok, TEXT[:50], "Presence of diabetes", "Which finding?")]
    for name, cls in BUILTIN_METHODS.items():
        model = load_relevance_model(str(folder), "float32", "cpu", eager_attention=cls.needs_eager_attention)
        assert model.config.model_type == (family if family != "gemma3_text" else "gemma3_text")
        out = cls(model, tok, steps=4, unit="word").attribute(prompts)
        assert [o.shape for o in out] == [(len(p.text_positions),) for p in prompts], name
        assert all(np.isfinite(o).all() and np.abs(o).max() > 0 for o in out), name


def test_attnlrp_refuses_clearly_before_weights_load(family_models, tmp_path):
    """Every family here is supported (tests/test_attnlrp.py); another family stops at the config."""
    for folder in family_models.values():
        AttnLRP.check_model_config(AutoConfig.from_pretrained(folder))
        check_method(DecSelfMaskConfig(relevance={"method": "attnlrp"}), str(folder))
    AutoConfig.for_model("gpt2").save_pretrained(tmp_path)
    with pytest.raises(MethodNotSupported, match="supports the families .*'gpt2'"):
        check_method(DecSelfMaskConfig(relevance={"method": "attnlrp"}), str(tmp_path))


def test_unknown_method_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"method 'gradcam' is unknown; available: \[.*'grad_x_input'"):
        DecSelfMaskConfig(relevance={"method": "gradcam"})
    with pytest.raises(ValidationError, match="selector 'best' is unknown"):
        DecSelfMaskConfig(spans={"selector": "best"})


@pytest.mark.slow  # bitsandbytes on a CPU: half a minute each (make test-slow)
@pytest.mark.parametrize("bits", ["load_in_8bit", "load_in_4bit"])
def test_relevance_on_a_quantised_copy(smollm_path, smollm_tok, bits):
    prompts = [build_relevance_prompt(smollm_tok, TEXT, "Presence of pacemaker", "Which finding?")]
    full = BUILTIN_METHODS["grad_x_input"](load_relevance_model(str(smollm_path), "float32", "cpu"),
                                           smollm_tok).attribute(prompts)[0]
    model = load_relevance_model(str(smollm_path), "float32", "cpu", **{bits: True})
    quant = BUILTIN_METHODS["grad_x_input"](model, smollm_tok).attribute(prompts)[0]
    assert np.isfinite(quant).all()
    # a quantised copy ranks the tokens much like the full model
    assert np.corrcoef(np.abs(full), np.abs(quant))[0, 1] > 0.5
