"""Axolotl's data worker on a CPU (docs/benchmark.md, "Resident memory on a CPU"): when a recipe sets none of
``dataloader_num_workers`` / ``_pin_memory`` / ``_prefetch_factor``, Axolotl 0.19 sets one worker process
(its GPU count, 1 on a CPU), pinned memory and a prefetch factor of 256. On a CPU that worker is a forked copy of
the trainer on the same cores. This times the quickstart's stage 1 (``classification.enabled: false``,
``--steps`` optimiser steps of 8 examples, the masked examples precomputed once before) with Axolotl's default and
with ``dataloader_num_workers: 0``, each an ``axolotl train`` of its own on one core, and reads the peak resident
memory of the whole process tree (sampled every 0.2 s).

Two replicates of each: with two cores (the default) at once, core 0 runs default then workers-0, core 1 the
other order; with one (``--cores 0``) one after the other, default, workers-0, workers-0, default. Run it with
nothing else on the cores it uses:

    python benchmarks/dataloader_workers.py [--steps 30] [--cores 0,1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "quickstart.yml"
RESULTS = ROOT / "benchmarks" / "results" / "dataloader_workers.json"
WORK = ROOT / "outputs" / "bench_dataloader_workers"
VARIANTS = {"axolotl_default": {}, "workers_0": {"dataloader_num_workers": 0}}
BIN = Path(sys.executable).parent
ENV = {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1",
       "TOKENIZERS_PARALLELISM": "false", "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}


def recipe(name: str, steps: int) -> Path:
    raw = yaml.safe_load(RECIPE.read_text())
    raw.update(VARIANTS[name])
    raw["max_steps"] = steps
    raw["output_dir"] = str(WORK / name)
    raw["dataset_prepared_path"] = str(WORK / "prepared")
    raw["decselfmask"]["classification"]["enabled"] = False
    raw["decselfmask"]["cache_dir"] = str(WORK / "cache")
    path = WORK / f"{name}.yml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def tree_reading(pid: int) -> tuple[int, int]:
    """(resident bytes, data workers) of ``pid`` and its descendants, in one walk."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = workers = 0
    for p in procs:
        try:
            total += p.memory_info().rss
            workers += p.name() == "pt_data_worker"
        except psutil.NoSuchProcess:
            pass
    return total, workers


def train(name: str, steps: int, core: int) -> dict:
    log = WORK / f"{name}-core{core}-{time.strftime('%H%M%S')}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(["taskset", "-c", str(core), str(BIN / "axolotl"), "train",
                                 str(WORK / f"{name}.yml")], cwd=ROOT, env={**os.environ, **ENV}, stdout=out,
                                stderr=subprocess.STDOUT)
        peak, workers = 0, 0
        while proc.poll() is None:
            rss, seen = tree_reading(proc.pid)
            peak, workers = max(peak, rss), max(workers, seen)
            time.sleep(0.2)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{name} on core {core} failed ({proc.returncode}): see {log}")
    text = log.read_text()
    found = re.findall(r"train_runtime\W+([0-9.]+)", text)  # the trainer's last summary
    runtime = float(found[-1]) if found else None
    return {"variant": name, "core": core, "seconds": seconds, "train_runtime": runtime, "peak_tree_mib": peak / 2**20,
            "data_workers_seen": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cores", default="0,1", help="one core, or two (comma-separated)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    cores = [int(c) for c in args.cores.split(",") if c]
    if len(cores) not in (1, 2):
        raise SystemExit("--cores: one core or two")
    WORK.mkdir(parents=True, exist_ok=True)
    for name in VARIANTS:
        recipe(name, args.steps)
    # the masked examples once, so that both variants train from the same cache
    subprocess.run(["taskset", "-c", str(cores[0]), str(BIN / "axolotl"), "preprocess", str(WORK / "axolotl_default.yml")],
                   cwd=ROOT, env={**os.environ, **ENV}, check=True, capture_output=True)
    forward, backward = list(VARIANTS), list(reversed(VARIANTS))
    orders = {cores[0]: forward + backward} if len(cores) == 1 else {cores[0]: forward, cores[1]: backward}
    rows: list[dict] = []
    failures: list[BaseException] = []

    def lane(core: int) -> None:
        try:
            for name in orders[core]:
                rows.append(train(name, args.steps, core))
        except BaseException as exc:  # noqa: BLE001 - said after both lanes end
            failures.append(exc)

    threads = [threading.Thread(target=lane, args=(core,)) for core in orders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"dataloader_workers: {failures[0]}")
    from axolotl_decselfmask.hardware import read_cpu_info

    cpu = read_cpu_info().describe()
    print(f"quickstart stage 1, {args.steps} steps of 8 examples, one thread a run, core(s) {args.cores}, CPU {cpu}")
    print(f"{'variant':16} {'core':>4} {'seconds':>8} {'train_runtime':>14} {'peak tree MiB':>14} {'workers':>8}")
    for row in sorted(rows, key=lambda r: (r["variant"], r["core"])):
        print(f"{row['variant']:16} {row['core']:>4} {row['seconds']:8.1f} {row['train_runtime'] or float('nan'):14.1f} "
              f"{row['peak_tree_mib']:14.0f} {row['data_workers_seen']:>8}")
    mean = {n: {k: sum(r[k] for r in rows if r["variant"] == n) / 2 for k in ("seconds", "peak_tree_mib")}
            for n in VARIANTS}
    print(f"workers_0 / axolotl_default: seconds {mean['workers_0']['seconds'] / mean['axolotl_default']['seconds']:.2f}, "
          f"peak memory {mean['workers_0']['peak_tree_mib'] / mean['axolotl_default']['peak_tree_mib']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"cpu": cpu, "steps": args.steps, "cores": cores, "rows": rows}, indent=1)
                              + "\n")


if __name__ == "__main__":
    main()
