"""The stage-1 precompute: texts -> self-relevance -> spans -> masked examples, cached.

Layout of the cache (``decselfmask.cache_dir``)::

    relevance-<key>/part-00000.json ...   relevance of each (text, item), in shards
    examples-<key>/examples.jsonl         the masked examples, readable
    examples-<key>/manifest.json          written last: counts and settings

The relevance key covers the model, the texts, the items and every relevance setting;
the examples key adds the span and masking settings. Changing a span threshold reuses
the relevance; changing anything that alters the result computes it again. Shards are
written atomically as they are finished, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .args import DecSelfMaskConfig
from .cache import (
    atomic_write_json,
    atomic_write_jsonl,
    fingerprint,
    model_fingerprint,
    read_json,
    read_jsonl,
    stable_json,
    texts_fingerprint,
)
from .masking import build_examples
from .prompts import reconstruction_messages, tokenize_for_training
from .registry import get_method, get_selector
from .relevance import build_relevance_prompt, compute_relevance, items_for_texts, load_relevance_model
from .spans import SpanSettings

LOG = logging.getLogger(__name__)

@dataclass
class PrecomputeResult:
    examples: list[dict]  # text_index, item, masked_text, answer, spans
    directory: Path
    n_texts: int
    n_without_spans: int  # (text, item) pairs whose relevance gave no span
    n_bad_relevance: int  # pairs whose relevance was all zero, NaN or infinite (skipped)
    reused: bool


def text_token_budget(tokenizer, cfg: DecSelfMaskConfig, sequence_len: int) -> int:
    """How many tokens of a text fit: ``sequence_len`` minus the longest prompt's own tokens.

    The rule: a text is cut at a token boundary to this many tokens, so that both its
    relevance prompt (with the longest item) and its reconstruction example fit.
    """
    items = cfg.task_items() or ["x"]
    longest = max(items, key=lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"]))
    rel = len(build_relevance_prompt(tokenizer, "x", longest, cfg.relevance.lead_in).input_ids) - 1
    mask_len = len(tokenizer(cfg.masking.mask_token, add_special_tokens=False)["input_ids"])
    recon = len(
        tokenize_for_training(tokenizer, reconstruction_messages("x", "x", cfg.masking.system_prompt))["input_ids"]
    ) + (mask_len + 2) * cfg.masking.spans_per_example
    budget = sequence_len - max(rel, recon) - 4
    if budget < 16:
        raise ValueError(
            f"sequence_len ({sequence_len}) leaves only {budget} tokens for a text after the "
            "prompt; raise sequence_len."
        )
    return budget


def truncate_texts(tokenizer, texts: list[str], budget: int) -> tuple[list[str], int]:
    out, n_cut = [], 0
    for text in texts:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) > budget:
            out.append(text[: enc["offset_mapping"][budget - 1][1]])
            n_cut += 1
        else:
            out.append(text)
    return out, n_cut


def fast_backward(cfg: DecSelfMaskConfig) -> bool:
    """``relevance.fast_backward`` (grad_x_input's backward with float32 matmul precision
    "medium"); ``auto`` is on where that precision still computes in float32: a CPU without AMX."""
    value = cfg.relevance.fast_backward
    if value != "auto":
        return bool(value)
    from .relevance import pick_device

    return pick_device(cfg.relevance.device) == "cpu" and not cpu_has_amx()


def cpu_has_amx(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AMX tiles (``amx_tile`` in /proc/cpuinfo's flags); unknown counts as yes."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return True
    flags = [line for line in cpuinfo.splitlines() if line.startswith("flags")]
    return not flags or "amx_tile" in flags[0].split()


def relevance_key(cfg: DecSelfMaskConfig, model_path: str, tokenizer, texts_fp: str) -> str:
    rel = cfg.relevance.model_dump(exclude={"batch_size", "device", "model", "fast_backward"})
    if fast_backward(cfg):  # other matmul kernels: other rounding (keys without it stay as they were)
        rel["fast_backward"] = True
    return fingerprint(
        "relevance", __version__, model_fingerprint(model_path), tokenizer.chat_template,
        texts_fp, cfg.task_items(), cfg.items_per_text, cfg.seed, rel,
    )


def examples_key(cfg: DecSelfMaskConfig, rel_key: str) -> str:
    masking = cfg.masking.model_dump(exclude={"system_prompt", "write_jsonl"})
    return fingerprint("examples", rel_key, cfg.spans.model_dump(), masking)


def span_settings(cfg: DecSelfMaskConfig) -> SpanSettings:
    s = cfg.spans
    return SpanSettings(
        sigma=s.sigma, high=s.high, low=s.low, max_spans=s.max_spans_per_text,
        max_span_fraction=s.max_span_fraction, rescale_after_smoothing=s.rescale_after_smoothing,
        top_k_ratio=s.top_k_ratio,
    )


def check_method(cfg: DecSelfMaskConfig, model_path: str, trust_remote_code: bool = False):
    """The method class, after checking it can run on the model's family (config only, no weights)."""
    from transformers import AutoConfig

    method_cls = get_method(cfg.relevance.method)
    method_cls.check_model_config(AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code))
    return method_cls


def selector_for(cfg: DecSelfMaskConfig, method_cls):
    return get_selector(getattr(method_cls, "span_selector", None) or cfg.spans.selector)


def shard_plan(n_texts: int, cfg: DecSelfMaskConfig) -> tuple[list[tuple[int, str]], list[list[tuple[int, str]]]]:
    """The (text, item) pairs and how they are cut into shards: fixed by the texts and settings."""
    per_text = items_for_texts(n_texts, cfg.task_items(), cfg.items_per_text, cfg.seed)
    pairs = [(i, item) for i, its in enumerate(per_text) for item in its]
    size = cfg.relevance.shard_size
    return pairs, [pairs[s : s + size] for s in range(0, len(pairs), size)]


def wait_for_shards(texts, cfg: DecSelfMaskConfig, tokenizer, model_path: str, cache_root, timeout_s: float,
                    poll_s: float = 2.0) -> None:
    """Block until every relevance shard of ``texts`` is in the cache (other processes write them)."""
    import time

    rel_dir = Path(cache_root) / f"relevance-{relevance_key(cfg, model_path, tokenizer, texts_fingerprint(texts))}"
    _, shards = shard_plan(len(texts), cfg)
    deadline = time.monotonic() + timeout_s
    pending = set(range(len(shards)))
    while pending:
        pending = {n for n in pending if _load_shard(rel_dir / f"part-{n:05d}.json", shards[n]) is None}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"decselfmask: {len(pending)} relevance shards in {rel_dir} did not appear in "
                               f"{timeout_s:.0f} s; did another process fail? Run the command again to resume.")
        time.sleep(poll_s)


def _load_shard(path: Path, expected: list[tuple[int, str]]) -> list[dict] | None:
    data = read_json(path)
    if not isinstance(data, dict) or data.get("pairs") != [list(p) for p in expected]:
        return None
    records = data.get("records")
    if not isinstance(records, list) or len(records) != len(expected):
        return None
    if data.get("sha256") != _records_checksum(records):
        LOG.warning("decselfmask: %s fails its checksum; recomputing it", path)
        return None
    return records


def _records_checksum(records: list[dict]) -> str:
    return hashlib.sha256(stable_json(records).encode("utf-8")).hexdigest()


def run_precompute(
    texts: list[str],
    cfg: DecSelfMaskConfig,
    tokenizer,
    model_path: str,
    cache_root: str | Path,
    trust_remote_code: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
) -> PrecomputeResult | None:
    """Relevance, spans and masked examples of ``texts`` (already truncated), cached.

    With ``world_size > 1`` (one call per process) this process computes only the relevance
    shards ``n`` with ``n % world_size == rank`` and returns None; once every shard exists, a
    call with ``world_size=1`` builds the examples from them (see :func:`main`).
    """
    cache_root = Path(cache_root)
    texts_fp = texts_fingerprint(texts)
    rkey = relevance_key(cfg, model_path, tokenizer, texts_fp)
    ekey = examples_key(cfg, rkey)
    ex_dir = cache_root / f"examples-{ekey}"
    manifest = read_json(ex_dir / "manifest.json")
    if isinstance(manifest, dict) and manifest.get("complete") and (ex_dir / "examples.jsonl").is_file():
        try:
            examples = read_jsonl(ex_dir / "examples.jsonl")
        except ValueError:
            examples = None  # a damaged file is rebuilt below
        if examples is not None and len(examples) == manifest.get("n_examples"):
            LOG.info("decselfmask: reusing %d cached masked examples from %s", len(examples), ex_dir)
            return PrecomputeResult(examples, ex_dir, manifest["n_texts"], manifest["n_without_spans"],
                                    manifest.get("n_bad_relevance", 0), True)

    method_cls = check_method(cfg, model_path, trust_remote_code)
    select = selector_for(cfg, method_cls)
    items = cfg.task_items()
    if not items:
        raise ValueError(
            "decselfmask.items is empty and decselfmask.classification.labels is empty: "
            "name the task items the relevance is computed for."
        )
    pairs, shards = shard_plan(len(texts), cfg)
    rel_dir = cache_root / f"relevance-{rkey}"
    records: list[dict] = []
    todo = []
    for n, shard in enumerate(shards):
        if n % world_size != rank:
            continue
        loaded = _load_shard(rel_dir / f"part-{n:05d}.json", shard)
        if loaded is None:
            todo.append(n)
        else:
            records.extend(loaded)
    if todo:
        LOG.info(
            "decselfmask: relevance of %d (text, item) pairs with %s (%d of %d shards cached)",
            len(pairs), model_path, len(shards) - len(todo), len(shards),
        )
        r = cfg.relevance
        model = load_relevance_model(
            model_path, r.dtype, r.device, trust_remote_code=trust_remote_code,
            eager_attention=method_cls.needs_eager_attention, load_in_4bit=r.load_in_4bit, load_in_8bit=r.load_in_8bit,
        )
        method = method_cls(model, tokenizer, r.target, r.token_position, steps=r.ig_steps, unit=r.ablation_unit,
                            fast_backward=fast_backward(cfg))
        bar = tqdm(total=sum(len(shards[n]) for n in todo), unit="text", desc="self-relevance",
                   disable=not progress, dynamic_ncols=True)
        by_shard: dict[int, list[dict]] = {}
        for n in todo:
            # a shard's pairs are text by text: compute_relevance hands a method that shares work between
            # the items of a text (grad_x_input) all of them at once; the records keep the shard's order
            prompts = [build_relevance_prompt(tokenizer, texts[i], item, cfg.relevance.lead_in) for i, item in shards[n]]
            rels = compute_relevance(method, prompts, cfg.relevance.batch_size, progress=bar)
            shard_records = [
                {"text_index": i, "item": item, "offsets": [list(o) for o in p.offsets],
                 # never NaN in a cache: non-finite relevance is stored as null and skipped
                 "scores": [round(float(v), 7) for v in r] if np.all(np.isfinite(r)) else None}
                for (i, item), p, r in zip(shards[n], prompts, rels)
            ]
            atomic_write_json(rel_dir / f"part-{n:05d}.json", {
                "pairs": [list(p) for p in shards[n]], "records": shard_records,
                "sha256": _records_checksum(shard_records), "written_by": {"rank": rank, "world_size": world_size}})
            by_shard[n] = shard_records
        bar.close()
        del model
        if world_size > 1:
            return None
        records = []
        for n, shard in enumerate(shards):
            records.extend(by_shard[n] if n in by_shard else _load_shard(rel_dir / f"part-{n:05d}.json", shard))

    if world_size > 1:
        return None
    settings = span_settings(cfg)
    m = cfg.masking
    examples, without, bad = [], 0, 0
    for rec in records:
        text = texts[rec["text_index"]]
        scores = np.asarray(rec["scores"] if rec["scores"] is not None else [np.nan], dtype=np.float64)
        if scores.size == 0 or not np.all(np.isfinite(scores)) or not np.any(scores):
            bad += 1
            continue
        rng = np.random.default_rng([cfg.seed, rec["text_index"], zlib.crc32(rec["item"].encode("utf-8"))])
        spans = select(scores, [tuple(o) for o in rec["offsets"]], text, settings, rng)
        if not spans:
            without += 1
            continue
        for ex in build_examples(text, spans, m.mask_token, m.spans_per_example, m.answer_separator):
            examples.append({"text_index": rec["text_index"], "item": rec["item"], "masked_text": ex.masked_text,
                             "answer": ex.answer, "spans": [list(s) for s in ex.spans]})
    if not examples:
        raise ValueError(
            f"decselfmask: no spans were found in any of the {len(texts)} texts ({bad} with zero or "
            "non-finite relevance); lower decselfmask.spans.high / low or check the relevance model."
        )
    if m.write_jsonl:
        atomic_write_jsonl(ex_dir / "examples.jsonl", examples)
        atomic_write_json(ex_dir / "manifest.json", {
            "complete": True, "n_examples": len(examples), "n_texts": len(texts), "n_pairs": len(pairs),
            "n_without_spans": without, "n_bad_relevance": bad, "relevance_dir": rel_dir.name,
            "model": model_path, "settings": cfg.model_dump(exclude={"classification"}), "version": __version__,
        })
    LOG.info("decselfmask: %d masked examples from %d texts (%d (text, item) pairs gave no span, %d had "
             "zero or non-finite relevance)", len(examples), len(texts), without, bad)
    return PrecomputeResult(examples, ex_dir, len(texts), without, bad, False)


def read_pool_column(path: str, column: str, chunk_rows: int | None = None) -> list:
    """The text column of an unlabelled pool file, streamed in chunks of ``chunk_rows`` rows
    (:func:`..inputs.iter_column`): the other columns and the parsed rows are never held
    whole; only the texts themselves, which the precompute needs (fingerprint, examples)."""
    from .inputs import CHUNK_ROWS, iter_column

    values: list = []
    for chunk in iter_column(path, column, "datasets[].path", chunk_rows or CHUNK_ROWS):
        values.extend(chunk)
    return values


def main(argv: list[str] | None = None) -> None:
    """``[accelerate launch --num_processes N] python -m axolotl_decselfmask.precompute recipe.yml``

    The relevance precompute of a recipe, on its own: with ``accelerate launch`` (or torchrun)
    each process scores its slice of the shards (shard ``n`` goes to rank ``n % world_size``),
    then the main process waits for all shards and builds the masked examples. A later
    ``axolotl preprocess`` / ``axolotl train`` of the same recipe finds them in the cache.
    """
    import argparse

    from axolotl.cli.config import load_cfg
    from axolotl.loaders import load_tokenizer

    from .inputs import dataset_text_column
    from .masked_reconstruction import DATASET_TYPE, plugin_config, prepare_pool, relevance_model_path

    parser = argparse.ArgumentParser(prog="python -m axolotl_decselfmask.precompute")
    parser.add_argument("recipe")
    parser.add_argument("--wait-timeout", type=float, default=7 * 24 * 3600,
                        help="seconds the main process waits for the other processes' shards")
    args = parser.parse_args(argv)
    # set by `accelerate launch` / torchrun; the processes share nothing but the cache folder
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    cfg = load_cfg(args.recipe)
    config = plugin_config(cfg)
    tokenizer = load_tokenizer(cfg)
    entries = [d for d in cfg.datasets or [] if d.get("type") == DATASET_TYPE]
    if not entries:
        raise SystemExit(f"{args.recipe}: no dataset has type {DATASET_TYPE}")
    for entry in entries:
        column = dataset_text_column(entry)
        pool = prepare_pool(read_pool_column(entry["path"], column), cfg, config, tokenizer, entry["path"], column)
        model_path = relevance_model_path(cfg, config)
        common = dict(texts=pool.texts, cfg=config, tokenizer=tokenizer, model_path=model_path,
                      cache_root=config.cache_dir, trust_remote_code=bool(cfg.trust_remote_code), progress=rank == 0)
        if world > 1:
            run_precompute(**common, rank=rank, world_size=world)
            if rank != 0:
                continue
            wait_for_shards(pool.texts, config, tokenizer, model_path, config.cache_dir, args.wait_timeout)
        result = run_precompute(**common)
        print(f"decselfmask: {len(result.examples)} masked examples from {result.n_texts} texts in "
              f"{result.directory} ({world} process(es))")


if __name__ == "__main__":
    main()
