"""The ladder's grids (issue 34; docs/results.md, "The ladder (issue 34): plan"): written by
scripts/ladder_grids.py, valid for the runner, one factor per rung, and (where the shared corpora are
present) recipes whose resolved settings are the plan's at every rung."""

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import script_module

from axolotl_decselfmask.args import DecSelfMaskConfig
from axolotl_decselfmask.tools.experiments.data import build_data
from axolotl_decselfmask.tools.experiments.grid import Grid, load_grid
from axolotl_decselfmask.tools.experiments.runner import plan

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ladder_grids.py"
SHARED = ROOT.parent / "shared" / "data"
GRIDS = [ROOT / "examples" / "grids" / f"ladder_{n}_hallmarks.yml" for n in range(1, 8)]


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_committed_grids_are_what_the_script_writes():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_each_rung_adds_only_its_factor_to_the_one_before():
    ladder = script_module("ladder_grids")
    grids = [yaml.safe_load(p.read_text()) for p in GRIDS]
    for g in grids:
        Grid(**g)  # unknown keys are errors
    core = yaml.safe_load(ladder.CORE.read_text())
    first = _flat({k: v for k, v in grids[0].items() if k not in ("methods", "seeds")})
    base = _flat({k: v for k, v in core.items() if k not in ("methods", "seeds")})
    # rung 1 is the core grid plus the ladder's measurement keys (scorers, heads), nothing else
    assert {k for k in set(first) | set(base) if first.get(k) != base.get(k)} == set(ladder.COMMON)
    for n in range(1, 7):
        before = _flat({k: v for k, v in grids[n - 1].items() if k not in ("methods", "seeds")})
        after = _flat({k: v for k, v in grids[n].items() if k not in ("methods", "seeds")})
        changed = {k for k in set(before) | set(after) if before.get(k, "absent") != after.get(k, "absent")}
        assert changed == set(ladder.RUNGS[n][1]), f"rung {n + 1}"
    # seeds: three at rungs 1-3, one at 4-7; sft only where stage 2 changes (rungs 1-2)
    assert [g["seeds"] for g in grids] == [[0, 1, 2]] * 3 + [[0]] * 4
    assert [("sft" in g["methods"]) for g in grids] == [True, True] + [False] * 5
    assert all({"decselfmask", "continual_pretraining_authors"} <= set(g["methods"]) for g in grids)


def test_the_script_notices_a_hand_edit(tmp_path):
    ladder = script_module("ladder_grids")
    grids = ladder.rung_grids()
    edited = copy.deepcopy(grids[2])
    edited["pool_size"] = 5
    assert ladder.render(3, edited) != ladder.render(3, grids[2])


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared corpora ({SHARED}) are not here")
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7])  # rung 6 names the Qwen folder (make qwen-model)
def test_a_rung_gives_the_plans_settings(n, tmp_path):
    grid = load_grid(GRIDS[n - 1])
    out = tmp_path / "out"
    data = build_data(grid, out)
    runs = plan(grid, out, data)
    assert {r["method"] for r in runs} == set(grid.methods)
    for run in runs:
        recipe = run["recipe"]
        config = DecSelfMaskConfig(**recipe["decselfmask"])
        c = config.classification
        assert c.scorer == "both" and c.joint and c.prompt == "mask_fill" and c.lora_r == 32
        assert (c.train_on_inputs, c.lora_alpha, c.batch_size * c.gradient_accumulation_steps) == \
            ((False, 64, 8) if n == 1 else (True, 16, 64))
        if run["method"] == "zero_shot":
            continue
        assert config.probing.authors_head.epochs == 50 and set(config.probing.heads) == {"package", "authors"}
        if run["method"] in ("decselfmask", "continual_pretraining_authors"):
            assert recipe.get("train_on_inputs", False) is (n >= 3)
            assert config.items_per_text == 1
            assert (config.stage1_token_budget > 10**7) is (n >= 4)
            rel = config.relevance
            assert (rel.target, rel.prompt_style, config.spans.sign) == \
                (("max_logit", "completion", "absolute") if n >= 5 else ("sum_logprob", "question", "auto"))
            assert (recipe.get("adapter"), recipe["learning_rate"]) == ((None, 4e-5) if n == 7 else ("lora", 3e-4))


def test_resume_script_runs_every_registered_run_once_in_the_order_of_amendment_l2():
    """scripts/ladder_resume.sh's jobs: seed 0 of rungs 2 -> 7, then seeds 1 and 2 of rungs 1 -> 3
    (docs/results.md, amendment L2); each job's methods and seed are its grid's, zero-shot only at rung 1
    seed 0 (already run), and together with rung 1 seed 0 they cover every (rung, method, seed) of the
    grids exactly once."""
    out = subprocess.run(["bash", str(ROOT / "scripts" / "ladder_resume.sh"), "--print"], capture_output=True,
                         text=True, check=True).stdout.split()
    jobs = [line.split("|")[:4] for line in out]
    order = [(int(stem.split("_")[1]), int(seed)) for stem, _, seed, _ in jobs]
    assert order == [(r, 0) for r in range(2, 8)] + [(r, s) for s in (1, 2) for r in (1, 2, 3)]
    covered = {(1, m, 0) for m in ("zero_shot", "sft", "decselfmask", "continual_pretraining_authors")}
    for stem, methods, seed, pdir in jobs:
        grid = yaml.safe_load((ROOT / "examples" / "grids" / f"{stem}.yml").read_text())
        assert pdir == f"docs/results/predictions/{stem}"
        assert int(seed) in grid["seeds"]
        for method in methods.split(","):
            assert method in grid["methods"] and method != "zero_shot"
            key = (int(stem.split("_")[1]), method, int(seed))
            assert key not in covered
            covered.add(key)
    expected = set()
    for n, path in enumerate(GRIDS, start=1):
        grid = yaml.safe_load(path.read_text())
        for method in grid["methods"]:
            for seed in grid["seeds"]:
                if method != "zero_shot" or seed == 0:
                    expected.add((n, method, seed))
    assert covered == expected


def test_resume_script_two_lanes_split_the_same_runs_and_meet_in_the_middle():
    """--two-lanes (amendments L3, L4): lane 1 gets the seed-0 runs in the one-lane order, lane 0 seeds 1 and 2,
    then the seed-0 runs from the last backwards, one method a job (the locks of scripts/lane.sh keep the two
    from running one run twice); rung 6's two methods stay one job, so that its teacher's relevance (about 10
    GB) never runs twice at once; together the lanes hold every run of the one-lane queue."""
    script = str(ROOT / "scripts" / "ladder_resume.sh")

    def runs(jobs):
        return [(stem, m, seed) for stem, methods, seed, _ in (j.split("|")[:4] for j in jobs)
                for m in methods.split(",")]

    one = subprocess.run(["bash", script, "--print"], capture_output=True, text=True, check=True).stdout.split()
    two = subprocess.run(["bash", script, "--print", "--two-lanes", str(ROOT / "absent-worktree")],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert two[0] == "# lane 1 (core 1)" and "# lane 0 (core 0)" in two
    cut = two.index("# lane 0 (core 0)")
    lane1, lane0 = two[1:cut], two[cut + 1:]
    seed0 = [r for r in runs(one) if r[2] == "0"]
    assert runs(lane1) == seed0
    later = [r for r in runs(one) if r[2] != "0"]
    assert runs(lane0) == later + [r for job in reversed(lane1) for r in runs([job])]
    for lane in (lane0, lane1):
        for job in lane:
            stem, methods = job.split("|")[:2]
            assert (len(methods.split(",")) > 1) == (stem == "ladder_6_hallmarks"), job
    bad = subprocess.run(["bash", script, "--two-lane"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option --two-lane" in bad.stderr


def _lanes(*args: str) -> list[str]:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "ladder_resume.sh"), "--print", "--two-lanes", *args],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return [line for line in out if not line.startswith("#")]


def test_the_teacher_rungs_form_one_lane_group_until_the_teacher_s_cache_is_complete(tmp_path):
    """Amendment L6: rungs 6 and 7 load Qwen2.5-Coder-0.5B as their teacher (about 10 GB) until rung 6's stage-1
    cache, which rung 7 shares, holds its masked examples; until then their jobs are one lane group (scripts/lane.sh's
    fifth field), never two at once; from then on rung 7's jobs leave it, and every other job was never in it."""
    def groups(jobs):
        return {(j.split("|")[0], j.split("|")[1]): (j.split("|") + [""])[4] for j in jobs}

    before = _lanes(str(tmp_path / "worktree"))
    assert {k: g for k, g in groups(before).items() if g} == {
        ("ladder_6_hallmarks", "decselfmask,continual_pretraining_authors"): "qwen",
        ("ladder_7_hallmarks", "decselfmask"): "qwen", ("ladder_7_hallmarks", "continual_pretraining_authors"): "qwen"}
    assert all(len(j.split("|")) == (5 if j.split("|")[0] in ("ladder_6_hallmarks", "ladder_7_hallmarks") else 4)
               for j in before)
    manifest = (tmp_path / "worktree" / "outputs" / "experiments" / "ladder_6_hallmarks" / "runs" /
                "hallmarks_of_cancer" / "stage1-cache" / "examples-0123" / "manifest.json")
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    # rung 7 with a cache folder of its own (not rung 6's) would load the teacher itself: it stays in the group
    own = tmp_path / "worktree" / "outputs" / "experiments" / "ladder_7_hallmarks" / "runs" / "hallmarks_of_cancer"
    (own / "stage1-cache").mkdir(parents=True)
    assert groups(_lanes(str(tmp_path / "worktree"))) == groups(before)
    (own / "stage1-cache").rmdir()
    subprocess.run(["bash", str(ROOT / "scripts" / "share_cache.sh"), str(tmp_path / "worktree"), "ladder_7_hallmarks",
                    "ladder_6_hallmarks"], check=True, capture_output=True)
    after = _lanes(str(tmp_path / "worktree"))
    assert {k: g for k, g in groups(after).items() if g} == {
        ("ladder_6_hallmarks", "decselfmask,continual_pretraining_authors"): "qwen"}
    assert [j.split("|")[:4] for j in after] == [j.split("|")[:4] for j in before]


def test_rung_7_changes_nothing_its_stage_1_cache_keys_read():
    """Rung 7 shares rung 6's stage-1 cache (amendment L6): its factor sets only how stage 1 trains (the recipe's
    adapter and learning rate), never a ``decselfmask:`` key, the pool or the seed, which are what the relevance
    and examples keys are made of (stage1/cache.py: the decselfmask settings, the model, the texts)."""
    ladder = script_module("ladder_grids")
    assert set(ladder.RUNGS[6][1]) == {"recipe.adapter", "recipe.learning_rate"}
    six, seven = (yaml.safe_load(GRIDS[n].read_text()) for n in (5, 6))
    assert six["decselfmask"] == seven["decselfmask"]
    assert {k: v for k, v in six.items() if k != "recipe"} == {k: v for k, v in seven.items() if k != "recipe"}


def test_share_cache_links_one_grid_s_stage_1_cache_to_another_s(tmp_path):
    script = str(ROOT / "scripts" / "share_cache.sh")
    wt = tmp_path / "wt"
    cache = "runs/hallmarks_of_cancer/stage1-cache"
    done = subprocess.run(["bash", script, str(wt), "ladder_7_hallmarks", "ladder_6_hallmarks"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    seven, six = (wt / "outputs" / "experiments" / f"ladder_{n}_hallmarks" / cache for n in (7, 6))
    assert seven.is_symlink() and six.is_dir() and not six.is_symlink() and seven.resolve() == six.resolve()
    (seven / "relevance-abc").mkdir()  # what a run of rung 7 writes lands in rung 6's folder
    assert (six / "relevance-abc").is_dir()
    again = subprocess.run(["bash", script, str(wt), "ladder_7_hallmarks", "ladder_6_hallmarks"], capture_output=True,
                           text=True)
    assert again.returncode == 0 and again.stdout == "" and seven.is_symlink()
    # a grid whose runs computed their own cache keeps it, and is named
    own = wt / "outputs/experiments/ladder_5_hallmarks" / cache
    own.mkdir(parents=True)
    kept = subprocess.run(["bash", script, str(wt), "ladder_5_hallmarks", "ladder_6_hallmarks"], capture_output=True,
                          text=True)
    assert kept.returncode == 0 and "is a folder already" in kept.stderr and not own.is_symlink()
    usage = subprocess.run(["bash", script, str(wt)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


RECORDING_RUNNER = """#!/bin/bash
# records: when, on which cores, what
echo "$(date +%s.%N) $(grep Cpus_allowed_list /proc/$$/status | cut -f2) $*" >> "$(dirname "$0")/../../calls.txt"
"""


@pytest.mark.skipif(not (shutil.which("flock") and shutil.which("taskset") and (os.cpu_count() or 1) > 1),
                    reason="needs flock, taskset and two cores")
def test_a_restarted_lane_starts_after_the_run_its_stopped_lane_left_going(tmp_path):
    """scripts/lane.sh records its run's pid (outputs/run<core>.pid); a lane that ladder_resume.sh starts on that
    core while that run goes on (its lane's bash was killed) waits for it, so one core never holds two runs; the
    other lane starts at once. In a scratch worktree whose runner only records its calls."""
    import time

    wt = tmp_path / "wt"
    (wt / "outputs").mkdir(parents=True)
    (wt / ".venv" / "bin").mkdir(parents=True)
    runner = wt / ".venv" / "bin" / "axolotl"
    runner.write_text(RECORDING_RUNNER)
    runner.chmod(0o755)
    going = subprocess.Popen(["bash", "-c", 'exec -a "axolotl decselfmask experiments run going" sleep 6'])
    (wt / "outputs" / "run0.pid").write_text(f"{going.pid}\n")
    started = time.time()
    done = subprocess.run(["bash", str(ROOT / "scripts" / "ladder_resume.sh"), "--two-lanes", str(wt)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"lane 0 starts after the run still going on in it (pid {going.pid})" in done.stdout
    assert "lane 1 starts after" not in done.stdout
    pids = [int((wt / "outputs" / f"lane{c}.pid").read_text()) for c in (0, 1)]
    going.wait()
    ended = time.time()
    deadline = ended + 120
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    calls = [line.split(" ", 2) for line in (wt / "calls.txt").read_text().splitlines()]
    on = {core: [float(t) for t, c, _ in calls if c == core] for core in ("0", "1")}
    assert on["1"] and min(on["1"]) < started + 5  # lane 1 did not wait
    assert on["0"] and min(on["0"]) >= ended - 0.5  # lane 0 began with the run's end
    assert (wt / "outputs" / "run0.pid").read_text().strip() != str(going.pid)  # its own runs recorded since
