"""Audio decoding and the spectrogram of the paper (Section IV), shared by every corpus.

The features are computed once, in data_prep:

* 16 kHz mono (other rates are resampled with a polyphase filter, other channel counts
  downmixed by averaging, both reported by the caller, never rejected);
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
LOG_FLOOR = 1e-10  # Power floor before the log (digital silence gives log(1e-10)).
SILENCE_RMS = 1e-4  # Below this RMS (full scale 1.0), a clip counts as silent (-80 dBFS).


@dataclasses.dataclass(frozen=True)
class Audio:
    """Decoded audio of one file.

    Attributes:
      samples: float32 [n] mono at `SAMPLE_RATE`, full scale 1.0.
      source_rate: the file's sample rate.
      source_channels: the file's channel count.
    """

    samples: np.ndarray
    source_rate: int
    source_channels: int

    @property
    def converted(self) -> bool:
        return self.source_rate != SAMPLE_RATE or self.source_channels != 1

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Downmixes [n, channels] (or [n]) samples to mono and resamples them to 16 kHz."""
    samples = np.asarray(samples, np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if sample_rate != SAMPLE_RATE:
        g = math.gcd(int(sample_rate), SAMPLE_RATE)
        samples = signal.resample_poly(samples, SAMPLE_RATE // g, int(sample_rate) // g)
    return samples.astype(np.float32)


def load_audio(path: str, min_seconds: float = WINDOW / SAMPLE_RATE) -> Audio:
    """Reads a WAV / FLAC / OGG file as 16 kHz mono and checks that it holds a usable clip.

    Args:
      path: the audio file.
      min_seconds: shorter clips are rejected (default: one analysis window).

    Returns:
      The decoded `Audio`.

    Raises:
      BadClip: the file is missing, unreadable or truncated, empty, too short or silent; the
        message names the file and the problem.
    """
    if not os.path.isfile(path):
        raise BadClip(path, "file not found")
    try:
        with soundfile.SoundFile(path) as f:
            rate, channels = f.samplerate, f.channels
            samples = f.read(dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as e:
        raise BadClip(path, f"unreadable audio ({e})") from e
    declared = _wav_declared_frames(path)
    if declared is not None and len(samples) < declared:
        raise BadClip(path, f"truncated audio: header says {declared} samples, found {len(samples)}")
    if len(samples) == 0:
        raise BadClip(path, "zero-length audio")
    mono = to_mono_16k(samples, rate)
    return _check(Audio(mono, rate, channels), path, min_seconds)


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
    rms = float(np.sqrt(np.mean(np.square(audio.samples, dtype=np.float64))))
    if rms < SILENCE_RMS:
        raise BadClip(path, f"silent clip (RMS {rms:.1e} < {SILENCE_RMS:.0e})")
    return audio


def log_spectrogram(samples: np.ndarray, path: str = "<samples>") -> np.ndarray:
    """Log-power spectrogram of 16 kHz mono samples, the paper's parameters.

    Computed in float64, so that no sample value a decoder can give overflows.

    Args:
      samples: float [n], n >= 640.
      path: the file the samples come from, for the error message.

    Returns:
      float32 [1 + (n - 640) // 160, 200]: natural log of |DFT|^2 of Hamming-windowed frames.

    Raises:
      BadClip: the result is not finite (cannot happen for finite samples in range).
    """
    samples = np.asarray(samples, np.float64)
    if samples.ndim != 1 or len(samples) < WINDOW:
        raise ValueError(f"Expected mono samples of at least {WINDOW}, got {samples.shape}.")
    frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW)[::HOP]
    window = np.hamming(WINDOW)
    spectrum = np.fft.rfft(frames * window, n=NFFT, axis=-1)[:, :NUM_BINS]
    power = spectrum.real**2 + spectrum.imag**2
    out = np.log(np.maximum(power, LOG_FLOOR)).astype(np.float32)
    if not np.all(np.isfinite(out)):
        raise BadClip(path, "spectrogram is not finite")
    return out
