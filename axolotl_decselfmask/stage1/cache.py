"""The stage-1 cache format, in one place: keys, folders, shards and manifests.

Layout of ``decselfmask.cache_dir``::

    relevance-<key>/part-00000.json ...   relevance of each (text, item), in shards
    examples-<key>/examples.jsonl         the masked examples, readable
    examples-<key>/manifest.json          written last: counts and settings

The relevance key covers the model, the texts, the items and every relevance setting; the
examples key adds the span and masking settings. Changing a span threshold reuses the
relevance; changing anything that alters the result computes it again. Shards are written
atomically as they are finished, so an interrupted run resumes. The precompute writes the
cache; the inspector and the model card read it, through these functions only.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.hardware import cpu_has_amx
from axolotl_decselfmask.io.files import (
    atomic_write_json,
    atomic_write_jsonl,
    fingerprint,
    model_fingerprint,
    read_json,
    read_jsonl,
    stable_json,
)
from axolotl_decselfmask.version import __version__

LOG = logging.getLogger(__name__)

EXAMPLES_FILE = "examples.jsonl"
MANIFEST_FILE = "manifest.json"


def fast_backward(config: DecSelfMaskConfig) -> bool:
    """``relevance.fast_backward`` (grad_x_input's backward with float32 matmul precision
    "medium"); ``auto`` is on where that precision still computes in float32: a CPU without AMX."""
    value = config.relevance.fast_backward
    if value != "auto":
        return bool(value)
    from axolotl_decselfmask.relevance.loading import pick_device

    return pick_device(config.relevance.device) == "cpu" and not cpu_has_amx()


def relevance_key(config: DecSelfMaskConfig, model_path: str, tokenizer, texts_fp: str) -> str:
    rel = config.relevance.model_dump(exclude={"batch_size", "device", "model", "fast_backward"})
    if fast_backward(config):  # other matmul kernels: other rounding (keys without it stay as they were)
        rel["fast_backward"] = True
    if rel.get("prompt_style") == "question":  # the prompt before the key existed: those keys stay as they were
        del rel["prompt_style"]
    return fingerprint(
        "relevance", __version__, model_fingerprint(model_path), tokenizer.chat_template,
        texts_fp, config.task_items(), config.items_per_text, config.seed, rel,
    )


def examples_key(config: DecSelfMaskConfig, rel_key: str) -> str:
    # mask_init changes the model's mask row, not the examples: examples of either setting are shared
    masking = config.masking.model_dump(exclude={"system_prompt", "write_jsonl", "mask_init"})
    # every span key, spans.truncate included: examples cached with the earlier 9-tap kernel (before
    # the key existed) get other keys, so the 3-tap default never reuses them
    return fingerprint("examples", rel_key, config.spans.model_dump(), masking)


def relevance_dir(root: str | Path, rkey: str) -> Path:
    return Path(root) / f"relevance-{rkey}"


def examples_dir(root: str | Path, ekey: str) -> Path:
    return Path(root) / f"examples-{ekey}"


def shard_path(rel_dir: Path, n: int) -> Path:
    return rel_dir / f"part-{n:05d}.json"


def records_checksum(records: list[dict]) -> str:
    return hashlib.sha256(stable_json(records).encode("utf-8")).hexdigest()


def load_shard(path: Path, expected: list[tuple[int, str]] | None = None) -> list[dict] | None:
    """The records of one shard, or None when it is missing, damaged or holds other pairs."""
    data = read_json(path)
    if not isinstance(data, dict):
        return None
    records = data.get("records")
    if not isinstance(records, list):
        return None
    if expected is not None and (data.get("pairs") != [list(p) for p in expected] or len(records) != len(expected)):
        return None
    if data.get("sha256") != records_checksum(records):
        LOG.warning("decselfmask: %s fails its checksum; it is not used", path)
        return None
    return records


def write_shard(rel_dir: Path, n: int, pairs: list[tuple[int, str]], records: list[dict], rank: int = 0,
                world_size: int = 1) -> None:
    atomic_write_json(shard_path(rel_dir, n), {
        "pairs": [list(p) for p in pairs], "records": records, "sha256": records_checksum(records),
        "written_by": {"rank": rank, "world_size": world_size}})


def read_records(rel_dir: Path) -> tuple[list[dict], int]:
    """All relevance records of a folder, and the number of shards skipped as damaged."""
    records, damaged = [], 0
    for part in sorted(rel_dir.glob("part-*.json")):
        recs = load_shard(part)
        if recs is None:
            damaged += 1
        else:
            records.extend(recs)
    return records, damaged


def read_manifest(ex_dir: Path) -> dict | None:
    manifest = read_json(ex_dir / MANIFEST_FILE)
    return manifest if isinstance(manifest, dict) else None


def read_examples(ex_dir: Path) -> tuple[list[dict], dict] | None:
    """The examples and manifest of a finished precompute, or None (missing, unfinished or damaged)."""
    manifest = read_manifest(ex_dir)
    if not (manifest and manifest.get("complete") and (ex_dir / EXAMPLES_FILE).is_file()):
        return None
    try:
        examples = read_jsonl(ex_dir / EXAMPLES_FILE)
    except ValueError:
        return None  # a damaged file is rebuilt
    return (examples, manifest) if len(examples) == manifest.get("n_examples") else None


def write_examples(ex_dir: Path, examples: list[dict], manifest: dict) -> None:
    """The examples, then the manifest (written last: its presence marks a finished precompute)."""
    atomic_write_jsonl(ex_dir / EXAMPLES_FILE, examples)
    atomic_write_json(ex_dir / MANIFEST_FILE, {"complete": True, "n_examples": len(examples), **manifest})


def complete_examples_dirs(root: Path) -> list[Path]:
    return sorted(d for d in Path(root).glob("examples-*")
                  if d.is_dir() and (d / EXAMPLES_FILE).is_file() and read_manifest(d) is not None)


def relevance_dirs(root: Path) -> list[Path]:
    return sorted(d for d in Path(root).glob("relevance-*") if d.is_dir() and any(d.glob("part-*.json")))
