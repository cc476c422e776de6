"""The stage-1 precompute: texts -> self-relevance -> spans -> masked examples, cached.

The cache's format (keys, folders, shards, manifests) is :mod:`.cache`'s; this module computes
what goes in it, shard by shard, and can run as ``[accelerate launch --no_python] axolotl decselfmask
precompute recipe.yml`` to fill the cache before ``axolotl train``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.errors import InputError
from axolotl_decselfmask.hardware import release_freed_memory
from axolotl_decselfmask.io.files import (
    texts_fingerprint,
)
from axolotl_decselfmask.mask_token import resolve_mask_setting
from axolotl_decselfmask.prompts import ensure_chat_template
from axolotl_decselfmask.registry import get_method, selector_for
from axolotl_decselfmask.relevance import (
    build_relevance_prompt,
    compute_relevance,
    items_for_texts,
    load_relevance_model,
)
from axolotl_decselfmask.stage1.cache import (
    examples_dir,
    examples_key,
    fast_backward,
    load_shard,
    read_examples,
    relevance_dir,
    relevance_key,
    shard_path,
    write_examples,
    write_shard,
)
from axolotl_decselfmask.stage1.examples import (
    examples_of_record,
    usable_scores,
)
from axolotl_decselfmask.stage1.pool import read_pool_as_axolotl
from axolotl_decselfmask.version import __version__

LOG = logging.getLogger(__name__)

@dataclass
class PrecomputeResult:
    examples: list[dict]  # text_index, item, masked_text, answer, spans
    directory: Path
    n_texts: int
    n_without_spans: int  # (text, item) pairs whose relevance gave no span
    n_bad_relevance: int  # pairs whose relevance was all zero, NaN or infinite (skipped)
    reused: bool
    partial: bool = False  # stopped at the stage-1 token budget: the examples are a prefix of the full list
    n_pairs_scored: int = 0  # (text, item) pairs whose relevance the examples come from
















def check_method(config: DecSelfMaskConfig, model_path: str, trust_remote_code: bool = False):
    """The method class, after checking it can run on the model's family (config only, no weights)."""
    from transformers import AutoConfig

    method_cls = get_method(config.relevance.method)
    method_cls.check_model_config(AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code))
    return method_cls




def scoring_tokenizer(config: DecSelfMaskConfig, tokenizer, model_path: str, trust_remote_code: bool = False):
    """The tokenizer that the relevance model reads the prompts with: the student's ``tokenizer`` (the
    recipe's: its chat template, its added mask token), unless ``decselfmask.relevance.model`` names a
    model whose own tokenizer splits text otherwise (another family: the authors scored every student
    with Llama-3.1-8B). Then that model's tokenizer, with the plugin's fallback chat template if it has
    none. Spans are character offsets into the text, so they fit the student whichever tokenizer scored
    them."""
    if not config.relevance.model:
        return tokenizer
    from transformers import AutoTokenizer

    try:
        own = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(f"decselfmask.relevance.model {model_path!r}: its tokenizer cannot be loaded ({exc}); "
                         "the relevance model's folder needs its tokenizer files (tokenizer.json, "
                         "tokenizer_config.json)") from None
    if _base_vocab(own) == _base_vocab(tokenizer):
        return tokenizer
    LOG.info("decselfmask: the relevance model %s has a tokenizer of its own (%d tokens; the student's: %d); "
             "relevance is scored with it", model_path, len(own), len(tokenizer))
    ensure_chat_template(own, config.fallback_chat_template, where=f"decselfmask.relevance.model ({model_path})")
    return own


def _base_vocab(tokenizer) -> dict:
    """The vocabulary without added tokens (a student's added mask token does not make it another one)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.get_vocab(with_added_tokens=False)
    return tokenizer.get_vocab()


def shard_plan(n_texts: int, config: DecSelfMaskConfig) -> tuple[list[tuple[int, str]], list[list[tuple[int, str]]]]:
    """The (text, item) pairs and how they are cut into shards: fixed by the texts and settings."""
    per_text = items_for_texts(n_texts, config.task_items(), config.items_per_text_count(), config.seed)
    pairs = [(i, item) for i, its in enumerate(per_text) for item in its]
    size = config.relevance.shard_size
    return pairs, [pairs[s : s + size] for s in range(0, len(pairs), size)]


def wait_for_shards(texts, config: DecSelfMaskConfig, tokenizer, model_path: str, cache_root, timeout_s: float,
                    poll_s: float = 2.0, trust_remote_code: bool = False) -> None:
    """Block until every relevance shard of ``texts`` is in the cache (other processes write them)."""
    import time

    tokenizer = scoring_tokenizer(config, tokenizer, model_path, trust_remote_code)
    rel_dir = relevance_dir(cache_root, relevance_key(config, model_path, tokenizer, texts_fingerprint(texts)))
    _, shards = shard_plan(len(texts), config)
    deadline = time.monotonic() + timeout_s
    pending = set(range(len(shards)))
    while pending:
        pending = {n for n in pending if load_shard(shard_path(rel_dir, n), shards[n]) is None}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"decselfmask: {len(pending)} relevance shards in {rel_dir} did not appear in "
                               f"{timeout_s:.0f} s; did another process fail? Run the command again to resume.")
        time.sleep(poll_s)






def run_precompute(
    texts: list[str],
    config: DecSelfMaskConfig,
    tokenizer,
    model_path: str,
    cache_root: str | Path,
    trust_remote_code: bool = False,
    progress: bool = True,
    rank: int = 0,
    world_size: int = 1,
    token_budget: int | None = None,
    example_tokens: Callable[[dict], int] | None = None,
) -> PrecomputeResult | None:
    """Relevance, spans and masked examples of ``texts`` (already truncated), cached.

    With ``world_size > 1`` (one call per process) this process computes only the relevance
    shards ``n`` with ``n % world_size == rank`` and returns None; once every shard exists, a
    call with ``world_size=1`` builds the examples from them (see :func:`main`).

    ``token_budget`` with ``example_tokens`` (an example's tokenised length, as the trainer's row
    has it): the stage-1 budget (:func:`.budget.apply_token_budget` keeps the leading examples
    within it). The shards are then scored in order and the precompute stops after the first shard
    whose examples take the running total past the budget: no later example can be kept, so the
    examples the budget keeps are those of a full precompute, and the later (text, item) pairs are
    never scored. Such a result is ``partial`` (its examples a prefix of the full list); its cache
    serves a later run only while its examples still exceed that run's budget.
    """
    resolve_mask_setting(tokenizer, config)  # masking.mask_token: auto -> the chosen token (prepare_pool did it)
    tokenizer = scoring_tokenizer(config, tokenizer, model_path, trust_remote_code)  # the examples need none
    rkey = relevance_key(config, model_path, tokenizer, texts_fingerprint(texts))
    ex_dir = examples_dir(cache_root, examples_key(config, rkey))
    budget = token_budget if example_tokens is not None and world_size == 1 else None
    cached = read_examples(ex_dir)
    if cached is not None and _serves(cached, budget, example_tokens):
        examples, manifest = cached
        LOG.info("decselfmask: reusing %d cached masked examples from %s", len(examples), ex_dir)
        return PrecomputeResult(examples, ex_dir, manifest["n_texts"], manifest["n_without_spans"],
                                manifest.get("n_bad_relevance", 0), True, bool(manifest.get("partial")),
                                manifest.get("n_pairs_scored", manifest.get("n_pairs", 0)))

    method_cls = check_method(config, model_path, trust_remote_code)
    if not config.task_items():
        raise ValueError(
            "decselfmask.items is empty and decselfmask.classification.labels is empty: "
            "name the task items the relevance is computed for."
        )
    rel_dir = relevance_dir(cache_root, rkey)
    pairs, shards = shard_plan(len(texts), config)
    select = selector_for(config, method_cls)
    if budget is not None:
        records = _records_within_budget(texts, config, tokenizer, model_path, method_cls, rel_dir, shards,
                                         trust_remote_code, progress, _budget_spent(texts, config, select, budget,
                                                                                    example_tokens))
    else:
        records = _relevance_records(texts, config, tokenizer, model_path, method_cls, rel_dir, shards,
                                     trust_remote_code, progress, rank, world_size)
    if records is None:
        return None
    partial = len(records) < len(pairs)
    examples, without, bad = _examples_from_records(texts, records, config, select)
    if config.masking.write_jsonl:
        write_examples(ex_dir, examples, {
            "n_texts": len(texts), "n_pairs": len(pairs), "n_pairs_scored": len(records), "partial": partial,
            "token_budget": budget, "n_without_spans": without, "n_bad_relevance": bad,
            "relevance_dir": rel_dir.name, "model": model_path,
            "settings": config.model_dump(exclude={"classification"}), "version": __version__,
        })
    LOG.info("decselfmask: %d masked examples from %d texts (%d (text, item) pairs gave no span, %d had "
             "zero or non-finite relevance)", len(examples), len(texts), without, bad)
    return PrecomputeResult(examples, ex_dir, len(texts), without, bad, False, partial, len(records))


def _serves(cached: tuple[list[dict], dict], budget: int | None, example_tokens) -> bool:
    """A cached result serves this run: complete, or partial with more tokens than this run's budget
    (then the budget's cut falls inside it, whatever budget it was written for)."""
    examples, manifest = cached
    if not manifest.get("partial"):
        return True
    return budget is not None and sum(example_tokens(ex) for ex in examples) > budget


def _budget_spent(texts, config: DecSelfMaskConfig, select, budget: int, example_tokens):
    """A function of each next shard's records: True once the examples so far exceed ``budget``."""
    total = 0

    def spent(records: list[dict]) -> bool:
        nonlocal total
        for rec in records:
            if usable_scores(rec["scores"]):
                total += sum(example_tokens(ex) for ex in examples_of_record(texts[rec["text_index"]], rec,
                                                                             config, select)[1])
        return total > budget

    return spent


def _records_within_budget(texts, config: DecSelfMaskConfig, tokenizer, model_path: str, method_cls,
                           rel_dir: Path, shards, trust_remote_code: bool, progress: bool, spent) -> list[dict]:
    """The shards' records in order, each loaded from the cache or scored (the model loaded at the
    first one missing), until ``spent`` says the budget is used up."""
    records: list[dict] = []
    scorer = None
    for n, shard in enumerate(shards):
        loaded = load_shard(shard_path(rel_dir, n), shard)
        if loaded is None:
            if scorer is None:
                scorer = _ShardScorer(texts, config, tokenizer, model_path, method_cls, rel_dir, trust_remote_code,
                                      progress, sum(len(s) for s in shards[n:]))
            loaded = scorer.score(n, shard)
        records.extend(loaded)
        if spent(loaded):
            if n + 1 < len(shards):
                LOG.info("decselfmask: the stage-1 token budget is spent after shard %d of %d: %d of %d (text, "
                         "item) pairs scored, the rest never", n + 1, len(shards), len(records),
                         sum(len(s) for s in shards))
            break
    if scorer is not None:
        scorer.close()
    return records


def _relevance_records(texts, config: DecSelfMaskConfig, tokenizer, model_path: str, method_cls, rel_dir: Path,
                       shards, trust_remote_code: bool, progress: bool, rank: int, world_size: int):
    """Every shard's relevance records, computing this process's missing shards; None while other
    processes of a sharded run still own some."""
    records: dict[int, list[dict]] = {}
    todo = []
    for n, shard in enumerate(shards):
        if n % world_size != rank:
            continue
        loaded = load_shard(shard_path(rel_dir, n), shard)
        if loaded is None:
            todo.append(n)
        else:
            records[n] = loaded
    if todo:
        LOG.info("decselfmask: relevance of %d (text, item) pairs with %s (%d of %d shards cached)",
                 sum(len(s) for s in shards), model_path, len(shards) - len(todo), len(shards))
        records.update(_compute_shards(texts, config, tokenizer, model_path, method_cls, rel_dir, shards, todo,
                                       trust_remote_code, progress, rank, world_size))
    if world_size > 1:
        return None
    return [rec for n in range(len(shards)) for rec in records[n]]


class _ShardScorer:
    """The relevance model and method, loaded once, scoring shards and writing them to the cache."""

    def __init__(self, texts, config: DecSelfMaskConfig, tokenizer, model_path: str, method_cls, rel_dir: Path,
                 trust_remote_code: bool, progress: bool, total: int, rank: int = 0, world_size: int = 1):
        r = self.r = config.relevance
        self.texts, self.tokenizer, self.rel_dir, self.rank, self.world_size = texts, tokenizer, rel_dir, rank, world_size
        self.model = load_relevance_model(
            model_path, r.dtype, r.device, trust_remote_code=trust_remote_code,
            eager_attention=method_cls.needs_eager_attention, load_in_4bit=r.load_in_4bit,
            load_in_8bit=r.load_in_8bit,
        )
        self.method = method_cls(self.model, tokenizer, r.target, r.token_position, steps=r.ig_steps,
                                 unit=r.ablation_unit, fast_backward=fast_backward(config))
        self.bar = tqdm(total=total, unit="text", desc="self-relevance", disable=not progress, dynamic_ncols=True)

    def score(self, n: int, shard: list[tuple[int, str]]) -> list[dict]:
        r = self.r
        # a shard's pairs are text by text: compute_relevance hands a method that shares work between
        # the items of a text (grad_x_input) all of them at once; the records keep the shard's order
        prompts = [build_relevance_prompt(self.tokenizer, self.texts[i], item, r.lead_in, r.prompt_style)
                   for i, item in shard]
        rels = compute_relevance(self.method, prompts, r.batch_size, progress=self.bar)
        records = [
            {"text_index": i, "item": item, "offsets": [list(o) for o in p.offsets],
             # never NaN in a cache: non-finite relevance is stored as null and skipped
             "scores": [round(float(v), 7) for v in rel] if np.all(np.isfinite(rel)) else None}
            for (i, item), p, rel in zip(shard, prompts, rels)
        ]
        write_shard(self.rel_dir, n, shard, records, self.rank, self.world_size)
        return records

    def close(self) -> None:
        """Drop the model and hand its memory back before the process goes on to train."""
        self.bar.close()
        del self.method, self.model
        release_freed_memory()


def _compute_shards(texts, config: DecSelfMaskConfig, tokenizer, model_path: str, method_cls, rel_dir: Path, shards,
                    todo: list[int], trust_remote_code: bool, progress: bool, rank: int, world_size: int):
    scorer = _ShardScorer(texts, config, tokenizer, model_path, method_cls, rel_dir, trust_remote_code, progress,
                          sum(len(shards[n]) for n in todo), rank, world_size)
    done = {n: scorer.score(n, shards[n]) for n in todo}
    scorer.close()
    return done


def _examples_from_records(texts, records: list[dict], config: DecSelfMaskConfig, select):
    """The masked examples of every record; counts of records without spans and with unusable relevance."""
    examples, without, bad = [], 0, 0
    for rec in records:
        if not usable_scores(rec["scores"]):
            bad += 1
            continue
        spans, rows = examples_of_record(texts[rec["text_index"]], rec, config, select)
        if not spans:
            without += 1
        examples.extend(rows)
    if not examples:
        raise ValueError(
            f"decselfmask: no spans were found in any of the {len(texts)} texts ({bad} with zero or "
            "non-finite relevance); lower decselfmask.spans.high / low or check the relevance model."
        )
    return examples, without, bad






def main(argv: list[str] | None = None) -> None:
    """``[accelerate launch --num_processes N --no_python] axolotl decselfmask precompute recipe.yml``

    The relevance precompute of a recipe, on its own: with ``accelerate launch`` (or torchrun)
    each process scores its slice of the shards (shard ``n`` goes to rank ``n % world_size``),
    then the main process waits for all shards and builds the masked examples. A later
    ``axolotl preprocess`` / ``axolotl train`` of the same recipe finds them in the cache.
    """
    import argparse

    from axolotl.cli.config import load_cfg
    from axolotl.loaders import load_tokenizer

    from axolotl_decselfmask.args import plugin_config
    from axolotl_decselfmask.io.tables import dataset_text_column
    from axolotl_decselfmask.stage1.pool import (
        MASKED_RECONSTRUCTION_TYPE as DATASET_TYPE,
    )
    from axolotl_decselfmask.stage1.pool import prepare_pool, relevance_model_path

    parser = argparse.ArgumentParser(prog="axolotl decselfmask precompute")
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
        pool = prepare_pool(read_pool_as_axolotl(entry, cfg, column), cfg, config, tokenizer, entry["path"], column)
        model_path = relevance_model_path(cfg, config)
        common = dict(texts=pool.texts, config=config, tokenizer=tokenizer, model_path=model_path,
                      cache_root=config.cache_dir, trust_remote_code=bool(cfg.trust_remote_code), progress=rank == 0)
        if world > 1:
            run_precompute(**common, rank=rank, world_size=world)
            if rank != 0:
                continue
            wait_for_shards(pool.texts, config, tokenizer, model_path, config.cache_dir, args.wait_timeout,
                            trust_remote_code=bool(cfg.trust_remote_code))
        result = run_precompute(**common)
        print(f"decselfmask: {len(result.examples)} masked examples from {result.n_texts} texts in "
              f"{result.directory} ({world} process(es))")


if __name__ == "__main__":
    main()
