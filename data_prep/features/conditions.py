"""Recording conditions applied to 16 kHz mono speech: the condition-shift test set.

Each condition is a deterministic function of the samples (and a seed) that changes how a clip
was recorded or stored, not what was said or how:

    original     the clip as it is
    trimmed      leading and trailing frames 35 dB below the loudest cut off
    padded       2 s of digital silence added at each end
    quiet        20 dB quieter
    clipped      overdriven: the peak raised to 12 dB above full scale and cut off there (an
                 input gain set too high)
    dc_offset    a constant 0.05 of full scale added (a cheap microphone input)
    telephone    band-limited to 300-3400 Hz (4th-order Butterworth band-pass)
    telephone_low   the telephone band's low edge alone (the 300 Hz high-pass)
    telephone_high  its high edge alone (the 3400 Hz low-pass): which edge costs what
    microphone   another microphone's colouring: the lows rolled off below 200 Hz (2nd-order
                 high-pass) and a +8 dB presence peak at 2.5 kHz (one octave wide)
    noise20      white noise at 20 dB SNR (relative to the power of the voiced frames)
    noise10      the same at 10 dB SNR
    pink10       pink (1/f power) noise at 10 dB SNR: most of its power where speech has its own
    babble10     six time-reversed, circularly shifted copies of the clip summed, at 10 dB SNR:
                 a speech-shaped, fluctuating masker (unintelligible voices of the same talker)
    hum20        mains hum: 50 Hz and its harmonics up to 1 kHz (amplitudes falling as 1/k) at
                 20 dB below the voiced frames' power
    hum20_drift  the same hum from a grid running 0.2 Hz fast (50.2 Hz: the edge of normal
                 operation, 1.2 Hz off at the sixth harmonic)
    hum20_generator  the same hum from a generator running 2 % fast (51.0 Hz: within a small
                 set's speed droop from no load to full load)
    noise10_inside   noise10 inside the voiced span only, the silence around it left clean
    babble10_inside  babble10 the same way (a masker that starts and stops with the speech:
                 what a condition costs beyond filling the silence the model takes in)
    resampled    down to 8 kHz and back to 16 kHz
    reverb       a room with a 0.5 s reverberation time (exponentially decaying noise,
                 generated in numpy), direct-to-reverberant ratio 3 dB
    opus16       encoded with Opus at 16 kbit/s and decoded again (PyAV)
    mp3_32       encoded as MP3 at 32 kbit/s and decoded again (PyAV)

`apply(name, samples)` returns the changed samples; `CONDITIONS` lists the names in order.
Names chain with '+' (`apply("microphone+noise20", x)`: the second applied to the first's
output).
"""

from __future__ import annotations

import io as _io
from collections.abc import Callable

import numpy as np
from scipy import signal

from data_prep.features import audio as audio_lib

RATE = audio_lib.SAMPLE_RATE
VOICED_DB = 35.0


def _frame_db(samples: np.ndarray) -> np.ndarray:
    spec = audio_lib.log_spectrogram(samples)
    top = spec.max(axis=1, keepdims=True)
    return 10.0 / np.log(10.0) * (top[:, 0] + np.log(np.exp(spec - top).sum(axis=1)))


def voiced_power(samples: np.ndarray) -> float:
    """Mean power of the frames within 35 dB of the loudest (the speech, not the pauses)."""
    db = _frame_db(samples)
    frames = np.flatnonzero(db >= db.max() - VOICED_DB)
    parts = [
        samples[i * audio_lib.HOP : i * audio_lib.HOP + audio_lib.WINDOW].astype(np.float64)
        for i in frames
    ]
    return float(np.mean(np.square(np.concatenate(parts))))


def _voiced_span(samples: np.ndarray) -> slice:
    """The samples from the first to the last frame within 35 dB of the loudest."""
    db = _frame_db(samples)
    voiced = np.flatnonzero(db >= db.max() - VOICED_DB)
    return slice(voiced[0] * audio_lib.HOP, voiced[-1] * audio_lib.HOP + audio_lib.WINDOW)


def trim(samples: np.ndarray) -> np.ndarray:
    return samples[_voiced_span(samples)]


def inside(samples: np.ndarray, change: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`change` applied to the voiced span only, the silence before and after it left as it
    is: a masker that starts and stops with the speech."""
    span = _voiced_span(samples)
    out = np.array(samples, np.float32)
    out[span] = change(out[span])
    return out


def pad(samples: np.ndarray, seconds: float = 2.0) -> np.ndarray:
    silence = np.zeros(int(seconds * RATE), np.float32)
    return np.concatenate([silence, samples, silence])


def gain(samples: np.ndarray, db: float) -> np.ndarray:
    return samples * np.float32(10.0 ** (db / 20.0))


def clip_overdriven(samples: np.ndarray, db: float = 12.0) -> np.ndarray:
    peak = max(float(np.abs(samples).max()), 1e-12)
    return np.clip(samples * np.float32(10.0 ** (db / 20.0) / peak), -1.0, 1.0).astype(np.float32)


def butterworth(samples: np.ndarray, hz, btype: str) -> np.ndarray:
    """A 4th-order Butterworth filter: `btype` 'bandpass' ([low, high] Hz), 'highpass' or
    'lowpass' (one edge in Hz)."""
    sos = signal.butter(4, hz, btype=btype, fs=RATE, output="sos")
    return signal.sosfilt(sos, samples).astype(np.float32)


def band_pass(samples: np.ndarray, low: float = 300.0, high: float = 3400.0) -> np.ndarray:
    return butterworth(samples, [low, high], "bandpass")


def peaking(samples: np.ndarray, hz: float, db: float, q: float) -> np.ndarray:
    """A peaking equaliser (the audio-EQ-cookbook biquad): +`db` at `hz`, bandwidth hz / q."""
    a = 10.0 ** (db / 40.0)
    w = 2.0 * np.pi * hz / RATE
    alpha = np.sin(w) / (2.0 * q)
    b = [1.0 + alpha * a, -2.0 * np.cos(w), 1.0 - alpha * a]
    den = [1.0 + alpha / a, -2.0 * np.cos(w), 1.0 - alpha / a]
    return signal.lfilter(b, den, samples)


def microphone(samples: np.ndarray) -> np.ndarray:
    """Another microphone: a roll-off below 200 Hz and a presence peak at 2.5 kHz."""
    sos = signal.butter(2, 200.0, btype="highpass", fs=RATE, output="sos")
    y = peaking(signal.sosfilt(sos, samples), 2500.0, 8.0, 1.41)
    return np.clip(y, -1.0, 1.0).astype(np.float32)


def white_noise(samples: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    power = voiced_power(samples) / 10.0 ** (snr_db / 10.0)
    noise = rng.standard_normal(len(samples)) * np.sqrt(power)
    return np.clip(samples + noise, -1.0, 1.0).astype(np.float32)


def _add_at_snr(samples: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`samples` plus `noise` scaled to `snr_db` below the power of the voiced frames."""
    power = voiced_power(samples) / 10.0 ** (snr_db / 10.0)
    noise = noise * np.sqrt(power / max(np.mean(np.square(noise)), 1e-30))
    return np.clip(samples + noise, -1.0, 1.0).astype(np.float32)


def _coloured_noise(length: int, tilt: float, seed: int) -> np.ndarray:
    """Noise whose power falls as 1/f^`tilt` (white noise shaped in the frequency domain, no
    DC; 0: white, 1: pink)."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(length))
    f = np.fft.rfftfreq(length, 1.0 / RATE)
    spectrum[0] = 0.0
    spectrum[1:] /= f[1:] ** (tilt / 2.0)
    return np.fft.irfft(spectrum, length)


def pink_noise(samples: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """Noise whose power falls as 1/f."""
    return _add_at_snr(samples, _coloured_noise(len(samples), 1.0, seed), snr_db)


def hum(
    samples: np.ndarray, snr_db: float, mains_hz: float = 50.0, harmonics: range | None = None
) -> np.ndarray:
    """Mains hum: the harmonics of `mains_hz` up to 1 kHz (or those numbered `harmonics`),
    the k-th at amplitude 1/k."""
    t = np.arange(len(samples)) / RATE
    ks = range(1, int(1000 // mains_hz) + 1) if harmonics is None else harmonics
    noise = sum(np.sin(2 * np.pi * mains_hz * k * t + k) / k for k in ks)
    return _add_at_snr(samples, noise, snr_db)


def babble(samples: np.ndarray, snr_db: float, talkers: int = 6, seed: int = 0) -> np.ndarray:
    """The clip masked by `talkers` time-reversed copies of itself, each circularly shifted by
    a random offset: speech-shaped noise that comes and goes as speech does."""
    rng = np.random.default_rng(seed)
    x = np.asarray(samples, np.float64)[::-1]
    noise = sum(np.roll(x, int(rng.integers(len(x)))) for _ in range(talkers))
    return _add_at_snr(samples, noise, snr_db)


def session_channel(
    samples: np.ndarray,
    low_pass_hz: float,
    high_pass_hz: float,
    snr_db: float,
    tilt: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """The clip recorded through a fixed channel (a row of `fbp_jax.input_pipeline.
    session_channels`), in the waveform: a 4th-order low-pass, a high-pass (0: none), then
    noise `snr_db` below the voiced frames' power, its power falling as 1/f^`tilt` (0: white)."""
    x = butterworth(samples, low_pass_hz, "lowpass")
    if high_pass_hz > 0:
        x = butterworth(x, high_pass_hz, "highpass")
    return _add_at_snr(x, _coloured_noise(len(x), tilt, seed), snr_db)


def other_talkers(
    samples: np.ndarray, others: list[np.ndarray], snr_db: float, seed: int = 0
) -> np.ndarray:
    """The clip among other people talking: each of `others` (other speakers' clips) cut to
    its voiced span, scaled to unit power and looped from a random start to the clip's length,
    summed, `snr_db` below the clip's voiced power (a babble of real voices, unlike `babble`)."""
    rng = np.random.default_rng(seed)
    noise = np.zeros(len(samples))
    for other in others:
        y = np.asarray(other, np.float64)[_voiced_span(other)]
        y = y / np.sqrt(max(np.mean(np.square(y)), 1e-30))
        noise += np.resize(np.roll(y, -int(rng.integers(len(y)))), len(samples))
    return _add_at_snr(samples, noise, snr_db)


def resample_through(samples: np.ndarray, rate: int = 8000) -> np.ndarray:
    down = signal.resample_poly(samples, rate, RATE)
    return signal.resample_poly(down, RATE, rate).astype(np.float32)[: len(samples)]


def room_response(rt60: float = 0.5, drr_db: float = 3.0, seed: int = 0) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then Gaussian noise decaying 60 dB
    in `rt60` seconds, scaled so the tail's energy is `drr_db` below the direct path's."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, int(rt60 * RATE)) / RATE
    tail = rng.standard_normal(len(t)) * 10.0 ** (-3.0 * t / rt60)
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(np.square(tail)))
    return np.concatenate([[1.0], tail])


def reverberate(samples: np.ndarray, rt60: float = 0.5, seed: int = 0) -> np.ndarray:
    wet = signal.fftconvolve(samples, room_response(rt60, seed=seed))
    peak = np.abs(wet).max()
    return (wet / max(peak, 1.0)).astype(np.float32)


def codec_round_trip(samples: np.ndarray, codec: str, bit_rate: int) -> np.ndarray:
    """Encodes mono 16 kHz samples with an audio codec of PyAV and decodes them again.

    Opus works at 48 kHz internally: the encoder gets the samples resampled to 48 kHz, the
    decoded audio is resampled back to 16 kHz.
    """
    import av

    container_format, rate = {"libopus": ("ogg", 48000), "libmp3lame": ("mp3", RATE)}[codec]
    x = samples if rate == RATE else signal.resample_poly(samples, rate // RATE, 1)
    pcm = (np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)
    buffer = _io.BytesIO()
    with av.open(buffer, "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        frame_size = 960 if codec == "libopus" else 1152
        for i in range(0, len(pcm), frame_size):
            frame = av.AudioFrame.from_ndarray(
                pcm[None, i : i + frame_size], format="s16", layout="mono"
            )
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    buffer.seek(0)
    decoded = []
    with av.open(buffer, "r") as inp:
        for frame in inp.decode(audio=0):
            decoded.append(frame.to_ndarray().astype(np.float32).reshape(-1, frame.samples).mean(0))
    y = np.concatenate(decoded)
    if np.issubdtype(np.asarray(decoded[0]).dtype, np.floating) and np.abs(y).max() > 2:
        y = y / 32768.0
    if rate != RATE:
        y = signal.resample_poly(y, 1, rate // RATE)
    return y.astype(np.float32)


CONDITIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda x: x,
    "trimmed": trim,
    "padded": pad,
    "quiet": lambda x: gain(x, -20.0),
    "clipped": clip_overdriven,
    "dc_offset": lambda x: (x + np.float32(0.05)).astype(np.float32),
    "telephone": band_pass,
    "telephone_low": lambda x: butterworth(x, 300.0, "highpass"),
    "telephone_high": lambda x: butterworth(x, 3400.0, "lowpass"),
    "microphone": microphone,
    "noise20": lambda x: white_noise(x, 20.0),
    "noise10": lambda x: white_noise(x, 10.0),
    "pink10": lambda x: pink_noise(x, 10.0),
    "babble10": lambda x: babble(x, 10.0),
    "hum20": lambda x: hum(x, 20.0),
    "hum20_drift": lambda x: hum(x, 20.0, mains_hz=50.2),
    "hum20_generator": lambda x: hum(x, 20.0, mains_hz=51.0),
    "noise10_inside": lambda x: inside(x, lambda y: white_noise(y, 10.0)),
    "babble10_inside": lambda x: inside(x, lambda y: babble(y, 10.0)),
    "resampled": resample_through,
    "reverb": reverberate,
    "opus16": lambda x: codec_round_trip(x, "libopus", 16000),
    "mp3_32": lambda x: codec_round_trip(x, "libmp3lame", 32000),
}


def known(name: str) -> bool:
    """Whether `name` is a condition, or conditions chained with '+'."""
    return all(part in CONDITIONS for part in name.split("+"))


def apply(name: str, samples: np.ndarray) -> np.ndarray:
    """The samples of a clip recorded under condition `name` (see the module docstring).

    Conditions chain with '+', applied left to right, as a recording passes through several:
    'microphone+noise20+mp3_32' is another microphone in a noisy room, stored as MP3.
    """
    if not known(name):
        raise ValueError(
            f"unknown condition {name!r}; one of {list(CONDITIONS)}, or chained with '+'"
        )
    x = np.asarray(samples, np.float32)
    for part in name.split("+"):
        x = np.asarray(CONDITIONS[part](x), np.float32)
    return x
