"""Multi-process training: when `jax.distributed` starts, per-process evaluation shards, and two
processes on localhost (two emulated CPU devices each, gloo collectives) training exactly like
one process with four devices."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from fbp_jax import input_pipeline, parallel
from fbp_jax import workdir as workdir_lib
from tests.conftest import REPO, tiny_train_config

DISTRIBUTED_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@pytest.fixture
def fake_initialize(monkeypatch):
    """Records the calls of jax.distributed.initialize instead of starting anything."""
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in DISTRIBUTED_ENV + parallel.LAUNCHER_PROCESS_COUNTS:
        monkeypatch.delenv(name, raising=False)
    return calls


def _args(address, count, index):
    return {"coordinator_address": address, "num_processes": count, "process_id": index}


def test_distributed_starts_only_when_asked_or_launched(fake_initialize, monkeypatch):
    assert not parallel.initialize_distributed()
    assert parallel.initialize_distributed("h:1", 2, 1)
    assert fake_initialize[-1] == _args("h:1", 2, 1)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "h:2")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert parallel.initialize_distributed()
    assert fake_initialize[-1] == _args("h:2", 4, 3)
    assert not parallel.initialize_distributed(enable=False)
    for name in DISTRIBUTED_ENV:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")  # One task under srun: stay single.
    assert not parallel.initialize_distributed()
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")  # JAX reads the rest from SLURM.
    assert parallel.initialize_distributed()
    assert fake_initialize[-1] == _args(None, None, None)
    assert len(fake_initialize) == 3


def test_distributed_rejects_bad_values(fake_initialize, monkeypatch):
    with pytest.raises(ValueError, match="not in \\[0, 2\\)"):
        parallel.initialize_distributed("h:1", 2, 2)
    with pytest.raises(ValueError, match="must be positive"):
        parallel.initialize_distributed("h:1", 0, 0)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        parallel.initialize_distributed()
    assert not fake_initialize


def test_processes_run_the_same_number_of_eval_batches(tiny_data_dir, monkeypatch):
    """56 clips over 3 processes (19, 19, 18): batches of 8 give 3 batches on every process."""
    config = tiny_train_config(tiny_data_dir)
    builder = input_pipeline.prepared_builder(config.data)
    monkeypatch.setattr(jax, "process_count", lambda: 3)
    ids, counts = [], []
    for index in range(3):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        batches = list(
            input_pipeline.create_eval_dataset(
                builder, config.data, "validation", 8, None, keep_ids=True
            ).as_numpy_iterator()
        )
        counts.append(len(batches))
        for b in batches:
            assert len(b["mask"]) == 8
            ids.extend(b["clip_id"][b["mask"] == 1])
            assert all(i == b"" for i in b["clip_id"][b["mask"] == 0])
    assert counts == [3, 3, 3]
    assert len(ids) == len(set(ids)) == 56


CONFIG_FILE = """
from tests.conftest import tiny_train_config


def get_config():
    # Full-batch training (112 clips, no shuffle, no dropout, clips no longer than the crop): a
    # step sees the same examples however they are split over processes and devices. The video
    # model compiles in a second; the fusion models' pmap equivalence is in test_train_steps.
    return tiny_train_config(
        {data_dir!r},
        "video",
        batch_size=112,
        num_epochs=4,
        eval_every_steps=2,
        log_every_steps=2,
        **{{"data.shuffle_buffer": 1, "model.dropout_rate": 0.0, "optim.learning_rate": 0.03}},
    )
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(tmp_path, name, args, devices, extra_env=None):
    env = {
        **os.environ,
        "PYTHONPATH": REPO,
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "XLA_FLAGS": f"{os.environ['XLA_FLAGS']} --xla_force_host_platform_device_count={devices}",
        **(extra_env or {}),
    }
    for key in DISTRIBUTED_ENV:
        if key not in (extra_env or {}):
            env.pop(key, None)
    cmd = [sys.executable, "train.py", f"--config={tmp_path / 'tiny.py'}", *args]
    with open(tmp_path / f"{name}.log", "w") as log:  # The child keeps its own descriptor.
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_all(procs: dict, tmp_path, timeout: float) -> None:
    """Waits for every process; kills all of them when one fails or time runs out."""
    deadline = time.time() + timeout
    try:
        while any(p.poll() is None for p in procs.values()):
            failed = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if failed or time.time() > deadline:
                what = f"{failed} failed" if failed else f"timed out after {timeout} s"
                logs = {n: (tmp_path / f"{n}.log").read_text()[-2000:] for n in procs}
                pytest.fail(f"{what}; log tails: {logs}")
            time.sleep(0.5)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, p in procs.items():
        assert p.returncode == 0, (tmp_path / f"{name}.log").read_text()[-3000:]


def _latest(workdir):
    manager = workdir_lib.create_checkpoint_manager(str(workdir))
    restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore())
    return manager.latest_step(), restored


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "jit"])
def test_two_processes_train_like_one_process_with_four_devices(tiny_data_dir, tmp_path, mode):
    """Both data-parallel paths (config.parallel) across two processes of two devices."""
    (tmp_path / "tiny.py").write_text(CONFIG_FILE.format(data_dir=tiny_data_dir))
    coordinator = f"localhost:{_free_port()}"
    flag = f"--config.parallel={mode}"
    procs = {
        "single": _start(tmp_path, "single", [f"--workdir={tmp_path / 'single'}", flag], devices=4),
        # Process 0 takes flags, process 1 the environment variables.
        "p0": _start(
            tmp_path,
            "p0",
            [
                f"--workdir={tmp_path / 'multi'}",
                f"--coordinator_address={coordinator}",
                "--num_processes=2",
                "--process_id=0",
                flag,
            ],
            devices=2,
        ),
        "p1": _start(
            tmp_path,
            "p1",
            [f"--workdir={tmp_path / 'multi'}", flag],
            devices=2,
            extra_env={
                "JAX_COORDINATOR_ADDRESS": coordinator,
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": "1",
            },
        ),
    }
    _wait_all(procs, tmp_path, timeout=400)
    logs = {n: (tmp_path / f"{n}.log").read_text() for n in procs}
    assert "JAX process 0 / 1" in logs["single"]
    assert "JAX process 0 / 2" in logs["p0"] and "JAX process 1 / 2" in logs["p1"]

    single = json.loads((tmp_path / "single" / "result.json").read_text())
    multi = json.loads((tmp_path / "multi" / "result.json").read_text())
    assert multi["step"] == single["step"] == 4
    assert single["eval_accuracy"] > 0  # Predictions vary, so equal metrics mean something.
    assert multi["best_step"] == single["best_step"]
    for key in ("eval_accuracy", "eval_unweighted_accuracy", "best_eval_accuracy"):
        assert multi[key] == pytest.approx(single[key], abs=1e-6), key
    assert multi["eval_loss"] == pytest.approx(single["eval_loss"], rel=1e-5)

    (step_s, a), (step_m, b) = _latest(tmp_path / "single"), _latest(tmp_path / "multi")
    assert step_s == step_m == 4 and int(a["step"]) == int(b["step"]) == 4
    leaves_a, leaves_b = jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"])
    assert len(leaves_a) == len(leaves_b) > 0
    for x, y in zip(leaves_a, leaves_b):  # Measured: 4e-8 apart.
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-5, rtol=1e-4)
    # Summaries come from process 0 only.
    events = list((tmp_path / "multi").glob("events.out.tfevents.*"))
    assert len(events) == 1 and f".{procs['p0'].pid}." in events[0].name
