"""scripts/after_ladder.sh (docs/experiments.md, "After the ladder"): its queue follows the registered order (the
arm's seeds one after another, the reused-stage-1 methods only at the seeds their rung ran, then the transfer with
Qwen's jobs in one group), and it refuses grids that are not committed as they are, before it starts anything.
Run in a scratch git repository holding the script and grids written by scripts/arm_grids.py and
scripts/transfer_grids.py."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import script_module

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not shutil.which("git"), reason="needs git")


def _script(name: str):
    return script_module(name)


def _repo(tmp: Path, rung: int, transfer: bool) -> Path:
    (tmp / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "after_ladder.sh", tmp / "scripts")
    grids = tmp / "examples" / "grids"
    grids.mkdir(parents=True)
    arm = _script("arm_grids")
    (grids / "arm_hallmarks.yml").write_text(arm.render(rung, arm.arm_grid(rung)))
    if transfer:
        tg = _script("transfer_grids")
        for name, grid in tg.transfer_grids([rung]).items():
            (grids / tg.OUT[name].name).write_text(tg.render(name, [rung], grid))
    git = ["git", "-C", str(tmp), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "grids"], check=True)
    return tmp


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    # the script reads the arm grid with the checkout's .venv/bin/python; here, this test's own
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(repo / "scripts" / "after_ladder.sh"), *args], capture_output=True, text=True,
                          env=env)


def test_the_queue_of_a_late_rung_with_both_transfer_grids(tmp_path):
    repo = _repo(tmp_path, 5, transfer=True)
    done = _run(repo, "--print")
    assert done.returncode == 0, done.stderr
    jobs = done.stdout.split()
    arm = [j for j in jobs if j.startswith("arm_hallmarks|")]
    methods = _script("arm_grids").METHODS
    # seed 0: every method; seeds 1 and 2: not the decselfmask_* methods (rung 5 ran seed 0 only)
    assert [j.split("|")[1:3] for j in arm] == (
        [[m, "0"] for m in methods] + [[m, s] for s in "12" for m in methods if not m.startswith("decselfmask")])
    assert jobs[:len(arm)] == arm  # the arm first
    transfer = jobs[len(arm):]
    three = "sft,decselfmask,continual_pretraining_authors"
    assert transfer[:4] == [f"transfer_mtsamples|sft|0|docs/results/predictions/transfer_mtsamples",
                            "transfer_mtsamples|decselfmask|0|docs/results/predictions/transfer_mtsamples",
                            "transfer_mtsamples|continual_pretraining_authors|0|docs/results/predictions/transfer_mtsamples",
                            f"transfer_qwen_hallmarks|{three}|0|docs/results/predictions/transfer_qwen_hallmarks|qwen"]
    assert len(transfer) == 12 and all(j.endswith("|qwen") for j in transfer if j.startswith("transfer_qwen"))


def test_an_arm_grid_without_methods_or_not_yaml_is_refused_by_name(tmp_path):
    repo = _repo(tmp_path, 5, transfer=False)
    arm = repo / "examples" / "grids" / "arm_hallmarks.yml"
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    header = "\n".join(line for line in arm.read_text().splitlines() if line.startswith("#"))  # names the rung
    for body, says in (("methods: []\n", "no methods in examples/grids/arm_hallmarks.yml"),
                       ("methods: [sft\n", "examples/grids/arm_hallmarks.yml is not a grid YAML")):
        arm.write_text(header + "\n" + body)
        subprocess.run([*git, "commit", "-qam", "edit"], check=True)
        done = _run(repo, "--print")
        assert done.returncode == 1 and says in done.stderr and not done.stdout


def test_an_early_rung_runs_every_seed_and_no_transfer_without_its_grids(tmp_path):
    repo = _repo(tmp_path, 2, transfer=False)
    jobs = _run(repo, "--print").stdout.split()
    assert len(jobs) == 3 * 7 and all(j.startswith("arm_hallmarks|") for j in jobs)
    assert [j.split("|")[2] for j in jobs] == ["0"] * 7 + ["1"] * 7 + ["2"] * 7


def test_a_grid_not_committed_as_it_is_is_refused(tmp_path):
    repo = _repo(tmp_path, 5, transfer=True)
    grid = repo / "examples" / "grids" / "transfer_mtsamples.yml"
    grid.write_text(grid.read_text() + "\n# edited\n")
    done = _run(repo, "--print")
    assert done.returncode == 1 and "transfer_mtsamples.yml is not committed as it is" in done.stderr
    (repo / "examples" / "grids" / "arm_hallmarks.yml").unlink()
    done = _run(repo, "--print")
    assert done.returncode == 1 and "arm_hallmarks.yml is not there" in done.stderr


def test_an_arm_grid_that_names_no_rung_is_refused_with_a_message(tmp_path):
    repo = _repo(tmp_path, 5, transfer=False)
    grid = repo / "examples" / "grids" / "arm_hallmarks.yml"
    grid.write_text(grid.read_text().replace("--rung 5", "rung five"))
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "x"],
                   check=True)
    done = _run(repo, "--print")
    assert done.returncode == 1 and "does not name its rung" in done.stderr


def test_a_carried_teacher_puts_mtsamples_stage_1_methods_in_the_qwen_group(tmp_path):
    """Rung 6 carried over: Qwen is the teacher of mtsamples' decselfmask and continual pretraining (one relevance
    of about 10 GB), so the two are one job of the qwen group, never beside another Qwen job."""
    repo = _repo(tmp_path, 6, transfer=True)
    jobs = _run(repo, "--print").stdout.split()
    mts = [j for j in jobs if j.startswith("transfer_mtsamples|")]
    assert mts[:2] == ["transfer_mtsamples|sft|0|docs/results/predictions/transfer_mtsamples",
                       "transfer_mtsamples|decselfmask,continual_pretraining_authors|0|"
                       "docs/results/predictions/transfer_mtsamples|qwen"] and len(mts) == 6


FAKE = """#!/bin/bash
# records: grid methods seeds
while [ $# -gt 0 ]; do
  case $1 in --methods) m=$2; shift 2 ;; --seeds) s=$2; shift 2 ;; run) g=$2; shift 2 ;; *) shift ;; esac
done
echo "$g $m $s" >> "$(dirname "$0")/../../runs.txt"
"""


@pytest.mark.skipif(not (shutil.which("flock") and shutil.which("taskset")), reason="needs flock and taskset")
def test_it_starts_two_lanes_from_its_worktree_that_run_every_job(tmp_path):
    """The real start, in a scratch repository whose runner only records what it is asked to run: the worktree is
    made at the commit, both lanes hold the whole queue, and every job is run."""
    repo = _repo(tmp_path / "main", 5, transfer=False)
    shutil.copy(ROOT / "scripts" / "lane.sh", repo / "scripts")
    (repo / ".venv" / "bin").mkdir(parents=True)
    fake = repo / ".venv" / "bin" / "axolotl"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    (repo / "models").mkdir()
    (repo / ".venv-setfit").mkdir()
    (repo / ".gitignore").write_text(".venv/\n.venv-setfit/\nmodels/\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "lane"], check=True)
    expected = _run(repo, "--print").stdout.split()
    worktree = tmp_path / "after"
    done = _run(repo, str(worktree))
    assert done.returncode == 0, done.stderr
    assert "lane started on core 1" in done.stdout and "lane started on core 0" in done.stdout
    pids = [int((worktree / "outputs" / f"lane{c}.pid").read_text()) for c in (0, 1)]
    deadline = time.time() + 60
    while any(Path(f"/proc/{p}").exists() for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    runs = (repo / "runs.txt").read_text().splitlines()  # the worktree's .venv is a link to the checkout's
    wanted = sorted(f"examples/grids/{j.split('|')[0]}.yml {j.split('|')[1]} {j.split('|')[2]}" for j in expected)
    # every job, by one lane or the other (a lane that comes to a job the other has finished calls the runner
    # again, which skips a finished run: this runner finishes at once, so that happens here)
    assert sorted(set(runs)) == wanted
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert subprocess.run(["git", "-C", str(worktree), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip() == head
    again = _run(repo, str(worktree))  # a second start finds the grids the same and starts the lanes again
    assert again.returncode == 0, again.stderr
