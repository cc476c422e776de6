"""``axolotl decselfmask predict`` at scale on this machine (issue 31): notes/s with 1 and 2 processes,
the peak memory at a small and a large file, and the time to resume after a kill at half way.

The run is the quickstart's (``examples/quickstart.yml``, SmolLM2-135M-Instruct; train it first with
``make quickstart``), or with ``--zero-shot`` the embedded model with ``classification.train: false``
(stage 2 only scores and calibrates: a run made here in a minute, for a check of this script).

- **notes/s**: ``--notes`` notes (the quickstart's unlabelled abstracts, cycled, each cut to
  ``--note-chars``), predicted by 1 process (``--threads`` threads) and by 2 processes under
  ``torchrun --standalone`` (``--threads / 2`` each); wall seconds from the command's start to its
  output (the model loads included); in the recipe's ``bf16: auto`` (bfloat16 on a CPU with AMX,
  where 1 and 2 threads round differently: the labels may then differ a little) or ``--float32``;
- **peak memory**: the peak resident set of one process (its ``ru_maxrss``) predicting
  ``--memory-notes`` (default 1,000 and 100,000) short synthetic notes (one line each); the
  largest takes about that many notes / the 1-process rate;
- **resume**: the 1-process run on ``--notes`` notes killed with SIGKILL once half of them are in its
  shards, then the same command again: its wall seconds against a whole run's, and the notes it
  reported as already written.

Prints the figures side by side and writes them as JSON (``--out``, default
``benchmarks/results/predict_scale.json``). Run it with nothing else on the cores.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/predict_scale.py [--notes 10000] [--threads 2] [--zero-shot]
    python benchmarks/predict_scale.py --parts memory --threads 1     # beside other work: memory only
    python benchmarks/predict_scale.py --parts speed,resume           # then, the cores to itself
    python benchmarks/predict_scale.py --zero-shot --notes 50 --memory-notes 20,60 --chunk-size 5 --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "examples" / "quickstart.yml"
POOL = ROOT / "examples" / "data" / "abstracts_unlabelled.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "predict_scale.json"
PEAK = "PREDICT_SCALE_PEAK_RSS_KB"


def child(argv: list[str]) -> int:
    """One predict process (under torchrun, one of several): the command, then its own peak RSS."""
    from axolotl_decselfmask.stage2.predict import main

    code = main(argv)
    print(f"{PEAK} {os.environ.get('RANK', '0')} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", flush=True)
    return code


def _recipe(folder: Path, zero_shot: bool, quickstart_out: Path, float32: bool) -> Path:
    """The quickstart recipe with absolute paths (its trained run), or its zero-shot run made in ``folder``."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["base_model"] = str(ROOT / recipe["base_model"])
    recipe["output_dir"] = str(quickstart_out)
    if float32:  # bf16: auto is bfloat16 on a CPU with AMX, where 1 and 2 threads round differently
        recipe["bf16"] = False
    block = recipe["decselfmask"]["classification"]
    for key in ("train_file", "test_file"):
        if block.get(key):
            block[key] = str(ROOT / block[key])
    recipe["datasets"][0]["path"] = str(ROOT / recipe["datasets"][0]["path"])
    if zero_shot:
        recipe["output_dir"] = str(folder / "zero_shot_run")
        block.update(train=False, max_test_examples=4, max_train_examples=10)
        recipe["decselfmask"]["stage1"] = False  # the embedded model itself, no stage 1
    path = folder / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    if zero_shot:
        _zero_shot_run(recipe)
    elif not (Path(recipe["output_dir"]) / "stage2").is_dir():
        raise SystemExit(f"no trained quickstart run in {recipe['output_dir']}: run `make quickstart` first "
                         "(or pass --zero-shot, or --run for another output_dir)")
    return path


def _zero_shot_run(recipe: dict) -> None:
    """Stage 2 with ``train: false``: the decision calibrated and saved, nothing trained."""
    import contextlib
    import io

    from axolotl.utils.dict import DictDefault

    from axolotl_decselfmask.args import DecSelfMaskConfig
    from axolotl_decselfmask.protocol import apply_recipe_preset
    from axolotl_decselfmask.stage2.run import run_stage2

    raw = json.loads(json.dumps(recipe))
    apply_recipe_preset(raw, raw["decselfmask"])
    with contextlib.redirect_stdout(io.StringIO()):
        run_stage2(DictDefault(raw), DecSelfMaskConfig(**raw["decselfmask"]), progress=False)


def _notes(path: Path, n: int, chars: int, synthetic: bool) -> Path:
    """``n`` notes: the pool's abstracts cycled and cut to ``chars``, or short made-up notes."""
    texts = [json.loads(line)["text"] for line in POOL.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            text = (f"Note {i}: patient seen for follow-up, stable, no new complaints." if synthetic
                    else texts[i % len(texts)][: chars])
            handle.write(json.dumps({"id": f"n{i}", "text": text}) + "\n")
    return path


def _env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE",
                TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                AXOLOTL_DO_NOT_TRACK="1")


def _command(recipe: Path, notes: Path, out: Path, processes: int, batch_size: int | None,
             chunk_size: int) -> list[str]:
    args = [str(recipe), str(notes), "--out", str(out), "--no-progress", "--chunk-size", str(chunk_size)]
    if batch_size:
        args += ["--batch-size", str(batch_size)]
    me = [sys.executable, str(Path(__file__).resolve()), "--child"]
    if processes == 1:
        return me + args
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "--no-python", *me, *args]


def _run(command: list[str], threads: int) -> dict:
    """Run a predict command; its wall seconds, peak RSS (largest process, MiB) and output."""
    start = time.perf_counter()
    proc = subprocess.run(command, env=_env(threads), capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"predict failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    peaks = [int(m.group(1)) for m in re.finditer(rf"{PEAK} \d+ (\d+)", proc.stdout)]
    return {"wall_s": wall, "peak_rss_mib": max(peaks) / 1024 if peaks else None, "log": proc.stdout}


def _written(parts: Path) -> int:
    total = 0
    for p in parts.glob("part-*.jsonl"):
        with open(p, encoding="utf-8") as handle:
            total += json.loads(handle.readline()).get("size", 0)
    return total


def _resume(command: list[str], threads: int, parts: Path, half: int) -> dict:
    """The command killed once ``half`` notes are in its shards, then run again."""
    proc = subprocess.Popen(command, env=_env(threads), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while _written(parts) < half:
        if proc.poll() is not None:
            raise SystemExit("predict ended before half of the notes were written: use more --notes")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = _written(parts)
    again = _run(command, threads)
    found = re.search(r"resuming: (\d+) notes already written", again["log"])
    return {"killed_at_notes": killed_at, "reported_already_written": int(found.group(1)) if found else None,
            "resume_wall_s": again["wall_s"]}


def _compare(a: Path, b: Path) -> dict:
    """Whether two outputs have the same rows and labels, and the largest difference of their scores
    (other threads add in another order: the last digits may move)."""
    rows_a = [json.loads(line) for line in a.read_text(encoding="utf-8").splitlines()]
    rows_b = [json.loads(line) for line in b.read_text(encoding="utf-8").splitlines()]
    same = [(r["id"], r["task"], r["label"]) for r in rows_a] == [(r["id"], r["task"], r["label"]) for r in rows_b]
    keys_a = {(r["id"], r["task"]): r["label"] for r in rows_a}
    keys_b = {(r["id"], r["task"]): r["label"] for r in rows_b}
    differ = sum(keys_a[k] != keys_b.get(k) for k in keys_a)
    diff = max((abs(x - y) for r, q in zip(rows_a, rows_b) for x, y in zip(r["scores"], q["scores"])
                if x is not None and y is not None), default=0.0)
    return {"same_labels": same, "labels_differing": differ, "rows": len(rows_a), "max_score_difference": diff}


PARTS = ("speed", "memory", "resume")


def measure(args, folder: Path, previous: dict | None = None) -> dict:
    """The parts named in ``args.parts``; the figures of the other parts are kept from ``previous``
    (the JSON of an earlier run), so the memory part can run beside other work and the timed parts
    alone, with nothing else on the cores."""
    recipe = _recipe(folder, args.zero_shot, Path(args.run), args.float32)
    result = dict(previous or {})
    result.update({"notes": args.notes, "note_chars": args.note_chars, "threads": args.threads,
                   "chunk_size": args.chunk_size, "batch_size": args.batch_size, "zero_shot": args.zero_shot,
                   "float32": args.float32})
    notes = _notes(folder / "notes.jsonl", args.notes, args.note_chars, synthetic=False)
    if "speed" in args.parts or "resume" in args.parts:
        one = _run(_command(recipe, notes, folder / "one.jsonl", 1, args.batch_size, args.chunk_size), args.threads)
        result["one_process"] = {"wall_s": one["wall_s"], "notes_per_s": args.notes / one["wall_s"]}
    if "speed" in args.parts:
        two = _run(_command(recipe, notes, folder / "two.jsonl", 2, args.batch_size, args.chunk_size),
                   max(1, args.threads // 2))
        result["two_processes"] = {"wall_s": two["wall_s"], "notes_per_s": args.notes / two["wall_s"],
                                   **_compare(folder / "one.jsonl", folder / "two.jsonl")}
    if "memory" in args.parts:
        result["memory"] = {}
        for n in args.memory_notes:
            short = _notes(folder / f"short-{n}.jsonl", n, 0, synthetic=True)
            run = _run(_command(recipe, short, folder / f"short-{n}.jsonl.out.jsonl", 1, args.batch_size,
                                args.chunk_size), args.threads)
            result["memory"][str(n)] = {"peak_rss_mib": run["peak_rss_mib"], "wall_s": run["wall_s"]}
    if "resume" in args.parts:
        out = folder / "resumed.jsonl"
        resumed = _resume(_command(recipe, notes, out, 1, args.batch_size, args.chunk_size), args.threads,
                          out.with_name(out.name + ".parts"), args.notes // 2)
        resumed["whole_run_wall_s"] = result["one_process"]["wall_s"]
        resumed.update(_compare(folder / "one.jsonl", out))
        result["resume"] = resumed
    return result


def report(result: dict) -> str:
    one, two, res = result.get("one_process"), result.get("two_processes"), result.get("resume")
    mem = result.get("memory") or {}
    lines = [f"predict on {result['notes']} notes ({result['note_chars']} characters), {result['threads']} threads "
             f"({'zero-shot run' if result['zero_shot'] else 'the quickstart run'}, "
             f"{'float32' if result['float32'] else 'bf16: auto'}):"]
    if one and two:
        lines.append(f"  notes/s          1 process {one['notes_per_s']:8.2f}   2 processes {two['notes_per_s']:8.2f}   "
                     f"ratio {two['notes_per_s'] / one['notes_per_s']:.2f}   (labels differing: {two.get('labels_differing', '?')} of "
                     f"{two.get('rows', '?')}, "
                     f"scores within {two['max_score_difference']:.1e})")
    if mem:
        sizes = sorted(mem, key=int)
        lines.append("  peak RSS (MiB)   " + "   ".join(f"{int(n):,} notes {mem[n]['peak_rss_mib']:8.1f}" for n in sizes)
                     + (f"   ratio {mem[sizes[-1]]['peak_rss_mib'] / mem[sizes[0]]['peak_rss_mib']:.2f}"
                        if len(sizes) > 1 else ""))
    if res:
        lines.append(f"  resume           killed at {res['killed_at_notes']} notes (reported "
                     f"{res['reported_already_written']} already written); resumed in {res['resume_wall_s']:.1f} s vs "
                     f"{res['whole_run_wall_s']:.1f} s whole, ratio {res['resume_wall_s'] / res['whole_run_wall_s']:.2f} "
                     f"(same labels: {res['same_labels']})")
    return "\n".join(lines)


def _machine(threads: int) -> dict:
    """The CPU this ran on: its model name, the bfloat16 flags that decide bf16: auto, torch's kernels."""
    flags, name = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not name:
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    import torch

    return {"cpus": os.cpu_count(), "cpu": name, "amx_bf16": "amx_bf16" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "platform": platform.platform(), "python": platform.python_version(), "threads": threads}


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        sys.exit(child(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=10_000)
    parser.add_argument("--note-chars", type=int, default=600, help="each note cut to this many characters")
    parser.add_argument("--memory-notes", type=lambda s: [int(x) for x in s.split(",")], default=[1_000, 100_000],
                        help="comma-separated sizes of the short-note files whose peak memory is measured")
    parser.add_argument("--chunk-size", type=int, default=1000, help="predict's --chunk-size (notes per shard)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--float32", action="store_true",
                        help="predict in float32 (bf16: false) instead of the recipe's bf16: auto")
    parser.add_argument("--zero-shot", action="store_true", help="the embedded model untrained, a run made here")
    parser.add_argument("--run", default=str(ROOT / "outputs" / "quickstart"), help="the trained quickstart's output_dir")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--parts", type=lambda s: [p for p in s.split(",") if p], default=list(PARTS),
                        help="comma-separated parts to measure (speed, memory, resume); the figures of the "
                             "others are kept from --out: the memory part may run beside other work, the "
                             "timed parts (speed, resume) need the cores to themselves")
    args = parser.parse_args()
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    previous = json.loads(Path(args.out).read_text(encoding="utf-8")) if Path(args.out).is_file() else None
    if previous and (previous.get("notes"), previous.get("zero_shot")) != (args.notes, args.zero_shot):
        previous = None  # figures of another setting are not kept beside these
    with tempfile.TemporaryDirectory(prefix="predict_scale_") as tmp:
        result = measure(args, Path(tmp), previous)
    machines = dict((previous or {}).get("machines") or {})
    for part in args.parts:
        machines[part] = _machine(args.threads)
    result["machines"] = machines
    result.pop("machine", None)
    print(report(result))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
