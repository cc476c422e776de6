"""The quickstart on the real embedded model (about 10 minutes on 2 cores): `make test-slow`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, require_smollm

pytestmark = pytest.mark.slow


def test_quickstart_end_to_end_on_smollm2(tmp_path):
    require_smollm()
    recipe = yaml.safe_load((ROOT / "examples" / "quickstart.yml").read_text())
    recipe["output_dir"] = str(tmp_path / "out")
    recipe["dataset_prepared_path"] = str(tmp_path / "prepared")
    path = tmp_path / "quickstart.yml"
    path.write_text(yaml.safe_dump(recipe))
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    for cmd in ("preprocess", "train"):
        proc = subprocess.run([str(bin_dir / "axolotl"), cmd, str(path)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    task = metrics["tasks"]["medical_abstracts_5class"]
    assert task["n_test"] == 200
    # Random guessing over 5 balanced classes gives Macro F1 near 0.2.
    assert task["macro_f1"] > 0.25
    examples = list((tmp_path / "prepared" / "decselfmask").glob("examples-*/examples.jsonl"))
    assert len(examples) == 1 and examples[0].stat().st_size > 0
