"""`bash scripts/gpu_check.sh --smoke`: the GPU check's machinery end to end on the CPU, with
TensorFlow blocked (the lent GPU machines have none)."""

import json
import os
import subprocess

import pytest

from tests.conftest import BLOCK_TENSORFLOW, REPO

pytestmark = pytest.mark.slow


def test_gpu_check_smoke_passes_and_writes_its_table_and_json(tmp_path):
    blocker = tmp_path / "sitecustomize.py"  # imported at start-up by every Python process
    blocker.write_text(BLOCK_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}", "EPATH_USE_TF": "0"}
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--smoke", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["checks"]) == {"benchmark", "pmap", "training", "export"}
    assert all(c["ok"] for c in report["checks"].values()), report
    assert report["checks"]["training"]["last_loss"] < report["checks"]["training"]["first_loss"]
    assert "matmul peak" in (out / "benchmark.txt").read_text()
    assert "PASS export" in (out / "gpu_check.txt").read_text()
