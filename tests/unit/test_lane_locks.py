"""scripts/lane.sh's locks (docs/experiments.md, "Running the ladder"): two lanes that hold the same jobs run
each (grid, method, seeds) once, a lane runs only the methods whose lock it took, a lock whose lane has died
is taken over, and every lock is released after its job. The lanes run in a scratch copy of the layout
lane.sh expects, whose ``.venv/bin/axolotl`` records the runs it is asked for (the experiment runner is not
what is tested here; the lane's queue and locks are)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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


def test_two_lanes_run_each_method_once(tmp_path):
    tmp = _layout(tmp_path)
    first = _lane(tmp, "g|m1,m2|0|", sleep=3)
    deadline = time.time() + 20
    while not (tmp / "outputs" / "locks" / "g-m2-0" / "pid").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = _lane(tmp, "g|m2|0|", "g|m3|0|")
    out2 = second.communicate(timeout=60)[0]
    out1 = first.communicate(timeout=60)[0]
    assert sorted(_runs(tmp)) == ["examples/grids/g.yml m1,m2 0", "examples/grids/g.yml m3 0"]
    assert "=== skip" in out2 and "g m2 0: another lane runs it" in out2 and "=== skip" not in out1
    assert list((tmp / "outputs" / "locks").iterdir()) == []  # released


def test_a_dead_lane_s_lock_is_taken_over(tmp_path):
    tmp = _layout(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = tmp / "outputs" / "locks" / "g-m1-0"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(f"{dead.pid}\n")
    out = _lane(tmp, "g|m1|0|").communicate(timeout=60)[0]
    assert _runs(tmp) == ["examples/grids/g.yml m1 0"] and "skip" not in out
    assert not lock.exists()


def test_a_live_lane_s_lock_is_left_alone(tmp_path):
    tmp = _layout(tmp_path)
    lock = tmp / "outputs" / "locks" / "g-m1-0"
    lock.mkdir(parents=True)
    (lock / "pid").write_text(f"{os.getpid()}\n")  # this test's own process: alive
    out = _lane(tmp, "g|m1,m2|0|").communicate(timeout=60)[0]
    assert _runs(tmp) == ["examples/grids/g.yml m2 0"] and "g m1 0: another lane runs it" in out
    assert lock.exists()  # not this lane's to release
