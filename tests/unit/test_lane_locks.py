"""scripts/lane.sh's locks (docs/experiments.md, "Running the ladder"): two lanes that hold the same jobs run
each (grid, method, seeds) once; a job runs only when all of its locks are free (else it is skipped whole);
the run holds its locks, so a lane killed under it does not free them, while a lock nobody holds (a lane that
died, at a session's end) is simply taken. The lanes run in a scratch copy of the layout lane.sh expects,
whose ``.venv/bin/axolotl`` records the runs it is asked for (the experiment runner is not what is tested
here; the lane's queue and locks are)."""

import fcntl
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (shutil.which("flock") and shutil.which("taskset")),
                                reason="scripts/lane.sh needs flock and taskset (util-linux)")
FAKE = """#!/bin/bash
# records: grid methods seeds
while [ $# -gt 0 ]; do
  case $1 in --methods) m=$2; shift 2 ;; --seeds) s=$2; shift 2 ;; run) g=$2; shift 2 ;; *) shift ;; esac
done
echo "$g $m $s" >> "$(dirname "$0")/../../runs.txt"
sleep "${FAKE_SLEEP:-0}"
"""


def _layout(tmp: Path) -> Path:
    (tmp / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "lane.sh", tmp / "scripts" / "lane.sh")
    (tmp / ".venv" / "bin").mkdir(parents=True)
    fake = tmp / ".venv" / "bin" / "axolotl"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    return tmp


def _lane(tmp: Path, *jobs: str, sleep: float = 0.0) -> subprocess.Popen:
    env = dict(os.environ, KERNELS="native", FAKE_SLEEP=str(sleep))
    return subprocess.Popen(["bash", str(tmp / "scripts" / "lane.sh"), "0", *jobs], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _runs(tmp: Path) -> list[str]:
    path = tmp / "runs.txt"
    return path.read_text().splitlines() if path.exists() else []


def _wait_for(path: Path, held: bool = True, seconds: float = 20.0) -> None:
    """Until the lock file ``path`` is held by some process (``flock`` says so)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if path.exists():
            with open(path) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(f, fcntl.LOCK_UN)
                except BlockingIOError:
                    return
        time.sleep(0.05)
    raise AssertionError(f"{path} was never locked")


def test_two_lanes_run_each_method_once(tmp_path):
    tmp = _layout(tmp_path)
    first = _lane(tmp, "g|m1|0|", "g|m2|0|", sleep=2)
    _wait_for(tmp / "outputs" / "locks" / "g-m1-0.lock")
    second = _lane(tmp, "g|m1|0|", "g|m3|0|")
    out2 = second.communicate(timeout=60)[0]
    out1 = first.communicate(timeout=60)[0]
    # the second lane skipped m1 (running) and ran m3; the first ran m1 and m2 (the runner skips finished runs:
    # here the recording runner counts every call)
    assert sorted(_runs(tmp)) == ["examples/grids/g.yml m1 0", "examples/grids/g.yml m2 0", "examples/grids/g.yml m3 0"]
    assert "g m1 0: another lane runs m1" in out2 and "=== skip" not in out1


def test_a_job_runs_only_with_all_of_its_locks(tmp_path):
    """A job of two methods (rung 6's: one teacher relevance) whose one lock is held is skipped whole."""
    tmp = _layout(tmp_path)
    lock = tmp / "outputs" / "locks" / "g-m1-0.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # this test holds it: another lane's run
        out = _lane(tmp, "g|m1,m2|0|", "g|m3|0|").communicate(timeout=60)[0]
    assert _runs(tmp) == ["examples/grids/g.yml m3 0"] and "g m1,m2 0: another lane runs m1" in out


def test_a_lock_nobody_holds_is_taken(tmp_path):
    """A lock file left by a lane that died (a session's end): nobody holds it, so the job runs."""
    tmp = _layout(tmp_path)
    lock = tmp / "outputs" / "locks" / "g-m1-0.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    out = _lane(tmp, "g|m1|0|").communicate(timeout=60)[0]
    assert _runs(tmp) == ["examples/grids/g.yml m1 0"] and "skip" not in out


def test_a_run_keeps_its_locks_when_its_lane_is_killed(tmp_path):
    """Stopping a lane by killing its bash leaves its run going: the run still holds the locks."""
    tmp = _layout(tmp_path)
    first = _lane(tmp, "g|m1|0|", sleep=4)
    lock = tmp / "outputs" / "locks" / "g-m1-0.lock"
    _wait_for(lock)
    deadline = time.time() + 20
    while not _runs(tmp) and time.time() < deadline:  # the run has started
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # the lane's bash only
    first.wait()
    out = _lane(tmp, "g|m1|0|").communicate(timeout=60)[0]
    assert "another lane runs m1" in out and _runs(tmp) == ["examples/grids/g.yml m1 0"]
    time.sleep(4.5)  # the orphaned run ends: the kernel releases its lock
    out = _lane(tmp, "g|m1|0|").communicate(timeout=60)[0]
    assert "skip" not in out and len(_runs(tmp)) == 2


def test_jobs_of_one_group_never_run_at_once(tmp_path):
    """Two Qwen jobs (group ``qwen``, about 10 GB each) in two lanes: the second waits for the first to end, then
    runs (it is not skipped: it is another job); the lane goes on with its next job after it."""
    tmp = _layout(tmp_path)
    first = _lane(tmp, "q|m1|0||qwen", sleep=3)
    _wait_for(tmp / "outputs" / "locks" / "group-qwen.lock")
    started = time.time()
    second = _lane(tmp, "q|m1|1||qwen", "g|m2|0|")
    out2 = second.communicate(timeout=60)[0]
    first.communicate(timeout=60)
    assert "q m1 1: another lane runs a job of group qwen" in out2 and "skip" not in out2
    assert time.time() - started >= 2.0  # it waited for the first run to end before its own
    runs = _runs(tmp)
    assert runs == ["examples/grids/q.yml m1 0", "examples/grids/q.yml m1 1", "examples/grids/g.yml m2 0"]
