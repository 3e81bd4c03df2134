"""`bash scripts/gpu_check.sh --smoke`: the GPU check end to end on the CPU, as on the lent GPU
machine: a Python environment with the image's packages only (JAX, Flax, optax, orbax, absl,
SciPy; no clu, no ml_collections, no TensorFlow), the missing packages installed from the
carried wheels alone, and every network connection refused."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import BLOCK_NETWORK, BLOCK_TENSORFLOW, REPO, linked_venv

pytestmark = pytest.mark.slow

# What the lent image has that the check uses (its versions: constraints.txt; JAX 0.11.2 there,
# the newest on PyPI here, 0.10.2, in this test). clu and ml_collections are not among them.
IMAGE_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "absl-py",
    "scipy",
    "numpy",
    "PyYAML",
    "etils",
    "wrapt",
    "flatbuffers",  # jax.export's serialisation.
)


def test_gpu_check_smoke_from_carried_wheels_without_network(tmp_path):
    carry = tmp_path / "carry"
    prepared = subprocess.run(
        ["bash", "scripts/gpu_prepare.sh", str(carry), "/no/peer/here"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    wheels = sorted(os.listdir(carry / "wheels"))
    assert [w.split("-")[0] for w in wheels] == ["clu", "ml_collections"], wheels
    python = linked_venv(tmp_path / "image", IMAGE_PACKAGES)
    for absent in ("clu", "ml_collections", "tensorflow"):
        probe = subprocess.run([python, "-c", f"import {absent}"], capture_output=True, check=False)
        assert probe.returncode != 0, f"{absent} should not be in the image-like environment"

    blockers = tmp_path / "blockers"
    blockers.mkdir()
    (blockers / "sitecustomize.py").write_text(BLOCK_TENSORFLOW + BLOCK_NETWORK)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))},
        "PYTHONPATH": str(blockers),
        "FBP_PYTHON": python,
        "GPU_CARRY": str(carry),
        "EPATH_USE_TF": "0",
    }
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--smoke", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"from {carry}/wheels (no network)" in proc.stdout
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["checks"]) == {"benchmark", "peer", "pmap", "jit", "training", "export"}
    assert report["checks"]["peer"]["ok"] is None  # No peer file carried here.
    ran = {k: v for k, v in report["checks"].items() if k != "peer"}
    assert all(c["ok"] for c in ran.values()), report
    assert report["checks"]["training"]["last_loss"] < report["checks"]["training"]["first_loss"]
    assert "matmul peak" in (out / "benchmark.txt").read_text()
    assert "PASS export" in (out / "gpu_check.txt").read_text()


def test_a_spent_budget_reports_every_check_skipped_export_included(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "fbp_jax.tools.gpu_check", "--smoke", "--budget_minutes=0",
         f"--out={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    checks = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert set(checks) == {"benchmark", "peer", "pmap", "jit", "training", "export"}
    assert all(c["ok"] is None and c["skipped"] for c in checks.values()), checks
    assert checks["export"]["skipped"] == "no trained model to export"
