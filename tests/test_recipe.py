"""The small-data recipe, switch by switch, and the model fixes found on review.

Each switch: its shapes, that it acts only in training (masking, noise, mixup, dropout) or only
at evaluation (the weight average), and that off it changes nothing.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from configs import common, iemocap_amfbp, ravdess_amfbp, ravdess_video
from fbp_jax import input_pipeline, parallel
from fbp_jax.model import encoders, frontend, network
from fbp_jax.training import steps
from tests.test_models import init, random_batch, tiny_config
from tests.test_train_steps import labelled_batch, make_state

# ----------------------------------------------------------------------------------------------
# Model fixes


@pytest.mark.parametrize("length", [97, 101, 130])
def test_a_clip_encodes_the_same_alone_and_padded(length):
    """Steps beyond the clip are zeroed before every pool and conv, so the last valid steps
    of a clip whose length is not a multiple of the stride do not read the padding."""
    enc = encoders.FCNEncoder(
        features=(8, 8, 8, 8, 8), strides=(4, 1, 1, 1, 1), conv_impl="xla", use_lrn=True
    )
    rng = np.random.default_rng(0)
    clip = rng.standard_normal((1, length, 40, 1)).astype(np.float32)
    padded = np.concatenate([clip, rng.standard_normal((1, 160 - length, 40, 1))], axis=1)
    params = enc.init(jax.random.key(0), clip, np.ones((1, length), bool))
    alone, mask_a = enc.apply(params, clip, np.ones((1, length), bool))
    mask = np.arange(160)[None] < length
    inside, mask_p = enc.apply(params, padded.astype(np.float32), mask)
    n = int(mask_a.sum())
    assert int(mask_p.sum()) == n
    np.testing.assert_allclose(inside[:, :n], alone[:, :n], rtol=1e-5, atol=1e-6)


def test_lrn_placement_is_a_config_field():
    config = tiny_config("audio")
    batch = random_batch(config, batch=2)
    outs = {}
    for name, after, use in (
        ("all", (), True),
        ("alexnet", (True, True, False, False, False), True),
        ("none", (False,) * 5, True),
        ("off", (), False),
    ):
        with config.unlocked():
            config.model.audio.lrn_after = after
            config.model.audio.use_lrn = use
        model, params = init(config, batch)
        outs[name] = np.asarray(
            model.apply(params, frontend.model_inputs(batch, "audio"))["logits"]
        )
    np.testing.assert_allclose(outs["none"], outs["off"], rtol=1e-6)
    assert not np.allclose(outs["all"], outs["alexnet"]) and not np.allclose(
        outs["alexnet"], outs["none"]
    )
    with config.unlocked():
        config.model.audio.lrn_after = (True, False)
    with pytest.raises(ValueError, match="lrn_after has 2 entries for 5 layers"):
        init(config, batch)


def test_temperatures_follow_section_iv():
    """lambda_a = 0.3 everywhere; lambda_v = 1 for every fusion system (IEMOCAP too) and for
    AFEW's video system; 0.5 only for IEMOCAP's video system."""
    for corpus in ("afew", "iemocap"):
        for fusion in ("audio", "am_fbp", "g_fbp", "concat"):
            assert common.get_config(corpus, fusion).model.audio.temperature == 0.3
    assert iemocap_amfbp.get_config("1").model.video.temperature == 1.0
    assert common.get_config("iemocap", "video").model.video.temperature == 0.5
    assert common.get_config("afew", "video").model.video.temperature == 1.0


# ----------------------------------------------------------------------------------------------
# Input view and normalisation


def test_mel_view_in_numpy_and_tensorflow():
    fb = frontend.mel_matrix(200, 64)
    assert fb.shape == (200, 64) and np.allclose(fb.sum(0), 1.0) and (fb >= 0).all()
    d = ml_collections.ConfigDict({"frontend": "mel", "num_bins": 200, "num_mel": 64})
    t = np.arange(16000) / 16000
    from data_prep.features import audio as audio_lib

    spec = audio_lib.log_spectrogram(0.3 * np.sin(2 * np.pi * 1000 * t))
    mel = frontend.audio_view(spec, d)
    assert mel.shape == (len(spec), 64)
    # The tone's energy lands in the filter whose centre is nearest 1 kHz.
    assert abs(int(np.argmax(mel.mean(0))) - int(np.argmax(fb[50]))) <= 1
    tf_mel = input_pipeline.audio_view(tf.constant(spec), d).numpy()
    np.testing.assert_allclose(tf_mel, mel, rtol=1e-4, atol=1e-4)
    assert frontend.audio_feature_size(d) == 64
    with pytest.raises(ValueError, match="frontend"):
        frontend.audio_feature_size(ml_collections.ConfigDict({"frontend": "cqt"}))


def test_per_speaker_statistics_standardise_each_speaker(tiny_folds_data_dir):
    from tests.conftest import tiny_folds_config

    config = tiny_folds_config(tiny_folds_data_dir, "audio")
    with config.unlocked():
        config.data.speaker_norm = True
    builder = input_pipeline.prepared_builder(config.data)
    split = config.data.eval_split
    stats = input_pipeline.compute_stats(builder, split, config.data, by_speaker=True)
    speakers = list(stats["speakers"])
    assert len(speakers) > 1 and stats["audio_mean"].shape == (len(speakers), 200)
    norm = input_pipeline.Normalizer(stats)
    frames = {s: [] for s in speakers}
    for ex in builder.as_dataset(split=split):
        audio, _ = norm(ex["audio"], ex["video"], ex["speaker"])
        frames[ex["speaker"].numpy().decode()].append(audio.numpy())
    for xs in frames.values():
        x = np.concatenate(xs)
        np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-3)
        np.testing.assert_allclose(x.std(0), 1.0, atol=2e-2)
    # An evaluation split is standardised with its own speakers' statistics, not training's.
    train_stats = input_pipeline.compute_stats(
        builder, config.data.train_split, config.data, by_speaker=True
    )
    assert not set(train_stats["speakers"]) & set(speakers)
    got = input_pipeline.split_stats(builder, config.data, split, train_stats)
    assert list(got["speakers"]) == speakers


def _example(n=120):
    rng = np.random.default_rng(0)
    return {
        "audio": tf.constant(rng.normal(-5, 2, (n, 40)).astype(np.float32)),
        "video": tf.constant(rng.normal(0, 1, (n // 4, 32)).astype(np.float32)),
        "video_valid": tf.ones([n // 4], tf.bool),
        "label": tf.constant(1, tf.int64),
        "speaker": tf.constant("s1"),
    }


def _augment(**fields):
    aug = common.get_config("afew", "audio").augment
    aug = ml_collections.ConfigDict(aug.to_dict())
    aug.update(fields)
    return aug


def test_spec_masks_gain_and_noise_act_in_training_only():
    config = tiny_config("audio")
    d = config.data
    ex = _example()
    seed = tf.constant([1, 2], tf.int64)
    plain = input_pipeline.preprocess(ex, data_config=d, stats=None, train=True, seed=seed)
    aug = _augment(time_masks=2, time_mask_frames=10, freq_masks=2, freq_mask_bins=5)
    masked = input_pipeline.preprocess(
        ex, data_config=d, stats=None, train=True, seed=seed, augment=aug
    )
    a, m = plain["audio"].numpy(), masked["audio"].numpy()
    zero_rows = np.all(m == 0, axis=1) & ~np.all(a == 0, axis=1)
    zero_cols = np.all(m == 0, axis=0) & ~np.all(a == 0, axis=0)
    assert 1 <= zero_rows.sum() <= 20 and 1 <= zero_cols.sum() <= 10
    kept = ~zero_rows[:, None] & ~zero_cols[None, :]
    np.testing.assert_array_equal(m[kept], a[kept])  # nothing else changed
    again = input_pipeline.preprocess(
        ex, data_config=d, stats=None, train=True, seed=seed, augment=aug
    )
    np.testing.assert_array_equal(again["audio"].numpy(), m)  # a function of the seed
    evaluated = input_pipeline.preprocess(ex, data_config=d, stats=None, train=False, augment=aug)
    reference = input_pipeline.preprocess(ex, data_config=d, stats=None, train=False)
    np.testing.assert_array_equal(evaluated["audio"].numpy(), reference["audio"].numpy())
    loud = input_pipeline.preprocess(
        ex, data_config=d, stats=None, train=True, seed=seed, augment=_augment(gain_db=6.0)
    )
    shift = loud["audio"].numpy() - a
    valid = plain["audio_mask"].numpy()
    assert np.ptp(shift[valid]) < 1e-4 and 0 < abs(shift[valid][0, 0]) <= 6 * np.log(10) / 10
    noisy = input_pipeline.preprocess(
        ex,
        data_config=d,
        stats=None,
        train=True,
        seed=seed,
        augment=_augment(noise_prob=1.0, noise_snr_db=(0.0, 0.0)),
    )
    # At 0 dB SNR the noise power equals the clip's mean power: the quiet frames rise most.
    assert (noisy["audio"].numpy()[valid] >= a[valid] - 1e-5).all()


def test_mixup_mixes_both_streams_with_one_partner_and_spares_padding():
    config = tiny_config("am_fbp")
    batch = labelled_batch(config, 6)
    batch["mask"][-1] = 0
    inputs = frontend.model_inputs(batch, "am_fbp")
    mixed, partner, lam = steps.mixup(batch, inputs, 0.4, jax.random.key(0))
    lam = np.asarray(lam)
    assert ((lam >= 0.5) & (lam <= 1.0)).all()
    perm = [int(np.flatnonzero(np.asarray(batch["label"]) == p)[0]) for p in np.asarray(partner)]
    for i, j in enumerate(perm):
        for key in ("audio", "video"):
            want = lam[i] * inputs[key][i] + (1 - lam[i]) * inputs[key][j]
            np.testing.assert_allclose(mixed[key][i], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(
            mixed["audio_mask"][i], inputs["audio_mask"][i] | inputs["audio_mask"][j]
        )
        if batch["mask"][j] == 0:
            assert lam[i] == 1.0


def test_label_smoothing_is_optax_s():
    logits = jnp.array([[4.0, 0.0, -1.0], [0.5, 0.2, 0.1]])
    labels = jnp.array([0, 2])
    plain = steps.cross_entropy(logits, labels)
    smooth = steps.cross_entropy(logits, labels, 0.1)
    targets = 0.9 * jax.nn.one_hot(labels, 3) + 0.1 / 3
    want = -(targets * jax.nn.log_softmax(logits)).sum(-1)
    np.testing.assert_allclose(smooth, want, rtol=1e-6)
    assert smooth[0] > plain[0]


def _step(config, state, batch, **options):
    fn = parallel.pmap(functools.partial(steps.train_step, fusion=config.model.fusion, **options))
    new, _ = fn(
        parallel.replicate(state), parallel.shard(batch), rng=parallel.replicate(jax.random.key(3))
    )
    return parallel.unreplicate(new)


def test_ema_weights_are_the_evaluated_ones():
    config = tiny_config("video")
    with config.unlocked():
        config.optim.ema_decay = 0.5
        config.optim.learning_rate = 1e-2
    state = make_state(config)
    assert state.ema_params is not None
    batch = labelled_batch(config, 4)
    for _ in range(3):
        state = _step(config, state, batch, ema_decay=0.5)
    leaves = zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params), strict=True)
    assert any(not np.allclose(p, e) for p, e in leaves)
    out = steps.predict_step(state, frontend.model_inputs(batch, "video"), fusion="video")
    want = state.apply_fn({"params": state.ema_params}, frontend.model_inputs(batch, "video"))
    np.testing.assert_allclose(out["logits"], want["logits"], rtol=1e-6)
    # Without the switch there is no average and the parameters are evaluated.
    plain = make_state(tiny_config("video"))
    assert plain.ema_params is None and plain.eval_params is plain.params


def test_modality_dropout_zeroes_one_stream_in_training_only():
    config = tiny_config("ag_fbp")
    with config.unlocked():
        config.model.modality_dropout = 1.0
    batch = random_batch(config, batch=16)
    model, params = init(config, batch)
    inputs = frontend.model_inputs(batch, "ag_fbp")
    out = model.apply(params, inputs, train=True, rngs={"dropout": jax.random.key(0)})
    mu = np.asarray(out["mu"])
    assert np.all((np.abs(mu) < 1e-6) | (np.abs(mu - 1) < 1e-6))  # one stream is zero
    assert 0 < (mu < 0.5).sum() < 16
    evaluated = np.asarray(model.apply(params, inputs)["mu"])
    assert np.all((evaluated > 1e-3) & (evaluated < 1 - 1e-3))


def test_clip_level_video_is_one_step_spread_over_the_clip():
    for fusion_name in ("am_fbp", "video"):
        config = tiny_config(fusion_name)
        with config.unlocked():
            config.model.video.encoder = "clip"
            config.model.video.clip_hidden = (16,)
            config.model.video.dense_features = 12
        batch = random_batch(config, batch=3, lengths=[1.0, 0.5, 0.3])
        row = np.random.default_rng(1).standard_normal(batch["video"].shape[-1])
        batch["video"][:] = row.astype(np.float32)  # one clip-level vector on every frame
        model, params = init(config, batch)
        assert "video_attention" not in params["params"]  # nothing to attend over
        out = model.apply(params, frontend.model_inputs(batch, fusion_name))
        w, m = np.asarray(out["video_attention"]), np.asarray(out["video_mask"])
        for i in range(3):
            np.testing.assert_allclose(w[i][m[i]], 1.0 / m[i].sum(), rtol=1e-6)
        if fusion_name == "video":  # the same vector gives the same encoding at any length
            logits = np.asarray(out["logits"])
            np.testing.assert_allclose(logits[1:], logits[:1].repeat(2, 0), rtol=1e-5)


def test_ravdess_recipes_and_folds():
    small, paper = ravdess_amfbp.get_config("dev3"), ravdess_amfbp.get_config("dev3,paper")
    assert small.data.train_split == paper.data.train_split
    assert small.data.test_split == "actor05+actor06" and small.data.eval_split == "actor07+actor08"
    assert small.data.speaker_norm and not paper.data.speaker_norm
    assert small.model.video.encoder == "clip" and paper.model.video.encoder == "face"
    assert paper.augment.mixup_alpha == 0.0 and paper.optim.ema_decay == 0.0
    assert ravdess_video.get_config(None).fold == "dev"
    with pytest.raises(ValueError, match="FOLD"):
        ravdess_amfbp.get_config("dev1,fancy")
    model = network.get_model(small)
    batch = random_batch(small, batch=2)
    params = model.init(jax.random.key(0), frontend.model_inputs(batch, "am_fbp"))
    assert params["params"]["audio_encoder"]["conv1"]["kernel"].shape[1] == 11
