"""MTCNN face detection (Zhang et al. 2016) in JAX, with the `mtcnn` wheel's own weights.

The `mtcnn` package (MIT) runs its three networks in TensorFlow, one Keras call per pyramid
level and per stage. Here the same networks and weights run as jit-compiled JAX functions:
every pyramid level of a batch of frames in one compiled call (proposal network), then the
candidate boxes of the whole batch in one call per refinement stage, padded to a few bucket
sizes so that compilations are reused. Nothing here imports TensorFlow, so the face pipeline
runs on a GPU machine that has only JAX.

The detection procedure follows the wheel's (so that both find the same faces):

1. pyramid: scales ``(12 / min_face_size) * 0.709 ** k``; each level is the frame shrunk by
   area averaging (`area_resize`, TensorFlow's ``resize_area``), sizes truncated;
2. P-Net on each level (12 x 12 windows, stride 2): windows with face probability > 0.6 give a
   box (window plus its regression), suppressed per level (IoU > 0.5) and across levels
   (IoU > 0.7), then made square;
3. R-Net on 24 x 24 crops of those boxes (`crop_and_resize`, bilinear, zero outside the
   frame): probability > 0.7, regression, suppression (IoU > 0.7), square;
4. O-Net on 48 x 48 crops: probability > 0.8, regression, five landmarks, suppression with
   the intersection over the smaller box (> 0.7);
5. boxes clipped to the frame.

Suppression (`suppress`) keeps a box when no higher-scored box overlaps it beyond the
threshold, whether or not that box was itself kept: the rule of the wheel, slightly stricter
than greedy NMS.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from fbp_jax.model import conv

PYRAMID_FACTOR = 0.709
WINDOW = 12  # P-Net's window (pixels of a pyramid level) and stride 2.
THRESHOLDS = (0.6, 0.7, 0.8)  # Face probability kept after P-Net, R-Net, O-Net.
# Row of a detection: image index, x0, y0, x1, y1, confidence, 5 landmark x, 5 landmark y.
ROW = 16
CHUNK = 256  # Crops per refinement-network call.
FRAME_MULTIPLE = 8  # Frame batches are padded to a multiple of this (fewer compilations).


# --------------------------------------------------------------------------- weights


def weights_dir() -> str:
    """The `mtcnn` wheel's weight folder, found without importing the package (TensorFlow)."""
    spec = importlib.util.find_spec("mtcnn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("MTCNN weights need the `mtcnn` package (pip install mtcnn)")
    return os.path.join(next(iter(spec.submodule_search_locations)), "assets", "weights")


def load_weights(name: str) -> list[np.ndarray]:
    """The Keras weight list of `name` ('pnet', 'rnet', 'onet'), float32 numpy arrays."""
    import joblib  # a dependency of `mtcnn`; reads its lz4-compressed pickles

    path = os.path.join(weights_dir(), f"{name}.lz4")
    return [np.asarray(w, np.float32) for w in joblib.load(path)]


# --------------------------------------------------------------------------- networks


def _conv(x, kernel, bias):
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y + bias


def _conv_matmul(x, kernel, bias):
    # The same valid convolution as im2col + one matmul: faster on XLA:CPU for the refinement
    # networks' 3-channel first layers on small crops.
    return conv.conv2d_patches(x, kernel, (1, 1), ((0, 0), (0, 0))) + bias


def _prelu(x, alpha):
    return jnp.where(x > 0, x, alpha * x)


def _max_pool(x, size, padding):
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, size, size, 1), (1, 2, 2, 1), padding
    )


def _flatten_wh(x):
    # Keras Permute((2, 1, 3)) then Flatten: the weights expect width-major order.
    return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


def pnet(w, x):
    """P-Net: frames [N, H, W, 3] in [-1, 1] -> box regression [N, h, w, 4], face prob [N, h, w]."""
    x = _prelu(_conv(x, w[0], w[1]), w[2])
    x = _max_pool(x, 2, "SAME")
    x = _prelu(_conv(x, w[3], w[4]), w[5])
    x = _prelu(_conv(x, w[6], w[7]), w[8])
    return _conv(x, w[9], w[10]), jax.nn.softmax(_conv(x, w[11], w[12]), -1)[..., 1]


def rnet(w, x):
    """R-Net: crops [M, 24, 24, 3] -> box regression [M, 4], face probability [M]."""
    x = _max_pool(_prelu(_conv_matmul(x, w[0], w[1]), w[2]), 3, "SAME")
    x = _max_pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, "VALID")
    x = _prelu(_conv(x, w[6], w[7]), w[8])
    x = _prelu(_flatten_wh(x) @ w[9] + w[10], w[11])
    return x @ w[12] + w[13], jax.nn.softmax(x @ w[14] + w[15], -1)[:, 1]


def onet(w, x):
    """O-Net: crops [M, 48, 48, 3] -> regression [M, 4], landmarks [M, 10], probability [M]."""
    x = _max_pool(_prelu(_conv_matmul(x, w[0], w[1]), w[2]), 3, "SAME")
    x = _max_pool(_prelu(_conv(x, w[3], w[4]), w[5]), 3, "VALID")
    x = _max_pool(_prelu(_conv(x, w[6], w[7]), w[8]), 2, "SAME")
    x = _prelu(_conv(x, w[9], w[10]), w[11])
    x = _prelu(_flatten_wh(x) @ w[12] + w[13], w[14])
    return x @ w[15] + w[16], x @ w[17] + w[18], jax.nn.softmax(x @ w[19] + w[20], -1)[:, 1]


# --------------------------------------------------------------------------- image ops


def area_matrix(n: int, out: int) -> np.ndarray:
    """[out, n] weights of area averaging n samples down to `out`: output i averages the
    input span [i s, (i + 1) s), s = n / out, each input sample weighted by its overlap."""
    edges = np.arange(out + 1) * (n / out)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0, None)
    return (overlap / (n / out)).astype(np.float32)


def area_resize(images, size: tuple[int, int]):
    """[N, H, W, C] -> [N, h, w, C] by area averaging (as TensorFlow's resize_area)."""
    rows = area_matrix(images.shape[1], size[0])
    cols = area_matrix(images.shape[2], size[1])
    return jnp.einsum("ph,nhwc,qw->npqc", rows, images, cols)


def crop_and_resize(images, boxes, index, size: int):
    """Bilinear crops [M, size, size, C] of `boxes` [M, 4] (x0, y0, x1, y1 in pixels) from
    images[index]; sample i of a box spans x0 .. x1 scaled by (W - 1) / W as TensorFlow's
    crop_and_resize does with the wheel's normalised boxes; samples outside the image are 0."""
    n, h, w, c = images.shape
    steps = jnp.arange(size, dtype=jnp.float32) / (size - 1)

    def axis(a0, a1, length):
        pos = (a0[:, None] + steps[None] * (a1 - a0)[:, None]) * ((length - 1) / length)
        inside = (pos >= 0) & (pos <= length - 1)
        p0 = jnp.clip(jnp.floor(pos), 0, length - 1).astype(jnp.int32)
        p1 = jnp.minimum(p0 + 1, length - 1)
        return p0, p1, jnp.clip(pos - p0, 0, 1), inside

    y0, y1, fy, in_y = axis(boxes[:, 1], boxes[:, 3], h)
    x0, x1, fx, in_x = axis(boxes[:, 0], boxes[:, 2], w)
    flat = images.reshape(n * h * w, c)
    base = (index * h * w)[:, None, None]

    def take(ys, xs):  # [M, size, size, C]
        return flat[base + ys[:, :, None] * w + xs[:, None, :]]

    fy, fx = fy[:, :, None, None], fx[:, None, :, None]
    top = take(y0, x0) * (1 - fx) + take(y0, x1) * fx
    bottom = take(y1, x0) * (1 - fx) + take(y1, x1) * fx
    out = top * (1 - fy) + bottom * fy
    return out * (in_y[:, :, None, None] & in_x[:, None, :, None])


def normalize(frames):
    return (frames.astype(jnp.float32) - 127.5) / 128.0


# --------------------------------------------------------------------------- box logic (numpy)


def pyramid(height: int, width: int, min_face_size: int) -> list[float]:
    """The wheel's pyramid scales for a frame (its level count formula)."""
    count = round(-(np.log(min(height, width) / WINDOW) / np.log(PYRAMID_FACTOR) + 1))
    return list((WINDOW / min_face_size) * PYRAMID_FACTOR ** np.arange(max(count, 0)))


def overlap(boxes: np.ndarray, method: str) -> np.ndarray:
    """Pairwise intersection over union ('union') or over the smaller box ('min'), [M, M]."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    lo = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = np.minimum(boxes[:, None, 2:4], boxes[None, :, 2:4])
    inter = np.prod(np.maximum(hi - lo, 0), axis=-1)
    if method == "union":
        denominator = area[:, None] + area[None, :] - inter
    else:
        denominator = np.minimum(area[:, None], area[None, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / denominator


def suppress(rows: np.ndarray, threshold: float, method: str = "union", sort=True) -> np.ndarray:
    """Per image, drops each row overlapped beyond `threshold` by a higher-scored row."""
    if sort:
        rows = rows[np.argsort(rows[:, 5])[::-1]]
    kept = []
    for image in np.unique(rows[:, 0]):
        group = rows[rows[:, 0] == image]
        beaten = np.triu(overlap(group[:, 1:5], method) > threshold, k=1).any(axis=0)
        kept.append(group[~beaten])
    return np.concatenate(kept) if kept else rows[:0]


def square(rows: np.ndarray) -> np.ndarray:
    """Boxes grown to squares of their longer side about the same centre."""
    rows = rows.copy()
    w, h = rows[:, 3] - rows[:, 1], rows[:, 4] - rows[:, 2]
    side = np.maximum(w, h)
    rows[:, 1] += (w - side) / 2
    rows[:, 2] += (h - side) / 2
    rows[:, 3:5] = rows[:, 1:3] + side[:, None]
    return rows


def refine(rows: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Applies the refinement networks' regression (fractions of the box's side + 1)."""
    rows = rows.copy()
    w = rows[:, 3] - rows[:, 1] + 1
    h = rows[:, 4] - rows[:, 2] + 1
    rows[:, 1:5] += offsets * np.stack([w, h, w, h], axis=1)
    return rows


# --------------------------------------------------------------------------- detector


@functools.partial(jax.jit, static_argnames=("sizes",))
def _pyramid_pnet(weights, frames, sizes):
    x = normalize(frames)
    return [pnet(weights, area_resize(x, size)) for size in sizes]


@functools.partial(jax.jit, static_argnames=("size",))
def _crops(frames, boxes, index, size):
    return crop_and_resize(normalize(frames), boxes, index, size)


_rnet = jax.jit(rnet)
_onet = jax.jit(onet)


class MTCNN:
    """The three-stage detector; `detect` takes a batch of same-size RGB frames.

    Args:
      min_face_size: the smallest face searched for, in pixels (the pyramid's first level).
      thresholds: face probability kept after P-Net, R-Net and O-Net.
    """

    def __init__(self, min_face_size: int = 20, thresholds=THRESHOLDS):
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.weights = [jax.device_put(load_weights(n)) for n in ("pnet", "rnet", "onet")]

    def detect(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, 3] -> detections float64 [M, 16] (`ROW` layout, boxes x0 y0 x1 y1)."""
        frames = np.asarray(frames)
        n, h, w = frames.shape[:3]
        pad = -n % FRAME_MULTIPLE
        if pad:  # blank frames, whose detections are dropped below
            frames = np.concatenate([frames, np.zeros((pad, *frames.shape[1:]), frames.dtype)])
        scales = pyramid(h, w, self.min_face_size)
        sizes = tuple((int(h * s), int(w * s)) for s in scales)
        scales = [s for s, size in zip(scales, sizes) if min(size) >= WINDOW]
        sizes = sizes[: len(scales)]
        if not sizes:
            return np.zeros((0, ROW))
        device_frames = jnp.asarray(frames)
        rows = self._proposals(_pyramid_pnet(self.weights[0], device_frames, sizes), scales)
        rows = rows[rows[:, 0] < n]  # none from the blank frames
        if len(rows):
            rows = self._refine_rnet(device_frames, rows)
        if len(rows):
            rows = self._refine_onet(device_frames, rows)
        if not len(rows):
            return np.zeros((0, ROW))
        rows[:, [1, 3]] = np.clip(rows[:, [1, 3]], 0, w - 1)
        rows[:, [2, 4]] = np.clip(rows[:, [2, 4]], 0, h - 1)
        return rows

    def _proposals(self, outputs, scales) -> np.ndarray:
        levels = []
        for (regression, prob), scale in zip(outputs, scales):
            prob = np.asarray(prob)
            image, y, x = np.nonzero(prob > self.thresholds[0])
            if not len(image):
                continue
            reg = np.asarray(regression)[image, y, x].astype(np.float64)
            left, top = 2.0 * x + 1, 2.0 * y + 1
            size = WINDOW - 1  # the wheel's window corners: 2i + 1 .. 2i + 12
            box = np.stack([left, top, left + size, top + size], axis=1) + reg * size
            rows = np.column_stack([image, box / scale, prob[image, y, x]])
            levels.append(suppress(rows[np.argsort(rows[:, 5])[::-1]], 0.5, sort=False))
        if not levels:
            return np.zeros((0, 6))
        return square(suppress(np.concatenate(levels), 0.7))

    def _run(self, net, weights, frames, rows, size):
        # Chunks of CHUNK crops; a shorter last one padded to a power of two: few compilations.
        outputs = []
        for start in range(0, len(rows), CHUNK):
            part = rows[start : start + CHUNK]
            pad = min(CHUNK, max(16, 1 << (len(part) - 1).bit_length())) - len(part)
            boxes = np.concatenate([part[:, 1:5], np.zeros((pad, 4))]).astype(np.float32)
            index = np.concatenate([part[:, 0], np.zeros(pad)]).astype(np.int32)
            crops = _crops(frames, jnp.asarray(boxes), jnp.asarray(index), size)
            outputs.append(
                [np.asarray(out, np.float64)[: len(part)] for out in net(weights, crops)]
            )
        return [np.concatenate(parts) for parts in zip(*outputs)]

    def _refine_rnet(self, frames, rows) -> np.ndarray:
        offsets, prob = self._run(_rnet, self.weights[1], frames, rows, 24)
        rows = refine(rows, offsets)
        rows[:, 5] = prob
        rows = rows[prob > self.thresholds[1]]
        return square(suppress(rows, 0.7))

    def _refine_onet(self, frames, rows) -> np.ndarray:
        offsets, points, prob = self._run(_onet, self.weights[2], frames, rows, 48)
        w = rows[:, 3:4] - rows[:, 1:2] + 1
        h = rows[:, 4:5] - rows[:, 2:3] + 1
        landmarks = np.concatenate(
            [w * points[:, :5] + rows[:, 1:2] - 1, h * points[:, 5:] + rows[:, 2:3] - 1], axis=1
        )
        rows = refine(rows, offsets)
        rows[:, 5] = prob
        rows = np.concatenate([rows, landmarks], axis=1)[prob > self.thresholds[2]]
        return suppress(rows, 0.7, method="min")
