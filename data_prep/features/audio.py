"""Audio decoding and the spectrogram of the paper (Section IV), shared by every corpus.

The features are computed once, in data_prep:

* 16 kHz mono (other rates are resampled with a polyphase filter, other channel counts
  downmixed by averaging, both reported by the caller, never rejected);
* the recording chain's faults repaired: a 50 or 60 Hz mains hum notched out (`find_hum`,
  `remove_hum`), then a DC offset above -60 dBFS removed (the median of the 10 ms blocks'
  means; it would otherwise leak through the window into every bin of the quiet frames, and
  below it the leakage stays under about -100 dBFS); a recording without either is left
  exactly as it is;
* Hamming window of 40 ms (640 samples), hop 10 ms (160 samples), 800-point DFT;
* the 200 lowest bins (0-3980 Hz, 20 Hz apart) of the log power spectrum.

Frames start at sample 0 and step by the hop; the last frame is the last one that fits whole,
so a clip of ``n`` samples gives ``1 + (n - 640) // 160`` frames (about 100 per second).
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import soundfile
from scipy import signal

from data_prep.errors import BadClip

# Audio files every reader of the project accepts (builders and `fbp_jax.serving.predict`).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
SAMPLE_RATE = 16000
WINDOW = 640  # 40 ms
HOP = 160  # 10 ms
NFFT = 800
NUM_BINS = 200  # 0-4 kHz
FRAMES_PER_SECOND = SAMPLE_RATE // HOP
DC_LIMIT = 1e-3  # A larger DC offset (full scale 1.0) is removed before the spectrogram.
LOG_FLOOR = 1e-10  # Power floor before the log (digital silence gives log(1e-10)).
SILENCE_RMS = 1e-4  # Below this RMS (full scale 1.0, DC removed) a clip is silent (-80 dBFS).
# Plausible sources: below 8 kHz the 0-4 kHz band of the features does not exist; above
# 384 kHz no recorder writes speech.
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 384000
MAX_SECONDS = 600.0  # A longer "clip" is a recording, not an utterance: refused.
# Samples above full scale (1.0) up to this peak are kept with a note; beyond it the file is
# not audio at full scale 1.0 (e.g. a float file of raw integers) and is refused.
MAX_PEAK = 2.0
# A downmix whose RMS is below this fraction of the channels' own RMS cancels (channels in
# opposite phase): one channel is kept instead.
CANCEL_RATIO = 0.1


@dataclasses.dataclass(frozen=True)
class Audio:
    """Decoded audio of one file.

    Attributes:
      samples: float32 [n] mono at `SAMPLE_RATE`, full scale 1.0.
      source_rate: the file's sample rate.
      source_channels: the file's channel count.
      notes: conversions that kept the clip usable (for the build report).
    """

    samples: np.ndarray
    source_rate: int
    source_channels: int
    notes: tuple[str, ...] = ()

    @property
    def converted(self) -> bool:
        return self.source_rate != SAMPLE_RATE or self.source_channels != 1

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def _rms(x: np.ndarray, axis=None) -> np.ndarray:
    """RMS after removing the mean (a DC offset is not signal)."""
    x = np.asarray(x, np.float64)
    return np.sqrt(np.mean(np.square(x - x.mean(axis=axis, keepdims=True)), axis=axis))


def downmix(samples: np.ndarray) -> tuple[np.ndarray, str | None]:
    """[n, channels] -> ([n] mono, note or None): the mean of the channels, or the loudest
    channel alone when the mean cancels (channels in opposite phase)."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim == 1 or samples.shape[1] == 1:
        return samples.reshape(len(samples)), None
    mono = samples.mean(axis=1)
    channel_rms = _rms(samples, axis=0)
    loud = float(channel_rms.max())
    if loud >= SILENCE_RMS and float(_rms(mono)) < CANCEL_RATIO * loud:
        k = int(np.argmax(channel_rms))
        note = (
            f"the {samples.shape[1]} channels cancel when averaged (mean RMS "
            f"{float(_rms(mono)):.1e} vs {loud:.1e} per channel); kept channel {k + 1} alone"
        )
        return samples[:, k], note
    return mono, None


def resample_to_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono samples at `sample_rate` -> 16 kHz (polyphase filter)."""
    samples = np.asarray(samples, np.float32)
    if sample_rate != SAMPLE_RATE:
        g = math.gcd(int(sample_rate), SAMPLE_RATE)
        samples = signal.resample_poly(samples, SAMPLE_RATE // g, int(sample_rate) // g)
    return samples.astype(np.float32)


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmixes [n, channels] (or [n]) samples to mono and resamples them to 16 kHz."""
    return resample_to_16k(downmix(samples)[0], sample_rate)


def check_rate(path: str, rate: int) -> None:
    """Refuses a sample rate no real recording has (a damaged or lying header)."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise BadClip(
            path,
            f"implausible sample rate {rate} Hz (accepted: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} "
            "Hz; the features need 0-4 kHz)",
        )


def load_audio(
    path: str, min_seconds: float = WINDOW / SAMPLE_RATE, max_seconds: float = MAX_SECONDS
) -> Audio:
    """Reads a WAV / FLAC / OGG file as 16 kHz mono and checks that it holds a usable clip.

    Args:
      path: the audio file.
      min_seconds: shorter clips are rejected (default: one analysis window).
      max_seconds: longer files are rejected before they are decoded.

    Returns:
      The decoded `Audio`, with notes of the conversions made.

    Raises:
      BadClip: the file is missing, unreadable or truncated, has an implausible sample rate or
        duration, is empty, too short, not finite, far beyond full scale or silent; the
        message names the file and the problem.
    """
    if not os.path.isfile(path):
        raise BadClip(path, "file not found")
    try:
        with soundfile.SoundFile(path) as f:
            rate, frames = f.samplerate, f.frames
            check_rate(path, rate)
            if frames > max_seconds * rate:
                raise BadClip(
                    path,
                    f"{frames / rate:.0f} s long: a recording, not a clip (max {max_seconds:.0f} s)",
                )
            samples = f.read(dtype="float32", always_2d=True)
    except BadClip:
        raise
    except (RuntimeError, soundfile.LibsndfileError, ValueError, MemoryError) as e:
        raise BadClip(path, f"unreadable audio ({e})") from e
    declared = _wav_declared_frames(path)
    if declared is not None and len(samples) < declared:
        raise BadClip(
            path, f"truncated audio: header says {declared} samples, found {len(samples)}"
        )
    if len(samples) == 0:
        raise BadClip(path, "zero-length audio")
    return finish_audio(samples, rate, path, min_seconds)


def finish_audio(
    samples: np.ndarray, rate: int, path: str, min_seconds: float, notes: Sequence[str] = ()
) -> Audio:
    """[n, channels] samples at `rate` -> checked 16 kHz mono `Audio` with notes."""
    return combine_segments([(samples, rate)], path, min_seconds, notes)


def combine_segments(
    segments: Sequence[tuple[np.ndarray, int]],
    path: str,
    min_seconds: float,
    notes: Sequence[str] = (),
) -> Audio:
    """Consecutive parts of one recording -> checked 16 kHz mono `Audio` with notes.

    Each part is [n, channels] samples at its own rate (a stream whose channel layout or rate
    changes part-way has several); each is downmixed and resampled on its own, then they are
    joined.

    Raises:
      BadClip: not finite, far beyond full scale, too short or silent.
    """
    notes = list(notes)
    segments = [(np.asarray(x, np.float32).reshape(len(x), -1), int(r)) for x, r in segments]
    if not segments or sum(len(x) for x, _ in segments) == 0:
        raise BadClip(path, "zero-length audio")
    for x, rate in segments:
        check_rate(path, rate)
        if not np.all(np.isfinite(x)):
            raise BadClip(path, "audio contains NaN or infinite samples")
    peak = max(float(np.abs(x).max()) for x, _ in segments if x.size)
    if peak > MAX_PEAK:
        raise BadClip(
            path, f"samples far outside [-1, 1] (peak {peak:.3g}): not audio at full scale 1.0"
        )
    if peak > 1.0 + 1e-6:
        notes.append(f"samples above full scale (peak {peak:.3f}), kept as they are")
    parts = []
    for x, rate in segments:
        mono, note = downmix(x)
        if note and note not in notes:
            notes.append(note)
        parts.append(resample_to_16k(mono, rate))
    rate, channels = segments[0][1], segments[0][0].shape[1]
    if len(segments) > 1:
        layouts = " -> ".join(f"{x.shape[1]} ch {r} Hz" for x, r in segments)
        notes.append(f"channel layout or rate changes part-way ({layouts}); each part converted")
    if rate != SAMPLE_RATE:
        notes.append(f"resampled {rate} Hz -> {SAMPLE_RATE} Hz")
    if channels != 1 and not any("cancel" in n for n in notes):
        notes.append(f"downmixed {channels} channels to mono")
    audio = Audio(np.concatenate(parts), rate, channels, tuple(notes))
    return _check(audio, path, min_seconds)


def _wav_declared_frames(path: str) -> int | None:
    """Frames announced by a WAV header's data chunk (None: not a WAV or no size given).

    libsndfile silently shortens a truncated WAV to the data present (FLAC and others raise),
    so the declared size is read from the RIFF chunks.
    """
    with open(path, "rb") as f:
        if f.read(4) != b"RIFF" or (f.read(4) and f.read(4) != b"WAVE"):
            return None
        block_align = None
        while len(header := f.read(8)) == 8:
            chunk, size = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"fmt ":
                block_align = struct.unpack("<H", f.read(16)[12:14])[0]
                f.seek(size - 16 + size % 2, os.SEEK_CUR)
            elif chunk == b"data":
                if not block_align or size == 0xFFFFFFFF:
                    return None
                return size // block_align
            else:
                f.seek(size + size % 2, os.SEEK_CUR)
    return None


def _check(audio: Audio, path: str, min_seconds: float) -> Audio:
    if not np.all(np.isfinite(audio.samples)):
        raise BadClip(path, "audio contains NaN or infinite samples")
    if audio.duration_s < min_seconds:
        raise BadClip(path, f"clip too short ({audio.duration_s * 1000:.0f} ms)")
    rms = float(_rms(audio.samples))
    if rms < SILENCE_RMS:
        raise BadClip(path, f"silent clip (RMS {rms:.1e} < {SILENCE_RMS:.0e}, DC removed)")
    return audio


def dc_offset(samples: np.ndarray) -> float:
    """The recording's DC offset: the median of its 10 ms blocks' means (speech and noise
    average to about zero over most blocks; a constant offset shifts every one). A mains hum
    would bias it (10 ms is not a whole number of 60 Hz periods): remove that first."""
    n = len(samples) // HOP * HOP
    return float(np.median(np.asarray(samples[:n], np.float64).reshape(-1, HOP).mean(axis=1)))


MAINS_HZ = (50.0, 60.0)
# A grid keeps its frequency within 0.2 Hz, a generator within a few per cent (a small set's
# speed droop from no load to full load is up to 5 %): the hum's fundamental is searched this
# far either side of 50 and 60 Hz, on a grid this fine.
MAINS_SPAN_HZ = 3.0
MAINS_STEP_HZ = 0.1
# Farther than this from 50 / 60 Hz (a grid's normal operation), a fundamental needs a longer
# series of lines, 8 of its first 12 harmonics (nearer: 4 of the first 6): by chance a voice's
# harmonics meet a comb at up to 5 of 12.
GRID_DRIFT_HZ = 0.3
HUM_LINE_DB = 10.0  # A mains harmonic stands this far above its neighbourhood: a hum line.
# A hum more than this far below the loudest frame is left alone: the voiced span and the
# statistics read frames within 35 dB of the loudest, so it never reaches them, and a codec's
# frame comb in the silence (Opus's 20 ms frames: lines at every 50 Hz, 50-90 dB down) is not
# taken for one.
HUM_RANGE_DB = 45.0


class Hum(NamedTuple):
    """A mains hum: its fundamental (Hz, as measured) and the frequencies of its lines."""

    mains_hz: float
    lines: tuple[float, ...]


def find_hum(samples: np.ndarray) -> Hum | None:
    """The recording's mains hum, or None.

    From the power spectrum at 1 Hz resolution (1 s segments, half overlapping, the minimum
    over them in each bin; shorter recordings: None), harmonic k of a fundamental f (up to
    4 kHz) is a line where the peak within 1 Hz of k * f stands `HUM_LINE_DB` above the median
    5-15 Hz either side. f is tried every `MAINS_STEP_HZ` within `MAINS_SPAN_HZ` of 50 and of
    60 Hz (a grid runs 0.1-0.2 Hz off, a generator a few per cent): a hum is at least 4 lines
    among the first 6 harmonics (speech, whose pitch moves, leaves none), or 8 among the first
    12 farther than `GRID_DRIFT_HZ` from 50 / 60 Hz; the f with most lines wins, and the power
    of its lines lies within `HUM_RANGE_DB` of the loudest 40 ms frame's.
    The fundamental is then measured from the lines (`_fundamental`, again from the lines at
    the harmonics of each estimate until it moves less than 1 mHz, at most 10 times), and the
    hum's lines are those at the harmonics of that.
    """
    if len(samples) < SAMPLE_RATE:
        return None
    # The quietest second's power in each bin (1 Hz apart: bin i is i Hz): a hum stays in the
    # pauses, speech does not.
    _, _, segments = signal.spectrogram(
        np.asarray(samples, np.float64), SAMPLE_RATE, nperseg=SAMPLE_RATE, noverlap=SAMPLE_RATE // 2
    )
    p = np.maximum(segments.min(axis=1), 1e-30)
    n = round(MAINS_SPAN_HZ / MAINS_STEP_HZ)
    off = MAINS_STEP_HZ * np.arange(-n, n + 1)
    tried = np.add.outer(MAINS_HZ, off).ravel()
    line = _lines(p, tried, count=12)[2]
    near = np.tile(np.abs(off) <= GRID_DRIFT_HZ + 1e-9, len(MAINS_HZ))
    hum_like = tried[np.where(near, line[:, :6].sum(axis=1) >= 4, line.sum(axis=1) >= 8)]
    if not len(hum_like):
        return None
    f0 = max(hum_like, key=lambda f: _lines(p, f)[2].sum())  # the first of the most lines
    k, peaks, line = _lines(p, f0)
    for _ in range(10):  # each look at the lines of the last estimate refines it
        estimate = _fundamental(p, k[line], peaks[line])
        again = _lines(p, estimate)
        if not again[2][:6].any():  # (never seen) it lost the hum: keep the last
            break
        settled = abs(estimate - f0) < 1e-3
        f0, (k, peaks, line) = estimate, again
        if settled:
            break
    found = Hum(f0, tuple(float(h) for h in f0 * k[line]))
    # The lines' power (the peak bin and its neighbours; density at 1 Hz) against the loudest
    # frame's mean square.
    i = np.rint(np.asarray(found.lines)).astype(int)
    line_power = p[i[:, None] + np.arange(-1, 2)].sum()
    energy = np.concatenate([[0.0], np.cumsum(np.square(np.asarray(samples, np.float64)))])
    loudest = np.max(energy[WINDOW:] - energy[:-WINDOW]) / WINDOW
    return found if line_power >= loudest * 10 ** (-HUM_RANGE_DB / 10) else None


def _lines(
    p: np.ndarray, mains: float | np.ndarray, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the harmonics k of `mains` (Hz, or [F] of them) up to 4 kHz, or the first `count`
    of them, in the power spectrum p (bin i at i Hz): k, the bin of the peak within 1 Hz of
    k * mains, and whether that peak is a line ([K], or [F, K])."""
    k = np.arange(1, (count or int(NUM_BINS * SAMPLE_RATE / NFFT // np.max(mains))) + 1)
    i = np.rint(np.multiply.outer(mains, k)).astype(int)
    near = i[..., None] + np.arange(-1, 2)
    peaks = np.take_along_axis(near, np.argmax(p[near], axis=-1)[..., None], axis=-1)[..., 0]
    ring = np.median(p[i[..., None] + np.r_[-15:-4, 5:16]], axis=-1)
    return k, peaks, 10.0 * np.log10(p[peaks] / ring) >= HUM_LINE_DB


def _fundamental(p: np.ndarray, k: np.ndarray, peaks: np.ndarray) -> float:
    """The fundamental of lines k peaking at bins `peaks` of p: the median over them of the
    peak's frequency (the vertex of a parabola through the log power of the peak bin and its
    neighbours) over k."""
    left, mid, right = (np.log(p[peaks + d]) for d in (-1, 0, 1))
    vertex = 0.5 * (left - right) / np.minimum(left - 2 * mid + right, -1e-12)
    return float(np.median((peaks + np.clip(vertex, -0.5, 0.5)) / k))


def remove_hum(samples: np.ndarray, hum: Hum) -> np.ndarray:
    """The samples with a notch (Q 30) at each of the hum's lines. The notches first run over
    the recording's first second (its whole periods of the hum, so that the hum goes on in
    phase), which is then dropped: their start-up transient has died out by the recording."""
    x = np.asarray(samples, np.float64)
    lead = round(math.floor(hum.mains_hz) * SAMPLE_RATE / hum.mains_hz)  # <= 1 s
    out = np.concatenate([x[:lead], x])
    for hz in hum.lines:
        b, a = signal.iirnotch(hz, 30.0, fs=SAMPLE_RATE)
        out = signal.lfilter(b, a, out)
    return out[lead:]


def log_spectrogram(
    samples: np.ndarray, path: str = "<samples>", repair: bool = True
) -> np.ndarray:
    """Log-power spectrogram of 16 kHz mono samples, the paper's parameters.

    Computed in float64, so that no sample value a decoder can give overflows.

    Args:
      samples: float [n], n >= 640.
      path: the file the samples come from, for the error message.
      repair: remove a DC offset larger than `DC_LIMIT` (`dc_offset`) and a mains hum
        (`find_hum`) first.

    Returns:
      float32 [1 + (n - 640) // 160, 200]: natural log of |DFT|^2 of Hamming-windowed frames.

    Raises:
      BadClip: the result is not finite (cannot happen for finite samples in range).
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 1 or len(samples) < WINDOW:
        raise ValueError(f"Expected mono samples of at least {WINDOW}, got {samples.shape}.")
    if repair:
        hum = find_hum(samples - samples.mean())
        if hum is not None:
            samples = remove_hum(samples, hum)  # The notches pass a DC offset as it is.
        dc = dc_offset(samples)
        if abs(dc) > DC_LIMIT:
            samples = samples - dc
    frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW)[::HOP]
    window = np.hamming(WINDOW)
    spectrum = np.fft.rfft(frames * window, n=NFFT, axis=-1)[:, :NUM_BINS]
    power = spectrum.real**2 + spectrum.imag**2
    out = np.log(np.maximum(power, LOG_FLOOR)).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise BadClip(path, "spectrogram is not finite")
    return out
