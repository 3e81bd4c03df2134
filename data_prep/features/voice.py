"""Voice functionals: a clip's pitch, voice quality, loudness, spectral balance and timing.

The paralinguistics field's standard clip description is a set of functionals (statistics over
a clip) of a few frame-level descriptors: openSMILE's eGeMAPS (Eyben et al., 2016, "The Geneva
Minimalistic Acoustic Parameter Set") is the common one. This module computes a set of the same
kind with numpy alone, so that it can be part of every install and of `predict`: it is not
eGeMAPS (no formants; pitch from a plain autocorrelation), only built after its choice of
descriptors.

Frames of 40 ms every 10 ms (the spectrogram's framing). A frame is *active* when its level is
within 35 dB of the clip's loudest frame (the speech, not the pauses around it), and *voiced*
when it is active and periodic: its normalised autocorrelation (Hann window, divided by the
window's own autocorrelation, as in Boersma 1993) peaks above `VOICING` at a lag of 2-16.7 ms
(a fundamental of 60-500 Hz). The shortest lag whose peak is within `OCTAVE_TOLERANCE` of the
highest is taken, which avoids most octave-down errors; the fundamental is found from the
harmonics' period, so it survives a telephone band that removes the fundamental itself.

Descriptors per frame: F0 in semitones above 27.5 Hz; harmonics-to-noise ratio from the
autocorrelation peak; level in dB; frame-to-frame period (jitter) and level (shimmer) changes of
consecutive voiced frames; alpha ratio, Hammarberg index, spectral slopes over 0-500 and
500-1500 Hz, spectral centroid and flux; MFCC 1-4 (20 mel bands over 100-7600 Hz).

Functionals (`NAMES`): percentiles, spread and slopes of F0 and level; means of the voice
quality and spectral descriptors over voiced (and some over unvoiced active) frames; and the
timing of voiced and unvoiced stretches between the first and the last voiced frame, counted
per second of active speech, so that silence added or trimmed around a clip changes nothing. A functional that a clip does not define (no
voiced frame, say) is 0.
"""

from __future__ import annotations

import numpy as np

from data_prep.features import audio as audio_lib
from fbp_jax.model import frontend

RATE = audio_lib.SAMPLE_RATE
WINDOW = audio_lib.WINDOW  # 40 ms
HOP = audio_lib.HOP  # 10 ms
ACTIVE_DB = 35.0
MIN_F0, MAX_F0 = 60.0, 500.0
VOICING = 0.5  # Least normalised autocorrelation peak of a voiced frame.
OCTAVE_TOLERANCE = 0.9  # A shorter lag's peak within this fraction of the best one wins.
ACF_FFT = 2048  # >= WINDOW + the longest lag: the autocorrelation does not wrap around.
SPEC_FFT = audio_lib.NFFT  # 20 Hz bins, as the spectrogram's (frontend.mel_matrix's grid).
NUM_MFCC = 4
MEL_BANDS = (20, 100.0, 7600.0)  # Bands, lowest and highest edge (Hz) of the MFCCs' mel bank.
F0_REFERENCE_HZ = 27.5


def _stats(name: str, kinds: tuple[str, ...]) -> list[str]:
    return [f"{name}_{k}" for k in kinds]


PERCENTILES = ("mean", "std", "p20", "p50", "p80", "range2080", "rise", "fall")
SPECTRAL = ("alpha_ratio", "hammarberg", "slope0_500", "slope500_1500", "centroid", "flux")
NAMES = tuple(
    _stats("f0_semitones", PERCENTILES)
    + _stats("level_db", PERCENTILES)
    + _stats("hnr_db", ("mean", "std"))
    + ["jitter", "shimmer_db"]
    + [f"{s}_voiced_{k}" for s in SPECTRAL for k in ("mean", "std")]
    + [f"{s}_unvoiced_mean" for s in SPECTRAL[:4]]
    + [f"mfcc{i + 1}_voiced_{k}" for i in range(NUM_MFCC) for k in ("mean", "std")]
    + [
        "voiced_fraction",
        "voiced_stretches_per_s",
        "voiced_stretch_s_mean",
        "voiced_stretch_s_std",
        "unvoiced_stretch_s_mean",
        "unvoiced_stretch_s_std",
        "level_peaks_per_s",
    ]
)


def _frames(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, np.float64)
    if len(x) < WINDOW:
        x = np.pad(x, (0, WINDOW - len(x)))
    count = 1 + (len(x) - WINDOW) // HOP
    return np.lib.stride_tricks.sliding_window_view(x, WINDOW)[::HOP][:count]


def _window_acf() -> np.ndarray:
    w = np.hanning(WINDOW)
    acf = np.fft.irfft(np.abs(np.fft.rfft(w, ACF_FFT)) ** 2)[: WINDOW // 2]
    return acf / acf[0]


def pitch(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of [T, WINDOW]: (period in samples, normalised autocorrelation peak)."""
    x = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(WINDOW)
    acf = np.fft.irfft(np.abs(np.fft.rfft(x, ACF_FFT, axis=1)) ** 2, axis=1)[:, : WINDOW // 2]
    acf = acf / np.maximum(acf[:, :1], 1e-20) / _window_acf()
    lo, hi = int(RATE / MAX_F0), int(np.ceil(RATE / MIN_F0))
    r = acf[:, lo - 1 : hi + 2]
    # Local maxima inside the lag range; the shortest one near the best.
    peak = (r[:, 1:-1] > r[:, :-2]) & (r[:, 1:-1] >= r[:, 2:])
    inner = np.where(peak, r[:, 1:-1], -np.inf)
    best = inner.max(axis=1)
    near = peak & (inner >= OCTAVE_TOLERANCE * best[:, None])
    k = np.where(near.any(axis=1), near.argmax(axis=1), 0)
    rows = np.arange(len(r))
    left, centre, right = r[rows, k], r[rows, k + 1], r[rows, k + 2]
    denom = left - 2 * centre + right
    shift = np.clip(
        0.5 * (left - right) / np.where(np.abs(denom) > 1e-12, denom, np.inf), -0.5, 0.5
    )
    period = lo + k + shift
    strength = np.where(np.isfinite(best), centre - 0.25 * (left - right) * shift, 0.0)
    return period, np.clip(strength, 0.0, 1.0)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the stretches of True in `mask`."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)


def _percentile_stats(values: np.ndarray) -> list[float]:
    """mean, std, p20, p50, p80, p80 - p20, mean rise and mean fall per frame."""
    if len(values) == 0:
        return [0.0] * len(PERCENTILES)
    p20, p50, p80 = np.percentile(values, (20, 50, 80))
    d = np.diff(values)
    rise = d[d > 0].mean() if (d > 0).any() else 0.0
    fall = -d[d < 0].mean() if (d < 0).any() else 0.0
    return [values.mean(), values.std(), p20, p50, p80, p80 - p20, rise, fall]


def _band(freqs, lo, hi):
    return (freqs >= lo) & (freqs < hi)


def _slope(db: np.ndarray, freqs: np.ndarray, band: np.ndarray) -> np.ndarray:
    """dB per kHz of a least-squares line through each frame's spectrum in `band`."""
    f = freqs[band] / 1000.0
    f = f - f.mean()
    return db[:, band] @ f / (f @ f)


def spectral(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame: the spectral descriptors and the MFCCs."""
    x = (frames - frames.mean(axis=1, keepdims=True)) * np.hanning(WINDOW)
    power = np.abs(np.fft.rfft(x, SPEC_FFT, axis=1)) ** 2
    power += 1e-10 * power.max() + 1e-30  # A floor relative to the clip: gain changes nothing.
    freqs = np.arange(power.shape[1]) * RATE / SPEC_FFT
    db = 10 * np.log10(power)
    low, high = _band(freqs, 50, 1000), _band(freqs, 1000, 5000)
    out = {
        "alpha_ratio": 10 * np.log10(power[:, high].sum(1) / power[:, low].sum(1)),
        "hammarberg": db[:, _band(freqs, 0, 2000)].max(1) - db[:, _band(freqs, 2000, 5000)].max(1),
        "slope0_500": _slope(db, freqs, _band(freqs, 0, 500)),
        "slope500_1500": _slope(db, freqs, _band(freqs, 500, 1500)),
        "centroid": power @ freqs / power.sum(1) / 1000.0,
    }
    norm = power / power.sum(1, keepdims=True)
    out["flux"] = np.concatenate([[0.0], np.square(np.diff(norm, axis=0)).sum(1) * 1e3])
    bands, lo, hi = MEL_BANDS
    mel = power[:, : SPEC_FFT // 2] @ frontend.mel_matrix(SPEC_FFT // 2, bands, lo, hi)
    log_mel = np.log(mel)
    n = np.arange(bands)
    dct = np.cos(np.pi / bands * (n[:, None] + 0.5) * np.arange(1, NUM_MFCC + 1)[None, :])
    out["mfcc"] = log_mel @ dct
    return out


def functionals(samples: np.ndarray) -> np.ndarray:
    """float32 [len(NAMES)] voice functionals of a 16 kHz mono clip."""
    frames = _frames(samples)
    level = 10 * np.log10(np.mean(np.square(frames - frames.mean(1, keepdims=True)), 1) + 1e-12)
    active = level >= level.max() - ACTIVE_DB
    period, strength = pitch(frames)
    voiced = active & (strength >= VOICING)
    spec = spectral(frames)
    v = np.flatnonzero(voiced)
    f0 = 12 * np.log2(RATE / period[v] / F0_REFERENCE_HZ)
    hnr = 10 * np.log10(np.clip(strength[v], 1e-3, 0.999) / (1 - np.clip(strength[v], 1e-3, 0.999)))
    # Consecutive voiced frames: relative period change and level change.
    pairs = v[:-1][np.diff(v) == 1]
    jitter = (
        np.mean(np.abs(period[pairs + 1] - period[pairs]) / period[pairs]) if len(pairs) else 0.0
    )
    shimmer = np.mean(np.abs(level[pairs + 1] - level[pairs])) if len(pairs) else 0.0
    out = _percentile_stats(f0) + _percentile_stats(level[active])
    out += [hnr.mean(), hnr.std()] if len(v) else [0.0, 0.0]
    out += [jitter, shimmer]
    unvoiced = active & ~voiced
    for name in SPECTRAL:
        values = spec[name][voiced]
        out += [values.mean(), values.std()] if len(values) else [0.0, 0.0]
    for name in SPECTRAL[:4]:
        values = spec[name][unvoiced]
        out.append(values.mean() if len(values) else 0.0)
    for i in range(NUM_MFCC):
        values = spec["mfcc"][voiced, i]
        out += [values.mean(), values.std()] if len(values) else [0.0, 0.0]
    # Timing, from the first to the last voiced frame (the whole clip if none).
    span = slice(v[0], v[-1] + 1) if len(v) else slice(None)
    seconds = max(active.sum(), 1) * HOP / RATE
    voiced_runs = _runs(voiced[span]) * HOP / RATE
    unvoiced_runs = _runs(~voiced[span]) * HOP / RATE
    lv = level[span]
    peaks = (lv[1:-1] > lv[:-2]) & (lv[1:-1] >= lv[2:]) & (lv[1:-1] >= level.max() - 20.0)
    out += [
        voiced.sum() / max(active.sum(), 1),
        len(voiced_runs) / seconds,
        voiced_runs.mean() if len(voiced_runs) else 0.0,
        voiced_runs.std() if len(voiced_runs) else 0.0,
        unvoiced_runs.mean() if len(unvoiced_runs) else 0.0,
        unvoiced_runs.std() if len(unvoiced_runs) else 0.0,
        peaks.sum() / seconds,
    ]
    result = np.asarray(out, np.float64)
    return np.nan_to_num(result, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
