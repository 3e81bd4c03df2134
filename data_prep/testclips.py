"""Small audio-visual clips written with PyAV, for tests and the face-pipeline benchmark.

The face is a real photograph, scikit-image's ``data.astronaut()`` (Eileen Collins, public
domain), moved and scaled across frames over a textured background; chosen frames show only the
background. Audio is a voiced-speech-like harmonic signal. Everything is a function of the
arguments (and the seed), so tests can state where the face is in every frame.

scikit-image is needed for the photograph (it is in the ``test`` extra).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

# The astronaut's face in skimage.data.astronaut() (512 x 512): x0, y0, x1, y1, from MTCNN on
# the photograph (rounded outward).
ASTRONAUT_FACE_BOX = (180.0, 62.0, 266.0, 172.0)
# Square region of the photograph pasted into frames (x0, y0, side): the face and some context.
_PATCH = (103, 17, 240)


@dataclasses.dataclass(frozen=True)
class FaceClip:
    """Frames of a generated clip and where the face is.

    Attributes:
      frames: uint8 [N, H, W, 3] RGB.
      face_boxes: float [N, 4] x0, y0, x1, y1 of the face in each frame (NaN where absent).
      timestamps: float [N] presentation time of each frame in seconds.
    """

    frames: np.ndarray
    face_boxes: np.ndarray
    timestamps: np.ndarray

    @property
    def has_face(self) -> np.ndarray:
        return ~np.isnan(self.face_boxes[:, 0])


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth coloured texture (low-frequency noise plus a gradient), no faces."""
    coarse = rng.uniform(40, 200, size=(height // 16 + 2, width // 16 + 2, 3))
    ys = np.linspace(0, coarse.shape[0] - 1.001, height)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    img += np.linspace(-20, 20, width)[None, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


def face_frames(
    num_frames: int = 20,
    size: tuple[int, int] = (320, 240),
    no_face: Sequence[int] = (),
    fps: float = 25.0,
    seed: int = 0,
    timestamps: Sequence[float] | None = None,
) -> FaceClip:
    """Frames with the astronaut's face moving and changing scale, except at `no_face`.

    Args:
      num_frames: number of frames.
      size: (width, height), even numbers.
      no_face: indices of frames that show only the background.
      fps: frame rate (timestamps are i / fps unless given).
      seed: background texture.
      timestamps: explicit presentation times (e.g. for a variable frame rate).

    Returns:
      A `FaceClip`.
    """
    from skimage import data, transform

    width, height = size
    rng = np.random.default_rng(seed)
    background = _background(height, width, rng)
    x0, y0, side = _PATCH
    patch = data.astronaut()[y0 : y0 + side, x0 : x0 + side]
    frames = np.repeat(background[None], num_frames, axis=0)
    boxes = np.full((num_frames, 4), np.nan)
    skip = set(no_face)
    for i in range(num_frames):
        if i in skip:
            continue
        phase = i / max(num_frames - 1, 1)
        # Patch side 45-75 % of the frame height, moving left to right and up and down.
        scale = (0.45 + 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * phase))) * height / side
        new = round(side * scale)
        resized = (transform.resize(patch, (new, new), anti_aliasing=True) * 255).astype(np.uint8)
        left = round((width - new) * phase)
        top = round((height - new) * (0.5 + 0.4 * np.sin(3 * np.pi * phase)) / 1.0)
        top = min(max(top, 0), height - new)
        frames[i, top : top + new, left : left + new] = resized
        fx0, fy0, fx1, fy1 = ASTRONAUT_FACE_BOX
        boxes[i] = [
            left + (fx0 - x0) * new / side,
            top + (fy0 - y0) * new / side,
            left + (fx1 - x0) * new / side,
            top + (fy1 - y0) * new / side,
        ]
    ts = np.arange(num_frames) / fps if timestamps is None else np.asarray(timestamps, float)
    return FaceClip(frames, boxes, ts)


def speech_like(seconds: float, rate: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic signal with a gliding f0 and syllable-rate envelope: float32 [n, channels]."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    mono = 0.2 * voice * envelope + 0.005 * rng.standard_normal(len(t))
    out = np.stack([mono * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


def write_clip(
    path: str,
    frames: np.ndarray | None,
    timestamps: Sequence[float] | None = None,
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
    fps: int = 25,
    video_codec: str | None = None,
    audio_codec: str | None = None,
    start_s: float = 0.0,
) -> None:
    """Writes a clip with PyAV (the container follows the file extension).

    Args:
      path: output file (.avi, .flv, .mkv, .mp4, ...).
      frames: uint8 [N, H, W, 3] RGB, or None for an audio-only file.
      timestamps: presentation times in seconds (default i / fps); uneven times give a variable
        frame rate (use a container that keeps them, e.g. .mkv or .flv).
      audio: float [n, channels] in [-1, 1], or None for a file without an audio track.
      audio_rate: its sample rate.
      fps: nominal frame rate.
      video_codec: default by extension (.flv: flv, else mpeg4).
      audio_codec: default by extension (.flv: mp3, .avi: pcm_s16le, .ts: mp2, else aac).
      start_s: time of the first frame and sample (for segments joined by `write_segments`).
    """
    import av

    ext = path.rsplit(".", 1)[-1].lower()
    video_codec = video_codec or {"flv": "flv", "ts": "mpeg2video"}.get(ext, "mpeg4")
    audio_codec = audio_codec or {"flv": "libmp3lame", "avi": "pcm_s16le", "ts": "mp2"}.get(
        ext, "aac"
    )
    with av.open(path, "w") as container:
        vstream = astream = None
        if frames is not None:
            vstream = container.add_stream(video_codec, rate=fps)
            vstream.width, vstream.height = frames.shape[2], frames.shape[1]
            vstream.pix_fmt = "yuv420p"
            # Constant rate: one tick per frame; explicit timestamps: millisecond ticks.
            tick = Fraction(1, fps) if timestamps is None else Fraction(1, 1000)
            vstream.codec_context.time_base = tick
            vstream.options = (
                {"qscale": "3"} if video_codec in ("mpeg4", "flv", "mpeg2video") else {}
            )
        if audio is not None:
            layout = "mono" if audio.shape[1] == 1 else "stereo"
            astream = container.add_stream(audio_codec, rate=audio_rate, layout=layout)
        if vstream is not None:
            ts = np.arange(len(frames)) / fps if timestamps is None else np.asarray(timestamps)
            for image, t in zip(frames, ts):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = round((t + start_s) / tick)
                frame.time_base = tick
                container.mux(vstream.encode(frame))
            container.mux(vstream.encode())
        if astream is not None:
            samples = np.clip(audio, -1, 1)
            fmt = astream.codec_context.format.name
            chunk = astream.codec_context.frame_size or 1024
            for start in range(0, len(samples), chunk):
                block = samples[start : start + chunk]
                if fmt.startswith("s16"):
                    data = (block * 32767).astype(np.int16)
                elif fmt.startswith("s32"):
                    data = (block.astype(np.float64) * 2147483647).astype(np.int32)
                else:
                    data = block.astype(np.float32)
                if fmt.endswith("p"):
                    data = np.ascontiguousarray(data.T)
                else:
                    data = np.ascontiguousarray(data.reshape(1, -1))
                frame = av.AudioFrame.from_ndarray(data, format=fmt, layout=astream.layout.name)
                frame.sample_rate = audio_rate
                frame.pts = start + round(start_s * audio_rate)
                frame.time_base = Fraction(1, audio_rate)
                container.mux(astream.encode(frame))
            container.mux(astream.encode())


def write_segments(path: str, segments: Sequence[dict], fps: int = 25) -> None:
    """One MPEG-TS file made of consecutive segments whose picture size or audio layout may
    differ (as in a broadcast stream that changes format part-way): each segment, a dict of
    `write_clip` arguments (frames, audio, audio_rate), is written as its own .ts at the time
    the previous one ended, and the files are joined byte by byte."""
    import tempfile

    start, parts = 0.0, []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seg in enumerate(segments):
            part = os.path.join(tmp, f"{i}.ts")
            write_clip(part, fps=fps, start_s=start, **seg)
            with open(part, "rb") as f:
                parts.append(f.read())
            frames = seg.get("frames")
            start += len(frames) / fps if frames is not None else 0.0
    with open(path, "wb") as f:
        f.write(b"".join(parts))
