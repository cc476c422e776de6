import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs one worker a core), each worker and the processes it starts
    keep to their own cores: torch, and the plugin's thread count in `axolotl train`, size themselves to the
    affinity, so two workers never fight over one core. Runs before anything imports torch."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= count:
        os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) :: count])


@pytest.fixture(autouse=True)
def builtin_defaults(monkeypatch):
    """Each test sees the plugin's built-in defaults, whether or not the defaults the issue-34 rule chose are
    written (axolotl_decselfmask/measured_defaults.json, docs/results.md amendment D1): tests/unit/test_apply_defaults.py
    tests what that file sets. Processes a test starts (`axolotl train`) read the file as a user's would."""
    from axolotl_decselfmask import protocol

    for table in (protocol.PRESETS, protocol.RECIPE_KEYS, protocol.FULL_FINETUNE_KEYS):
        monkeypatch.setitem(table, "default", {})


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


def make_tiny_llama(folder: Path, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """A tiny random Llama with the real SmolLM2 tokenizer, saved as a model folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(require_smollm())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=layers,
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
