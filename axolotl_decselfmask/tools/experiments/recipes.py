"""The Axolotl recipe of one run: a method (:mod:`.methods`) on one corpus, stage 2 for every
task x seed. Every run of a corpus shares one stage-1 cache (``runs/<corpus>/stage1-cache``), so
methods with the same relevance settings (random_masking and decselfmask) compute it once."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from axolotl_decselfmask.tools.experiments.grid import CorpusSpec, Grid
from axolotl_decselfmask.tools.experiments.methods import apply_method

BASE_RECIPE: dict[str, Any] = {
    "val_set_size": 0,
    "sequence_len": 256,
    "sample_packing": False,
    "adapter": "lora",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_linear": True,
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
    "lora_embedding_kernel": False,
    "micro_batch_size": 4,
    "gradient_accumulation_steps": 2,
    "num_epochs": 1,
    "learning_rate": 3e-4,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.1,
    "optimizer": "adamw_torch",
    "bf16": "auto",
    "fp16": False,
    "tf32": False,
    "gradient_checkpointing": False,
    "logging_steps": 5,
    "save_strategy": "no",
}
CACHE_FOLDER = "stage1-cache"


def yaml_dump(value) -> str:
    """YAML without anchors and aliases: recipes are read by people."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    return yaml.dump(value, Dumper=Dumper, sort_keys=False)


def _merge(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def run_tasks(corpus: CorpusSpec, data: dict, seeds: list[int]) -> list[dict]:
    """The stage-2 tasks ``<task>@seed<k>`` of one run (each with its relevance items). A run of
    several seeds (``share_stage1_across_seeds``) gives each task its seed: each seed's stage 2 is
    then trained on that seed's labelled notes only, seeded by it (stage2/run.py, seed_groups)."""
    tasks = []
    for t in corpus.tasks:
        d = data["tasks"][t.name]
        for seed in seeds:
            tasks.append({"task": f"{t.name}@seed{seed}", "train_file": d["train"][seed], "test_file": d["test"],
                          "labels": d["labels"], "question": d["question"], "items": d["items"]})
            if len(seeds) > 1:
                tasks[-1]["seed"] = seed
            if d.get("multi_label"):  # one yes/no question per label
                tasks[-1].update(multi_label=True, label_question=d["question"])
    return tasks


def stage2_defaults() -> dict[str, Any]:
    """The default value of every ``classification`` key a protocol preset sets: written in the
    common block, so that stage 2 is the same in every method, ``decselfmask_paper`` (whose
    ``protocol: paper`` would fill those keys in) included; a grid's ``classification`` wins."""
    from axolotl_decselfmask.args import ClassificationConfig
    from axolotl_decselfmask.protocol import PRESETS

    default = ClassificationConfig()
    keys = dict.fromkeys(k for preset in PRESETS.values() for k in preset.get("classification", {}))
    return {k: getattr(default, k) for k in keys}


def _common_block(grid: Grid, corpus: CorpusSpec, data: dict, seeds: list[int], run_dir: Path) -> dict:
    """The decselfmask: block every method starts from (the method's keys are set over it)."""
    dsm: dict[str, Any] = {
        "seed": seeds[0],
        "items_per_text": 1,
        "stage1": True,
        "stage1_token_budget": grid.stage1_token_budget,
        "cache_dir": str(run_dir.parent / CACHE_FOLDER),
        "relevance": {},  # the package's defaults (a grid's decselfmask: block may pin them)
        "masking": {"spans_per_example": 1},  # one example per span, the others visible (the authors')
        "classification": {"text_column": "text", "label_column": "label", **stage2_defaults()},
        "tasks": run_tasks(corpus, data, seeds),
        "probing": {"enabled": False},
    }
    if corpus.lead_in:
        dsm["relevance"]["lead_in"] = corpus.lead_in
    return _merge(dsm, grid.decselfmask)


def run_recipe(grid: Grid, corpus: CorpusSpec, data: dict, method: str, seeds: list[int], run_dir: Path) -> dict:
    """The Axolotl recipe of one run: ``method`` on ``corpus``, stage 2 for every task x seed.

    The keys that define ``method`` (:data:`.methods.METHODS`) are set last: a grid's overrides
    (``recipe``, ``decselfmask``) change every method alike and never turn one into another.
    """
    recipe = _merge(BASE_RECIPE, grid.recipe)
    recipe.update({
        "base_model": grid.model,
        "plugins": ["axolotl_decselfmask.DecSelfMaskPlugin"],
        "datasets": [{"path": data["pool"], "ds_type": "json", "text_column": "text",
                      "type": "axolotl_decselfmask.masked_reconstruction"}],
        "dataset_prepared_path": str(run_dir / "prepared"),
        "output_dir": str(run_dir / "output"),
        "seed": seeds[0],
        "decselfmask": _common_block(grid, corpus, data, seeds, run_dir),
    })
    recipe = apply_method(recipe, method)
    dsm = recipe["decselfmask"]
    if not grid.probing:
        dsm["probing"]["enabled"] = False
    pseudo = dsm["classification"].get("pseudo_labels")
    if isinstance(pseudo, dict) and pseudo.get("enabled"):
        for key, value in (("pool_file", data["pool"]), ("max_texts", grid.pseudo_label_texts)):
            pseudo.setdefault(key, value)
    return recipe
