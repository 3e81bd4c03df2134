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


def audio_view(audio: tf.Tensor, data_config: ml_collections.ConfigDict) -> tf.Tensor:
    """The model's view of the stored log-power spectrogram (frontend.audio_view, in tf)."""
    if data_config.get("frontend", "linear") == "linear":
        return audio
    frontend.audio_feature_size(data_config)  # Validates the name.
    fb = tf.constant(frontend.mel_matrix(data_config.num_bins, data_config.num_mel))
    return tf.math.log(tf.maximum(tf.matmul(tf.exp(audio), fb), frontend.MEL_FLOOR))


def _augment_log_power(audio: tf.Tensor, aug, seed: tf.Tensor) -> tf.Tensor:
    """Random gain and additive white noise on a [T, bins] natural-log power spectrogram."""
    s_gain, s_noise, s_snr, s_draw = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    if aug.gain_db:
        gain = tf.random.stateless_uniform([], s_gain, -aug.gain_db, aug.gain_db)
        audio = audio + gain * (np.log(10.0) / 10.0)  # dB of power -> natural log.
    if aug.noise_prob > 0:
        lo, hi = aug.noise_snr_db
        snr = tf.random.stateless_uniform([], s_snr, lo, hi)
        power = tf.exp(audio)
        noise_power = tf.reduce_mean(power) / tf.pow(10.0, snr / 10.0)
        # The periodogram of white noise is exponentially distributed around its power.
        u = tf.random.stateless_uniform(tf.shape(audio), s_noise, 1e-7, 1.0)
        noisy = tf.math.log(power + noise_power * -tf.math.log(u))
        apply = tf.random.stateless_uniform([], s_draw) < aug.noise_prob
        audio = tf.where(apply, noisy, audio)
    return audio


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


def _uses_log_power_augment(aug) -> bool:
    return aug is not None and (aug.get("gain_db", 0) or aug.get("noise_prob", 0) > 0)


def preprocess(
    example: dict[str, tf.Tensor],
    *,
    data_config: ml_collections.ConfigDict,
    stats: dict[str, np.ndarray] | Normalizer | None,
    train: bool,
    seed: tf.Tensor | None = None,
    augment: ml_collections.ConfigDict | None = None,
) -> dict[str, tf.Tensor]:
    """Crops both streams at the same instant, standardises, pads and adds masks.

    The crop starts on a video frame, so that audio frame 4k and video frame k stay aligned.
    Training crops at a random offset (from a stateless `seed`); evaluation crops the centre.
    Only the cropped frames are processed further (the view, the standardisation), and the
    padding added last stays zero. With `augment` (training only): random gain and additive
    noise on the stored log power of the crop (the noise level relative to the crop's mean
    power), before the view and the standardisation, then SpecAugment time and frequency
    masks on the standardised audio (masked values are 0, the mean).
    """
    d = data_config
    ratio = d.audio_fps // d.video_fps
    ta, tv = frontend.clip_frames(d)
    audio, video = example["audio"], example["video"]
    aug = augment if train else None
    if train:
        seed_crop, seed_aug, seed_mask = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    n_units = tf.minimum(tf.shape(video)[0], -(-tf.shape(audio)[0] // ratio))
    slack = tf.maximum(n_units - tv, 0)
    if train:
        start = tf.random.stateless_uniform([], seed_crop, 0, slack + 1, dtype=tf.int32)
    else:
        start = slack // 2
    audio = audio[start * ratio : start * ratio + ta]
    video = video[start : start + tv]
    if _uses_log_power_augment(aug):
        audio = _augment_log_power(audio, aug, seed_aug)
    audio = audio_view(audio, d)
    normalizer = _as_normalizer(stats)
    if normalizer is not None:
        audio, video = normalizer(audio, video, example.get("speaker"))
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
    if d.use_video_valid:
        valid, _ = _crop_or_pad(example["video_valid"], start, tv)
        video_mask = tf.logical_and(video_mask, valid)
    return {
        "audio": tf.ensure_shape(audio, [ta, frontend.audio_feature_size(d)]),
        "audio_mask": audio_mask,
        "video": tf.ensure_shape(video, [tv, *d.video_shape]),
        "video_mask": video_mask,
        "label": tf.cast(example["label"], tf.int32),
        "mask": tf.constant(1, tf.int32),
    }


def compute_stats(
    builder: tfds.core.DatasetBuilder,
    split: str,
    data_config: ml_collections.ConfigDict | None = None,
    *,
    by_speaker: bool = False,
) -> dict[str, np.ndarray]:
    """Per-feature mean and std of audio (in the config's frontend view) and video frames.

    Args:
      builder: prepared TFDS builder.
      split: TFDS split (arithmetic allowed).
      data_config: `config.data` (its frontend); None reads the stored features as they are.
      by_speaker: one row of statistics per speaker of the split (no labels are read), with
        the speaker ids in `speakers`; else one over the whole split.

    Returns:
      `{audio,video}_{mean,std}` float32 arrays ([F], or [S, F] with `speakers` [S]).
    """
    sums: dict[str, dict[str, list]] = {}
    ds = builder.as_dataset(split=split, shuffle_files=False)
    view = (lambda a: audio_view(a, data_config)) if data_config is not None else tf.identity
    ds = ds.map(
        lambda e: {"audio": view(e["audio"]), "video": e["video"], "speaker": e["speaker"]},
        tf.data.AUTOTUNE,
    )
    for ex in tfds.as_numpy(ds):
        key = ex["speaker"].decode() if by_speaker else ""
        acc = sums.setdefault(key, {})
        for stream in ("audio", "video"):
            x = ex[stream].astype(np.float64)
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
            out[f"{stream}_std"] = np.maximum(std, 1e-3).astype(np.float32)
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
      keep_ids: also yield `clip_id` (bytes; '' for padding), for per-clip outputs.
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
            out["clip_id"] = ex["clip_id"]
        return out

    ds = ds.map(fn, tf.data.AUTOTUNE)
    pad = _padding_example(data_config)
    if keep_ids:
        pad["clip_id"] = tf.constant("")
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
) -> tf.data.Dataset:
    """Endless batches of this process's shard of `split`: random crops and the input
    augmentations of `augment` (config.augment).

    The stream is a function of `seed` alone: epoch e is the split shuffled with seed
    (seed, e), each example's crop and augmentation drawn from (seed, e, its position), and
    batches never straddle two epochs (the last partial batch of an epoch is dropped). So
    `start_step` can position the stream exactly where a killed run left it.
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

    def epoch(e):
        shuffled = ds.shuffle(buffer, seed=tf.cast(seed, tf.int64) * 1_000_003 + e)
        shuffled = shuffled.enumerate().map(
            lambda i, ex: (ex, tf.stack([tf.cast(seed, tf.int64), e * 10_000_000 + i])),
            tf.data.AUTOTUNE,
        )
        shuffled = shuffled.map(
            lambda ex, s: preprocess(
                ex, data_config=data_config, stats=normalizer, train=True, seed=s, augment=augment
            ),
            tf.data.AUTOTUNE,
        )
        return shuffled.batch(batch_size, drop_remainder=True)

    out = tf.data.Dataset.range(first_epoch, 2**62).flat_map(epoch).skip(skip)
    return out.prefetch(tf.data.AUTOTUNE)


def create_datasets(config: ml_collections.ConfigDict, workdir: str | None) -> Datasets:
    """Training and evaluation data of a config; statistics cached in `workdir`."""
    d = config.data
    builder = prepared_builder(d)
    stats = load_or_compute_stats(builder, d.train_split, workdir, d) if d.normalize else None
    batch = parallel.local_batch_size(config.batch_size)

    def train_iter(seed: int, start_step: int = 0):
        ds = create_train_dataset(
            builder, d, d.train_split, batch, stats, seed, config.get("augment"), start_step
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
