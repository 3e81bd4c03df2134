"""tf.data input pipeline over the TFRecords written by the data_prep TFDS builders.

Every corpus has one schema (data_prep.builders.base.schema_features): `audio` [Ta, bins] log spectrogram at 100 frames/s,
`video` [Tv, ...] per-frame features at 25 frames/s, `video_valid` [Tv], `label`, ids. Here both
streams are cropped (randomly for training, centred for evaluation) at the same instant and
zero-padded to `config.data.clip_seconds`, standardised with statistics of the training split,
and batched with masks. Training batches repeat forever; evaluation covers every example exactly
once, padding the last batch with `mask = 0` examples (never drop_remainder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fbp_jax import io, parallel
from fbp_jax.model import frontend

BATCH_KEYS = ("audio", "audio_mask", "video", "video_mask", "label", "mask")


class DatasetNotPreparedError(FileNotFoundError):
    """The dataset of a config has not been written by data_prep yet."""


@dataclasses.dataclass
class Datasets:
    """What the training loop needs from the data.

    Attributes:
      train_examples: size of the training split (all processes).
      eval_examples: size of the evaluation split (all processes).
      steps_per_epoch: training batches per pass over the training split.
      train_iter: (seed, start_step) -> endless iterator of numpy batches [local_batch, ...],
        a deterministic function of the seed, positioned at `start_step` (resumes exactly).
      eval_batches: () -> iterator of numpy batches covering this process's share once.
      stats: normalisation statistics (numpy arrays).
      class_names: the dataset's class names (its label feature).
      split_sizes: examples of the training and evaluation (and test) splits.
    """

    train_examples: int
    eval_examples: int
    steps_per_epoch: int
    train_iter: Callable[[int, int], Iterator[dict[str, np.ndarray]]]
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
    stats: dict[str, np.ndarray] | None
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]


def prepared_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of `data_config.name`; a clear error if it is not prepared."""
    from data_prep.builders import builder_class  # Registers that corpus's builder only.

    name, data_dir = data_config.name, data_config.data_dir
    # Registers the project's builder of that name; another name may be a user's own builder.
    with contextlib.suppress(ValueError):
        builder_class(name)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))
        where = builder.data_dir
    except tfds.core.registered.DatasetNotFoundError:
        builder, prepared = None, False
        where = os.path.join(data_dir or tfds.core.constants.DATA_DIR, name.split("/")[0])
    if not prepared:
        raise DatasetNotPreparedError(
            f"No prepared dataset '{name}' at {where} (data_dir="
            f"{data_dir or 'the TFDS default, $TFDS_DATA_DIR or ~/tensorflow_datasets'}).\n"
            f"Prepare it first with data_prep, e.g.\n"
            f"  fbp-jax build {name} --manual_dir=<corpus as distributed> --data_dir=<dir>\n"
            f"(or python -m data_prep.build ...)\n"
            f"and pass --config.data.data_dir=<dir>; see docs/corpora.md for the supported "
            f"corpora. To try the system without licensed data, run the demo on the "
            f"synthetic corpus: bash tasks.sh demo"
        )
    return builder


def _crop_or_pad(x: tf.Tensor, start: tf.Tensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """x[start:start + length] zero-padded to `length`; returns (values, boolean mask)."""
    x = x[start : start + length]
    n = tf.shape(x)[0]
    paddings = [[0, length - n]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.pad(x, paddings), tf.sequence_mask(n, length)


class Normalizer:
    """Standardises both streams with global statistics or each speaker's own.

    `stats` holds `{audio,video}_{mean,std}`: [F] arrays (statistics of the training split), or,
    with `speakers` (a [S] array of ids), [S, F] arrays, one row per speaker, looked up by the
    example's `speaker` (per-speaker standardisation; the ids of the split being read).
    """

    def __init__(self, stats: dict[str, np.ndarray]):
        self.stats = stats
        self.by_speaker = "speakers" in stats
        self._table = None
        if self.by_speaker:
            keys = tf.constant([str(s) for s in stats["speakers"]])
            init = tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(keys), dtype=tf.int64))
            self._table = tf.lookup.StaticHashTable(init, default_value=-1)

    def __call__(self, audio, video, speaker=None):
        s = self.stats
        if self.by_speaker:
            i = self._table.lookup(speaker)
            with tf.control_dependencies(
                [tf.debugging.assert_non_negative(i, message="speaker without statistics")]
            ):
                i = tf.identity(i)
            pick = lambda k: tf.gather(tf.constant(s[k]), i)
        else:
            pick = lambda k: tf.constant(s[k])
        audio = (audio - pick("audio_mean")) / pick("audio_std")
        video = (video - pick("video_mean")) / pick("video_std")
        return audio, video


def _as_normalizer(stats) -> Normalizer | None:
    if stats is None or isinstance(stats, Normalizer):
        return stats
    return Normalizer(stats)


def pcen(power: tf.Tensor, d: ml_collections.ConfigDict) -> tf.Tensor:
    """`frontend.pcen` in TensorFlow: the smoother as one [T, T] matrix of normalised decay
    weights (no loop over frames; the crops the model reads are a few hundred frames)."""
    decay, gain, bias, exponent = frontend.pcen_settings(d)
    t = tf.range(tf.shape(power)[0])
    lag = tf.cast(t[:, None] - t[None, :], tf.float32)
    weights = tf.where(lag >= 0, tf.exp(tf.maximum(lag, 0.0) * float(np.log(decay))), 0.0)
    smooth = tf.matmul(weights, power) / tf.reduce_sum(weights, axis=1, keepdims=True)
    ratio = power / tf.pow(frontend.PCEN_EPS + smooth, gain)
    return tf.pow(ratio + bias, exponent) - bias**exponent


def audio_view(audio: tf.Tensor, data_config: ml_collections.ConfigDict) -> tf.Tensor:
    """The model's view of the stored log-power spectrogram (frontend.audio_view, in tf)."""
    if data_config.get("frontend", "linear") == "linear":
        return audio
    frontend.audio_feature_size(data_config)  # Validates the name.
    fb = tf.constant(frontend.view_mel_matrix(data_config))
    power = tf.matmul(tf.exp(audio), fb)
    if data_config.frontend == "pcen":
        return with_deltas(pcen(power, data_config), data_config)
    return with_deltas(tf.math.log(tf.maximum(power, frontend.MEL_FLOOR)), data_config)


def with_deltas(view: tf.Tensor, data_config: ml_collections.ConfigDict) -> tf.Tensor:
    """`frontend.with_deltas` in TensorFlow: a [T, C] view with its time derivatives."""
    w = frontend.DELTA_WIDTH
    weights = tf.constant(frontend.delta_weights(), view.dtype)
    parts = [view]
    for _ in range(int(data_config.get("mel_deltas", 0))):
        x = parts[-1]
        padded = tf.concat([tf.repeat(x[:1], w, 0), x, tf.repeat(x[-1:], w, 0)], axis=0)
        frames = tf.shape(x)[0]
        parts.append(sum(weights[k] * padded[k : k + frames] for k in range(2 * w + 1)))
    return tf.concat(parts, axis=-1)


def _warp_frequencies(audio: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """Vocal tract length perturbation: bin k takes the log power found at k / alpha (linear
    interpolation between bins; beyond the top bin, the top bin)."""
    bins = tf.shape(audio)[1]
    src = tf.range(bins, dtype=tf.float32) / alpha
    src = tf.clip_by_value(src, 0.0, tf.cast(bins - 1, tf.float32))
    lo = tf.cast(tf.floor(src), tf.int32)
    hi = tf.minimum(lo + 1, bins - 1)
    frac = src - tf.cast(lo, tf.float32)
    return tf.gather(audio, lo, axis=1) * (1.0 - frac) + tf.gather(audio, hi, axis=1) * frac


def _reverberate(power: tf.Tensor, rt60: tf.Tensor, drr_db: tf.Tensor, fps: int) -> tf.Tensor:
    """A room in the power domain: each bin's power convolved along time with a direct path
    and an exponential tail falling 60 dB in `rt60` seconds, the tail's energy `drr_db` below
    the direct path's (at most 1 s of tail)."""
    taps = fps
    k = tf.range(1, taps + 1, dtype=tf.float32)
    tail = tf.pow(10.0, -6.0 * k / (fps * rt60))
    tail = tail / tf.reduce_sum(tail) * tf.pow(10.0, -drr_db / 10.0)
    h = tf.concat([[1.0], tail], axis=0)  # h[j]: weight of the frame j steps back.
    kernel = tf.reverse(h, [0])[:, None, None]
    x = tf.transpose(power)[:, :, None]  # [bins, T, 1]: each bin a signal.
    x = tf.pad(x, [[0, 0], [taps, 0], [0, 0]])
    return tf.transpose(tf.nn.conv1d(x, kernel, stride=1, padding="VALID")[:, :, 0])


def _augment_log_power(
    audio: tf.Tensor,
    aug,
    seed: tf.Tensor,
    d=None,
    speech: tf.Tensor | None = None,
    talkers: tuple[tf.Tensor, ...] = (),
) -> tf.Tensor:
    """Recording-condition changes on a [T, bins] natural-log power spectrogram (0-4 kHz bins
    of 20 Hz), in the order they happen to a recording: another vocal tract length
    (`freq_warp`), other people talking in the room (`talker_prob`: 1 to `augment.talkers`
    of the `talkers`, other clips' stored log power, at an SNR in `talker_snr_db`), a room
    (`reverb_prob`), a band-limited channel (`band_limit_prob`: a low-pass, and with
    `high_pass_hz` a high-pass as well, like a telephone's 300 Hz), a gain (`gain_db`) and
    additive noise (`noise_prob`, at an SNR relative to the mean power of the `speech`
    frames, [T] bool, or of all frames; white, or with `noise_tilt` its power falling as
    1/f^a, a drawn per clip: 1 pink, 2 brown). Each is drawn per clip from the stateless
    `seed`."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 10))
    draw = lambda i, lo=0.0, hi=1.0: tf.random.stateless_uniform([], seeds[i], lo, hi)
    if aug.get("freq_warp", 0.0):
        alpha = draw(5, 1.0 - aug.freq_warp, 1.0 + aug.freq_warp)
        audio = _warp_frequencies(audio, alpha)
    if aug.get("talker_prob", 0.0) > 0 and talkers:
        # Seeds of their own: the other draws stay those of a recipe without talkers.
        s_talk = tf.random.experimental.stateless_fold_in(seed, 11)
        s_apply, s_snr, s_count, s_loop = tf.unstack(
            tf.random.experimental.stateless_split(s_talk, 4)
        )
        lo, hi = aug.talker_snr_db
        snr = tf.random.stateless_uniform([], s_snr, lo, hi)
        count = tf.random.stateless_uniform([], s_count, 1, len(talkers) + 1, dtype=tf.int32)
        talking = _add_talkers(audio, talkers, count, snr, s_loop, speech, d)
        apply = tf.random.stateless_uniform([], s_apply) < aug.talker_prob
        audio = tf.where(apply, talking, audio)
    if aug.get("reverb_prob", 0.0) > 0:
        lo, hi = aug.reverb_rt60
        fps = d.audio_fps if d is not None else 100
        wet = tf.math.log(
            tf.maximum(_reverberate(tf.exp(audio), draw(6, lo, hi), draw(7, 0.0, 10.0), fps), 1e-10)
        )
        audio = tf.where(draw(8) < aug.reverb_prob, wet, audio)
    if aug.get("band_limit_prob", 0.0) > 0:
        lo, hi = aug.band_limit_hz
        cutoff = draw(9, lo, hi)
        hp_lo, hp_hi = aug.get("high_pass_hz", (0.0, 0.0))
        low = None
        if hp_hi > 0:
            s_hp = tf.random.experimental.stateless_fold_in(seeds[9], 1)
            low = tf.random.stateless_uniform([], s_hp, hp_lo, hp_hi)
        limited = _band_limit(audio, cutoff, low)
        apply = tf.random.stateless_uniform([], seeds[4]) < aug.band_limit_prob
        audio = tf.where(apply, limited, audio)
    if aug.gain_db:
        gain = draw(0, -aug.gain_db, aug.gain_db)
        audio = audio + gain / frontend.DB_PER_NEPER  # dB of power -> natural log.
    if aug.noise_prob > 0:
        lo, hi = aug.noise_snr_db
        tilt_lo, tilt_hi = aug.get("noise_tilt", (0.0, 0.0))
        tilt = None
        if tilt_hi > 0:  # A seed of its own: the other draws stay those of white noise.
            s_tilt = tf.random.experimental.stateless_fold_in(seeds[2], 1)
            tilt = tf.random.stateless_uniform([], s_tilt, tilt_lo, tilt_hi)
        noisy = _additive_noise(audio, draw(2, lo, hi), seeds[1], speech, tilt)
        audio = tf.where(draw(3) < aug.noise_prob, noisy, audio)
    return audio


def _add_talkers(
    audio: tf.Tensor, talkers, count: tf.Tensor, snr_db: tf.Tensor, seed: tf.Tensor, speech, d
) -> tf.Tensor:
    """[T, bins] log power plus the speech of the first `count` of `talkers` (other clips'
    [T_i, bins] log power), each its voiced frames (`data.voiced_db`) looped from a random
    frame, at the same mean power, together at `snr_db` below the mean power of the `speech`
    frames ([T] bool; all frames without it): a competing talker, or babble."""
    power = tf.exp(audio)
    frames = tf.range(tf.shape(audio)[0])
    starts = tf.random.stateless_uniform([len(talkers)], seed, 0, 2**30, dtype=tf.int32)
    babble = tf.zeros_like(power)
    for i, other in enumerate(talkers):
        voiced = other if d is None else tf.boolean_mask(other, _voiced_frames(other, d))
        speech_power = tf.exp(voiced)
        speech_power /= tf.reduce_mean(speech_power)
        looped = tf.gather(speech_power, (frames + starts[i]) % tf.shape(speech_power)[0])
        babble += tf.where(i < count, looped, 0.0)
    scale = _power_at_snr(power, speech, snr_db) / tf.cast(count, tf.float32)
    return tf.math.log(power + scale * babble)


def _power_at_snr(power: tf.Tensor, speech, snr_db: tf.Tensor) -> tf.Tensor:
    """The power `snr_db` below the mean of [T, bins] `power` over the `speech` frames ([T]
    bool; all frames without it)."""
    signal = power if speech is None else tf.boolean_mask(power, speech)
    return tf.reduce_mean(signal) / tf.pow(10.0, snr_db / 10.0)


def _band_limit(audio: tf.Tensor, cutoff_hz: tf.Tensor, high_pass_hz=None) -> tf.Tensor:
    """A channel's band on [T, bins] log power: 40 dB down over 300 Hz above `cutoff_hz`, then
    flat at -40 dB; with `high_pass_hz`, 24 dB per octave below it (4th order), at most 40 dB."""
    hz_per_bin = frontend.SAMPLE_RATE / frontend.NFFT
    k = tf.range(tf.shape(audio)[1], dtype=tf.float32)
    atten_db = (
        tf.clip_by_value((k - cutoff_hz / hz_per_bin) / (300.0 / hz_per_bin), 0.0, 1.0) * 40.0
    )
    if high_pass_hz is not None:
        octaves = tf.math.log(high_pass_hz / hz_per_bin / tf.maximum(k, 0.5)) / tf.math.log(2.0)
        atten_db += tf.clip_by_value(24.0 * octaves, 0.0, 40.0)
    return audio - atten_db / frontend.DB_PER_NEPER


def _additive_noise(
    audio: tf.Tensor, snr_db: tf.Tensor, seed: tf.Tensor, speech=None, tilt=None
) -> tf.Tensor:
    """[T, bins] log power plus noise at `snr_db` below the mean power of the `speech` frames
    ([T] bool; all frames without it), its periodogram drawn from the stateless `seed`: white,
    or with `tilt` (a scalar) coloured, its power per bin falling as 1/f^tilt with the same
    mean over the bins."""
    power = tf.exp(audio)
    noise_power = _power_at_snr(power, speech, snr_db)
    if tilt is not None:
        k = tf.maximum(tf.range(tf.shape(audio)[1], dtype=tf.float32), 1.0)  # f = k * 20 Hz
        shape = tf.pow(k, -tilt)
        noise_power = noise_power * shape / tf.reduce_mean(shape)
    # The periodogram of white noise is exponentially distributed around its power.
    u = tf.random.stateless_uniform(tf.shape(audio), seed, 1e-7, 1.0)
    return tf.math.log(power + noise_power * -tf.math.log(u))


SESSION_RNG_SEED = 0  # The sessions' channels are drawn once, from this numpy seed.


def session_channels(aug: ml_collections.ConfigDict | None) -> np.ndarray:
    """[N, 4] (low-pass cutoff Hz, high-pass cutoff Hz, SNR dB, noise tilt) of
    `augment.sessions` fixed channels, drawn uniformly in `band_limit_hz`, `high_pass_hz`,
    `noise_snr_db` and `session_noise_tilt` (drawn last: a tilt range leaves the others as
    they were)."""
    n = int(aug.get("sessions", 0)) if aug is not None else 0
    if not n:
        return np.zeros((0, 4))
    rng = np.random.default_rng(SESSION_RNG_SEED)
    ranges = (
        aug.band_limit_hz,
        aug.get("high_pass_hz", (0.0, 0.0)),
        aug.noise_snr_db,
        aug.get("session_noise_tilt", (0.0, 0.0)),
    )
    return np.stack([rng.uniform(lo, hi, n) for lo, hi in ranges], 1)


def _session(audio: tf.Tensor, channel: tf.Tensor, seed: tf.Tensor, d) -> tf.Tensor:
    """A whole clip's [T, bins] log power recorded through a session's `channel` (a row of
    `session_channels`): band-limited, then noise relative to its voiced frames (white, or
    coloured by the channel's tilt)."""
    high_pass = tf.where(channel[1] > 0, channel[1], 1e-3)  # 0 Hz: no high-pass (no log 0).
    limited = _band_limit(audio, channel[0], high_pass)
    speech = _voiced_frames(limited, d)
    return _additive_noise(limited, channel[2], seed, speech, tilt=channel[3])


def _mask_spans(x: tf.Tensor, axis: int, count: int, max_width: int, limit, seed) -> tf.Tensor:
    """Zeroes `count` spans of width U[0, max_width] along `axis` (0: time, 1: features),
    starting in [0, limit - width] (SpecAugment)."""
    n = tf.shape(x)[axis]
    pos = tf.range(n)
    keep = tf.ones([n], tf.bool)
    for s in tf.unstack(tf.random.experimental.stateless_split(seed, count)):
        s_w, s_start = tf.unstack(tf.random.experimental.stateless_split(s, 2))
        width = tf.random.stateless_uniform([], s_w, 0, max_width + 1, dtype=tf.int32)
        width = tf.minimum(width, limit)
        start = tf.random.stateless_uniform([], s_start, 0, limit - width + 1, dtype=tf.int32)
        keep &= ~((pos >= start) & (pos < start + width))
    keep = keep[:, None] if axis == 0 else keep[None, :]
    return tf.where(keep, x, tf.zeros_like(x))


LOG_POWER_AUGMENTS = (
    "gain_db",
    "noise_prob",
    "freq_warp",
    "reverb_prob",
    "band_limit_prob",
    "talker_prob",
)


def _uses_log_power_augment(aug) -> bool:
    return aug is not None and any(aug.get(k, 0) > 0 for k in LOG_POWER_AUGMENTS)


def frame_level(log_power: tf.Tensor, d: ml_collections.ConfigDict) -> tf.Tensor:
    """frontend.frame_level over `frontend.level_bins` in TensorFlow: [T, bins] -> [T]."""
    return tf.reduce_logsumexp(log_power[:, frontend.level_bins(d)], axis=1)


def _voiced_frames(log_power: tf.Tensor, d: ml_collections.ConfigDict) -> tf.Tensor:
    """frontend.voiced_levels of [T, bins] log power in TensorFlow: [T] frames within
    `voiced_db` of the loudest and (`voiced_floor_db`) above the noise floor, or within its
    span (`voiced_floor_span`), and within the span of `voiced_span_db` (and its reach)."""
    threshold_db, floor_db, floor_span, margin, span_db, reach, reach_db = frontend.voiced_settings(
        d
    )
    level = frame_level(log_power, d)
    if threshold_db <= 0:
        return tf.ones(tf.shape(level), tf.bool)
    voiced = level >= tf.reduce_max(level) - threshold_db / frontend.DB_PER_NEPER
    index = tf.range(tf.shape(level)[0])

    reaching = span_db > 0 and reach > 0
    if reaching or floor_db > 0:  # frontend._noise_floor
        n = tf.cast(tf.size(level) - 1, tf.float64)
        floor = tf.sort(level)[tf.cast(frontend.NOISE_FLOOR_QUANTILE * n, tf.int32)]

    def within_span(voiced, bound, margin=margin):  # frontend._within_span
        where = tf.cast(tf.where(bound)[:, 0], tf.int32)
        return voiced & (index >= where[0] - margin) & (index <= where[-1] + margin)

    if span_db > 0:
        loud = level >= tf.reduce_max(level) - span_db / frontend.DB_PER_NEPER
        span = within_span(tf.ones_like(voiced), loud)
        if reaching:
            quiet_edge = level >= floor + reach_db / frontend.DB_PER_NEPER
            span |= within_span(quiet_edge, loud, reach)
        voiced = within_span(voiced, span, 0)
    if floor_db > 0:
        above = tf.logical_and(voiced, level >= floor + floor_db / frontend.DB_PER_NEPER)
        chosen = (lambda: within_span(voiced, above)) if floor_span else (lambda: above)
        voiced = tf.cond(tf.reduce_any(above), chosen, lambda: voiced)
    return voiced


def _trim_to_voiced(audio, video, video_valid, d):
    """frontend.clip_view's trimming in TensorFlow: both streams cut to the clip's voiced span
    (with `data.voiced_db`), and the voiced frames of what is left (found on the whole clip,
    so that the noise floor is the pauses' where there are pauses)."""
    voiced = _voiced_frames(audio, d)
    if not d.get("voiced_db", 0.0):
        return audio, video, video_valid, voiced
    ratio = d.audio_fps // d.video_fps
    where = tf.cast(tf.where(voiced)[:, 0], tf.int32)
    n = tf.shape(audio)[0]
    first = tf.cond(tf.size(where) > 0, lambda: where[0], lambda: 0) // ratio
    last = tf.cond(tf.size(where) > 0, lambda: where[-1] + 1, lambda: n)
    end = -(-last // ratio)
    audio = audio[first * ratio : end * ratio]
    voiced = voiced[first * ratio : end * ratio]
    video = video[first:end]
    video_valid = None if video_valid is None else video_valid[first:end]
    return audio, video, video_valid, voiced


def clip_level(audio: tf.Tensor, voiced: tf.Tensor, d: ml_collections.ConfigDict) -> tf.Tensor:
    """The level shift of a (trimmed) clip's stored log power: with `data.level_norm` the mean
    log frame power over its `voiced` frames (subtracted from every bin; 0 without it)."""
    if not d.get("level_norm", False):
        return tf.constant(0.0)
    return tf.reduce_mean(tf.boolean_mask(frame_level(audio, d), voiced))


def level_and_floor(audio: tf.Tensor, shift: tf.Tensor, d: ml_collections.ConfigDict) -> tf.Tensor:
    """The stored log power minus the clip's level `shift`, floored with
    `data.spectral_floor_db` (frontend.clip_view's last steps before the view)."""
    audio = audio - shift
    floor = frontend.spectral_floor_log(d)
    if floor is None:
        return audio
    return tf.experimental.numpy.logaddexp(audio, tf.cast(floor, audio.dtype))


def preprocess(
    example: dict[str, tf.Tensor],
    *,
    data_config: ml_collections.ConfigDict,
    stats: dict[str, np.ndarray] | Normalizer | None,
    train: bool,
    seed: tf.Tensor | None = None,
    augment: ml_collections.ConfigDict | None = None,
    view: int = 0,
) -> dict[str, tf.Tensor]:
    """Crops both streams at the same instant, standardises, pads and adds masks.

    With `data.voiced_db` the clip is first trimmed to its voiced span, and with
    `data.level_norm` its level is measured on the whole (trimmed) clip (`frontend.clip_view`
    is the same in numpy). The crop starts on a video frame, so that audio frame 4k and video
    frame k stay aligned. Training crops at a random offset (from a stateless `seed`);
    evaluation crops the centre. Only the cropped frames are processed further (the view, the
    standardisation), and the padding added last stays zero. With `augment` (training only):
    the condition changes of `_augment_log_power` on the stored log power of the crop, before
    the level shift, the view and the standardisation (with `augment.whole_clip` on the whole
    clip instead, before its voiced span and level are found, as a changed recording reaches
    serving; noise then at an SNR relative to the clean clip's voiced frames), then
    SpecAugment time and frequency masks on the standardised audio (masked values are 0, the
    mean). With `augment.sessions`, a share `session_prob` of clips is instead recorded whole
    through one of the sessions' channels (`session_channels`) and standardised with its
    speaker's statistics in that session (the 'speaker@k' rows of `with_session_stats`).
    With `augment.talker_prob`, the example's `talkers` (other clips' log power, which
    `create_train_dataset` brings) are the other people talking. `view` > 0 keeps the crop
    that `seed` draws and draws the augmentation afresh (another view of the same crop, for
    `augment.consistency_weight`).
    """
    d = data_config
    ratio = d.audio_fps // d.video_fps
    ta, tv = frontend.clip_frames(d)
    audio, video = example["audio"], example["video"]
    video_valid = example.get("video_valid") if d.use_video_valid else None
    aug = augment if train else None
    if train:
        seed_crop, seed_aug, seed_mask = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
        if view:
            seed_aug, seed_mask = (
                tf.random.experimental.stateless_fold_in(x, view) for x in (seed_aug, seed_mask)
            )
    changes = _uses_log_power_augment(aug)
    whole_clip = changes and aug.get("whole_clip", False)
    talkers = example.get("talkers", ())  # Other clips' log power, from the training stream.
    if whole_clip:  # The changed recording, then everything serving does to a recording.
        audio = _augment_log_power(
            audio, aug, seed_aug, d, speech=_voiced_frames(audio, d), talkers=talkers
        )
    speaker, in_session = example.get("speaker"), None
    channels = session_channels(aug)
    if len(channels):  # The speaker recorded in one of its sessions, with their statistics.
        session_seed = tf.random.experimental.stateless_fold_in(seed_aug, 7)
        s_pick, s_noise = tf.unstack(tf.random.experimental.stateless_split(session_seed, 2))
        u = tf.random.stateless_uniform([2], s_pick)
        k = tf.minimum(tf.cast(u[1] * len(channels), tf.int32), len(channels) - 1)
        in_session = u[0] < aug.get("session_prob", 0.5)
        recorded = _session(audio, tf.gather(tf.constant(channels, tf.float32), k), s_noise, d)
        audio = tf.where(in_session, recorded, audio)
        speaker = tf.where(in_session, session_speaker(speaker, k), speaker)
    audio, video, video_valid, voiced = _trim_to_voiced(audio, video, video_valid, d)
    shift = clip_level(audio, voiced, d)
    n_units = tf.minimum(tf.shape(video)[0], -(-tf.shape(audio)[0] // ratio))
    slack = tf.maximum(n_units - tv, 0)
    if train:
        start = tf.random.stateless_uniform([], seed_crop, 0, slack + 1, dtype=tf.int32)
    else:
        start = slack // 2
    audio = audio[start * ratio : start * ratio + ta]
    video = video[start : start + tv]
    if changes and not whole_clip:  # A session's clip keeps its session's channel only.
        changed = _augment_log_power(audio, aug, seed_aug, d, talkers=talkers)
        audio = changed if in_session is None else tf.where(in_session, audio, changed)
    audio = audio_view(level_and_floor(audio, shift, d), d)
    normalizer = _as_normalizer(stats)
    if normalizer is not None:
        audio, video = normalizer(audio, video, speaker)
    audio, audio_mask = _crop_or_pad(audio, 0, ta)
    video, video_mask = _crop_or_pad(video, 0, tv)
    if aug is not None and (aug.time_masks or aug.freq_masks):
        s_time, s_freq = tf.unstack(tf.random.experimental.stateless_split(seed_mask, 2))
        valid = tf.reduce_sum(tf.cast(audio_mask, tf.int32))
        if aug.time_masks:
            audio = _mask_spans(audio, 0, aug.time_masks, aug.time_mask_frames, valid, s_time)
        if aug.freq_masks:
            bins = frontend.audio_feature_size(d)
            audio = _mask_spans(audio, 1, aug.freq_masks, aug.freq_mask_bins, bins, s_freq)
    if video_valid is not None:
        valid, _ = _crop_or_pad(video_valid, start, tv)
        video_mask = tf.logical_and(video_mask, valid)
    return {
        "audio": tf.ensure_shape(audio, [ta, frontend.audio_feature_size(d)]),
        "audio_mask": audio_mask,
        "video": tf.ensure_shape(video, [tv, *d.video_shape]),
        "video_mask": video_mask,
        "label": tf.cast(example["label"], tf.int32),
        "mask": tf.constant(1, tf.int32),
    }


def session_speaker(speaker, k):
    """The statistics key of `speaker` recorded in session `k`: 'speaker@k'."""
    return tf.strings.join([speaker, tf.strings.as_string(k)], "@")


def _stats_view(example: dict[str, tf.Tensor], d: ml_collections.ConfigDict, channel=None) -> dict:
    """A whole clip for the statistics: `frontend.clip_view` in TensorFlow (trimmed to its
    voiced span, level-normalised, in the audio view) with its voiced frames; with `channel`
    (a row of `session_channels`), as recorded through it."""
    audio, video = example["audio"], example["video"]
    if channel is not None:
        audio = _session(audio, tf.constant(channel, tf.float32), tf.constant([0, 0]), d)
    audio, video, _, voiced = _trim_to_voiced(audio, video, None, d)
    shift = clip_level(audio, voiced, d)
    return {
        "audio": audio_view(level_and_floor(audio, shift, d), d),
        "voiced": voiced,
        "video": video,
        "speaker": example["speaker"],
    }


def compute_stats(
    builder: tfds.core.DatasetBuilder,
    split: str,
    data_config: ml_collections.ConfigDict | None = None,
    *,
    by_speaker: bool = False,
    channel: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-feature mean and std of audio (in the config's frontend view, over voiced frames
    with `data.voiced_db`) and video frames.

    Args:
      builder: prepared TFDS builder.
      split: TFDS split (arithmetic allowed).
      data_config: `config.data` (its frontend); None reads the stored features as they are.
      by_speaker: one row of statistics per speaker of the split (no labels are read), with
        the speaker ids in `speakers`; else one over the whole split.
      channel: the clips as recorded through this session channel (`session_channels`).

    Returns:
      `{audio,video}_{mean,std}` float32 arrays ([F], or [S, F] with `speakers` [S]).
    """
    sums: dict[str, dict[str, list]] = {}
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(
        lambda e: _stats_view(e, data_config, channel) if data_config is not None else e,
        tf.data.AUTOTUNE,
    )
    for ex in tfds.as_numpy(ds):
        key = ex["speaker"].decode() if by_speaker else ""
        acc = sums.setdefault(key, {})
        voiced = ex.get("voiced")
        for stream in ("audio", "video"):
            x = ex[stream].astype(np.float64)
            if stream == "audio" and voiced is not None:
                x = x[voiced]
            s = acc.setdefault(stream, [0, 0.0, 0.0])
            s[0] += x.shape[0]
            s[1] = s[1] + x.sum(0)
            s[2] = s[2] + np.square(x).sum(0)
    if not sums:
        raise ValueError(f"split {split!r} of {builder.name} has no examples")

    def finish(acc):
        out = {}
        for stream, (n, s1, s2) in acc.items():
            mean = s1 / max(n, 1)
            std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
            out[f"{stream}_mean"] = mean.astype(np.float32)
            out[f"{stream}_std"] = np.maximum(std, frontend.STD_FLOOR).astype(np.float32)
        return out

    if not by_speaker:
        return finish(sums[""])
    speakers = sorted(sums)
    rows = [finish(sums[s]) for s in speakers]
    stats = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    stats["speakers"] = np.array(speakers)
    return stats


def load_or_compute_stats(
    builder: tfds.core.DatasetBuilder,
    split: str,
    workdir: str | None,
    data_config: ml_collections.ConfigDict | None = None,
) -> dict[str, np.ndarray]:
    """Statistics cached in `workdir/norm_stats.npz`, so evaluation and resumes reuse them.

    With `data.speaker_norm` they are per speaker of `split` (the training speakers).
    """
    path = os.path.join(workdir, "norm_stats.npz") if workdir else None
    if path and os.path.exists(path):
        with np.load(path) as f:
            return dict(f)
    by_speaker = bool(data_config is not None and data_config.get("speaker_norm", False))
    stats = compute_stats(builder, split, data_config, by_speaker=by_speaker)
    if path and jax.process_index() == 0:
        io.atomic_write(path, lambda f: np.savez(f, **stats), mode="wb")
    return stats


def with_session_stats(
    builder: tfds.core.DatasetBuilder,
    split: str,
    data_config: ml_collections.ConfigDict,
    stats: dict[str, np.ndarray],
    augment: ml_collections.ConfigDict | None,
) -> dict[str, np.ndarray]:
    """Per-speaker `stats` of `split` and, with `augment.sessions`, each of its speakers'
    statistics in each session (rows 'speaker@k'): what standardises a training clip drawn
    from a session, as serving standardises a speaker recorded through one channel with that
    recording's own statistics. Training only: not cached, not exported."""
    channels = session_channels(augment)
    if not len(channels):
        return stats
    if "speakers" not in stats:
        raise ValueError("augment.sessions needs per-speaker statistics (data.speaker_norm)")
    parts = [stats]
    for k, channel in enumerate(channels):
        part = compute_stats(builder, split, data_config, by_speaker=True, channel=channel)
        part["speakers"] = np.array([f"{s}@{k}" for s in part["speakers"]])
        parts.append(part)
    return {key: np.concatenate([p[key] for p in parts]) for key in stats}


SPEAKER_STATS = ("own", "training")


def split_stats(
    builder: tfds.core.DatasetBuilder,
    data_config: ml_collections.ConfigDict,
    split: str,
    train_stats: dict[str, np.ndarray] | None,
) -> dict[str, np.ndarray] | None:
    """The statistics that standardise `split`: the training split's, or, with
    `data.speaker_norm`, those of the split's own speakers (computed from its unlabelled
    features: per-speaker standardisation needs several clips of each speaker), or with
    `data.speaker_stats = 'training'` the training speakers' pooled (no statistics of the
    evaluated speakers at all)."""
    if train_stats is None or not data_config.get("speaker_norm", False):
        return train_stats
    which = data_config.get("speaker_stats", "own")
    if which not in SPEAKER_STATS:
        raise ValueError(f"data.speaker_stats must be one of {SPEAKER_STATS}, got {which!r}")
    if which == "training":
        return frontend.pooled_statistics(train_stats)
    return compute_stats(builder, split, data_config, by_speaker=True)


def _padding_example(d: ml_collections.ConfigDict) -> dict[str, tf.Tensor]:
    ta, tv = frontend.clip_frames(d)
    return {
        "audio": tf.zeros([ta, frontend.audio_feature_size(d)]),
        "audio_mask": tf.zeros([ta], tf.bool),
        "video": tf.zeros([tv, *d.video_shape]),
        "video_mask": tf.zeros([tv], tf.bool),
        "label": tf.constant(0, tf.int32),
        "mask": tf.constant(0, tf.int32),
    }


def create_eval_dataset(
    builder: tfds.core.DatasetBuilder,
    data_config: ml_collections.ConfigDict,
    split: str,
    batch_size: int,
    stats: dict[str, np.ndarray] | None,
    *,
    keep_ids: bool = False,
) -> tf.data.Dataset:
    """Deterministic batches covering this process's share of `split` exactly once.

    The last batch is completed with `mask = 0` examples, and every process yields the same
    number of batches (needed by collective evaluation on several hosts).

    Args:
      builder: prepared TFDS builder.
      data_config: `config.data`.
      split: TFDS split (arithmetic allowed).
      batch_size: examples per batch on this process.
      stats: normalisation statistics, or None.
      keep_ids: also yield `clip_id` and `speaker` (bytes; '' for padding), for per-clip
        outputs.
    """
    total = builder.info.splits[split].num_examples
    per_process = -(-total // jax.process_count())
    num_batches = -(-per_process // batch_size)
    normalizer = _as_normalizer(split_stats(builder, data_config, split, stats))
    ds = builder.as_dataset(
        split=tfds.split_for_jax_process(split, drop_remainder=False), shuffle_files=False
    )

    def fn(ex):
        out = preprocess(ex, data_config=data_config, stats=normalizer, train=False)
        if keep_ids:
            out["clip_id"], out["speaker"] = ex["clip_id"], ex["speaker"]
        return out

    ds = ds.map(fn, tf.data.AUTOTUNE)
    pad = _padding_example(data_config)
    if keep_ids:
        pad["clip_id"] = pad["speaker"] = tf.constant("")
    ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat())
    ds = ds.take(num_batches * batch_size).batch(batch_size)
    return ds.cache().prefetch(tf.data.AUTOTUNE) if data_config.cache else ds.prefetch(2)


def create_train_dataset(
    builder: tfds.core.DatasetBuilder,
    data_config: ml_collections.ConfigDict,
    split: str,
    batch_size: int,
    stats: dict[str, np.ndarray] | None,
    seed: int,
    augment: ml_collections.ConfigDict | None = None,
    start_step: int = 0,
    *,
    fusion: str,
) -> tf.data.Dataset:
    """Endless batches of this process's shard of `split`: random crops and the input
    augmentations of `augment` (config.augment).

    The stream is a function of `seed` alone: epoch e is the split shuffled with seed
    (seed, e), each example's crop and augmentation drawn from (seed, e, its position), and
    batches never straddle two epochs (the last partial batch of an epoch is dropped); with
    `augment.talker_prob` each example also brings `augment.talkers` other clips of the
    split, from shuffles seeded by (seed, e) as well; with `augment.consistency_weight` each
    example also holds a second view of its crop (`frontend.SECOND_VIEW` keys): the inputs
    `frontend.model_inputs` gives the model `fusion`. So `start_step` can position the stream
    exactly where a killed run left it.
    """
    normalizer = _as_normalizer(stats)
    ds = builder.as_dataset(
        split=tfds.split_for_jax_process(split),
        shuffle_files=True,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    keys = ("audio", "video", "video_valid", "label", "speaker")
    ds = ds.map(lambda e: {k: e[k] for k in keys}, tf.data.AUTOTUNE)
    if data_config.cache:
        ds = ds.cache()
    num_examples = builder.info.splits[split].num_examples // jax.process_count()
    steps_per_epoch = max(1, num_examples // batch_size)
    first_epoch, skip = divmod(start_step, steps_per_epoch)
    buffer = min(data_config.shuffle_buffer, max(num_examples, 1))

    talkers = augment.talkers if augment is not None and augment.get("talker_prob", 0) else 0
    two_views = augment is not None and augment.get("consistency_weight", 0) > 0

    def views(ex, s):
        view = functools.partial(
            preprocess,
            ex,
            data_config=data_config,
            stats=normalizer,
            train=True,
            seed=s,
            augment=augment,
        )
        out = view()
        if two_views:  # The same crop, its augmentation drawn again.
            second = view(view=1)
            inputs = frontend.model_inputs(second, fusion)
            out.update({frontend.SECOND_VIEW + k: v for k, v in inputs.items()})
        return out

    def epoch(e):
        epoch_seed = tf.cast(seed, tf.int64) * 1_000_003 + e
        shuffled = ds.shuffle(buffer, seed=epoch_seed)
        if talkers:  # Each clip meets `talkers` others, drawn by shuffles of their own.
            others = tuple(
                ds.shuffle(buffer, seed=epoch_seed * 31 + i + 1).repeat().map(lambda o: o["audio"])
                for i in range(talkers)
            )
            shuffled = tf.data.Dataset.zip((shuffled, others)).map(
                lambda ex, t: {**ex, "talkers": t}
            )
        shuffled = shuffled.enumerate().map(
            lambda i, ex: (ex, tf.stack([tf.cast(seed, tf.int64), e * 10_000_000 + i])),
            tf.data.AUTOTUNE,
        )
        shuffled = shuffled.map(views, tf.data.AUTOTUNE)
        return shuffled.batch(batch_size, drop_remainder=True)

    out = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)
    return out.prefetch(tf.data.AUTOTUNE)


def create_datasets(config: ml_collections.ConfigDict, workdir: str | None) -> Datasets:
    """Training and evaluation data of a config; statistics cached in `workdir`."""
    d = config.data
    builder = prepared_builder(d)
    stats = load_or_compute_stats(builder, d.train_split, workdir, d) if d.normalize else None
    batch = parallel.local_batch_size(config.batch_size)

    augment = config.get("augment")
    train_stats = (
        None if stats is None else with_session_stats(builder, d.train_split, d, stats, augment)
    )

    def train_iter(seed: int, start_step: int = 0):
        ds = create_train_dataset(
            builder,
            d,
            d.train_split,
            batch,
            train_stats,
            seed,
            augment,
            start_step,
            fusion=config.model.fusion,
        )
        return iter(tfds.as_numpy(ds))

    eval_ds = create_eval_dataset(builder, d, d.eval_split, batch, stats)  # Cached once.

    def eval_batches():
        return iter(tfds.as_numpy(eval_ds))

    splits = builder.info.splits
    sizes = {"train": splits[d.train_split].num_examples, "eval": splits[d.eval_split].num_examples}
    if d.get("test_split"):
        sizes["test"] = splits[d.test_split].num_examples
    return Datasets(
        train_examples=sizes["train"],
        eval_examples=sizes["eval"],
        steps_per_epoch=max(1, sizes["train"] // jax.process_count() // batch),
        train_iter=train_iter,
        eval_batches=eval_batches,
        stats=stats,
        class_names=tuple(builder.info.features["label"].names),
        split_sizes=sizes,
    )
