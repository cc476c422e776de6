"""The recipes under recipes/: Axolotl's own validation, and `axolotl preprocess` per architecture.

(a) Every recipe validates against Axolotl 0.19's config schema with this plugin's schema merged
    in (``axolotl.utils.config.validate_config``, the function ``axolotl train`` calls), offline:
    the hub model ids are never loaded. ``normalize_config`` (which reads the model's config from
    the hub) is the one step of Axolotl's ``load_cfg`` left out. Axolotl drops unknown top-level
    keys silently, so the test also checks every top-level key against the merged schema.
(b) Each architecture of the recipes (llama, qwen3, gemma3_text, gemma3 multimodal, phi3,
    mistral) goes through ``axolotl preprocess`` with the family's recipe, its base_model replaced
    by a tiny random model of that family (the SmolLM2 tokenizer, given the family's chat template
    so the family's prompt layout is exercised), small data files, and CPU-safe overrides. One
    process runs all families (Axolotl's import dominates a CLI start on 2 cores).
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DATA, ROOT, require_smollm
from helpers import validate_recipe

from axolotl_decselfmask.tools.experiments.methods import (
    BASELINE_METHODS,
    definition_problems,
)

RECIPES = ROOT / "recipes"
ALL_RECIPES = sorted(RECIPES.rglob("*.yml"))
FAMILY_RECIPES = sorted(RECIPES.glob("*.yml"))
BASELINES = sorted((RECIPES / "baselines").glob("*.yml"))
PAPER_STAGE2 = {"lora_r": 32, "lora_alpha": 64, "learning_rate": 3e-4, "num_epochs": 1}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())




def _schema_keys() -> set[str]:
    from axolotl.cli.config import prepare_plugins
    from axolotl.integrations.config import merge_input_args
    from axolotl.utils.dict import DictDefault

    prepare_plugins(DictDefault({"plugins": ["axolotl_decselfmask.DecSelfMaskPlugin"]}))
    _, input_config = merge_input_args()
    keys = set()
    for name, field in input_config.model_fields.items():
        keys |= {name, field.alias} - {None}
    return keys


def test_there_are_recipes():
    names = {p.stem for p in FAMILY_RECIPES}
    assert names == {
        "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "llama-3.1-8b-instruct", "qwen3-1.7b", "qwen3-8b",
        "gemma-3-1b-it", "gemma-3-4b-it", "phi-3.5-mini-instruct", "mistral-7b-instruct-v0.3"}
    assert {p.stem.removeprefix("llama-3.2-1b-") for p in BASELINES} == set(BASELINE_METHODS)  # one file per method
    assert (RECIPES / "multi_gpu" / "llama-3.1-8b-instruct-zero2.yml").is_file()


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_validates_with_axolotl(path):
    from axolotl_decselfmask.args import DecSelfMaskConfig

    raw = _load(path)
    unknown = set(raw) - _schema_keys()
    assert not unknown, f"{path.name}: keys Axolotl would drop silently: {sorted(unknown)}"
    cfg = validate_recipe(raw)
    assert cfg["plugins"] == ["axolotl_decselfmask.DecSelfMaskPlugin"]
    block = DecSelfMaskConfig(**raw["decselfmask"])
    assert cfg["decselfmask"]["classification"]["labels"] == block.classification.labels
    # every recipe keeps the paper's stage-2 settings
    c = block.classification
    assert (c.lora_r, c.lora_alpha, c.learning_rate, c.num_epochs) == tuple(PAPER_STAGE2.values())
    assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True
    assert cfg["datasets"][0]["type"].startswith("axolotl_decselfmask.")
    if path.parent == RECIPES:  # the single-GPU family recipes
        assert raw["bf16"] == "auto"  # resolved to bf16 by Axolotl on a GPU that has it
        assert raw["datasets"][0]["path"] == "data/unlabelled.jsonl"
        assert raw["datasets"][0]["type"] == "axolotl_decselfmask.masked_reconstruction"
        assert block.stage1 and c.enabled and c.train


def test_a_wrong_key_inside_decselfmask_fails_validation():
    from pydantic import ValidationError

    raw = _load(RECIPES / "llama-3.2-1b-instruct.yml")
    validate_recipe(raw)  # the recipe as it is passes
    for where, block in [("top", raw["decselfmask"]), ("relevance", raw["decselfmask"]["relevance"]),
                         ("classification", raw["decselfmask"]["classification"])]:
        bad = copy.deepcopy(raw)
        target = bad["decselfmask"] if where == "top" else bad["decselfmask"][where]
        target["lora_rank"] = 8
        with pytest.raises(ValidationError, match="lora_rank"):
            validate_recipe(bad)
    bad = copy.deepcopy(raw)
    bad["decselfmask"]["spans"]["low"] = 0.9  # above spans.high
    with pytest.raises(ValidationError, match="must be below"):
        validate_recipe(bad)


def _baselines() -> dict[str, dict]:
    return {p.stem.removeprefix("llama-3.2-1b-"): _load(p) for p in BASELINES}


def test_baselines_differ_only_in_their_method():
    """Each baseline sets exactly the keys that METHODS (tools/experiments/methods.py) gives its
    method, and is the same as the others everywhere else: a changed definition fails here."""
    recipes = _baselines()
    budgets = {r["decselfmask"]["stage1_token_budget"] for r in recipes.values()}
    assert len(budgets) == 1  # every stage-1 method trains on the same token budget
    assert set(recipes) == set(BASELINE_METHODS)
    problems = definition_problems(recipes, ignore=("output_dir",))
    assert not problems, "\n".join(problems)


def test_random_masking_baseline_reuses_the_relevance_of_decselfmask():
    """Same relevance (one cache in the shared dataset_prepared_path), other spans."""
    from types import SimpleNamespace

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.stage1.cache import examples_key, relevance_key

    recipes = _baselines()
    assert recipes["random_masking"]["dataset_prepared_path"] == recipes["decselfmask"]["dataset_prepared_path"]
    tok = SimpleNamespace(chat_template=None)
    cfgs = {m: DecSelfMaskConfig(**recipes[m]["decselfmask"]) for m in ("random_masking", "decselfmask")}
    rkeys = {m: relevance_key(c, recipes[m]["base_model"], tok, "pool") for m, c in cfgs.items()}
    assert rkeys["random_masking"] == rkeys["decselfmask"]
    assert examples_key(cfgs["random_masking"], rkeys["random_masking"]) != examples_key(
        cfgs["decselfmask"], rkeys["decselfmask"])


def test_multi_gpu_recipe_uses_axolotls_deepspeed_config():
    raw = _load(RECIPES / "multi_gpu" / "llama-3.1-8b-instruct-zero2.yml")
    assert raw["deepspeed"] == "deepspeed_configs/zero2.json"  # written by `axolotl fetch deepspeed_configs`
    assert raw["decselfmask"]["classification"]["enabled"] is False
    stage2 = _load(RECIPES / "multi_gpu" / "llama-3.1-8b-instruct-stage2.yml")
    assert stage2["base_model"] == raw["output_dir"] + "/merged"  # where `axolotl merge-lora` writes
    assert stage2["decselfmask"]["stage1"] is False


# ----------------------------------------------------------------------------- (b) preprocess

TEMPLATES = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
    "site-packages" / "axolotl" / "utils" / "chat_templates" / "templates"
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=2048)
# architecture -> (recipe, text-config kwargs, chat template given to the tiny tokenizer (Axolotl's copy of
# the family's template; None: the recipe sets its own), a marker of that template in the tokenised example)
FAMILIES = {
    "llama": ("llama-3.2-1b-instruct", dict(model_type="llama"), "llama3", "<|start_header_id|>assistant"),
    "qwen3": ("qwen3-1.7b", dict(model_type="qwen3", head_dim=16), "qwen3", "</think>"),
    "gemma3_text": ("gemma-3-1b-it", dict(model_type="gemma3_text", head_dim=16), "gemma3", "<start_of_turn>model"),
    "gemma3": ("gemma-3-4b-it", dict(model_type="gemma3", head_dim=16), "gemma3", "<start_of_turn>model"),
    "phi3": ("phi-3.5-mini-instruct", dict(model_type="phi3"), "phi_35", "<|assistant|>"),
    # relevance on a 4-bit copy (bitsandbytes 0.50.2 runs nf4 on CPU), and the recipe's own chat template
    "mistral": ("mistral-7b-instruct-v0.3", dict(model_type="mistral"), None, "[/INST] "),
}


def _tiny_model(name: str, folder: Path) -> Path:
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        Gemma3Config,
    )

    tok = AutoTokenizer.from_pretrained(require_smollm())
    kwargs = {**COMMON, **FAMILIES[name][1]}
    model_type = kwargs.pop("model_type")
    ids = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id)
    if model_type == "gemma3":  # the multimodal checkpoint of Gemma 3 4B: a tiny SigLIP tower too
        text = AutoConfig.for_model("gemma3_text", **ids, **kwargs)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=32, patch_size=16)
        config = Gemma3Config(text_config=text.to_dict(), vision_config=vision, mm_tokens_per_image=4,
                              boi_token_index=tok.bos_token_id, eoi_token_index=tok.eos_token_id,
                              image_token_index=len(tok) - 1, **{k: v for k, v in ids.items() if k != "vocab_size"})
    else:
        config = AutoConfig.for_model(model_type, **ids, **kwargs)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    assert model.config.model_type == model_type
    model.save_pretrained(folder)
    template = FAMILIES[name][2]
    if template:
        tok.chat_template = (TEMPLATES / f"{template}.jinja").read_text()
    tok.save_pretrained(folder)
    return folder


def data_rows(name, n):
    return [json.loads(line) for line in (DATA / name).read_text().splitlines()][:n]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _cpu_recipe(family: str, tmp: Path) -> dict:
    """The family's recipe from recipes/, pointed at a tiny model and small files, made CPU-safe."""
    raw = _load(RECIPES / f"{FAMILIES[family][0]}.yml")
    run = tmp / family
    raw["base_model"] = str(_tiny_model(family, tmp / f"model-{family}"))
    raw["datasets"][0]["path"] = str(tmp / "pool.jsonl")
    raw["dataset_prepared_path"] = str(run / "prepared")
    raw["output_dir"] = str(run / "out")
    raw.update(bf16=False, fp16=False, tf32=False, optimizer="adamw_torch")  # no GPU here
    # load_in_4bit / adapter: qlora stay: preprocess does not load the training model. The kernels are
    # already false in every recipe.
    assert not any(raw[k] for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel"))
    dsm = raw["decselfmask"]
    dsm["max_texts"] = 6
    # random weights give near-flat relevance: let a lone peak seed a span (as tests/test_integration.py)
    dsm["spans"]["rescale_after_smoothing"] = True
    dsm["relevance"]["batch_size"] = 2
    c = dsm["classification"]
    c.update(train_file=str(tmp / "train.jsonl"), test_file=str(tmp / "test.jsonl"),
             labels=sorted({r["label"] for r in data_rows("abstracts_train.jsonl", 400)}))
    return raw


PREPROCESS_ALL = """
import sys
from axolotl.cli.preprocess import do_cli
for recipe in sys.argv[1:]:
    print("=== preprocess", recipe, flush=True)
    do_cli(config=recipe, debug_num_examples=0)
    print("=== done", recipe, flush=True)
"""


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory):
    require_smollm()
    tmp = tmp_path_factory.mktemp("recipes")
    write_rows(tmp / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", 6))
    train = [json.loads(l) for l in (DATA / "abstracts_train.jsonl").read_text().splitlines()]
    write_rows(tmp / "train.jsonl", train[:10])
    write_rows(tmp / "test.jsonl", data_rows("abstracts_test.jsonl", 5))
    paths = []
    for family in FAMILIES:
        path = tmp / f"{family}.yml"
        path.write_text(yaml.safe_dump(_cpu_recipe(family, tmp)))
        paths.append(str(path))
    env = dict(os.environ, HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1", TOKENIZERS_PARALLELISM="false",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    # One process for all families: the same do_cli that `axolotl preprocess recipe.yml --debug-num-examples 0` runs.
    proc = subprocess.run([sys.executable, "-c", PREPROCESS_ALL, *paths], cwd=tmp, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)  # one log, in order
    log = proc.stdout
    assert proc.returncode == 0, log[-8000:]
    return tmp, log


@pytest.mark.parametrize("family", list(FAMILIES))
def test_recipe_preprocesses_on_a_tiny_model_of_its_family(preprocessed, family):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tmp, log = preprocessed
    section = log.split(f"=== preprocess {tmp / family}.yml")[1].split("=== done")[0]
    assert "self-relevance" in section
    assert "masked examples from 6 texts" in section
    cache = tmp / family / "prepared" / "decselfmask"
    ex_dirs = list(cache.glob("examples-*"))
    assert len(ex_dirs) == 1
    examples = [json.loads(l) for l in (ex_dirs[0] / "examples.jsonl").read_text().splitlines()]
    mask = json.loads((ex_dirs[0] / "manifest.json").read_text())["settings"]["masking"]["mask_token"]
    assert examples and all(ex["masked_text"].count(mask) == len(ex["spans"]) >= 1 for ex in examples)
    # Axolotl's tokenised stage-1 dataset, rendered with the family's chat template
    infos = list((tmp / family / "prepared").glob("decselfmask-*/**/dataset_info.json"))
    assert len(infos) == 1, infos
    ds = load_from_disk(str(infos[0].parent))
    assert len(ds) == len(examples)
    tok = AutoTokenizer.from_pretrained(tmp / f"model-{family}")
    first = ds[0]
    text = tok.decode(first["input_ids"])
    assert FAMILIES[family][3] in text, text[:400]
    answer = tok.decode([t for t, l in zip(first["input_ids"], first["labels"]) if l != -100])
    # the loss is on the masked span(s) of one of the examples (Axolotl shuffles the rows)
    assert any(ex["answer"].strip() in answer for ex in examples), answer
    from axolotl_decselfmask.mask_token import choose_mask_token

    choose_mask_token(tok, add=True)  # with mask_token: auto, Axolotl's tokenizer has the added token; this one not
    assert mask in tok.decode([t for t, l in zip(first["input_ids"], first["labels"]) if l == -100])
