"""The parts of the install beyond prediction, and a clear message when one is missing.

`pip install fbp_jax` brings what prediction, the shipped models, the export bundles and the
model kernels need (JAX, Flax, NumPy, SciPy, PyAV, soundfile, absl, ml_collections, tqdm,
matplotlib). The rest comes with extras:

    train   training, evaluation, cross-validation, floors, reports, the benchmark
            (TensorFlow, TFDS, TensorBoard, clu, scikit-learn)
    data    building corpora into records (TensorFlow, TFDS, and the face pipeline's packages)
    faces   the face pipeline alone (MTCNN, h5py): predicting with a face model
    beam    builds on Apache Beam
    test    everything above, and the test tools
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "train": "training, evaluation and cross-validation: TensorFlow, TFDS, clu, scikit-learn",
    "data": "building corpora: TensorFlow, TFDS and the face pipeline",
    "faces": "the face pipeline: MTCNN and h5py",
    "beam": "builds on Apache Beam",
}
# Top-level modules and the extra that installs them.
MODULE_EXTRA = {
    "tensorflow": "train",
    "tensorflow_datasets": "train",
    "tensorboard": "train",
    "clu": "train",
    "sklearn": "train",
    "mtcnn": "faces",
    "h5py": "faces",
    "lz4": "faces",
    "joblib": "faces",
    "apache_beam": "beam",
}


class MissingExtraError(ImportError):
    """A part of the install is missing; the message names the extra that brings it."""


def message(what: str, missing: str | None, extra: str | None = None) -> str:
    """'<what> needs the [extra] extra (...): pip install 'fbp_jax[extra]''."""
    root = (missing or "").split(".")[0]
    extra = extra or MODULE_EXTRA.get(root, "train")
    return (
        f"{what} needs the [{extra}] extra ({EXTRAS.get(extra, extra)}); the module "
        f"{missing or '?'} is not installed: pip install 'fbp_jax[{extra}]'"
    )


def require(module: str, extra: str, what: str) -> ModuleType:
    """Imports `module`; a missing dependency raises `MissingExtraError` naming `extra`."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("fbp_jax", "data_prep"):
            raise
        raise MissingExtraError(message(what, e.name, extra)) from e
