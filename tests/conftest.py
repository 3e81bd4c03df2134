"""Shared fixtures: the tiny synthetic corpus built once per test session, and its config."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

# Many tests train the same tiny models, in this process and in subprocesses (kill and resume,
# the installed wheel, the CLI): one persistent XLA compilation cache per test run (shared by
# the xdist workers and inherited by subprocesses) compiles each of them once. Set before
# JAX is imported; a cache dir given by the caller is kept (and not removed at the end).
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), f"fbp_jax_test_xla_cache_{os.getpid()}"),
)

# The suite's time is mostly XLA compiling small programs, not running them: its backend
# (LLVM) compiles at -O0 here (XLA's own graph optimisations still run), which takes a third
# off the suite's time. Subprocesses inherit it; speed is measured by `fbp-jax benchmark`.
FAST_COMPILE = "--xla_backend_optimization_level=0"
if FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import pytest  # noqa: E402  (after the cache dir is set)
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

from fbp_jax import base_config  # noqa: E402


def pytest_sessionfinish(session):
    # The process that made the cache (the xdist controller, or pytest without xdist) removes it.
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A TFDS data dir holding the prepared `synthetic_av/tiny` corpus."""
    from data_prep import build

    # One build per worker; xdist workers get their own base temp dir.
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    build.build("synthetic_av/tiny", data_dir=data_dir)
    return data_dir


def tiny_train_config(data_dir: str, fusion: str = "am_fbp", **overrides):
    """The demo config shrunk to the tiny synthetic corpus (trains in seconds)."""
    config = base_config.demo_config(fusion, size="tiny")
    with config.unlocked():
        config.data.data_dir = data_dir
        config.eval_every_steps = 62  # As the tests were tuned: twice in 12 epochs.
        for key, value in overrides.items():
            target = config
            *path, last = key.split(".")
            for p in path:
                target = target[p]
            target[last] = value
    return config


@pytest.fixture
def repo_root():
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prepended to a script run by `run_script`: makes TensorFlow (and TFDS) unimportable.
BLOCK_TENSORFLOW = """
import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
            raise ImportError('TensorFlow is blocked in this test')

sys.meta_path.insert(0, _Block())
"""

# Prepended to a script (or put in a sitecustomize.py): every network connection is refused.
BLOCK_NETWORK = """
import socket

def _refuse(*args, **kwargs):
    raise OSError("network blocked in this test")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
"""


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs Python code in a fresh interpreter at the repo root; fails the test if it fails."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _closure(requirements):
    """The distributions of this environment that `requirements` need, with their own
    dependencies (extras not asked for left out)."""
    found, todo = {}, [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name not in found and (
            requirement.marker is None or requirement.marker.evaluate({"extra": ""})
        ):
            found[name] = importlib.metadata.distribution(name)
            todo.extend(Requirement(r) for r in found[name].requires or ())
    return found


def linked_venv(root, requirements) -> str:
    """A fresh venv (with pip) holding what `requirements` need, linked from this environment's
    site-packages: the versions of constraints.txt, nothing downloaded, and nothing else within
    reach (TensorFlow, say, when they do not need it). A folder that is not a package (a
    namespace such as `google/`, a .dist-info) is made and the distribution's own entries linked,
    so that what other distributions put there stays out. Returns the venv's python."""
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = str(root / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    entries = {}  # path in site-packages (its parts) -> the site-packages it comes from
    for dist in _closure(requirements).values():
        base = dist.locate_file("")
        for file in dist.files or ():
            parts = file.parts
            if parts[0] in ("..", "__pycache__"):
                continue  # Scripts outside site-packages; byte code.
            top = base / parts[0]
            namespace = top.is_dir() and not (top / "__init__.py").exists()
            entries[parts[:2] if namespace and len(parts) > 1 else parts[:1]] = base
    for parts, base in entries.items():
        target = os.path.join(site, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.symlink(os.path.join(base, *parts), target)
    return python


# Trained workdirs shared by the evaluation, report, predict, export and cross-validation tests
# (each trains in seconds; session-scoped so that every module reuses them).


@pytest.fixture(scope="session")
def tiny_folds_data_dir(tmp_path_factory):
    """A TFDS data dir holding `synthetic_av/tiny_folds` (3 speaker folds, 200 bins)."""
    from data_prep import build

    data_dir = str(tmp_path_factory.mktemp("tfds_folds"))
    build.build("synthetic_av/tiny_folds", data_dir=data_dir)
    return data_dir


def tiny_folds_config(data_dir: str, fusion: str, fold: str = "1", **overrides):
    """`tiny_train_config` on the tiny speaker folds: fold k tests on fold k, validates on the
    next one and trains on the third."""
    from configs import synthetic_cv_common

    train, val, test = synthetic_cv_common.fold_splits(fold, num_folds=3)
    config = tiny_train_config(data_dir, fusion, **overrides)
    with config.unlocked():
        config.fold = fold
        config.folds = ("1", "2", "3")
        config.data.name = "synthetic_av/tiny_folds"
        config.data.num_bins = 200
        config.data.train_split = train
        config.data.eval_split = val
        config.data.test_split = test
    return config


@pytest.fixture(scope="session")
def amfbp_workdir(tiny_data_dir, tmp_path_factory):
    """AM-FBP trained 8 steps on the tiny corpus, evaluated every 4 (two checkpoints)."""
    from fbp_jax.training import loop

    workdir = str(tmp_path_factory.mktemp("amfbp"))
    config = tiny_train_config(tiny_data_dir, "am_fbp", num_train_steps=8, eval_every_steps=4)
    loop.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="session")
def audio_workdir(tiny_folds_data_dir, tmp_path_factory):
    """An audio-only model on 200-bin spectrograms (what data_prep computes from a file)."""
    from fbp_jax.training import loop

    workdir = str(tmp_path_factory.mktemp("audio"))
    config = tiny_folds_config(tiny_folds_data_dir, "audio", num_train_steps=2, eval_every_steps=2)
    loop.train_and_evaluate(config, workdir)
    return workdir
