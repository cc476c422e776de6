"""The raw recipe, before Axolotl validates it: what the plugin sets on it, and checks of its
model folders and of the environment, before Axolotl loads anything.

Axolotl reads ``base_model``'s config while it normalises the recipe, before any dataset or
plugin hook: a folder that does not exist then ends in huggingface_hub's "Repo id must be in
the form ...", and a folder without tokenizer files in transformers' advice to install
sentencepiece. The plugin's ``register()`` runs earlier and calls :func:`check_model_paths`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.io.files import file_sha256, fingerprint
from axolotl_decselfmask.mask_token import AUTO, arrange_recipe
from axolotl_decselfmask.stage1.pool import POOL_TYPES, uses_pool_dataset
from axolotl_decselfmask.version import __version__

#: files of which a model folder needs one to load a tokenizer (vocab.json with merges.txt)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
                   "vocab.json + merges.txt", "vocab.txt", "tekken.json", "*.tiktoken")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_name_error(name: str) -> str | None:
    """Why ``name`` cannot be a Hugging Face model name (huggingface_hub's own rule), else None."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return "and cannot be a Hugging Face model name"
    first = name.split("/", 1)[0]
    if _offline() and "/" in name and Path(first).is_dir():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            return (f"though {first + '/'!r} is, and offline (HF_HUB_OFFLINE=1) the Hugging Face cache has "
                    "no model of that name either")
    return None


def check_model_path(value: str, key: str) -> None:
    """A model named by ``key`` is an existing folder or file, or could be a hub model name."""
    path = Path(value).expanduser()
    if path.exists():
        return
    why = _hub_name_error(value)
    if why:
        raise InputError(
            f"{key}: {value!r} is not a folder (looked for {path.absolute()}; working directory {os.getcwd()}) "
            f"{why}. Point {key} at the model's folder (a relative path is read from the working directory), "
            "or at a Hugging Face model name."
        )


def _has_tokenizer(names: set[str]) -> bool:
    single = {n for n in TOKENIZER_FILES if " " not in n and "*" not in n}
    return bool(names & single) or {"vocab.json", "merges.txt"} <= names or any(n.endswith(".tiktoken") for n in names)


def _listing(folder: Path) -> tuple[set[str], str]:
    names = {p.name for p in folder.iterdir()}
    return names, ", ".join(sorted(names)[:12]) + (", ..." if len(names) > 12 else "") or "nothing"


def check_saved_model(folder: Path, key: str) -> None:
    """A local model folder holds a config.json."""
    names, shown = _listing(folder)
    if "config.json" not in names:
        raise InputError(f"{key}: the folder {folder} has no config.json (it has {shown}): it is not a saved "
                         "model. Point it at the folder that `save_pretrained` wrote.")


def check_tokenizer_files(folder: Path, key: str) -> None:
    """A local folder the tokenizer is loaded from holds tokenizer files."""
    names, shown = _listing(folder)
    if not _has_tokenizer(names):
        raise InputError(
            f"{key}: the folder {folder} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}; it has "
            f"{shown}). Save the tokenizer next to the weights (`AutoTokenizer.from_pretrained(<the original "
            "model>).save_pretrained(folder)`), or set tokenizer_config: to a folder that has one. (transformers "
            "reports this as a missing sentencepiece or tiktoken.)"
        )


def check_model_paths(cfg) -> None:
    """``base_model``, ``tokenizer_config`` and ``decselfmask.relevance.model``: folders that exist,
    hub names otherwise; a local base_model holds a config.json, and the folder the tokenizer
    comes from (``tokenizer_config``, else ``base_model``) holds tokenizer files."""
    base = cfg.get("base_model")
    tokenizer = cfg.get("tokenizer_config")
    relevance = ((cfg.get("decselfmask") or {}).get("relevance") or {}).get("model")
    for value, key in ((base, "base_model"), (tokenizer, "tokenizer_config"), (relevance, "decselfmask.relevance.model")):
        if value:
            check_model_path(str(value), key)
    if base and Path(str(base)).expanduser().is_dir():
        check_saved_model(Path(str(base)).expanduser(), "base_model")
    if cfg.get("trust_remote_code") or cfg.get("tokenizer_use_mistral_common"):
        return  # their own tokenizer code and files
    source, key = (tokenizer, "tokenizer_config") if tokenizer else (base, "base_model")
    if source and Path(str(source)).expanduser().is_dir():
        check_tokenizer_files(Path(str(source)).expanduser(), key)


def launcher_warning() -> str | None:
    """What to say when ``accelerate`` is not on PATH (``axolotl train`` execs ``accelerate launch``)."""
    if shutil.which("accelerate"):
        return None
    return ("decselfmask: `accelerate` is not on PATH, and `axolotl train` starts training through "
            "`accelerate launch`: it would stop with FileNotFoundError (No such file or directory: ... 'accelerate'). "
            "Activate the environment first (`source .venv/bin/activate`), put its bin folder on PATH, or run "
            "`axolotl train recipe.yml --launcher python` (one process).")


DEFAULT_PREPARED_PATH = "last_run_prepared"  # Axolotl's default dataset_prepared_path


def test_file_ids(config: DecSelfMaskConfig) -> list:
    """Each task's test texts by what they come from, with the text column compared: a test file
    by its content (a folder by its path); a ``test_fraction`` side by the labelled train_file's
    content and what the split depends on (the fraction, ``decselfmask.seed``, the label column
    and how it is read), so that a changed labelled file makes stage 1's data again."""
    if not config.classification.enabled:
        return []
    ids: dict[str, str] = {}

    def content(name: str) -> str:
        if name not in ids:
            path = Path(name)
            ids[name] = file_sha256(path) if path.is_file() else name
        return ids[name]

    out = []
    for c in config.task_configs():
        if c.test_fraction is not None and c.train_file:
            split = {"train_file": content(c.train_file), "test_fraction": c.test_fraction, "seed": config.seed,
                     "label_column": c.label_column, "labels": list(c.labels), "multi_label": c.multi_label,
                     "label_separator": c.label_separator}
            out.append([split, c.text_column])
        elif c.test_file:
            out.append([content(c.test_file), c.text_column])
    return out


def prepare_raw_recipe(cfg: dict, block: dict) -> None:
    """What the plugin sets on the raw recipe before Axolotl validates it: the cache folder, the
    pools' text column (carried in ``field``), a prepared-dataset folder keyed by what stage 1's
    data depends on, and the mask token as an added token where the tokenizer needs one."""
    prepared = cfg.get("dataset_prepared_path") or DEFAULT_PREPARED_PATH
    if not block.get("cache_dir"):
        block["cache_dir"] = str(Path(prepared) / "decselfmask")
    for entry in cfg.get("datasets") or []:
        # Axolotl's dataset schema drops `text_column`; carry it in `field`, which it keeps.
        if isinstance(entry, dict) and entry.get("type") in POOL_TYPES and entry.get("text_column"):
            if entry.get("field") not in (None, entry["text_column"]):
                raise InputError(f"datasets entry {entry.get('path')}: text_column {entry['text_column']!r} "
                                 f"and field {entry['field']!r} differ; set one of them")
            entry["field"] = entry["text_column"]
    if uses_pool_dataset(cfg):
        # Axolotl's prepared-dataset hash does not see the decselfmask block; key the
        # folder by it so that a changed setting never reuses stale examples.
        try:
            config = DecSelfMaskConfig(**block)
            # what stage 1's data depends on (not stage 2's or probing's settings)
            settings = config.model_dump(exclude={"classification", "tasks", "probing", "cpu_threads"})
            settings["task_items"] = config.task_items()
            # the pool's texts are checked against (or cleaned of) the test texts
            settings["test_files"] = test_file_ids(config)
        except Exception:  # noqa: BLE001 - Axolotl's validation reports it next
            settings = dict(block)
        key = fingerprint(__version__, settings)
        cfg["dataset_prepared_path"] = str(Path(prepared) / f"decselfmask-{key}")
    masking = block.get("masking") or {}
    token = masking.get("mask_token", AUTO)
    if token == AUTO:
        try:
            config = DecSelfMaskConfig(**block)
        except Exception:  # noqa: BLE001 - Axolotl's validation reports it next
            return
        arrange_recipe(cfg, config)  # the one-token mask: a reserved token, or one added (mask_token.py)
    elif masking.get("add_mask_token"):
        tokens = list(cfg.get("tokens") or [])
        if token not in tokens:
            cfg["tokens"] = tokens + [token]
