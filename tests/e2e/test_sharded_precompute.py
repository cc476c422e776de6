"""The relevance precompute sharded over 2 CPU processes with `accelerate launch`, as docs/multi_gpu.md
writes it: `accelerate launch ... --no_python axolotl decselfmask precompute RECIPE`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import base_recipe, data_rows, write_rows


def _env():
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", OMP_NUM_THREADS="1")


def test_two_processes_split_the_shards_and_match_one_process(tmp_path, tiny_llama):
    write_rows(tmp_path / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=8))
    recipe = base_recipe(tmp_path, tiny_llama)
    recipe["decselfmask"]["relevance"]["shard_size"] = 2
    recipe["decselfmask"]["classification"]["enabled"] = False
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    bin_dir = Path(sys.executable).parent
    launch = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--no_python", "axolotl", "decselfmask", "precompute",
              str(path)]
    proc = subprocess.run(launch, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "(2 process(es))" in proc.stdout

    parts = sorted((tmp_path / "prepared" / "decselfmask").glob("relevance-*/part-*.json"))
    writers = {p.name: json.loads(p.read_text())["written_by"] for p in parts}
    assert len(parts) == 4  # 8 texts, 1 item each, 2 pairs a shard
    assert {w["rank"] for w in writers.values()} == {0, 1} and all(w["world_size"] == 2 for w in writers.values())
    sharded = next((tmp_path / "prepared" / "decselfmask").glob("examples-*/examples.jsonl"))

    # one process, other cache: byte-identical examples
    single = dict(recipe)
    single["decselfmask"] = {**recipe["decselfmask"], "cache_dir": str(tmp_path / "single")}
    (tmp_path / "single.yml").write_text(yaml.safe_dump(single))
    proc = subprocess.run([str(bin_dir / "decselfmask"), "precompute", str(tmp_path / "single.yml")],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    alone = next((tmp_path / "single").glob("examples-*/examples.jsonl"))
    assert alone.parent.name == sharded.parent.name and alone.read_bytes() == sharded.read_bytes()

    # axolotl preprocess of the recipe then finds the examples in the cache
    proc = subprocess.run([str(bin_dir / "axolotl"), "preprocess", str(path)], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "self-relevance" not in proc.stdout + proc.stderr
