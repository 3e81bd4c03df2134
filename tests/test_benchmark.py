"""The benchmark command runs without TensorFlow and writes the fields it promises."""

import json

from tests.conftest import BLOCK_TENSORFLOW, run_script


def test_benchmark_command_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    script = (
        BLOCK_TENSORFLOW
        + "from absl import app\nfrom fbp_jax.tools import benchmark\nbenchmark.define_flags()\napp.run(benchmark.main)\n"
    )
    args = [
        "--variants=video",  # cheap to compile; gpu_check's smoke test benchmarks am_fbp
        "--batch_sizes=4",
        "--dtypes=float32,bfloat16",
        "--parallel=pmap,jit",
        "--steps=1",
        "--repeats=2",
        "--fcn=tiny",
        "--clip_seconds=0.64",
        "--matmul_size=256",
        f"--json={out}",
    ]
    proc = run_script(script, *args)
    assert "train ex/s" in proc.stdout and "matmul peak" in proc.stdout
    result = json.loads(out.read_text())
    assert len(result["rows"]) == 4
    assert {r["parallel"] for r in result["rows"]} == {"pmap", "jit"}
    for row in result["rows"]:
        assert row["train_ex_s"] > 0 and row["infer_ex_s"] > 0 and row["compile_s"] > 0
        assert row["train_ex_s_min"] <= row["train_ex_s"] <= row["train_ex_s_max"]
        assert row["train_gflop_per_ex"] > 0 and 0 < row["matmul_peak_fraction"]
    assert set(result["matmul_peak_flop_s"]) == {"float32", "bfloat16"}
    # Both paths compile the same program: the same FLOPs per example.
    by = {(r["variant"], r["dtype"], r["parallel"]): r for r in result["rows"]}
    for v, d, _ in by:
        a, b = by[(v, d, "pmap")], by[(v, d, "jit")]
        assert abs(a["train_gflop_per_ex"] / b["train_gflop_per_ex"] - 1) < 0.1


def test_scaling_reruns_itself_per_device_count(tmp_path):
    out = tmp_path / "scaling.json"
    script = "from absl import app\nfrom fbp_jax.tools import benchmark\nbenchmark.define_flags()\napp.run(benchmark.main)\n"
    args = [
        "--scaling=2",  # One device is always measured too: it is the reference.
        "--scaling_batch=4",
        "--variants=video",
        "--steps=1",
        "--repeats=1",
        "--fcn=tiny",
        "--clip_seconds=0.64",
        f"--json={out}",
    ]
    proc = run_script(script, *args)
    assert "efficiency = rate_N / (N x rate_1)" in proc.stdout
    rows = json.loads(out.read_text())["scaling"]
    assert [(r["devices"], r["batch"]) for r in rows] == [(1, 4), (2, 8)]
    one, two = rows
    assert one["efficiency"] == one["speedup"] == 1.0 and one["train_ex_s"] > 0
    assert two["speedup"] == two["train_ex_s"] / one["train_ex_s"] == 2 * two["efficiency"]
