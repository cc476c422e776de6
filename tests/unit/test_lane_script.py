"""scripts/lane.sh refuses a KERNELS value it does not know before it runs anything."""

import gzip
import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LANE = ROOT / "scripts" / "lane.sh"


def test_unknown_kernels_is_refused_by_name():
    out = subprocess.run(["bash", str(LANE), "0", "nogrid|sft|0|"], env={**os.environ, "KERNELS": "avx512"},
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "KERNELS must be avx2 or native, got 'avx512'" in out.stderr
