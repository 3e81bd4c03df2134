"""tf.data pipeline over the TFDS records of the tiny synthetic corpus."""

import numpy as np
import pytest
import tensorflow as tf

from fbp_jax import input_pipeline, parallel
from tests.conftest import tiny_train_config


def test_train_batches_shapes_masks_and_sharding(tiny_data_dir):
    config = tiny_train_config(tiny_data_dir)
    data = input_pipeline.create_datasets(config, None)
    assert data.train_examples == 112 and data.eval_examples == 56
    batch = next(data.train_iter(seed=0))
    assert set(batch) == set(input_pipeline.BATCH_KEYS)
    assert batch["audio"].shape == (16, 120, 40)
    assert batch["video"].shape == (16, 30, 32)
    assert batch["audio_mask"].dtype == bool and batch["mask"].sum() == 16
    # Valid audio frames come first, and the streams cover the same span (4 audio per video).
    for am, vm in zip(batch["audio_mask"], batch["video_mask"]):
        n = am.sum()
        assert am[:n].all() and not am[n:].any()
        assert abs(int(np.ceil(n / 4)) - vm.sum()) <= 1
    assert np.all(batch["audio"][~batch["audio_mask"]] == 0)
    sharded = parallel.shard(batch)
    assert sharded["audio"].shape[:2] == (1, 16)
    # The same seed gives the same batches (reproducible crops and shuffling).
    again = next(data.train_iter(seed=0))
    np.testing.assert_array_equal(batch["audio"], again["audio"])


def test_evaluation_covers_every_example_once(tiny_data_dir):
    config = tiny_train_config(tiny_data_dir)
    builder = input_pipeline.prepared_builder(config.data)
    ds = input_pipeline.create_eval_dataset(
        builder, config.data, "validation", 16, None, keep_ids=True
    )
    batches = list(ds.as_numpy_iterator())
    ids = np.concatenate([b["clip_id"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert len(batches) == 4 and len(ids) == 64  # 56 examples + 8 padding
    assert mask.sum() == 56 and len(set(ids[mask == 1])) == 56
    assert np.all(ids[mask == 0] == b"")
    for b in batches:  # Padding examples have empty masks.
        assert not b["audio_mask"][b["mask"] == 0].any()
    # Deterministic: a second pass is identical.
    again = list(ds.as_numpy_iterator())
    np.testing.assert_array_equal(batches[0]["audio"], again[0]["audio"])


def test_eval_crop_is_centred_and_aligned(tiny_data_dir):
    config = tiny_train_config(tiny_data_dir)
    with config.unlocked():
        config.data.clip_seconds = 0.4  # Shorter than most clips: they get cropped.
    ta, tv = 40, 10
    example = {
        "audio": tf.reshape(tf.range(100 * 2, dtype=tf.float32), [100, 2]),
        "video": tf.reshape(tf.range(25 * 3, dtype=tf.float32), [25, 3]),
        "video_valid": tf.ones([25], tf.bool),
        "label": tf.constant(3, tf.int64),
    }
    with config.unlocked():
        config.data.num_bins = 2
        config.data.video_shape = (3,)
    out = input_pipeline.preprocess(example, data_config=config.data, stats=None, train=False)
    start_v = (25 - tv) // 2
    np.testing.assert_array_equal(out["video"].numpy()[:, 0], np.arange(start_v, start_v + tv) * 3)
    np.testing.assert_array_equal(
        out["audio"].numpy()[:, 0], np.arange(4 * start_v, 4 * start_v + ta) * 2
    )
    assert out["audio_mask"].numpy().all() and out["video_mask"].numpy().all()


def test_statistics_come_from_the_training_split(tiny_data_dir, tmp_path):
    from data_prep.builders import synthetic

    config = tiny_train_config(tiny_data_dir)
    builder = input_pipeline.prepared_builder(config.data)
    stats = input_pipeline.load_or_compute_stats(builder, "train", str(tmp_path))
    cfg = builder.builder_config
    audio = np.concatenate(
        [synthetic.generate_example(cfg, "train", i)["audio"] for i in range(112)]
    )
    np.testing.assert_allclose(stats["audio_mean"], audio.mean(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats["audio_std"], audio.std(0), rtol=1e-3, atol=1e-4)
    cached = input_pipeline.load_or_compute_stats(None, "train", str(tmp_path))
    np.testing.assert_array_equal(cached["audio_mean"], stats["audio_mean"])


def test_unknown_or_unprepared_dataset_names_where_it_looked(tmp_path):
    config = tiny_train_config(str(tmp_path))
    with pytest.raises(input_pipeline.DatasetNotPreparedError, match=str(tmp_path)):
        input_pipeline.prepared_builder(config.data)
    with config.unlocked():
        config.data.name = "afew"
    with pytest.raises(input_pipeline.DatasetNotPreparedError, match="tasks.sh demo"):
        input_pipeline.prepared_builder(config.data)
