import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = ROOT / "models" / "smollm2-135m-instruct"
DATA = ROOT / "examples" / "data"


def require_smollm():
    if not (SMOLLM / "config.json").is_file():
        pytest.skip(f"{SMOLLM} is missing: run `make model` first")
    return SMOLLM


@pytest.fixture(scope="session")
def smollm_path():
    return require_smollm()


@pytest.fixture(scope="session")
def smollm_tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(require_smollm())


@pytest.fixture(scope="session")
def smollm_model():
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(require_smollm(), dtype="float32")
    model.eval()
    model.requires_grad_(False)
    return model


def make_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A tiny random Llama with the real SmolLM2 tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(require_smollm())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
