"""Any media file as the streams a model needs, chosen by what the file holds.

`probe` opens a file with PyAV (FFmpeg: WAV, FLAC, Ogg/Opus/Vorbis, MP3, M4A/AAC, QuickTime,
MP4, Matroska/WebM, AVI, ...) and lists its streams, whatever the extension says.
`audio_chunks` decodes the first audio stream alone, in chunks of 16 kHz mono float samples
(FFmpeg's resampler, downmixing by averaging), so memory does not grow with the length of the
recording; a video stream beside it is never decoded, so a missing, damaged or short picture
does not matter to an audio model. `spectrogram_blocks` turns the chunks into the paper's
log-power frames, exactly as `audio.log_spectrogram` computes them on the whole signal.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator

import numpy as np

from data_prep.errors import BadClip
from data_prep.features import audio as audio_lib

RATE = audio_lib.SAMPLE_RATE
CHUNK_SECONDS = 30.0
# Damaged audio packets skipped before a file counts as unreadable.
MAX_BAD_PACKETS = 10


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What a media file holds.

    Attributes:
      path: the file.
      streams: stream kinds present ('audio', 'video', 'subtitle', ...), in file order.
      duration_s: the duration its header declares (None: unknown).
      audio_rate, audio_channels: of the first audio stream (0 without one).
    """

    path: str
    streams: tuple[str, ...]
    duration_s: float | None
    audio_rate: int = 0
    audio_channels: int = 0

    @property
    def has_audio(self) -> bool:
        return "audio" in self.streams

    @property
    def has_video(self) -> bool:
        return "video" in self.streams

    def describe(self) -> str:
        return ", ".join(self.streams) or "no streams"


def _open(path: str):
    import av

    if not os.path.isfile(path):
        raise BadClip(path, "file not found")
    try:
        return av.open(path)
    except (av.error.FFmpegError, OSError, ValueError, UnicodeDecodeError) as e:
        raise BadClip(path, f"unreadable media file ({_short(e)})") from e


def probe(path: str) -> MediaInfo:
    """The streams of a media file (any container PyAV opens).

    Raises:
      BadClip: missing or unreadable file.
    """
    with _open(path) as container:
        streams = tuple(s.type for s in container.streams)
        duration = container.duration / 1e6 if container.duration else None
        rate = channels = 0
        if container.streams.audio:
            a = container.streams.audio[0]
            rate = int(a.sample_rate or a.codec_context.sample_rate or 0)
            channels = int(a.channels or 0)
    return MediaInfo(path, streams, duration, rate, channels)


def audio_chunks(path: str, chunk_seconds: float = CHUNK_SECONDS) -> Iterator[np.ndarray]:
    """The first audio stream of `path` as consecutive float32 chunks of 16 kHz mono samples
    (about `chunk_seconds` each; full scale 1.0). Other streams are not decoded.

    Raises:
      BadClip: no audio stream (naming the streams found), an implausible sample rate, more
        than a few undecodable packets, no sample at all, or samples that are not finite.
    """
    import av

    chunk = int(chunk_seconds * RATE)
    with _open(path) as container:
        if not container.streams.audio:
            kinds = ", ".join(s.type for s in container.streams) or "no streams"
            raise BadClip(path, f"no audio stream (the file has: {kinds})")
        stream = container.streams.audio[0]
        rate = int(stream.sample_rate or 0)
        if rate:
            audio_lib.check_rate(path, rate)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        pending: list[np.ndarray] = []
        size, total, bad = 0, 0, []
        try:
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    bad.append(_short(e))
                    if len(bad) > MAX_BAD_PACKETS:
                        raise BadClip(
                            path, f"audio stream undecodable: {len(bad)} bad packets ({bad[0]})"
                        ) from e
                    continue
                for frame in frames:
                    for out in resampler.resample(frame):
                        x = out.to_ndarray().reshape(-1)
                        pending.append(x)
                        size += len(x)
                while size >= chunk:
                    data = np.concatenate(pending)
                    yield _checked(path, data[:chunk])
                    total += chunk
                    pending, size = [data[chunk:]], size - chunk
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise BadClip(path, f"audio stream unreadable ({_short(e)})") from e
        rest = np.concatenate(pending) if pending else np.zeros(0, np.float32)
        if total + len(rest) == 0:
            raise BadClip(path, "zero-length audio stream")
        if len(rest):
            yield _checked(path, rest)


def _checked(path: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if not np.all(np.isfinite(x)):
        raise BadClip(path, "audio contains NaN or infinite samples")
    return x


def spectrogram_blocks(chunks: Iterable[np.ndarray], path: str = "<audio>") -> Iterator[np.ndarray]:
    """Log-power spectrogram frames [n, 200] of consecutive sample chunks, block by block:
    concatenated, they equal `audio.log_spectrogram` of the whole signal (a DC offset or a
    mains hum is found and removed block by block)."""
    carry = np.zeros(0, np.float32)
    hop, window = audio_lib.HOP, audio_lib.WINDOW
    for chunk in chunks:
        buf = np.concatenate([carry, chunk])
        if len(buf) < window:
            carry = buf
            continue
        n = 1 + (len(buf) - window) // hop
        yield audio_lib.log_spectrogram(buf[: (n - 1) * hop + window], path)
        carry = buf[n * hop :]


def read_audio(path: str) -> np.ndarray:
    """The whole audio stream of `path` (16 kHz mono float32): for clips, not recordings."""
    return np.concatenate(list(audio_chunks(path)))


def _short(error: Exception, limit: int = 160) -> str:
    text = str(error).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
