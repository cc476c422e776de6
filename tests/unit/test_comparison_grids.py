"""The core-tier grids of the many-task comparison (examples/grids/comparison_core_*.yml, issue 14;
the pre-registered plan, docs/results.md "## Plan"): valid for the runner's own grid loader, alike except for
their corpus, one binary task per label column, and (where the shared corpora are present) the
labelled samples and recipes the plan says, without running anything."""

import json
from pathlib import Path

import pytest
import yaml

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import Grid, load_grid
from axolotl_decselfmask.tools.experiments.runner import plan

ROOT = Path(__file__).resolve().parents[2]
GRIDS = sorted((ROOT / "examples" / "grids").glob("comparison_core_*.yml"))
SHARED = ROOT.parent / "shared" / "data"
#: per grid: its corpus, the prefix of its label columns and how many there are
EXPECTED = {"comparison_core_hallmarks.yml": ("hallmarks_of_cancer", "hm_", 10),
            "comparison_core_mtsamples.yml": ("mtsamples", "sp_", 22)}


def _grids() -> dict[str, Grid]:
    return {p.name: Grid(**yaml.safe_load(p.read_text())) for p in GRIDS}  # unknown keys are errors


def test_the_core_grids_are_valid_and_alike_but_for_their_corpus():
    assert [p.name for p in GRIDS] == sorted(EXPECTED)
    grids = _grids()
    # alike but for the corpus, and the notes' length: plan rule 4, applied to mtsamples (docs/results.md, note 1)
    common = [g.model_dump(exclude={"corpora", "max_text_chars"}) for g in grids.values()]
    assert all(c == common[0] for c in common)
    assert grids["comparison_core_hallmarks.yml"].max_text_chars == 700
    assert grids["comparison_core_mtsamples.yml"].max_text_chars == 500
    g = grids["comparison_core_mtsamples.yml"]
    assert g.seeds == [0, 1, 2] and not g.share_stage1_across_seeds  # stage 1 per seed
    assert {"zero_shot", "sft", "random_masking", "decselfmask"} <= set(g.methods)
    stage2 = g.decselfmask["classification"]
    assert stage2["joint"] and stage2["prompt"] == "mask_fill" and stage2["calibration"] == "balanced"
    assert sum(len(c.tasks) for grid in grids.values() for c in grid.corpora) >= 20


def test_every_label_column_is_one_binary_task_with_its_label_as_item():
    for name, grid in _grids().items():
        corpus, prefix, n = EXPECTED[name]
        (c,) = grid.corpora
        assert c.name == corpus and len(c.tasks) == n
        assert len({t.label_column for t in c.tasks}) == n
        for t in c.tasks:
            assert t.label_column.startswith(prefix) and t.positive == 1 and not t.multi_label
            (item,) = t.items
            assert item.lower() in t.question.lower()


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared corpora ({SHARED}) are not here")
@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_a_core_grid_gives_balanced_labelled_samples_and_valid_recipes(path, tmp_path):
    grid = load_grid(path)  # the runner's loader: paths resolved, the corpus file there
    out = tmp_path / "out"
    data = build_data(grid, out)
    (corpus,) = grid.corpora
    info = data[corpus.name]
    read = lambda p: [json.loads(line) for line in open(p)]  # noqa: E731
    pool = {r["row"] for r in read(info["pool"])}
    assert len(pool) == grid.pool_size
    assert info["test_shared"] and info["n_test"] >= grid.test_notes == 150  # one test set for the corpus (P2)
    shared = {r["row"] for r in read(info["tasks"][corpus.tasks[0].name]["test"])}
    for t in corpus.tasks:
        d = info["tasks"][t.name]
        assert d["labels"] == ["no", "yes"] and d["items"] == t.items
        test = read(d["test"])
        test_rows = {r["row"] for r in test}
        assert test_rows == shared and not test_rows & pool
        assert sum(r["label"] == "yes" for r in test) >= grid.test_min_positives == 10
        for seed in grid.seeds:  # 8 notes with the label and 8 without, never a test note
            labelled = read(d["train"][seed])
            assert sorted(r["label"] for r in labelled) == ["no"] * 8 + ["yes"] * 8
            assert not test_rows & {r["row"] for r in labelled}
    runs = plan(grid, out, data)
    assert len(runs) == 1 + (len(grid.methods) - 1) * len(grid.seeds)  # zero-shot once, the others per seed
    for run in runs:  # every recipe's decselfmask block is valid, with the same stage 2
        if run["method"] == "setfit":  # not an Axolotl recipe: the same labelled and test files
            spec = run["recipe"]
            assert spec["settings"] == {"num_iterations": 2, "num_epochs": 1, "batch_size": 16, "max_seq_length": 128}
            assert {t["test_file"] for t in spec["tasks"]} == {data[corpus.name]["tasks"][t.name]["test"]
                                                              for t in corpus.tasks}
            continue
        config = DecSelfMaskConfig(**run["recipe"]["decselfmask"])
        rel = config.relevance  # the pinned relevance (the faithfulness benchmark's default row; the paper's)
        if run["method"] == "decselfmask_paper":
            assert (rel.method, rel.target, rel.prompt_style, config.items_per_text) == \
                ("attnlrp", "max_logit", "completion", "all")
            assert config.spans.sign == "absolute" and run["recipe"]["train_on_inputs"] is True
        elif run["method"] in ("decselfmask", "random_masking"):
            assert (rel.method, rel.target, rel.prompt_style, config.spans.sign) == \
                ("attnlrp", "sum_logprob", "question", "auto") and config.items_per_text == 1
        assert config.classification.joint and config.classification.prompt == "mask_fill"
        assert config.classification.batch_size == 8 and not config.classification.train_on_inputs
        assert len(config.tasks) == len(corpus.tasks)
