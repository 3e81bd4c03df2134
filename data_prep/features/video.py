"""Video decoding with PyAV: frames on the 25 frames/s grid of the schema, and the audio track.

PyAV bundles FFmpeg, so no system ffmpeg is needed. `read_video` decodes a file once:

* video frames (RGB uint8) with their presentation timestamps, resampled onto the schema's grid
  of 25 frames/s by timestamp: grid step ``k`` (time ``k / 25`` s after the first frame) shows
  the frame on screen at that time, i.e. the last frame whose timestamp is not later. This is
  the same for constant and variable frame rates; a 30 frames/s clip of ``n`` frames gives
  ``round(n * 25 / 30)`` steps. Only the frames the grid uses are kept in memory.
* the audio track, downmixed and resampled to 16 kHz mono (`data_prep.features.audio.to_mono_16k`),
  shifted so that sample 0 is at the time of the first video frame (the two streams of a file
  often start a few milliseconds apart), and checked like `data_prep.features.audio.load_audio` does
  (zero-length, too short, silent, not finite).

Files that cannot be used raise `data_prep.builders.corpus.BadClip` naming the file and the problem:
missing or unreadable file, no video stream (audio only), zero decodable frames, no audio track
(when audio is asked for), decoding errors, and truncation (the file decodes to less than its
header's duration). Changes that keep the clip usable (a variable frame rate, resampled audio,
a start offset between the streams) are returned as notes for the build report.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from data_prep.errors import BadClip
from data_prep.features import audio as audio_lib

VIDEO_FPS = 25  # Frames per second of the schema.
# Video files every reader of the project accepts (builders and `fbp_jax.serving.predict`).
VIDEO_EXTENSIONS = (".avi", ".flv", ".mp4", ".mkv", ".mov", ".mpg", ".mpeg", ".webm")
# A clip whose decoded video ends this much before the duration or frame count its header
# declares is truncated (rejected); a smaller shortfall (over 2.5 frames) is kept with a note.
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_TOLERANCE_FRACTION = 0.1
# Packets that fail to decode are skipped; more than this many (and this fraction) reject the clip.
MAX_BAD_PACKETS = 2
MAX_BAD_PACKET_FRACTION = 0.05
# A gap between consecutive frames longer than both of these means corrupt timestamps.
MAX_FRAME_GAP_S = 1.0
MAX_FRAME_GAP_INTERVALS = 10
# Spread of the frame intervals (max / min, outliers at both ends ignored) above which the
# clip is reported as having a variable frame rate.
VFR_RATIO = 1.2


@dataclasses.dataclass(frozen=True)
class Video:
    """A decoded clip.

    Attributes:
      frames: uint8 [Tv, H, W, 3] RGB, one per grid step (or per source frame when `read_video`
        was asked for ``fps=None``); empty [0, H, W, 3] when frames were not kept.
      frame_index: int [Tv] index of the source frame shown at each grid step.
      source_times: float64 [N] presentation time in seconds of each decoded source frame,
        relative to the first one.
      source_fps: average rate of the source frames.
      variable_frame_rate: the source frame intervals vary by more than `VFR_RATIO`.
      audio: the audio track (16 kHz mono, sample 0 at the first frame), or None.
      duration_s: duration of the video stream (last timestamp + one frame interval).
      notes: conversions that kept the clip usable, for the build report.
    """

    frames: np.ndarray
    frame_index: np.ndarray
    source_times: np.ndarray
    source_fps: float
    variable_frame_rate: bool
    audio: audio_lib.Audio | None
    duration_s: float
    notes: tuple[str, ...]

    @property
    def num_steps(self) -> int:
        return len(self.frame_index)


def grid_steps(duration_s: float, fps: float = VIDEO_FPS) -> int:
    """Number of grid steps covering `duration_s` seconds (at least 1)."""
    return max(1, round(duration_s * fps))


def frame_for_times(source_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the source frame on screen at each of `times` (sample and hold).

    Args:
      source_times: increasing presentation times [N] (seconds), N >= 1.
      times: query times [T].

    Returns:
      int [T]: the last source frame whose time is <= the query time (0 before the first).
    """
    # A tolerance far below any frame interval absorbs timestamp rounding (e.g. 1 ms ticks).
    idx = np.searchsorted(np.asarray(source_times), np.asarray(times) + 1e-4, side="right") - 1
    return np.clip(idx, 0, len(source_times) - 1)


def _frame_interval(times: np.ndarray, nominal_fps: float | None) -> float:
    if len(times) >= 2:
        return float(np.median(np.diff(times)))
    return 1.0 / nominal_fps if nominal_fps else 1.0 / VIDEO_FPS


def _is_variable(times: np.ndarray) -> bool:
    if len(times) < 4:
        return False
    gaps = np.diff(times)
    lo, hi = np.percentile(gaps, [5, 95])
    return bool(lo <= 0 or hi / lo > VFR_RATIO)


def read_video(
    path: str,
    *,
    with_audio: bool = True,
    fps: float | None = VIDEO_FPS,
    keep_frames: bool = True,
    min_audio_seconds: float = audio_lib.WINDOW / audio_lib.SAMPLE_RATE,
    max_side: int | None = None,
) -> Video:
    """Decodes a video file (and its audio track) into frames on the schema's time grid.

    Args:
      path: the video file (any container and codec FFmpeg reads: .avi, .flv, .mp4, .mkv, ...).
      with_audio: decode the audio track; a file without one raises `BadClip`.
      fps: rate of the output grid; None keeps every source frame.
      keep_frames: False decodes the frames for their timestamps only (no pixels kept).
      min_audio_seconds: shorter audio tracks are rejected.
      max_side: frames are kept shrunk by an integer factor to at most this longer side
        (None: full resolution).

    Returns:
      A `Video`.

    Raises:
      BadClip: the file is missing, unreadable, truncated or corrupt, has no video stream or no
        decodable frame, or (with `with_audio`) no usable audio track.
    """
    import av  # PyAV: only data preparation needs it

    if not os.path.isfile(path):
        raise BadClip(path, "file not found")
    notes: list[str] = []
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise BadClip(path, f"unreadable video ({_short(e)})") from e
    with container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise BadClip(path, f"no video stream (the file has: {', '.join(kinds)})")
        if with_audio and not container.streams.audio:
            raise BadClip(path, "no audio track")
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        header_s, header_of_stream = _header_duration(container, vstream)
        header_frames = vstream.frames or 0  # Frame count of the header or index (0: unknown).
        nominal = float(vstream.average_rate) if vstream.average_rate else None
        astream = container.streams.audio[0] if with_audio else None
        frames_in = _FrameCollector(fps, keep_frames, nominal, max_side)
        audio_in = _AudioCollector()
        streams = [vstream] + list(container.streams.audio[:1])
        errors = {"video": [], "audio": []}
        packets = {"video": 0, "audio": 0}
        ends = {"video": 0.0, "audio": 0.0}  # End time of the last packet of each stream.
        for packet in container.demux(*streams):
            kind = packet.stream.type
            if packet.pts is not None and packet.time_base is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                ends[kind] = max(ends[kind], end)
            if kind == "audio" and astream is None:
                continue  # Only its extent is needed (see the truncation check).
            packets[kind] += 1
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                # A damaged packet: skipped here, the clip is judged on the count below.
                errors[kind].append(f"after {len(frames_in.times)} frames: {_short(e)}")
                continue
            for frame in decoded:
                if kind == "video":
                    frames_in.add(frame)
                else:
                    audio_in.add(frame)
        for kind, errs in errors.items():
            if not errs:
                continue
            what = "video" if kind == "video" else "audio track"
            if len(errs) > max(MAX_BAD_PACKETS, MAX_BAD_PACKET_FRACTION * packets[kind]):
                raise BadClip(
                    path,
                    f"corrupt or truncated {what}: {len(errs)} of {packets[kind]} packets "
                    f"failed to decode (first {errs[0]})",
                )
            notes.append(f"{len(errs)} damaged {kind} packets skipped (first {errs[0]})")
        frames_in.finish()
        if frames_in.size_changes:
            notes.append(
                f"picture size changes part-way ({'; '.join(frames_in.size_changes)}); every "
                f"frame scaled to {frames_in.size[0]}x{frames_in.size[1]}"
            )
        times, kept, kept_index = frames_in.times, frames_in.kept, frames_in.kept_index
        first, dropped = frames_in.first, frames_in.dropped
        if not times:
            raise BadClip(path, "zero video frames decoded")
        source_times = np.asarray(times, np.float64)
        interval = _frame_interval(source_times, nominal)
        duration = float(source_times[-1] + interval)
        covered = duration
        if not header_of_stream:
            # The container's duration spans every stream: a longer audio track is not a
            # truncated video.
            covered = max(duration, ends["audio"] - first)
        missing = max(header_s or 0.0, header_frames * interval) - covered
        if missing > max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * duration):
            declared = max(header_s or 0.0, header_frames * interval)
            raise BadClip(
                path,
                f"truncated video: decoded {len(times)} frames, {duration:.2f} s of the "
                f"{declared:.2f} s its header declares",
            )
        if missing > 2.5 * interval:
            notes.append(f"video ends {missing:.2f} s before its header says (kept)")
        if dropped > max(MAX_BAD_PACKETS, MAX_BAD_PACKET_FRACTION * len(times)):
            raise BadClip(path, f"corrupt timestamps: {dropped} frames out of order")
        if dropped:
            notes.append(f"{dropped} frames with out-of-order timestamps dropped")
        gaps = np.diff(source_times)
        if len(gaps) and gaps.max() > max(MAX_FRAME_GAP_S, MAX_FRAME_GAP_INTERVALS * interval):
            at = int(np.argmax(gaps))
            raise BadClip(
                path,
                f"corrupt timestamps: a {gaps[at]:.2f} s jump after frame {at} "
                f"(frame interval {interval * 1000:.0f} ms)",
            )
        if header_s and duration > header_s + max(
            TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * header_s
        ):
            raise BadClip(
                path,
                f"corrupt timestamps: frames span {duration:.2f} s, the header declares "
                f"{header_s:.2f} s",
            )
        variable = _is_variable(source_times)
        source_fps = (len(times) - 1) / source_times[-1] if len(times) > 1 else 1 / interval
        if variable:
            notes.append(
                f"variable frame rate ({1 / gaps.max():.1f}-{1 / gaps.min():.1f} frames/s), "
                f"resampled to {fps or source_fps:g} frames/s by timestamp"
            )
        audio = None
        if astream is not None:
            audio = audio_in.result(astream, path, first, min_audio_seconds, notes)

    empty_shape = scaled_size(vstream.width, vstream.height, max_side)[::-1]
    if fps is None:
        frame_index = np.arange(len(source_times))
        frames = _stack(kept, container_shape=empty_shape)
    else:
        steps = grid_steps(duration, fps)
        frame_index = frame_for_times(source_times, np.arange(steps) / fps)
        if keep_frames:
            position = {src: i for i, src in enumerate(kept_index)}
            frames = _stack(kept, container_shape=empty_shape)
            frames = frames[[position[i] for i in frame_index]]
        else:
            frames = _stack([], container_shape=empty_shape)
    return Video(
        frames=frames,
        frame_index=frame_index,
        source_times=source_times,
        source_fps=float(source_fps),
        variable_frame_rate=variable,
        audio=audio,
        duration_s=duration,
        notes=tuple(notes),
    )


def _shows(start: float, end: float, fps: float) -> bool:
    """Whether a grid step of rate `fps` may fall in [start, end) (tolerance looser than the
    grid's, so that every frame `frame_for_times` picks is kept)."""
    step = np.ceil((start - 1e-3) * fps)
    return bool(step / fps < end + 1e-3)


def _stack(frames: list[np.ndarray], container_shape: tuple[int, int]) -> np.ndarray:
    if frames:
        return np.stack(frames)
    return np.zeros((0, *container_shape, 3), np.uint8)


def _header_duration(container, vstream) -> tuple[float | None, bool]:
    """Duration the file declares in seconds, and whether it is the video stream's own (else
    the container's, which spans every stream; None if neither is known)."""
    if vstream.duration is not None and vstream.time_base is not None:
        seconds = float(vstream.duration * vstream.time_base)
        if seconds > 0:
            return seconds, True
    if container.duration:
        return container.duration / 1_000_000, False
    return None, False


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(width, height) shrunk by the smallest integer factor that fits `max_side`."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    k = -(-max(width, height) // max_side)
    return max(1, width // k), max(1, height // k)


class _FrameCollector:
    """Receives decoded video frames in presentation order; keeps those the grid shows.

    Kept frames are converted to RGB at one size: the first frame's, shrunk by an integer
    factor to at most `max_side` pixels (memory then grows with that size, not with the
    source resolution); a frame of another size (the picture size changes part-way) is scaled
    to the same size and noted.
    """

    def __init__(
        self, fps: float | None, keep_frames: bool, nominal: float | None, max_side: int | None
    ):
        self.fps, self.keep_frames, self.nominal = fps, keep_frames, nominal
        self.max_side = max_side
        self.times: list[float] = []  # Relative to the first frame.
        self.kept: list[np.ndarray] = []
        self.kept_index: list[int] = []
        self.first: float | None = None
        self.dropped = 0
        self.source_size: tuple[int, int] | None = None  # (width, height) of the first frame
        self.size: tuple[int, int] | None = None  # of the kept frames
        self.size_changes: list[str] = []
        self._last_size: tuple[int, int] | None = None
        self._pending = None  # The last frame, kept once we know whether a grid step shows it.

    def add(self, frame) -> None:
        t = frame.time
        if t is None:  # No timestamp: one nominal interval after the previous frame.
            step = 1 / (self.nominal or VIDEO_FPS)
            t = self.times[-1] + self.first + step if self.times else 0.0
        if self.first is None:
            self.first = t
        t -= self.first
        if self.times and t <= self.times[-1]:
            self.dropped += 1  # Out-of-order or repeated timestamp.
            return
        if self._pending is not None and (self.fps is None or _shows(self.times[-1], t, self.fps)):
            self._keep()
        self._pending = frame if self.keep_frames else None
        self.times.append(t)

    def finish(self) -> None:
        if self._pending is not None:
            self._keep()

    def _keep(self) -> None:
        frame = self._pending
        source = (frame.width, frame.height)
        if self.size is None:
            self.source_size = self._last_size = source
            self.size = scaled_size(*source, self.max_side)
        elif source != self._last_size:
            if len(self.size_changes) < 3:
                self.size_changes.append(
                    f"{self._last_size[0]}x{self._last_size[1]} -> {source[0]}x{source[1]} "
                    f"at frame {len(self.times) - 1}"
                )
            self._last_size = source
        if source == self.size:
            rgb = frame.to_ndarray(format="rgb24")
        else:
            width, height = self.size
            rgb = frame.reformat(
                width=width, height=height, format="rgb24", interpolation="AREA"
            ).to_ndarray()
        self.kept.append(rgb)
        self.kept_index.append(len(self.times) - 1)
        self._pending = None


class _AudioCollector:
    """Receives decoded audio frames; gives 16 kHz mono aligned to the first video frame.

    Frames are converted to planar float by a PyAV resampler that keeps rate and layout; when
    the layout, rate or sample format changes part-way, the part so far is closed and a new
    resampler starts, so each part is downmixed and resampled on its own.
    """

    def __init__(self):
        self.parts: list[tuple[tuple, list[np.ndarray]]] = []  # ((layout, rate, fmt), chunks)
        self.resampler = None
        self.start: float | None = None

    def add(self, frame) -> None:
        import av

        if self.start is None and frame.time is not None:
            self.start = frame.time
        key = (frame.layout.name, frame.sample_rate, frame.format.name)
        if not self.parts or self.parts[-1][0] != key:
            self._flush()
            self.resampler = av.AudioResampler(format="fltp")  # Rate and layout kept.
            self.parts.append((key, []))
        for out in self.resampler.resample(frame):
            self.parts[-1][1].append(out.to_ndarray())

    def _flush(self) -> None:
        if self.resampler is not None and self.parts:
            for out in self.resampler.resample(None):
                self.parts[-1][1].append(out.to_ndarray())
        self.resampler = None

    def result(self, astream, path, video_start, min_seconds, notes) -> audio_lib.Audio:
        self._flush()
        segments = [
            (np.concatenate(chunks, axis=1).T, key[1]) for key, chunks in self.parts if chunks
        ]
        if not segments or sum(len(x) for x, _ in segments) == 0:
            raise BadClip(path, "zero-length audio track")
        audio = audio_lib.combine_segments(segments, path, 0.0)
        mono = audio.samples
        offset = (self.start or 0.0) - (video_start or 0.0)
        shift = round(offset * audio_lib.SAMPLE_RATE)
        if shift > 0:
            mono = np.concatenate([np.zeros(shift, np.float32), mono])
        elif shift < 0:
            mono = mono[-shift:]
        if abs(offset) > 0.1:
            notes.append(f"audio starts {offset * 1000:+.0f} ms from the video; shifted to align")
        notes += [f"audio track: {n}" for n in audio.notes]
        audio = dataclasses.replace(audio, samples=mono, notes=())
        return audio_lib._check(audio, path, min_seconds)


def _short(error: Exception, limit: int = 160) -> str:
    text = re.sub(r"^\[Errno -?\d+\] ", "", str(error).replace("\n", " "))
    return text if len(text) <= limit else text[: limit - 3] + "..."
