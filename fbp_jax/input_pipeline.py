"""tf.data input pipeline over the TFRecords written by the data_prep TFDS builders.

Every corpus has one schema (DESIGN.md): `audio` [Ta, bins] log spectrogram at 100 frames/s,
`video` [Tv, ...] per-frame features at 25 frames/s, `video_valid` [Tv], `label`, ids. Here both
streams are cropped (randomly for training, centred for evaluation) at the same instant and
zero-padded to `config.data.clip_seconds`, standardised with statistics of the training split,
and batched with masks. Training batches repeat forever; evaluation covers every example exactly
once, padding the last batch with `mask = 0` examples (never drop_remainder).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fbp_jax import models, parallel

BATCH_KEYS = ("audio", "audio_mask", "video", "video_mask", "label", "mask")


class DatasetNotPreparedError(FileNotFoundError):
    """The dataset of a config has not been written by data_prep yet."""


@dataclasses.dataclass
class Datasets:
    """What the training loop needs from the data.

    Attributes:
      train_examples: size of the training split (all processes).
      eval_examples: size of the evaluation split (all processes).
      train_iter: seed -> endless iterator of numpy batches [local_batch, ...].
      eval_batches: () -> iterator of numpy batches covering this process's share once.
      stats: normalisation statistics (numpy arrays).
      info: the TFDS DatasetInfo.
    """

    train_examples: int
    eval_examples: int
    train_iter: Callable[[int], Iterator[dict[str, np.ndarray]]]
    eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
    stats: dict[str, np.ndarray]
    info: Any


def _register_builders() -> None:
    """Imports the project's TFDS builders so that tfds.builder() finds them by name."""
    import data_prep.build  # noqa: F401  (registers every corpus builder)


def get_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """The prepared TFDS builder of `data_config.name`; a clear error if it is not prepared."""
    _register_builders()
    name, data_dir = data_config.name, data_config.data_dir
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
            f"  python -m data_prep.build {name} --manual_dir=<corpus as distributed> "
            f"--data_dir=<dir>\n"
            f"and pass --config.data.data_dir=<dir>; see README.md, section 'Corpora', for "
            f"which corpora are supported. To try the system without licensed data, run the "
            f"demo on the synthetic corpus: bash tasks.sh demo"
        )
    return builder


def _crop_or_pad(x: tf.Tensor, start: tf.Tensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
    """x[start:start + length] zero-padded to `length`; returns (values, boolean mask)."""
    x = x[start : start + length]
    n = tf.shape(x)[0]
    paddings = [[0, length - n]] + [[0, 0]] * (len(x.shape) - 1)
    return tf.pad(x, paddings), tf.sequence_mask(n, length)


def preprocess(
    example: dict[str, tf.Tensor],
    *,
    data_config: ml_collections.ConfigDict,
    stats: dict[str, np.ndarray] | None,
    train: bool,
    seed: tf.Tensor | None = None,
) -> dict[str, tf.Tensor]:
    """Crops both streams at the same instant, pads, standardises and adds masks.

    The crop starts on a video frame, so that audio frame 4k and video frame k stay aligned.
    Training crops at a random offset (from a stateless `seed`); evaluation crops the centre.
    """
    d = data_config
    ratio = d.audio_fps // d.video_fps
    ta, tv = models.clip_frames(d)
    audio, video = example["audio"], example["video"]
    if stats is not None:
        audio = (audio - stats["audio_mean"]) / stats["audio_std"]
        video = (video - stats["video_mean"]) / stats["video_std"]
    n_units = tf.minimum(tf.shape(video)[0], -(-tf.shape(audio)[0] // ratio))
    slack = tf.maximum(n_units - tv, 0)
    if train:
        start = tf.random.stateless_uniform([], seed, 0, slack + 1, dtype=tf.int32)
    else:
        start = slack // 2
    audio, audio_mask = _crop_or_pad(audio, start * ratio, ta)
    video, video_mask = _crop_or_pad(video, start, tv)
    if d.use_video_valid:
        valid, _ = _crop_or_pad(example["video_valid"], start, tv)
        video_mask = tf.logical_and(video_mask, valid)
    return {
        "audio": tf.ensure_shape(audio, [ta, d.num_bins]),
        "audio_mask": audio_mask,
        "video": tf.ensure_shape(video, [tv, *d.video_shape]),
        "video_mask": video_mask,
        "label": tf.cast(example["label"], tf.int32),
        "mask": tf.constant(1, tf.int32),
    }


def compute_stats(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, np.ndarray]:
    """Per-feature mean and std of audio and video frames over a (training) split."""
    sums: dict[str, list[np.ndarray]] = {}
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda e: {"audio": e["audio"], "video": e["video"]}, tf.data.AUTOTUNE)
    for ex in tfds.as_numpy(ds):
        for key in ("audio", "video"):
            x = ex[key].astype(np.float64)
            s = sums.setdefault(key, [0, 0.0, 0.0])
            s[0] += x.shape[0]
            s[1] = s[1] + x.sum(0)
            s[2] = s[2] + np.square(x).sum(0)
    stats = {}
    for key, (n, s1, s2) in sums.items():
        mean = s1 / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
        stats[f"{key}_mean"] = mean.astype(np.float32)
        stats[f"{key}_std"] = np.maximum(std, 1e-3).astype(np.float32)
    return stats


def load_or_compute_stats(
    builder: tfds.core.DatasetBuilder, split: str, workdir: str | None
) -> dict[str, np.ndarray]:
    """Statistics cached in `workdir/norm_stats.npz`, so evaluation and resumes reuse them."""
    path = os.path.join(workdir, "norm_stats.npz") if workdir else None
    if path and os.path.exists(path):
        with np.load(path) as f:
            return dict(f)
    stats = compute_stats(builder, split)
    if path and jax.process_index() == 0:
        tmp = path + ".tmp.npz"
        np.savez(tmp, **stats)
        os.replace(tmp, path)  # Never leaves a half-written file under the final name.
    return stats


def _padding_example(d: ml_collections.ConfigDict) -> dict[str, tf.Tensor]:
    ta, tv = models.clip_frames(d)
    return {
        "audio": tf.zeros([ta, d.num_bins]),
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
    ds = builder.as_dataset(
        split=tfds.split_for_jax_process(split, drop_remainder=False), shuffle_files=False
    )

    def fn(ex):
        out = preprocess(ex, data_config=data_config, stats=stats, train=False)
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
) -> tf.data.Dataset:
    """Endless shuffled batches of this process's shard of `split`, random crops."""
    ds = builder.as_dataset(
        split=tfds.split_for_jax_process(split),
        shuffle_files=True,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    ds = ds.map(
        lambda e: {k: e[k] for k in ("audio", "video", "video_valid", "label")}, tf.data.AUTOTUNE
    )
    if data_config.cache:
        ds = ds.cache()
    ds = ds.repeat().shuffle(data_config.shuffle_buffer, seed=seed)
    # One stateless seed per example, derived from the pipeline seed: reproducible crops.
    ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed).batch(2))
    ds = ds.map(
        lambda ex, s: preprocess(ex, data_config=data_config, stats=stats, train=True, seed=s),
        tf.data.AUTOTUNE,
    )
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def create_datasets(config: ml_collections.ConfigDict, workdir: str | None) -> Datasets:
    """Training and evaluation data of a config; statistics cached in `workdir`."""
    d = config.data
    builder = get_builder(d)
    stats = load_or_compute_stats(builder, d.train_split, workdir) if d.normalize else None
    batch = parallel.local_batch_size(config.batch_size)

    def train_iter(seed: int):
        ds = create_train_dataset(builder, d, d.train_split, batch, stats, seed)
        return iter(tfds.as_numpy(ds))

    eval_ds = create_eval_dataset(builder, d, d.eval_split, batch, stats)  # Cached once.

    def eval_batches():
        return iter(tfds.as_numpy(eval_ds))

    return Datasets(
        train_examples=builder.info.splits[d.train_split].num_examples,
        eval_examples=builder.info.splits[d.eval_split].num_examples,
        train_iter=train_iter,
        eval_batches=eval_batches,
        stats=stats,
        info=builder.info,
    )
