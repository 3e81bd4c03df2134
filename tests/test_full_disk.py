"""A full disk is one clear line, a non-zero exit and nothing that looks finished; a rerun
with space finishes and gives what a run that never lacked space gives.

The file systems are small tmpfs mounts (root needed; CI runs as root); the message logic is
also tested without them.
"""

import contextlib
import errno
import os
import subprocess
import sys

import numpy as np
import pytest

from fbp_jax import io
from tests.conftest import REPO
from tests.test_corpora import write_ravdess
from tests.test_faults import _records, _result, _train_cmd

ENV = {**os.environ, "PYTHONPATH": REPO, "PYTHONUNBUFFERED": "1"}


def test_a_full_disk_is_found_however_deep_and_said_in_one_line(tmp_path):
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "x.npz")
        except OSError as inner:
            raise RuntimeError("the worker pool failed") from inner
    except RuntimeError as e:
        outer = e
    assert io.is_disk_full(outer)
    assert io.is_disk_full(ValueError("write failed: No space left on device [tensorstore]"))
    assert not io.is_disk_full(ValueError("shape mismatch"))
    with (
        pytest.raises(io.DiskFullError) as info,
        io.full_disk_as_one_line(str(tmp_path), "the job", "Rerun it.", needed=lambda: 3 << 20),
    ):
        raise outer
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{tmp_path} is full: the job needs about 3 MB")
    assert text.endswith("Rerun it.") and "free there" in text
    with pytest.raises(ValueError, match="shape"), io.full_disk_as_one_line(".", "x", "y"):
        raise ValueError("shape mismatch")
    with pytest.raises(io.DiskFullError, match=r"x needs about [\d,]+ MB more"):
        io.require_space(str(tmp_path), io.free_bytes(str(tmp_path)) + (1 << 30), "x", "y")
    io.require_space(str(tmp_path), 1, "x", "y")


@pytest.fixture
def small_fs(tmp_path):
    """mount(size) -> a tmpfs of that size; resize(path, size) changes it."""
    mounted = []

    def mount(size, name="fs"):
        path = tmp_path / name
        path.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
        mounted.append(path)
        return str(path)

    def resize(path, size):
        subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True)

    yield mount, resize
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _one_line_error(proc, folder):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"error: {folder} is full:") and "run the same command" in errors[0]
    return errors[0]


_BUILD = """
import sys
from absl import app
from data_prep import build
from data_prep.builders import corpus
if sys.argv[1] == "no-estimate":  # As if the estimate were too low: the disk fills mid-build.
    corpus.estimate_bytes = lambda *args: 0
build.define_flags()
app.run(build.main, argv=["build", "ravdess", *sys.argv[2:]])
"""


@pytest.mark.slow
def test_build_refuses_early_fails_in_one_line_and_resumes(small_fs, tmp_path):
    mount, resize = small_fs
    write_ravdess(tmp_path / "src")
    src, clean = str(tmp_path / "src"), str(tmp_path / "clean")
    args = [f"--manual_dir={src}", "--num_workers=2"]
    ok = subprocess.run(
        [sys.executable, "-c", _BUILD, "plain", f"--data_dir={clean}", *args],
        cwd=REPO, env=ENV, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    fs = mount("600k")
    run = lambda mode: subprocess.run(
        [sys.executable, "-c", _BUILD, mode, f"--data_dir={fs}", *args],
        cwd=REPO, env=ENV, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    early = _one_line_error(run("plain"), fs)
    assert "the build of ravdess needs about" in early and "clips already extracted" in early
    late = _one_line_error(run("no-estimate"), fs)  # Workers hit the full disk while caching.
    assert "the build of ravdess" in late
    assert not os.path.exists(os.path.join(fs, "ravdess", "speech", "1.0.0", "dataset_info.json"))
    resize(fs, "200m")
    again = run("plain")
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = _records(fs), _records(clean)
    assert a.keys() == b.keys()
    for split in a:
        assert a[split].keys() == b[split].keys()
        for clip_id, ex in a[split].items():
            for key, value in ex.items():
                np.testing.assert_array_equal(value, b[split][clip_id][key], err_msg=key)


_TRAIN = """
import runpy, sys
if sys.argv[1] == "no-estimate":  # As if the estimate were too low: a checkpoint fills it.
    from fbp_jax.training import loop
    loop.space_needed = lambda state: 0
sys.argv = sys.argv[2:]
runpy.run_path("train.py", run_name="__main__")
"""


@pytest.mark.slow
def test_training_refuses_early_fails_in_one_line_and_resumes(small_fs, tiny_data_dir, tmp_path):
    mount, resize = small_fs
    steps = 12
    clean = str(tmp_path / "clean")
    cmd = _train_cmd(tiny_data_dir, clean, steps)
    assert subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, check=False).returncode == 0
    fs = mount("400k")
    workdir = os.path.join(fs, "run")
    run = lambda mode: subprocess.run(
        [sys.executable, "-c", _TRAIN, mode, *_train_cmd(tiny_data_dir, workdir, steps)[1:]],
        cwd=REPO, env=ENV, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    early = _one_line_error(run("plain"), workdir)
    assert "training needs about" in early and "resumes from its last complete" in early
    _one_line_error(run("no-estimate"), workdir)  # The disk fills during the run.
    resize(fs, "200m")
    again = run("plain")
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _result(workdir), _result(clean)
    for key in b:
        assert a[key] == b[key], key


@pytest.mark.slow
def test_predict_output_on_a_full_disk_is_one_line_and_leaves_no_file(
    small_fs, audio_workdir, tmp_path
):
    from data_prep import testclips

    mount, _ = small_fs
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        testclips.write_clip(str(clips / f"c{i}.wav"), None, audio=testclips.speech_like(1.0))
    fs = mount("64k")
    with open(os.path.join(fs, "filler"), "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * (1 << 20))  # Fill it.
    output = os.path.join(fs, "out", "p.csv")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "fbp_jax.tools.cli", "predict", f"--model={audio_workdir}",
         f"--output={output}", str(clips)],
        cwd=REPO, env=ENV, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    _one_line_error(proc, os.path.dirname(output))
    assert os.listdir(os.path.dirname(output)) == []  # No partial CSV.
