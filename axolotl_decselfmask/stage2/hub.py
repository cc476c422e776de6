"""One classifier to share: ``decselfmask.hub_model_id``.

After stage 2, the evaluation and the model card, the main process builds ``<output_dir>/hub/``
(:func:`build_hub_folder`) and uploads it, whole, to the Hugging Face model repository
``decselfmask.hub_model_id`` in one commit (:func:`push_results`). Its root is the classifier
itself, stage 1 applied and the stage-2 LoRA merged in, the model the evaluation scored::

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("<output_dir>/hub")   # or the repository once uploaded
    tokenizer = AutoTokenizer.from_pretrained("<output_dir>/hub")

A QLoRA run (``adapter: qlora``, ``load_in_4bit: true``) merges nothing into 4 bits: the root is
the classifier's ONE adapter (stage 1's and stage 2's LoRAs stacked, stage 1's mask row;
:mod:`.quantized`) on the recipe's ``base_model``, with the tokenizer that has the mask token
(``AutoPeftModelForCausalLM`` grows the base's embedding to it), loaded in 4 bits as the evaluation
scored it (:data:`LOAD_CALL_4BIT`; the card writes out the quantisation)::

    model = AutoPeftModelForCausalLM.from_pretrained("<output_dir>/hub", quantization_config=BitsAndBytesConfig(...))

Beside it: ``stage2/calibration-<task>.json`` (each task's decision; ``multilabel-<task>.json`` and
``heads/`` where the run has them), ``metrics.json``, ``predictions-<task>.jsonl`` (ids and scores,
no text), ``split-<task>.json``, ``recipe.yml`` (the training recipe, secrets removed),
``predict.yml`` (the recipe that labels notes with this folder: ``axolotl decselfmask predict
predict.yml NOTES --out FILE`` run inside it) and ``README.md`` (the card). Where the classifier
is not one LoRA (``method: head``, ``train: false``) the root is the stage-1 model the heads or
the zero-shot prompts run on; with ``joint: false`` (a LoRA per task) it is the stage-1 model and
each task's adapter is in ``stage2/<task>/`` with the repository as its base
(``AutoPeftModelForCausalLM.from_pretrained("<output_dir>/hub", subfolder="stage2/<task>")``).

Axolotl's own ``hub_model_id`` is another choice: it pushes the stage-1 model (the mask-filler)
when stage 1 ends, before stage 2. Naming the same repository in both would put the mask-filler
and the classifier in one repository: :func:`start_warnings` says so at start. The repository is
created when missing (``hub_private``, default true: clinical notes), on the branch
``hub_revision``. The token is huggingface_hub's own lookup (``HF_TOKEN``, or the one ``hf auth
login`` saved); none is read from the recipe. Offline (``HF_HUB_OFFLINE=1``) or without a token,
the run says so at start, and at the end builds the folder and names the command that uploads it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2 import outputs

LOG = logging.getLogger(__name__)

#: what the shared folder's record says (``decselfmask_classifier.json``)
RECORD = "decselfmask_classifier.json"
RECIPE = "recipe.yml"
PREDICT_RECIPE = "predict.yml"
LOAD_CALL = "AutoModelForCausalLM.from_pretrained(folder)"
LOAD_CALL_4BIT = ("AutoPeftModelForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig("
                  "load_in_4bit=True, bnb_4bit_quant_type='nf4', ...)), the settings in the card")


# ------------------------------------------------------------------------------ checks at start

def unreachable() -> str | None:
    """Why the hub cannot be reached for an upload (offline mode, no token), else None."""
    import huggingface_hub
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set (offline mode)"
    if huggingface_hub.get_token() is None:
        return "huggingface_hub finds no token (set HF_TOKEN or run `hf auth login`)"
    return None


def token_warning(config) -> str | None:
    """The line for the start of a run whose upload cannot happen (None otherwise)."""
    if not config.hub_model_id:
        return None
    why = unreachable()
    if why is None:
        return None
    return (f"decselfmask.hub_model_id is {config.hub_model_id!r} but {why}: the run will build the folder to "
            f"share and not upload it (it says how at the end)")


def start_warnings(cfg, block: dict) -> list[str]:
    """Lines for the start of a run (the raw recipe): Axolotl's ``hub_model_id`` and the plugin's
    naming the same repository, and a shared classifier that is one adapter per task."""
    mine = (block or {}).get("hub_model_id")
    if not mine:
        return []
    lines = []
    if cfg.get("hub_model_id") == mine:
        lines.append(f"decselfmask: hub_model_id and decselfmask.hub_model_id are both {mine!r}: Axolotl pushes the "
                     "stage-1 model (a mask-filler, not the classifier) there when stage 1 ends, and the plugin then "
                     "the classifier. Remove hub_model_id, or give it another repository.")
    if ((block.get("classification") or {}).get("joint") is False):
        lines.append(f"decselfmask: classification.joint is false: {mine!r} gets the stage-1 model at its root and "
                     "each task's LoRA in stage2/<task>/ (load one with subfolder=...)")
    return lines


# ---------------------------------------------------------------------------- the shared folder

def build_hub_folder(cfg, config) -> Path:
    """``<output_dir>/hub``, made again from the finished run (built beside, then moved in)."""
    out = Path(str(cfg.output_dir))
    dest = outputs.hub_dir(out)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    root = _write_classifier(cfg, config, tmp)
    for rel in outputs.shared_result_files(out):
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(out / rel, tmp / rel)
    _write_recipes(cfg, config, tmp)
    from axolotl_decselfmask.stage2.quantized import uses_4bit

    record = {"format": "decselfmask-classifier", "version": 1, "root": root,
              "load": LOAD_CALL_4BIT if uses_4bit(cfg) else LOAD_CALL,
              "tasks": [c.task for c in config.task_configs()], "repository": config.hub_model_id}
    (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    from axolotl_decselfmask.stage2.model_card import render_card, run_manifest

    manifest = run_manifest(out) if config.stage1 else None
    (tmp / "README.md").write_text(render_card(cfg, config, outputs.read_metrics(out), manifest, shared=root),
                                   encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    LOG.info("decselfmask: the classifier to share is in %s (%s)", dest, root)
    return dest


def _write_classifier(cfg, config, dest: Path) -> str:
    """The model at the folder's root, with its tokenizer; returns what it is (``classifier``:
    stage 1 and the stage-2 LoRA, merged, or with QLoRA one adapter; ``stage-1 model``: the model
    heads or prompts run on)."""
    from axolotl_decselfmask.prompts import ensure_chat_template
    from axolotl_decselfmask.stage2.model import load_tokenizer
    from axolotl_decselfmask.stage2.quantized import uses_4bit

    c = config.classification
    lora = c.train and c.method != "head"
    write = _write_adapter_root if uses_4bit(cfg) else _write_model_root
    root = write(cfg, config, dest, outputs.classifier_dir(cfg.output_dir), lora)
    tokenizer = load_tokenizer(cfg)
    ensure_chat_template(tokenizer, config.fallback_chat_template, where=str(cfg.base_model))
    tokenizer.save_pretrained(str(dest))
    return root


def _write_model_root(cfg, config, dest: Path, stage2: Path, lora: bool) -> str:
    """16 bits: the classifier merged (a joint LoRA), else the stage-1 model, saved whole."""
    from axolotl_decselfmask.hardware import recipe_precision
    from axolotl_decselfmask.stage2.model import load_model, stage1_model_folder

    dtype = recipe_precision(cfg).torch_dtype()
    if lora and config.classification.joint:
        from peft import PeftModel

        base = json.loads((stage2 / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
        if not Path(base).exists():  # output_dir moved: its stage-1 folder, made again where missing
            base, _ = stage1_model_folder(cfg, config, dtype)
        model = PeftModel.from_pretrained(load_model(base, cfg, dtype), str(stage2)).merge_and_unload()
        root = "classifier"
    else:
        model = load_model(stage1_model_folder(cfg, config, dtype)[0], cfg, dtype)
        root = "stage-1 model"
        if lora:  # joint: false: each task's adapter, based on the repository's root
            _copy_task_adapters(stage2, dest, config.hub_model_id)
    model.save_pretrained(str(dest))
    del model
    return root


def _write_adapter_root(cfg, config, dest: Path, stage2: Path, lora: bool) -> str:
    """QLoRA: nothing merged into 4 bits (it would round the fine-tuning away). The root is an
    adapter on the recipe's ``base_model`` (:func:`.quantized.base_model_name`): the classifier's
    one adapter (a joint LoRA: stage 1 in it), else the stage-1 adapter; with stage 1 off and no
    joint LoRA, the base model itself (16 bits, with the added mask's row where there is one).
    ``joint: false``: each task's adapter (stage 1 in it too) on the same base model."""
    from axolotl_decselfmask.stage2.quantized import base_model_name, is_adapter_folder

    base = base_model_name(cfg)
    if lora and config.classification.joint:
        _copy_adapter(stage2, dest, base)
        return "classifier"
    if config.stage1 and is_adapter_folder(cfg.output_dir):
        _copy_adapter(Path(str(cfg.output_dir)), dest, base)
    else:
        from transformers import AutoModelForCausalLM

        from axolotl_decselfmask.hardware import recipe_precision
        from axolotl_decselfmask.stage2.model import stage1_model_folder

        dtype = recipe_precision(cfg).torch_dtype()
        folder = stage1_model_folder(cfg, config, dtype)[0]
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=bool(cfg.trust_remote_code))
        model.save_pretrained(str(dest))
        del model
    if lora:
        _copy_task_adapters(stage2, dest, base)
    return "stage-1 model"


def _copy_adapter(folder: Path, target: Path, base: str) -> None:
    """The adapter of ``folder`` (config and weights) into ``target``, with ``base`` as its base model."""
    target.mkdir(parents=True, exist_ok=True)
    settings = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    settings["base_model_name_or_path"] = base
    (target / "adapter_config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    shutil.copy2(folder / "adapter_model.safetensors", target / "adapter_model.safetensors")


def _copy_task_adapters(stage2: Path, dest: Path, base: str) -> None:
    for folder in sorted(p.parent for p in stage2.glob("*/adapter_config.json")):
        _copy_adapter(folder, dest / outputs.STAGE2_DIR / folder.name, base)


def _write_recipes(cfg, config, dest: Path) -> None:
    """``recipe.yml`` (the training recipe, secrets removed) and ``predict.yml``: the same recipe
    reading its model and decisions from the folder it is in (run ``predict`` inside it)."""
    import yaml

    from axolotl_decselfmask.stage2.model_card import recipe_yaml

    text = recipe_yaml(cfg)
    (dest / RECIPE).write_text(text, encoding="utf-8")
    if not (config.classification.joint or not config.classification.train):
        return  # a LoRA per task: each loads from the hub (the module's docstring)
    recipe = yaml.safe_load(text)
    block = dict(recipe.get("decselfmask") or {})
    block["stage1"] = False  # the root has stage 1 (and a joint LoRA) in it
    classification = dict(block.get("classification") or {})
    if classification.get("method", "lora") != "head":
        classification["train"] = False
    block["classification"] = classification
    masking = dict(block.get("masking") or {})
    if masking.get("mask_token", "auto") == "auto":  # the token the run chose, already in the folder's vocabulary
        from axolotl_decselfmask.mask_token import mask_for
        from axolotl_decselfmask.stage2.model import load_tokenizer

        chosen = mask_for(load_tokenizer(cfg), config.masking)
        masking.update(mask_token=chosen.text, add_mask_token=chosen.source == "added")
    block["masking"] = masking
    recipe.update(base_model=".", output_dir=".", decselfmask=block)
    for key in ("tokenizer_config", "base_model_config", "datasets", "hub_model_id"):
        recipe.pop(key, None)
    (dest / PREDICT_RECIPE).write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")


# ------------------------------------------------------------------------------------ the upload

def upload_arguments(cfg, config) -> dict:
    """The keyword arguments of ``HfApi.upload_folder`` for the run of ``cfg``: the whole shared folder."""
    tasks = ", ".join(c.task for c in config.task_configs())
    return {"repo_id": config.hub_model_id, "folder_path": str(outputs.hub_dir(cfg.output_dir)),
            "repo_type": "model", "revision": config.hub_revision,
            "commit_message": f"DecSelfMask classifier ({tasks})"}


def push_results(cfg, config) -> str | None:
    """Build the shared folder and upload it to ``decselfmask.hub_model_id`` (nothing when unset);
    returns the commit's URL. Offline or without a token: one line saying how to upload the
    folder, no error (the start of the run said so). A failed upload is an InputError that says
    the same."""
    if not config.hub_model_id:
        return None
    build_hub_folder(cfg, config)
    kwargs = upload_arguments(cfg, config)
    by_hand = (f"the classifier to share is in {kwargs['folder_path']}; upload it with `hf upload "
               f"{config.hub_model_id} {kwargs['folder_path']} .`")
    why = unreachable()
    if why is not None:
        LOG.warning("decselfmask.hub_model_id %r: not uploaded, %s; %s", config.hub_model_id, why, by_hand)
        return None
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(config.hub_model_id, private=config.hub_private, repo_type="model", exist_ok=True)
        if config.hub_revision:
            api.create_branch(config.hub_model_id, branch=config.hub_revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(**kwargs)
    except Exception as exc:  # noqa: BLE001 - network, auth: one line, and what to do
        raise InputError(f"decselfmask.hub_model_id {config.hub_model_id!r}: the upload failed "
                         f"({type(exc).__name__}: {exc}); {by_hand}.") from exc
    url = str(getattr(info, "commit_url", info))
    LOG.info("decselfmask: classifier uploaded to %s (%s)", config.hub_model_id, url)
    print(f"decselfmask: classifier uploaded to the hub, {config.hub_model_id} ({url})")
    return url
