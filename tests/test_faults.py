"""Faults, not only bad files: builds and training runs killed with SIGKILL at random points
resume to exactly what an uninterrupted run gives; a damaged checkpoint is detected and the
previous one used; a second training process on a workdir in use refuses to start."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_prep import build
from tests.conftest import REPO
from tests.test_corpora import _SLOW_BUILD, write_ravdess
from tests.test_train_e2e import train_cmd

pytestmark = pytest.mark.slow
RNG = np.random.default_rng(20261201)  # The kill points are random, and reproducible.
ENV = {**os.environ, "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"}


def _records(data_dir):
    builder = build.make_builder("ravdess", data_dir)
    return {
        split: {ex["clip_id"]: ex for ex in tfds.as_numpy(builder.as_dataset(split))}
        for split in builder.info.splits
    }


def _cached(data_dir):
    """Clips whose extraction result (example or rejection) is in the build cache."""
    root = os.path.join(data_dir, "downloads", "extracted")
    return sum(
        f.endswith((".npz", ".skip.json")) and ".tmp" not in f
        for _, _, files in os.walk(root)
        for f in files
    )


def test_build_killed_at_random_points_gives_the_records_of_a_clean_build(tmp_path):
    write_ravdess(tmp_path / "src")
    src, killed, clean = (str(tmp_path / d) for d in ("src", "killed", "clean"))
    subprocess.run([sys.executable, "-c", _SLOW_BUILD, clean, src], cwd=REPO, env=ENV, check=True)
    total = _cached(clean)
    final = os.path.join(killed, "ravdess", "speech", "1.0.0", "dataset_info.json")
    # Two kills during extraction, after a random number of newly cached clips plus a random
    # fraction of a clip (so some land mid-clip), and one during the writing of the records.
    kills = []
    for phase in ("extract", "extract", "write"):
        before = _cached(killed)
        target = total if phase == "write" else before + int(RNG.integers(1, total - before))
        proc = subprocess.Popen(
            [sys.executable, "-c", _SLOW_BUILD, killed, src],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        while proc.poll() is None and _cached(killed) < target and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(float(RNG.uniform(0.0, 0.5 if phase == "extract" else 2.0)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append((phase, _cached(killed)))
            assert not os.path.exists(final), "a killed build left records that look finished"
    assert sum(p == "extract" for p, _ in kills) == 2, kills
    builder = build.build("ravdess", killed, src, num_workers=0)
    assert builder.report()["reused_from_cache"] > 0
    a, b = _records(killed), _records(clean)
    assert a.keys() == b.keys()
    for split in a:
        assert a[split].keys() == b[split].keys()
        for clip_id, ex in a[split].items():
            for key, value in ex.items():
                np.testing.assert_array_equal(value, b[split][clip_id][key], err_msg=key)


def _train_cmd(data_dir, workdir, steps):
    """`train_cmd` with dropout, mixup and a weight average, checkpoints every 4 steps."""
    return train_cmd(
        data_dir,
        workdir,
        steps,
        "--config.model.fbp.global_dim=16",
        "--config.model.fbp.multi_dim=16",
        "--config.model.dropout_rate=0.3",
        "--config.augment.mixup_alpha=0.2",
        "--config.optim.ema_decay=0.9",
        "--config.checkpoint_every_steps=4",
        "--config.eval_every_steps=7",
        "--config.log_every_steps=7",
    )


def _result(workdir):
    with open(os.path.join(workdir, "result.json")) as f:
        r = json.load(f)
    return {k: v for k, v in r.items() if k != "train_steps_per_sec"}


def _run(cmd):
    proc = subprocess.run(
        cmd, cwd=REPO, env=ENV, capture_output=True, text=True, check=False, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _latest_checkpoint(workdir):
    folder = os.path.join(workdir, "checkpoints")
    steps = [int(n) for n in os.listdir(folder) if n.isdigit()] if os.path.isdir(folder) else []
    return max(steps, default=0)


STEPS = 24  # Of the uninterrupted run that the killed ones must end like.


@pytest.fixture(scope="module")
def clean_run(tiny_data_dir, tmp_path_factory):
    """The workdir of an uninterrupted `_train_cmd` run of STEPS steps."""
    clean = str(tmp_path_factory.mktemp("faults") / "clean")
    _run(_train_cmd(tiny_data_dir, clean, STEPS))
    return clean


@pytest.mark.xdist_group("faults_clean_run")  # One worker: one clean run.
def test_training_killed_at_random_points_ends_like_an_uninterrupted_run(
    tiny_data_dir, clean_run, tmp_path
):
    steps, clean, killed = STEPS, clean_run, str(tmp_path / "killed")
    # Two kills, each after the run passed a random step (checkpoints every 4 steps), plus a
    # random delay so that some land between checkpoints or during an evaluation.
    targets = sorted(RNG.choice(np.arange(4, steps - 4, 4), size=2, replace=False))
    kills = []
    for target in targets:
        proc = subprocess.Popen(
            _train_cmd(tiny_data_dir, killed, steps),
            cwd=REPO,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 600
        while proc.poll() is None and _latest_checkpoint(killed) < target:
            assert time.time() < deadline
            time.sleep(0.05)
        time.sleep(float(RNG.uniform(0.0, 1.0)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(_latest_checkpoint(killed))
    assert len(kills) == 2 and kills[-1] < steps, kills
    resumed = _run(_train_cmd(tiny_data_dir, killed, steps))
    assert f"Resumed from step {kills[-1]}" in resumed.stderr
    assert _result(killed) == _result(clean)
    from fbp_jax import workdir as workdir_lib

    a = workdir_lib.load_params(killed, "latest")[0]
    b = workdir_lib.load_params(clean, "latest")[0]
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


# train.py with a SIGKILL at one exact point: when the run is about to write result.json,
# i.e. after its final checkpoint (and that checkpoint's metrics) are on disk.
_KILL_BEFORE_RESULT = """
import os, runpy, signal, sys
from fbp_jax import io
write_json = io.write_json
def write_or_die(obj, path, *args, **kwargs):
    if os.path.basename(path) == "result.json":
        os.kill(os.getpid(), signal.SIGKILL)
    return write_json(obj, path, *args, **kwargs)
io.write_json = write_or_die
sys.argv = sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.xdist_group("faults_clean_run")  # One worker: one clean run.
def test_a_kill_after_the_final_checkpoint_writes_the_record_of_an_uninterrupted_run(
    tiny_data_dir, clean_run, tmp_path
):
    # The final step is evaluated; its checkpoint holds the final metrics.
    steps, clean, killed = STEPS, clean_run, str(tmp_path / "killed")
    cmd = _train_cmd(tiny_data_dir, killed, steps)
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_BEFORE_RESULT, *cmd[1:]],
        check=False,
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _latest_checkpoint(killed) == steps
    assert not os.path.exists(os.path.join(killed, "result.json"))
    resumed = _run(cmd)
    assert f"Resumed from step {steps}" in resumed.stderr
    a, b = _result(killed), _result(clean)
    assert set(a) == set(b) and {"eval_loss", "eval_accuracy", "best_step"} <= set(a)
    for key in b:
        assert a[key] == b[key], key


def test_a_damaged_checkpoint_is_moved_aside_and_the_previous_one_used(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    _run(_train_cmd(tiny_data_dir, workdir, 9))  # Checkpoints 8 and 9 kept.
    ckpt = os.path.join(workdir, "checkpoints", "9")
    files = [os.path.join(r, f) for r, _, fs in os.walk(ckpt) for f in fs]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 3)
    resumed = _run(_train_cmd(tiny_data_dir, workdir, 12))
    assert "checkpoints/9 cannot be restored" in resumed.stderr
    assert "Resumed from step 8" in resumed.stderr
    assert os.listdir(os.path.join(workdir, "unreadable_checkpoints"))
    # Resuming from a checkpoint ends as an uninterrupted run: the test above.
    assert _result(workdir)["step"] == 12 and np.isfinite(_result(workdir)["eval_loss"])


def test_a_second_training_process_on_a_workdir_in_use_refuses(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    first = subprocess.Popen(
        _train_cmd(tiny_data_dir, workdir, 100_000),
        cwd=REPO,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lock = os.path.join(workdir, ".lock")
        deadline = time.time() + 300
        while time.time() < deadline and not (os.path.exists(lock) and os.path.getsize(lock)):
            time.sleep(0.2)
        second = subprocess.run(
            _train_cmd(tiny_data_dir, workdir, 10),
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert second.returncode == 2
        assert f"{workdir} is in use by process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The lock dies with its process: a new run can start at once.
    _run(_train_cmd(tiny_data_dir, workdir, 10))
