"""The package works as installed from its wheel, away from the repository: the demo on the tiny
synthetic corpus, --help of every command, and a prediction with the shipped model.

The wheel is installed (not editable) into a fresh virtual environment whose only other path is
the site-packages of the test environment (for the dependencies, so nothing is downloaded), and
every command runs from an empty folder: `configs/`, `tests/` and the source tree are out of
reach, so anything the package forgot to hold fails here.
"""

import email
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest
import soundfile

from fbp_jax.tools import cli
from tests.conftest import REPO, linked_venv

# One worker runs the module, so its fixture's venv is made once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]


def _run(args, cwd, timeout=900):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def _build_wheel(dest):
    """The wheel of the source tree, built from a private copy of it: `pip wheel` writes its
    build/ folder into the tree it builds, and two builds in one tree collide there (CI saw
    `File exists: build/bdist.../fbp_jax-0.1.0.dist-info` when two workers built at once)."""
    src = dest / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"
        ),
    )
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(src)], src)
    (wheel,) = glob.glob(str(dest / "fbp_jax-*.whl"))
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin folder of a fresh venv with the wheel installed, an empty working folder)."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(root)
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root)
    py = str(venv / "bin" / "python")
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root)
    deps = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site.stdout.strip(), "test_dependencies.pth"), "w") as f:
        f.write(deps + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel], root)
    work = root / "work"
    work.mkdir()
    return venv / "bin", work


def test_the_package_is_the_installed_wheel_and_holds_no_configs(installed):
    bin_dir, work = installed
    proc = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import fbp_jax, importlib.util; print(fbp_jax.__file__); "
            "print(importlib.util.find_spec('configs'))",
        ],
        work,
    )
    path, configs = proc.stdout.split()
    assert path.startswith(str(bin_dir.parent)) and not path.startswith(REPO)
    assert configs == "None"


def test_every_command_answers_help_from_the_wheel(installed):
    bin_dir, work = installed
    for command in cli.COMMANDS:
        proc = _run([str(bin_dir / "fbp-jax"), command, "--help"], work)
        assert f"fbp-jax {command}" in proc.stdout


def test_demo_and_prediction_from_the_wheel(installed):
    bin_dir, work = installed
    proc = _run(
        [
            str(bin_dir / "fbp-jax"),
            "demo",
            "--size=tiny",
            "--variants=audio,video,g_fbp",
            "--fusion_epochs=1",
            "--num_epochs=2",
            f"--data_dir={work / 'data'}",
            f"--workdir={work / 'runs'}",
        ],
        work,
    )
    assert "g_fbp" in proc.stdout and "val WA" in proc.stdout
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wav = work / "clip.wav"
    soundfile.write(
        wav, 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size), 16000
    )
    # The demo's audio model is trained on 40-bin features: data_prep gives 200, a clear refusal.
    refused = subprocess.run(
        [str(bin_dir / "fbp-jax"), "predict", f"--model={work / 'runs' / 'audio'}", str(wav)],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1 and "200" in refused.stderr
    from fbp_jax.serving import shipped

    assert {"ravdess-audio", "ravdess-audio-robust", "ravdess-av"} <= set(shipped.available())
    for name in ("ravdess-audio", "ravdess-audio-robust"):  # both inside the wheel
        proc = _run([str(bin_dir / "fbp-jax"), "predict", f"--model={name}", str(wav)], work)
        assert "clip.wav:" in proc.stdout and "%" in proc.stdout
    # The audio-visual model reads OpenFace action units: without them it says where to get them.
    proc = subprocess.run(
        [str(bin_dir / "fbp-jax"), "predict", "--model=ravdess-av", str(wav)],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "OpenFace" in proc.stdout + proc.stderr


def test_repository_configs_load_through_the_installed_command(installed, tmp_path):
    """A config file of the repository imports its siblings (`from configs import ...`) when
    named by path from any folder, as under `python -m`."""
    bin_dir, _ = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [
            str(bin_dir / "fbp-jax"),
            "train",
            f"--config={os.path.join(REPO, 'configs', 'ravdess_audio.py')}:dev1",
            f"--workdir={tmp_path / 'w'}",
            f"--config.data.data_dir={tmp_path / 'nothing'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert proc.returncode != 0 and "No prepared dataset 'ravdess/speech'" in proc.stderr, (
        proc.stderr[-3000:]
    )


def test_the_base_install_predicts_without_tensorflow_and_names_the_extras(tmp_path):
    """fbp_jax without extras, in a fresh venv holding only what its wheel's base requirements
    need: the shipped model predicts a file with no TensorFlow installed, and the commands that
    need an extra say which."""
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = email.message_from_bytes(archive.read(metadata)).get_all("Requires-Dist")
    # The base requirements the wheel declares (no extra), linked from this environment.
    venv = tmp_path / "light"
    py = linked_venv(venv, requires)
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp_path)
    for absent in ("tensorflow", "tensorflow_datasets", "clu", "sklearn", "mtcnn"):
        probe = subprocess.run([py, "-c", f"import {absent}"], capture_output=True, check=False)
        assert probe.returncode != 0, f"{absent} is installed without extras"
    t = np.arange(32000) / 16000
    wav = tmp_path / "clip.wav"
    soundfile.write(wav, 0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 2 * t) ** 2, 16000)
    fbp = str(venv / "bin" / "fbp-jax")
    proc = _run([fbp, "predict", "--model=ravdess-audio", str(wav)], tmp_path)
    assert "clip.wav:" in proc.stdout and "%" in proc.stdout
    config = f"--config={os.path.join(REPO, 'configs', 'ravdess_audio.py')}:dev"
    for args, extra in (
        (["train", config, f"--workdir={tmp_path / 'w'}"], "train"),
        (["build", "ravdess", f"--manual_dir={tmp_path}"], "data"),
        (["cv", config, f"--workdir={tmp_path / 'cv'}"], "train"),
    ):
        refused = subprocess.run(
            [fbp, *args], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        command = args[0]
        assert refused.returncode == 2, (command, refused.stderr[-2000:])
        assert f"needs the [{extra}] extra" in refused.stderr
        assert f"pip install 'fbp_jax[{extra}]'" in refused.stderr
