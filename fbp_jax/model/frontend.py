"""What the model reads: the audio view of the stored features and the shapes of a batch.

No TensorFlow, so the input pipeline, training, evaluation, prediction and
export all take the clip and batch shapes from here.

The records hold the paper's features: a log-power spectrogram of 200 linear bins (0-4 kHz,
20 Hz apart, natural log) at 100 frames/s, and per-frame video features at 25 frames/s. The
model can read them as they are (`data.frontend = 'linear'`, the paper) or as a log-mel view
(`'mel'`): the power of the stored bins summed by `data.num_mel` triangular mel filters over
the same 0-4 kHz band, then the natural log again. No rebuild of the records is needed, and the
training pipeline (tf.data) and prediction (numpy) share the same filter matrix. `'pcen'`
replaces that log by per-channel energy normalisation (Wang et al., 2017, "Trainable frontend
for robust and far-field keyword spotting"; fixed, not trained, parameters): each mel
channel's power E is divided by its own recent level M (an exponential moving average over
`data.pcen_time_constant` seconds) to the power `pcen_gain`, then compressed,
(E / (eps + M) ** gain + bias) ** power - bias ** power. A stationary background (steady
noise, a channel's constant gain) sinks towards a constant while onsets stand out.

Two optional steps make the view independent of how a recording was cut and how loud it is:

* `data.voiced_db > 0`: a frame is voiced when its power (summed over the bins) is within
  `voiced_db` dB of the clip's loudest frame. The clip is trimmed to the span from its first
  to its last voiced frame (on video-frame boundaries, so both streams stay aligned), and the
  standardisation statistics are taken over voiced frames only: leading and trailing silence
  then count for nothing, however long they are.
* `data.voiced_floor_db > 0`: a voiced frame must also be that many dB above the clip's noise
  floor (its quietest frames: the `NOISE_FLOOR_QUANTILE` of frame levels). In a noisy
  recording every frame is within `voiced_db` of the loudest, so without it the pauses,
  filled with noise, would count as speech; on a clean recording it changes nothing. With
  `data.voiced_floor_span` the floor only finds where the speech starts and ends (widened by
  `data.voiced_floor_margin_s` on each side, for the quiet onsets and endings that noise
  covers): within that span every frame within `voiced_db` of the loudest counts, as on a
  clean recording (the floor alone also drops the quietest speech of a clip without pauses).
* `data.voiced_span_db > 0`: the span is also bounded by the frames within this many dB of
  the loudest (widened by `data.voiced_floor_margin_s`): a masker that fills the pauses, even
  one that comes and goes as speech does, is weaker than the speech's loud frames. With
  `data.voiced_reach_s > 0` that bound reaches out to the farthest frame within so many
  seconds of the loud frames that stands `data.voiced_reach_floor_db` above the noise floor:
  a clean recording's quiet onsets and endings stand far above its silence and stay in the
  span, a masker's frames hardly above its own quietest do not.
* `data.level_norm`: the clip's mean log frame power over its voiced frames is subtracted
  from every bin (a gain applied to the file changes nothing).
* `data.spectral_floor_db > 0` (with `level_norm`): white power this many dB below the
  clip's level is added to every bin (`spectral_floor_log`), so that whatever lies below it, a
  clean recording's silent bins or a noisy one's noise, looks alike: noise weaker than the
  floor hardly changes the view.

`input_pipeline` does the same in TensorFlow; tests hold the two equal.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import ml_collections
import numpy as np

SAMPLE_RATE = 16000
NFFT = 800  # The DFT size of data_prep.features.audio: bin k is at k * 20 Hz.
MEL_FLOOR = 1e-10  # Power floor before the log, as data_prep.features.audio's LOG_FLOOR.
STD_FLOOR = 1e-3  # The least standard deviation a standardised feature is divided by.
FRONTENDS = ("linear", "mel", "pcen")
PCEN_EPS = 1e-6  # eps of the PCEN denominator (the power of a level-normalised mel channel).


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=8)
def mel_matrix(
    num_bins: int, num_mel: int, low_hz: float = 0.0, high_hz: float = 0.0
) -> np.ndarray:
    """Triangular mel filters (HTK mel scale) over linear bins k * 20 Hz, k < num_bins.

    The filters' edges are equally spaced in mel between `low_hz` and `high_hz` (0: the top
    bin's frequency), so bins outside that band weigh nothing; every filter is widened to cover
    at least one bin, so none is empty at low frequencies.

    Returns:
      float32 [num_bins, num_mel], each column summing to 1 (a weighted mean of bin powers).
    """
    if num_mel < 1 or num_mel > num_bins:
        raise ValueError(f"num_mel must be in [1, {num_bins}], got {num_mel}")
    freqs = np.arange(num_bins) * SAMPLE_RATE / NFFT
    bin_width = SAMPLE_RATE / NFFT
    high_hz = high_hz or freqs[-1]
    if not 0.0 <= low_hz < high_hz <= freqs[-1] or high_hz - low_hz < num_mel * bin_width / 4:
        raise ValueError(
            f"the mel band must lie in [0, {freqs[-1]:g}] Hz and be wide enough for "
            f"{num_mel} channels, got ({low_hz:g}, {high_hz:g})"
        )
    edges = _mel_to_hz(np.linspace(_hz_to_mel(low_hz), _hz_to_mel(high_hz), num_mel + 2))
    fb = np.zeros((num_bins, num_mel))
    for m in range(num_mel):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        lo, hi = min(lo, centre - bin_width), max(hi, centre + bin_width)
        up = (freqs - lo) / (centre - lo)
        down = (hi - freqs) / (hi - centre)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
    return (fb / fb.sum(axis=0, keepdims=True)).astype(np.float32)


def view_mel_matrix(data_config: ml_collections.ConfigDict) -> np.ndarray:
    """`mel_matrix` of `data_config`: its bins, channels and band (`mel_low_hz`, `mel_high_hz`)."""
    d = data_config
    band = (float(d.get("mel_low_hz", 0.0)), float(d.get("mel_high_hz", 0.0)))
    return mel_matrix(d.num_bins, d.num_mel, *band)


def audio_feature_size(data_config: ml_collections.ConfigDict) -> int:
    """Feature size of the audio stream the model reads: bins, or mel channels."""
    frontend = data_config.get("frontend", "linear")
    if frontend not in FRONTENDS:
        raise ValueError(f"data.frontend must be one of {FRONTENDS}, got {frontend!r}")
    deltas = int(data_config.get("mel_deltas", 0))
    if frontend == "linear":
        if deltas:
            raise ValueError("data.mel_deltas needs the 'mel' or 'pcen' view, not 'linear'")
        return data_config.num_bins
    return data_config.num_mel * (1 + deltas)


DELTA_WIDTH = 2  # frames each side of the regression that estimates a time derivative


def delta_weights() -> np.ndarray:
    """[2 DELTA_WIDTH + 1] regression weights of the time derivative at the middle frame."""
    n = np.arange(-DELTA_WIDTH, DELTA_WIDTH + 1, dtype=np.float64)
    return n / np.sum(n**2)


def with_deltas(view: np.ndarray, data_config: ml_collections.ConfigDict) -> np.ndarray:
    """[T, C] -> [T, C (1 + mel_deltas)]: the view with its first (and second) time
    derivatives appended, the edge frames repeated beyond the ends.
    `input_pipeline.with_deltas` computes the same in TensorFlow."""
    parts = [np.asarray(view, np.float64)]
    for _ in range(int(data_config.get("mel_deltas", 0))):
        padded = np.pad(parts[-1], ((DELTA_WIDTH, DELTA_WIDTH), (0, 0)), mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * DELTA_WIDTH + 1, axis=0)
        parts.append(windows @ delta_weights())
    return np.concatenate(parts, axis=-1).astype(np.float32)


# PCEN settings (`config.data`) and their defaults (Wang et al.'s s = 0.025 at 100 frames/s):
PCEN_DEFAULTS = {
    "pcen_time_constant": 0.4,  # seconds of the smoother M of each channel's power,
    "pcen_gain": 0.98,  # the exponent of M the power is divided by,
    "pcen_bias": 2.0,  # the offset added before compression,
    "pcen_power": 0.5,  # and the compression exponent.
}


# Every `config.data` setting that decides what the audio encoder is shown, with its default
# (for runs saved before the setting existed). A run whose audio encoder starts from another
# run's must show it the same (training.loop checks); serving reads these from serving.json.
AUDIO_VIEW_DEFAULTS = {
    "normalize": True,
    "speaker_norm": False,
    "frontend": "linear",
    "num_mel": 64,
    "mel_low_hz": 0.0,
    "mel_high_hz": 0.0,
    "mel_deltas": 0,
    "voiced_db": 0.0,
    "voiced_floor_db": 0.0,
    "voiced_floor_span": False,
    "voiced_floor_margin_s": 0.0,
    "voiced_span_db": 0.0,
    "voiced_reach_s": 0.0,
    "voiced_reach_floor_db": 0.0,
    "level_norm": False,
    "level_low_hz": 0.0,
    "level_high_hz": 0.0,
    "spectral_floor_db": 0.0,
    **PCEN_DEFAULTS,
}


def view_settings(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `AUDIO_VIEW_DEFAULTS` settings of `data_config` that change what the audio encoder
    is shown: those that have no effect under the others (a mel band of the linear view, the
    reach of a span that is off, ...) are left out, so two configs show the same view exactly
    when these are equal."""
    view = {k: data_config.get(k, v) for k, v in AUDIO_VIEW_DEFAULTS.items()}
    unused = set()
    if view["frontend"] not in ("mel", "pcen"):
        unused |= {"num_mel", "mel_low_hz", "mel_high_hz", "mel_deltas"}
    if view["frontend"] != "pcen":
        unused |= set(PCEN_DEFAULTS)
    if view["voiced_db"] <= 0:
        unused |= {k for k in view if k.startswith("voiced_") and k != "voiced_db"}
    if view["voiced_span_db"] <= 0 or view["voiced_reach_s"] <= 0:
        unused |= {"voiced_reach_s", "voiced_reach_floor_db"}
    if view["voiced_floor_db"] <= 0:
        unused.add("voiced_floor_span")
    if view["voiced_db"] <= 0 and not view["level_norm"]:
        unused |= {"level_low_hz", "level_high_hz"}
    if view["voiced_span_db"] <= 0 and not (
        view["voiced_floor_db"] > 0 and view["voiced_floor_span"]
    ):
        unused.add("voiced_floor_margin_s")
    return {k: v for k, v in view.items() if k not in unused}


def pcen_settings(data_config: ml_collections.ConfigDict) -> tuple[float, float, float, float]:
    """(decay 1 - s of the smoother, gain, bias, power) of `data_config`'s PCEN."""
    p = {k: float(data_config.get(k, v)) for k, v in PCEN_DEFAULTS.items()}
    frames = max(p["pcen_time_constant"] * data_config.audio_fps, 1e-6)
    return float(np.exp(-1.0 / frames)), p["pcen_gain"], p["pcen_bias"], p["pcen_power"]


def pcen(power: np.ndarray, data_config: ml_collections.ConfigDict) -> np.ndarray:
    """[T, C] power -> [T, C] per-channel energy normalisation.

    The smoother M[t] = (1 - s) M[t-1] + s E[t], started at the first frame's level: the
    average of E[0..t] weighted by (1 - s) ** (t - k), the weights normalised to sum to 1.
    `input_pipeline.pcen` computes the same in TensorFlow.
    """
    decay, gain, bias, exponent = pcen_settings(data_config)
    power = np.asarray(power, np.float64)
    smooth = np.empty_like(power)
    num, den = np.zeros(power.shape[1:]), 0.0
    for t, frame in enumerate(power):
        num, den = decay * num + frame, decay * den + 1.0
        smooth[t] = num / den
    out = (power / (PCEN_EPS + smooth) ** gain + bias) ** exponent - bias**exponent
    return out.astype(np.float32)


def audio_view(log_power: np.ndarray, data_config: ml_collections.ConfigDict) -> np.ndarray:
    """[T, bins] stored log-power spectrogram -> [T, audio_feature_size] model view."""
    frontend = data_config.get("frontend", "linear")
    if frontend == "linear":
        return np.asarray(log_power, np.float32)
    fb = view_mel_matrix(data_config)
    power = np.exp(np.asarray(log_power, np.float64)) @ fb
    if frontend == "pcen":
        return with_deltas(pcen(power, data_config), data_config)
    return with_deltas(np.log(np.maximum(power, MEL_FLOOR)), data_config)


def frame_level(log_power: np.ndarray, bins: slice = slice(None)) -> np.ndarray:
    """[T, bins] natural-log power -> [T] natural log of each frame's power summed over `bins`
    (all of them, or `level_bins`)."""
    lp = np.asarray(log_power, np.float64)[:, bins]
    top = lp.max(axis=1)
    return top + np.log(np.exp(lp - top[:, None]).sum(axis=1))


def level_bins(data_config: ml_collections.ConfigDict) -> slice:
    """The stored bins a frame's level is measured over (`frame_level`): those between
    `data.level_low_hz` and `data.level_high_hz` (0: the lowest / the top bin). The clip's
    voiced frames and its level (`data.voiced_db`, `data.level_norm`) are found on that band,
    e.g. 300-3400 Hz, what a telephone passes: a chain that cuts the lowest bins then moves
    every clip of a speaker alike, and their standardisation removes it, where over the whole
    band a clip's level moves by how much of its power lay there (scripts/level_shift.py)."""
    low = float(data_config.get("level_low_hz", 0.0) or 0.0)
    high = float(data_config.get("level_high_hz", 0.0) or 0.0)
    bin_hz = SAMPLE_RATE / NFFT
    top = (data_config.num_bins - 1) * bin_hz
    if not (low or high):
        return slice(None)
    high = high or top
    if not 0.0 <= low < high or low > top:
        raise ValueError(
            f"data.level_low_hz and level_high_hz must make a band within [0, {top:g}] Hz, "
            f"got ({low:g}, {high:g})"
        )
    return slice(int(np.ceil(low / bin_hz)), int(np.floor(high / bin_hz)) + 1)


DB_PER_NEPER = 10.0 / np.log(10.0)  # dB of power per natural-log unit.
NOISE_FLOOR_QUANTILE = 0.1  # The noise floor: the frame level this share of frames is below.


def voiced_levels(
    level: np.ndarray,
    threshold_db: float,
    floor_db: float = 0.0,
    floor_span: bool = False,
    margin: int = 0,
    span_db: float = 0.0,
    reach: int = 0,
    reach_floor_db: float = 0.0,
) -> np.ndarray:
    """[T] bool from the frames' levels ([T], natural log of the power, `frame_level`): frames
    within `threshold_db` dB of the loudest (all frames if <= 0) and, with `floor_db` > 0,
    that many dB above the noise floor (unless no frame is). With `floor_span` the floor only
    bounds the span: frames from `margin` frames before the first one above it to `margin`
    after the last are voiced by the loudness rule alone. With `span_db` > 0 the span is also
    bounded by the frames within `span_db` of the loudest, `margin` frames either side, and
    with `reach` > 0 widened to the outermost frame within `reach` frames of those that stands
    `reach_floor_db` above the noise floor (a quiet onset or ending, not a masker)."""
    if threshold_db <= 0 or not len(level):
        return np.ones(len(level), bool)
    voiced = level >= level.max() - threshold_db / DB_PER_NEPER
    reaching = span_db > 0 and reach > 0
    floor = _noise_floor(level) if reaching or floor_db > 0 else None
    if span_db > 0:
        loud = level >= level.max() - span_db / DB_PER_NEPER
        span = _within_span(np.ones_like(voiced), loud, margin)
        if reaching:
            quiet_edge = level >= floor + reach_floor_db / DB_PER_NEPER
            span |= _within_span(quiet_edge, loud, reach)
        voiced = _within_span(voiced, span, 0)
    if floor_db > 0:
        above = voiced & (level >= floor + floor_db / DB_PER_NEPER)
        if above.any():
            voiced = _within_span(voiced, above, margin) if floor_span else above
    return voiced


def _noise_floor(level: np.ndarray) -> float:
    """The level `NOISE_FLOOR_QUANTILE` of the frames are below."""
    return np.sort(level)[int(NOISE_FLOOR_QUANTILE * (len(level) - 1))]


def _within_span(voiced: np.ndarray, bound: np.ndarray, margin: int) -> np.ndarray:
    """`voiced` outside the span from `margin` frames before the first frame of `bound` (not
    empty) to `margin` after its last set False."""
    where = np.flatnonzero(bound)
    index = np.arange(len(voiced))
    return voiced & (index >= where[0] - margin) & (index <= where[-1] + margin)


class VoicedSettings(NamedTuple):
    """The arguments after the levels of `voiced_levels`, in its order."""

    threshold_db: float
    floor_db: float
    floor_span: bool
    margin: int
    span_db: float
    reach: int
    reach_floor_db: float


def voiced_settings(data_config: ml_collections.ConfigDict) -> VoicedSettings:
    """What `config.data` asks of `voiced_levels`: `voiced_db`, `voiced_floor_db`,
    `voiced_floor_span`, the margin in frames, `voiced_span_db`, the reach in frames and
    `voiced_reach_floor_db`."""
    d = data_config
    return VoicedSettings(
        float(d.get("voiced_db", 0.0) or 0.0),
        float(d.get("voiced_floor_db", 0.0) or 0.0),
        bool(d.get("voiced_floor_span", False)),
        _frames(d, "voiced_floor_margin_s"),
        float(d.get("voiced_span_db", 0.0) or 0.0),
        _frames(d, "voiced_reach_s"),
        float(d.get("voiced_reach_floor_db", 0.0) or 0.0),
    )


def _frames(data_config: ml_collections.ConfigDict, key: str) -> int:
    """A duration of `config.data` in seconds (absent: 0) in audio frames."""
    return round(float(data_config.get(key, 0.0) or 0.0) * data_config.audio_fps)


def spectral_floor_log(data_config: ml_collections.ConfigDict) -> float | None:
    """The natural-log power per bin of `data.spectral_floor_db` (None when off): white power
    that many dB below a level-normalised clip's frame power (0), spread over the bins."""
    floor_db = float(data_config.get("spectral_floor_db", 0.0) or 0.0)
    if floor_db <= 0:
        return None
    if not data_config.get("level_norm", False):
        raise ValueError(
            "data.spectral_floor_db is relative to the clip's level: it needs data.level_norm"
        )
    return -floor_db / DB_PER_NEPER - float(np.log(data_config.num_bins))


def voiced_span(voiced: np.ndarray, ratio: int) -> tuple[int, int]:
    """(first, end) in units of `ratio` audio frames (one video frame) covering every voiced
    frame of the mask `voiced`: audio frames [first * ratio, end * ratio) and video frames
    [first, end); the whole clip if none is voiced."""
    where = np.flatnonzero(voiced)
    if not len(where):
        return 0, -(-len(voiced) // ratio)
    return int(where[0]) // ratio, -(-(int(where[-1]) + 1) // ratio)


def clip_view(
    features: dict[str, np.ndarray], data_config: ml_collections.ConfigDict
) -> dict[str, np.ndarray]:
    """A whole clip as the model sees it before cropping and standardisation: trimmed to its
    voiced span (`voiced_db`), level-normalised (`level_norm`), floored
    (`spectral_floor_db`), in the audio view.

    Args:
      features: `audio` [Ta, bins] stored log power; optional `video` [Tv, ...] and
        `video_valid` [Tv].
      data_config: `config.data`.

    Returns:
      `audio` [Ta', F], `voiced` [Ta'] (the frames statistics are taken over), `first` (the
      video frame the trimmed clip starts at; 0 untrimmed), and the trimmed `video` /
      `video_valid` where given.
    """
    d = data_config
    settings = voiced_settings(d)
    log_power = np.asarray(features["audio"], np.float32)
    out = {k: np.asarray(v) for k, v in features.items() if k in ("video", "video_valid")}
    # Found on the whole clip, so that the noise floor is the pauses' where there are pauses.
    levels = frame_level(log_power, level_bins(d))
    voiced = voiced_levels(levels, *settings)
    first = 0
    if settings.threshold_db > 0:
        ratio = d.audio_fps // d.video_fps
        first, end = voiced_span(voiced, ratio)
        audio_frames = slice(first * ratio, end * ratio)
        log_power, levels, voiced = (x[audio_frames] for x in (log_power, levels, voiced))
        out = {k: v[first:end] for k, v in out.items()}
    if d.get("level_norm", False):
        shift = levels[voiced].mean()
        log_power = (log_power.astype(np.float64) - shift).astype(np.float32)
    floor = spectral_floor_log(d)
    if floor is not None:
        log_power = np.logaddexp(log_power, np.float32(floor))
    out["audio"] = audio_view(log_power, d)
    out["voiced"] = voiced
    out["first"] = first
    return out


def crop_or_pad(x: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """x[start:start + length] zero-padded to `length` (numpy); returns (values, mask)."""
    x = x[start : start + length]
    n = len(x)
    out = np.zeros((length, *x.shape[1:]), x.dtype)
    out[:n] = x
    return out, np.arange(length) < n


def clip_frames(data_config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(audio frames, video frames) of a clip of `data_config.clip_seconds`."""
    d = data_config
    return round(d.clip_seconds * d.audio_fps), round(d.clip_seconds * d.video_fps)


def pooled_statistics(stats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One row of standardisation statistics from per-speaker rows ([S, F] with `speakers`):
    the speakers pooled with equal weights (the mean of their means, and the standard
    deviation of their pooled frames), i.e. the statistics of an average training speaker."""
    out = {}
    for key in ("audio", "video"):
        means, stds = np.asarray(stats[f"{key}_mean"]), np.asarray(stats[f"{key}_std"])
        grand = means.mean(0)
        out[f"{key}_mean"] = grand.astype(np.float32)
        out[f"{key}_std"] = np.sqrt(np.mean(stds**2 + (means - grand) ** 2, axis=0)).astype(
            np.float32
        )
    return out


STREAM_KEYS = {"audio": ("audio", "audio_mask"), "video": ("video", "video_mask")}
# A training batch with `augment.consistency_weight` also holds a second view of every clip,
# its model inputs under these names ('view2_audio', ...).
SECOND_VIEW = "view2_"


def model_inputs(batch: dict, fusion: str) -> dict:
    """The batch entries a fusion variant reads (so unused streams are not transferred)."""
    from fbp_jax.model import fusion as fusion_lib

    return {k: batch[k] for s in fusion_lib.streams_for(fusion) for k in STREAM_KEYS[s]}


def input_spec(config: ml_collections.ConfigDict, batch_size: int = 1) -> dict[str, np.ndarray]:
    """Zero arrays shaped like one batch of model inputs (audio [B, Ta, F], masks, video)."""
    d = config.data
    ta, tv = clip_frames(d)
    return {
        "audio": np.zeros((batch_size, ta, audio_feature_size(d)), np.float32),
        "audio_mask": np.ones((batch_size, ta), bool),
        "video": np.zeros((batch_size, tv, *d.video_shape), np.float32),
        "video_mask": np.ones((batch_size, tv), bool),
    }
