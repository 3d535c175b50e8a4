"""benchmarks/gpu.py, the GPU run of issue 20, in its CPU smoke mode: every part runs and
writes its JSON and table (the GPU numbers come from a GPU machine, not from here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_script_smoke_writes_every_part(tiny_bert, tmp_path):
    # Execute
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path),
         "--run-model", tiny_bert, "--seconds", "60"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # Assert
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    report = result["steps"]["tiny-bert"]
    by_mode = {r["mode"]: r for r in report["results"]}
    assert set(by_mode) == {"inference", "backprop", "spry", "spry:10", "fedmezo"}
    assert all(r["error"] is None and r["median_step_seconds"] > 0 for r in by_mode.values())
    assert by_mode["spry:10"]["tangents"] == 10
    rounds = result["federated"]["rounds"]
    assert rounds[-1]["round"] >= 1 and rounds[-1]["test_accuracy"] is not None
    table = (tmp_path / "gpu.md").read_text()
    assert "| spry:10 |" in table and "test accuracy by round" in table
