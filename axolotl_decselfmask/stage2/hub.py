"""The results on the Hugging Face Hub: ``decselfmask.hub_model_id`` (not Axolotl's ``hub_model_id``,
which pushes stage 1 before stage 2 runs).

After stage 2, the evaluation and the model card, the main process uploads, in one commit, from
``output_dir``: ``stage2/`` (the stage-2 adapter or heads and the saved decisions, without its
checkpoints), ``metrics.json``, ``predictions-*.jsonl`` (ids and scores, no text),
``split-*.json``, ``README.md`` (the model card) and, when stage 1 is a LoRA, its adapter and the
tokenizer (small; a full stage-1 model is not uploaded). The repository is created when missing
(``hub_private``, default true: clinical notes), on the branch ``hub_revision`` (created when
missing). The token is huggingface_hub's own lookup (``HF_TOKEN``, or the one ``hf auth login``
saved); none is read from the recipe.
"""

from __future__ import annotations

import logging
from pathlib import Path

from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.stage2 import outputs

LOG = logging.getLogger(__name__)

#: what is uploaded from output_dir (huggingface_hub's fnmatch patterns, where ``*`` also matches ``/``)
RESULT_PATTERNS = [*outputs.RESULT_PATTERNS, "README.md"]
#: with a stage-1 LoRA: its adapter and the tokenizer it was trained with
STAGE1_LORA_PATTERNS = ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json",
                        "merges.txt", "added_tokens.json"]
#: never uploaded: stage-2 checkpoints (the joint folder's and the per-task folders')
IGNORE_PATTERNS = list(outputs.CHECKPOINT_PATTERNS)


def upload_arguments(cfg, config) -> dict:
    """The keyword arguments of ``HfApi.upload_folder`` for the run of ``cfg``."""
    out = Path(str(cfg.output_dir))
    patterns = list(RESULT_PATTERNS) + (list(STAGE1_LORA_PATTERNS) if config.stage1 and cfg.get("adapter") else [])
    tasks = ", ".join(c.task for c in config.task_configs())
    return {"repo_id": config.hub_model_id, "folder_path": str(out), "repo_type": "model",
            "revision": config.hub_revision, "allow_patterns": patterns, "ignore_patterns": list(IGNORE_PATTERNS),
            "commit_message": f"DecSelfMask: stage 2, metrics and model card ({tasks})"}


def push_results(cfg, config) -> str | None:
    """Upload the run's results to ``decselfmask.hub_model_id`` (nothing when unset); returns the
    commit's URL. Any failure is an InputError that says how to upload the saved files by hand."""
    if not config.hub_model_id:
        return None
    from huggingface_hub import HfApi, get_token

    kwargs = upload_arguments(cfg, config)
    by_hand = (f"the results stay in {kwargs['folder_path']}; upload them with `hf upload {config.hub_model_id} "
               f"{kwargs['folder_path']} --include {' '.join(repr(p) for p in kwargs['allow_patterns'])}`")
    if get_token() is None:
        raise InputError(f"decselfmask.hub_model_id {config.hub_model_id!r}: no Hugging Face token (set HF_TOKEN or "
                         f"run `hf auth login`); {by_hand}.")
    api = HfApi()
    try:
        api.create_repo(config.hub_model_id, private=config.hub_private, repo_type="model", exist_ok=True)
        if config.hub_revision:
            api.create_branch(config.hub_model_id, branch=config.hub_revision, repo_type="model", exist_ok=True)
        info = api.upload_folder(**kwargs)
    except Exception as exc:  # noqa: BLE001 - network, auth, offline mode: one line, and what to do
        raise InputError(f"decselfmask.hub_model_id {config.hub_model_id!r}: the upload failed "
                         f"({type(exc).__name__}: {exc}); {by_hand}.") from exc
    url = str(getattr(info, "commit_url", info))
    LOG.info("decselfmask: results uploaded to %s (%s)", config.hub_model_id, url)
    print(f"decselfmask: results uploaded to the hub, {config.hub_model_id} ({url})")
    return url


def token_warning(config) -> str | None:
    """A line for the start of a run that will upload without a token (None otherwise)."""
    if not config.hub_model_id:
        return None
    from huggingface_hub import get_token

    if get_token() is not None:
        return None
    return (f"decselfmask.hub_model_id is {config.hub_model_id!r} but huggingface_hub finds no token: set HF_TOKEN "
            "or run `hf auth login` before stage 2 ends, or the upload will fail (the results stay in output_dir)")
