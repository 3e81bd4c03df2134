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

from configs import common, iemocap_amfbp, ravdess_amfbp, ravdess_audio, ravdess_video
from fbp_jax import input_pipeline, parallel
from fbp_jax.model import encoders, frontend, network
from fbp_jax.training import steps
from tests.conftest import tiny_train_config
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


def test_mel_band_sees_nothing_outside_it():
    """`data.mel_low_hz` / `mel_high_hz`: a view of what a telephone passes is blind to what
    it removes (below 300 Hz, above 3.4 kHz), in numpy and TensorFlow alike."""
    from data_prep.features import audio as audio_lib
    from data_prep.features import conditions

    d = ml_collections.ConfigDict(
        {
            "frontend": "mel",
            "num_bins": 200,
            "num_mel": 64,
            "mel_low_hz": 300.0,
            "mel_high_hz": 3400.0,
        }
    )
    fb = frontend.view_mel_matrix(d)
    hz = np.arange(200) * 20.0
    assert np.allclose(fb.sum(0), 1.0) and not fb[(hz <= 300) | (hz >= 3400)].any()
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    speech_band = 0.1 * np.sin(2 * np.pi * 1000 * t) + 0.01 * rng.standard_normal(len(t))
    hum = 0.3 * np.sin(2 * np.pi * 100 * t) + 0.3 * np.sin(2 * np.pi * 3800 * t)
    own, hummed_spec = (audio_lib.log_spectrogram(x) for x in (speech_band, speech_band + hum))
    clean, hummed = frontend.audio_view(own, d), frontend.audio_view(hummed_spec, d)
    # Loud 100 Hz and 3.8 kHz tones reach it only through the window's side lobes (< 1 dB on
    # average), where they raise the whole-band view's channels by more than 13 dB.
    assert np.abs(hummed - clean).mean() < 0.2
    full = ml_collections.ConfigDict({"frontend": "mel", "num_bins": 200, "num_mel": 64})
    change = np.abs(frontend.audio_view(hummed_spec, full) - frontend.audio_view(own, full))
    assert change.mean(0).max() > 3
    # A telephone's band-pass changes the band view less than the whole-band view.
    phone = audio_lib.log_spectrogram(conditions.band_pass(speech_band.astype(np.float32)))
    band_change = np.abs(frontend.audio_view(phone, d) - clean).mean()
    wide_change = np.abs(frontend.audio_view(phone, full) - frontend.audio_view(own, full)).mean()
    assert band_change < 0.5 * wide_change
    tf_view = input_pipeline.audio_view(tf.constant(own), d).numpy()
    np.testing.assert_allclose(tf_view, clean, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="mel band"):
        frontend.mel_matrix(200, 64, 500.0, 400.0)


def test_view_settings_leave_out_what_has_no_effect():
    """Two configs show the audio encoder the same view exactly when `view_settings` agree:
    a reach without a span, a mel band of the linear view, PCEN settings of the mel view
    change nothing; the span does."""
    base = {"audio_fps": 100, "frontend": "mel", "voiced_db": 35.0}
    view = frontend.view_settings(ml_collections.ConfigDict(base))
    idle = {"voiced_reach_s": 1.0, "voiced_reach_floor_db": 15.0, "pcen_gain": 0.5}
    assert frontend.view_settings(ml_collections.ConfigDict({**base, **idle})) == view
    linear = ml_collections.ConfigDict({**base, "frontend": "linear"})
    assert frontend.view_settings(linear) == frontend.view_settings(
        ml_collections.ConfigDict({**base, "frontend": "linear", "num_mel": 40})
    )
    spanned = frontend.view_settings(
        ml_collections.ConfigDict({**base, **idle, "voiced_span_db": 12.0})
    )
    assert spanned != view and spanned["voiced_reach_floor_db"] == 15.0


def test_mel_deltas_in_numpy_and_tensorflow():
    d = ml_collections.ConfigDict(
        {"frontend": "mel", "num_bins": 200, "num_mel": 64, "audio_fps": 100, "mel_deltas": 2}
    )
    rng = np.random.default_rng(0)
    spec = rng.normal(-5.0, 2.0, (50, 200))
    view = frontend.audio_view(spec, d)
    assert view.shape == (50, 192) and frontend.audio_feature_size(d) == 192
    plain = frontend.audio_view(spec, ml_collections.ConfigDict({**d, "mel_deltas": 0}))
    np.testing.assert_allclose(view[:, :64], plain, rtol=1e-6)
    # A ramp's derivative is its slope, away from the ends; its second derivative is zero.
    ramp = frontend.with_deltas(np.outer(np.arange(20.0), [1.0, -0.5]), d)
    np.testing.assert_allclose(ramp[2:-2, 2:4], [[1.0, -0.5]] * 16, atol=1e-6)
    np.testing.assert_allclose(ramp[4:-4, 4:6], 0.0, atol=1e-6)
    tf_view = input_pipeline.audio_view(tf.constant(spec, tf.float32), d).numpy()
    np.testing.assert_allclose(tf_view, view, rtol=1e-4, atol=1e-4)
    # The encoder reads the view and its derivatives as three input channels of each band.
    config = ravdess_audio.get_config("dev1")
    config.data.mel_deltas = 2
    model, batch = network.get_model(config), random_batch(config, batch=2)
    assert batch["audio"].shape[-1] == 192
    params = model.init(jax.random.key(0), frontend.model_inputs(batch, "audio"))
    assert params["params"]["audio_encoder"]["conv1"]["kernel"].shape[2] == 3
    with pytest.raises(ValueError, match="mel_deltas needs"):
        frontend.audio_feature_size(ml_collections.ConfigDict({**d, "frontend": "linear"}))


def test_pcen_view_in_numpy_and_tensorflow_and_what_it_removes():
    from data_prep.features import audio as audio_lib

    d = ml_collections.ConfigDict(
        {"frontend": "pcen", "num_bins": 200, "num_mel": 64, "audio_fps": 100}
    )
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    # A 300 Hz tone switched on for 0.5 s in the middle of steady white noise.
    tone = np.where((t > 1.0) & (t < 1.5), 0.3 * np.sin(2 * np.pi * 300 * t), 0.0)
    noise = 0.01 * rng.standard_normal(len(t))
    spec = audio_lib.log_spectrogram(tone + noise)
    view = frontend.audio_view(spec, d)
    assert view.shape == (len(spec), 64) and frontend.audio_feature_size(d) == 64
    tf_view = input_pipeline.audio_view(tf.constant(spec), d).numpy()
    np.testing.assert_allclose(tf_view, view, rtol=1e-3, atol=1e-3)
    # The smoother's first value is the first frame itself (no ramp up from zero): a steady
    # input gives the same value in every frame.
    steady = frontend.pcen(np.full((50, 3), 0.01), d)
    np.testing.assert_allclose(steady, np.broadcast_to(steady[0], steady.shape), rtol=1e-5)
    # Steady noise sinks towards a constant; the tone's onset stands out in its channel.
    channel = int(np.argmax(frontend.mel_matrix(200, 64)[15]))  # the 300 Hz bin
    onset, before = view[100:105, channel].mean(), view[50:95, channel]
    assert onset > before.mean() + 10 * before.std()
    # Nearly gain-invariant (gain < 1): 20 dB louder changes the view little, the log-mel
    # view by log(100) everywhere.
    louder = frontend.audio_view(spec + np.log(100.0), d)
    assert np.abs(louder - view).max() < 0.2 * np.abs(view).max()


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


def test_sessions_standardise_a_clip_with_its_speakers_statistics_in_that_recording(
    tiny_folds_data_dir,
):
    """`augment.sessions`: training clips recorded through a speaker's session channel are
    standardised with that speaker's statistics in that session (as serving standardises a
    recording with its own), never with the clean ones."""
    from tests.conftest import tiny_folds_config

    config = tiny_folds_config(tiny_folds_data_dir, "audio")
    with config.unlocked():
        config.data.speaker_norm = True
    d, split = config.data, config.data.train_split
    aug = _augment(sessions=1, session_prob=1.0, noise_snr_db=(5.0, 10.0))
    aug.band_limit_hz = (2000.0, 3000.0)
    channels = input_pipeline.session_channels(aug)
    assert channels.shape == (1, 4) and 2000 <= channels[0, 0] <= 3000 and channels[0, 1] == 0
    assert 5 <= channels[0, 2] <= 10 and channels[0, 3] == 0  # white noise by default
    np.testing.assert_array_equal(channels, input_pipeline.session_channels(aug))  # fixed
    assert input_pipeline.session_channels(_augment()).shape == (0, 4)
    builder = input_pipeline.prepared_builder(d)
    clean = input_pipeline.compute_stats(builder, split, d, by_speaker=True)
    stats = input_pipeline.with_session_stats(builder, split, d, clean, aug)
    speakers = [str(s) for s in clean["speakers"]]
    assert [str(s) for s in stats["speakers"]] == speakers + [f"{s}@0" for s in speakers]
    n = len(speakers)
    # Noise fills the quiet bins and the low-pass empties the top ones: other statistics.
    assert np.abs(stats["audio_mean"][n:] - clean["audio_mean"]).max() > 1.0
    norm = input_pipeline.Normalizer(stats)
    outputs, offsets = [], []
    for i, ex in enumerate(builder.as_dataset(split=split).take(12)):
        seed = tf.constant([3, i], tf.int64)
        kw = dict(data_config=d, train=True, seed=seed, augment=aug)
        raw = input_pipeline.preprocess(ex, stats=None, **kw)
        out = input_pipeline.preprocess(ex, stats=norm, **kw)
        k = speakers.index(ex["speaker"].numpy().decode())
        valid = raw["audio_mask"].numpy()
        x, y = raw["audio"].numpy()[valid], out["audio"].numpy()[valid]
        session = (x - stats["audio_mean"][n + k]) / stats["audio_std"][n + k]
        np.testing.assert_allclose(y, session, rtol=1e-4, atol=1e-4)
        outputs.append(y)
        offsets.append((x - clean["audio_mean"][k]) / clean["audio_std"][k])
    # Standardised where serving would put it; the clean statistics would shift it far.
    off_session = np.abs(np.concatenate(outputs).mean(0)).mean()
    off_clean = np.abs(np.concatenate(offsets).mean(0)).mean()
    assert off_session < 0.3 and off_clean > 2 * off_session, (off_session, off_clean)
    # session_prob 0: the same stream as without sessions.
    ex = next(iter(builder.as_dataset(split=split)))
    kw = dict(data_config=d, stats=norm, train=True, seed=tf.constant([1, 2], tf.int64))
    never = input_pipeline.preprocess(ex, augment=_augment(sessions=1, session_prob=0.0), **kw)
    plain = input_pipeline.preprocess(ex, augment=_augment(), **kw)
    np.testing.assert_array_equal(never["audio"].numpy(), plain["audio"].numpy())
    pooled = {k: v for k, v in clean.items() if k != "speakers"}
    with pytest.raises(ValueError, match="per-speaker statistics"):
        input_pipeline.with_session_stats(builder, split, d, pooled, aug)


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


def test_coloured_noise_falls_with_frequency_at_the_same_mean_power():
    """`augment.noise_tilt`: noise power per bin as 1/f^a (a = 1: pink), over the bins the same
    mean power as white noise at that SNR; a = 0 is the white noise itself."""
    t, bins = 4000, 200
    audio = tf.fill([t, bins], tf.math.log(1.0))  # Unit power in every bin.
    seed = tf.constant([3, 4], tf.int64)
    snr = tf.constant(0.0)
    noise = lambda tilt: np.exp(input_pipeline._additive_noise(audio, snr, seed, None, tilt)) - 1
    white, pink = noise(None).mean(0), noise(tf.constant(1.0)).mean(0)
    np.testing.assert_allclose(noise(tf.constant(0.0)).mean(0), white, rtol=1e-5)
    assert white.mean() == pytest.approx(1.0, rel=0.02) and pink.mean() == pytest.approx(
        white.mean(), rel=0.02
    )
    assert np.ptp(white[1:]) / white.mean() < 0.3  # Flat, within the periodogram's spread.
    # 1/f: bins 10 and 100 (200 and 2000 Hz) a factor 10 apart, within sampling.
    assert pink[10] / pink[100] == pytest.approx(10.0, rel=0.2)
    # Through the recipe's switch: pink noise at 10 dB SNR puts about three times the white
    # noise's power in the bins of 100-400 Hz.
    x = tf.zeros([50, bins])
    added = lambda **tilt: (
        np.exp(
            input_pipeline._augment_log_power(
                x, _augment(noise_prob=1.0, noise_snr_db=(10.0, 10.0), **tilt), seed
            ).numpy()[:, 5:20]
        )
        - 1.0
    )
    assert added(noise_tilt=(1.0, 1.0)).mean() > 2 * added().mean()


def test_sessions_can_record_through_coloured_noise():
    """`augment.session_noise_tilt`: each session's noise gets a fixed tilt, drawn after the
    channels' other draws (which stay as they were); a pink session puts more of its noise in
    the low bins than a white one at the same SNR."""
    aug = _augment(sessions=8, noise_snr_db=(10.0, 10.0), band_limit_hz=(7900.0, 7900.0))
    white = input_pipeline.session_channels(aug)
    aug.session_noise_tilt = (0.0, 2.0)
    coloured = input_pipeline.session_channels(aug)
    np.testing.assert_array_equal(coloured[:, :3], white[:, :3])
    assert (white[:, 3] == 0).all() and ((coloured[:, 3] >= 0) & (coloured[:, 3] <= 2)).all()
    assert np.ptp(coloured[:, 3]) > 0.5  # Sessions of different colours.
    d = tiny_config("audio").data
    quiet = tf.fill([300, 200], -8.0)
    speech = tf.concat([tf.zeros([200, 200]), quiet[:100]], 0)  # 200 voiced frames, then quiet.
    seed = tf.constant([5, 6], tf.int64)
    channel = lambda tilt: tf.constant([7900.0, 0.0, 10.0, tilt])
    low_bins = lambda tilt: np.exp(
        input_pipeline._session(speech, channel(tilt), seed, d).numpy()[200:, 5:20]
    ).mean()
    assert low_bins(1.0) > 2 * low_bins(0.0)


def test_other_talkers_are_added_from_their_voiced_frames_at_the_snr():
    """Competing talkers: each other clip's silence is left out and its speech looped, the
    talkers share the power that the SNR gives them, and only the first `count` are heard."""
    d = _condition_config()
    target = _tf_example(_features(_speech_like(seed=0)))["audio"]
    silence = np.zeros(16000, np.float32)
    other = _features(np.concatenate([silence, _speech_like(seconds=0.5, seed=1), silence]))
    others = (tf.constant(other["audio"]), tf.constant(other["audio"] + 3.0))
    seed = tf.constant([1, 2], tf.int64)
    power = np.exp(target.numpy())
    for count in (1, 2):
        mixed = input_pipeline._add_talkers(target, others, count, 10.0, seed, None, d)
        added = np.exp(mixed.numpy()) - power
        # Together a tenth of the target's mean power (10 dB), whatever the talkers' levels.
        np.testing.assert_allclose(added.mean() / power.mean(), 0.1, rtol=0.15)
        # Never the other clip's silence: every frame of the target hears speech.
        frame = added.sum(1)
        assert frame.min() > 1e-3 * frame.mean()  # Silence would add ~1e-9 of it.
    # With one talker the second clip is not heard at all.
    one = input_pipeline._add_talkers(target, others, 1, 10.0, seed, None, d)
    changed = (others[0], others[1] + np.float32(5.0))
    np.testing.assert_array_equal(
        one.numpy(), input_pipeline._add_talkers(target, changed, 1, 10.0, seed, None, d).numpy()
    )


def test_the_training_stream_brings_other_talkers_and_stays_a_function_of_its_seed(
    tiny_data_dir,
):
    config = tiny_train_config(tiny_data_dir)
    with config.unlocked():
        config.augment.talker_prob = 1.0
        config.augment.talker_snr_db = (0.0, 0.0)
    talking = input_pipeline.create_datasets(config, None)
    batch = next(talking.train_iter(seed=0))
    np.testing.assert_array_equal(batch["audio"], next(talking.train_iter(seed=0))["audio"])
    with config.unlocked():
        config.augment.talker_prob = 0.0
    quiet = next(input_pipeline.create_datasets(config, None).train_iter(seed=0))
    # The same clips and crops (labels, masks), other talkers in the audio only.
    np.testing.assert_array_equal(batch["label"], quiet["label"])
    np.testing.assert_array_equal(batch["audio_mask"], quiet["audio_mask"])
    np.testing.assert_array_equal(batch["video"], quiet["video"])
    assert np.abs(batch["audio"] - quiet["audio"])[batch["audio_mask"]].mean() > 0.05


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


def test_consistency_views_share_the_crop_and_draw_their_augmentation_again(tiny_data_dir):
    """`augment.consistency_weight`: every training clip also comes as a second view, the
    same crop with its augmentation drawn afresh; the first view is the stream without it."""
    config = tiny_train_config(tiny_data_dir)
    with config.unlocked():
        config.augment.noise_prob = 1.0
        config.augment.noise_snr_db = (5.0, 20.0)
    plain = next(input_pipeline.create_datasets(config, None).train_iter(seed=0))
    assert not any(k.startswith(frontend.SECOND_VIEW) for k in plain)
    with config.unlocked():
        config.augment.consistency_weight = 1.0
    batch = next(input_pipeline.create_datasets(config, None).train_iter(seed=0))
    for key in ("audio", "audio_mask", "video", "video_mask", "label"):
        np.testing.assert_array_equal(batch[key], plain[key])
    second = {k: batch[frontend.SECOND_VIEW + k] for k in ("audio", "audio_mask", "video")}
    np.testing.assert_array_equal(second["audio_mask"], batch["audio_mask"])  # one crop
    np.testing.assert_array_equal(second["video"], batch["video"])
    valid = batch["audio_mask"]
    assert np.abs(second["audio"] - batch["audio"])[valid].mean() > 0.05  # noise drawn again
    # An audio model's second view holds only what it reads.
    audio = tiny_train_config(tiny_data_dir, "audio", **{"augment.consistency_weight": 1.0})
    batch = next(input_pipeline.create_datasets(audio, None).train_iter(seed=0))
    views = {k for k in batch if k.startswith(frontend.SECOND_VIEW)}
    assert views == {frontend.SECOND_VIEW + "audio", frontend.SECOND_VIEW + "audio_mask"}


def test_jensen_shannon_divergence():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 5, 4)).astype(np.float32) * 3
    js = np.asarray(steps.jensen_shannon(a, b))
    p, q = jax.nn.softmax(a), jax.nn.softmax(b)
    m = 0.5 * (p + q)
    want = 0.5 * ((p * np.log(p / m)).sum(-1) + (q * np.log(q / m)).sum(-1))
    np.testing.assert_allclose(js, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(js, steps.jensen_shannon(b, a), rtol=1e-5)
    assert (js > 0).all() and (js <= np.log(2) + 1e-6).all()
    np.testing.assert_allclose(steps.jensen_shannon(a, a + 7.0), 0.0, atol=1e-6)
    far = steps.jensen_shannon(np.array([[30.0, 0.0]]), np.array([[0.0, 30.0]]))
    np.testing.assert_allclose(far, np.log(2), rtol=1e-4)
    # Confident posteriors (a class below float32's smallest probability in both): finite.
    sure = steps.jensen_shannon(np.array([[200.0, 0.0, 0.0]]), np.array([[0.0, 200.0, 0.0]]))
    np.testing.assert_allclose(sure, np.log(2), rtol=1e-4)


def test_consistency_loss_trains_on_both_views_and_pulls_them_together():
    config = tiny_config("audio")
    with config.unlocked():
        config.optim.learning_rate = 1e-2
        config.model.dropout_rate = 0.0  # Its masks would differ in a batch twice as long.
    state = make_state(config)
    batch = labelled_batch(config, 4)

    def kernel(batch, **options):
        new = _step(config, state, batch, mixup_alpha=0.4, **options)
        return np.asarray(new.params["audio_encoder"]["conv1"]["kernel"])

    plain = kernel(batch)
    # A second view identical to the first: the same loss, the same step (Adam's first step
    # is lr * sign(gradient), so a gradient within rounding of 0 may flip: a few weights).
    same = {**batch, **{frontend.SECOND_VIEW + k: batch[k] for k in ("audio", "audio_mask")}}
    close = np.isclose(kernel(same, consistency_weight=5.0), plain, rtol=1e-4, atol=1e-6)
    assert close.mean() > 0.97, close.mean()
    # Another view: its loss and the divergence move the parameters.
    other = dict(same)
    other[frontend.SECOND_VIEW + "audio"] = labelled_batch(config, 4, seed=1)["audio"]
    assert not np.isclose(kernel(other, consistency_weight=5.0), plain).all()


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
    # A fusion run starts from the audio recipe's runs, so it shows them the same view.
    audio = ravdess_audio.get_config("dev3").data
    assert frontend.view_settings(small.data) == frontend.view_settings(audio)
    with pytest.raises(ValueError, match="FOLD"):
        ravdess_amfbp.get_config("dev1,fancy")
    model = network.get_model(small)
    batch = random_batch(small, batch=2)
    params = model.init(jax.random.key(0), frontend.model_inputs(batch, "am_fbp"))
    assert params["params"]["audio_encoder"]["conv1"]["kernel"].shape[1] == 11


# ----------------------------------------------------------------------------------------------
# Recording conditions: voiced-span trimming, level normalisation, condition augmentation


def _speech_like(seconds=1.5, rate=16000, seed=0):
    """A voiced-like signal: harmonics of a gliding pitch under a syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.1 * x * envelope + 1e-4 * rng.standard_normal(len(t))).astype(np.float32)


def _condition_config():
    config = tiny_config("audio")
    with config.unlocked():
        config.data.num_bins = 200
        config.data.frontend = "mel"
        config.data.num_mel = 32
        config.data.voiced_db = 35.0
        config.data.level_norm = True
        config.data.clip_seconds = 3.2
    return config.data


def _features(samples):
    from data_prep.features import audio as audio_lib

    spec = audio_lib.log_spectrogram(samples)
    n = -(-len(spec) // 4)
    return {"audio": spec, "video": np.zeros((n, 32), np.float32)}


def _tf_example(features):
    """A stored-record example of `_features` output (all video frames valid)."""
    n = len(features["video"])
    return {
        "audio": tf.constant(features["audio"]),
        "video": tf.constant(features["video"]),
        "video_valid": tf.ones([n], tf.bool),
        "label": tf.constant(0, tf.int64),
        "speaker": tf.constant("s"),
    }


def test_voiced_trimming_and_level_make_silence_and_gain_irrelevant():
    d = _condition_config()
    speech = _speech_like()
    rng = np.random.default_rng(1)
    room = lambda n: (1e-4 * rng.standard_normal(n)).astype(np.float32)
    padded = np.concatenate([room(32000), speech, room(32000)])  # 2 s of room noise each side
    zeros = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(8000, np.float32)])
    views = {
        name: frontend.clip_view(_features(x), d)
        for name, x in (("plain", speech), ("padded", padded), ("zeros", zeros))
    }
    quiet = frontend.clip_view(_features(0.1 * speech), d)  # 20 dB quieter
    n = len(views["plain"]["audio"])
    for name in ("padded", "zeros"):
        # Trimmed to the voiced span: the same frames up to the frame grid (4 frames) and the
        # 40 ms windows that straddle the speech's edges, at each end.
        assert abs(len(views[name]["audio"]) - n) <= 12, name
    voiced = views["plain"]["voiced"]
    assert voiced.mean() > 0.8
    level = lambda v: v["audio"][v["voiced"]].mean()
    # The level shift leaves the voiced frames' mean log power in the same place at any gain.
    assert abs(level(quiet) - level(views["plain"])) < 0.05
    assert abs(level(views["padded"]) - level(views["plain"])) < 0.2
    # Without level normalisation the 20 dB shows (4.6 nepers).
    d2 = ml_collections.ConfigDict(d.to_dict())
    d2.level_norm = False
    raw_quiet = frontend.clip_view(_features(0.1 * speech), d2)
    raw = frontend.clip_view(_features(speech), d2)
    assert abs(level(raw) - level(raw_quiet) - 20 / frontend.DB_PER_NEPER) < 0.05


def test_the_level_band_keeps_a_cut_below_it_out_of_the_clip_level():
    """A chain that loses the lowest frequencies (a telephone's low edge, here 200 Hz under a
    voice at 120-180 Hz) moves the level of the whole band by how much of the clip's power lay
    there, which differs from clip to clip; measured on 300-3400 Hz the level stays put."""
    from data_prep.features import conditions

    d = _condition_config()
    speech = _speech_like(1.5)
    clean, cut = (_features(x)["audio"] for x in (speech, conditions.band_pass(speech, 200.0, 7e3)))
    shift = lambda band: (
        frontend.frame_level(clean, band).mean() - frontend.frame_level(cut, band).mean()
    )
    assert frontend.level_bins(d) == slice(None) and shift(slice(None)) > 0.5
    d.level_low_hz, d.level_high_hz = 300.0, 3400.0
    band = frontend.level_bins(d)
    assert band == slice(15, 171) and abs(shift(band)) < 0.02
    # The clip's level (level_norm) is its voiced frames' mean level on that band.
    d.voiced_db = 0.0
    np.testing.assert_allclose(
        frontend.clip_view({"audio": clean}, d)["audio"],
        frontend.audio_view(clean - frontend.frame_level(clean, band).mean(), d),
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        input_pipeline.frame_level(tf.constant(clean), d).numpy(),
        frontend.frame_level(clean, band),
        rtol=1e-5,
    )
    # A setting of the view while clips are trimmed or levelled; idle otherwise.
    assert frontend.view_settings(d)["level_low_hz"] == 300.0
    d.level_norm = False
    assert "level_low_hz" not in frontend.view_settings(d)
    d.level_low_hz, d.level_high_hz = 3500.0, 3000.0
    with pytest.raises(ValueError, match="level_low_hz"):
        frontend.level_bins(d)


def _noisy_pauses(speech, snr_db=10.0, seed=2):
    """`speech` with 1 s before and after, and white noise at `snr_db` below its power over
    the whole file (pauses included)."""
    x = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    noise = np.random.default_rng(seed).standard_normal(len(x))
    power = np.mean(speech**2) * 10 ** (-snr_db / 10)
    return (x + np.sqrt(power) * noise).astype(np.float32)


def test_the_noise_floor_keeps_noisy_pauses_out_of_the_voiced_span():
    d = _condition_config()
    speech = _speech_like()
    clean = frontend.clip_view(_features(speech), d)
    noisy = _features(_noisy_pauses(speech))
    # Within 35 dB of the loudest frame, noise is "voiced": the pauses are kept.
    assert len(frontend.clip_view(noisy, d)["audio"]) > len(clean["audio"]) + 150
    d.voiced_floor_db = 3.0
    view = frontend.clip_view(noisy, d)
    assert abs(len(view["audio"]) - len(clean["audio"])) <= 16
    # On a clean recording (pauses at the room's level) the floor changes nothing; speech
    # without pauses keeps its span.
    quiet_room = _noisy_pauses(speech, snr_db=60.0)
    d.voiced_floor_db = 0.0
    before = frontend.clip_view(_features(quiet_room), d)["voiced"]
    d.voiced_floor_db = 3.0
    np.testing.assert_array_equal(frontend.clip_view(_features(quiet_room), d)["voiced"], before)
    assert abs(len(frontend.clip_view(_features(speech), d)["audio"]) - len(clean["audio"])) <= 8
    # A file of noise alone: frames are still found voiced (the loudness rule alone if none
    # is 3 dB above the floor).
    hiss = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    assert frontend.clip_view(_features(0.01 * hiss), d)["voiced"].any()


def test_the_noise_floor_can_bound_the_span_only():
    d = _condition_config()
    speech = np.concatenate([_speech_like(1.0), np.zeros(8000, np.float32), _speech_like(1.0)])
    clean = frontend.clip_view(_features(speech), d)
    noisy = _features(_noisy_pauses(speech))
    d.voiced_floor_db = 3.0
    framewise = frontend.clip_view(noisy, d)
    d.voiced_floor_span = True
    span = frontend.clip_view(noisy, d)
    # The same span either way: the noise before and after the speech is cut off ...
    assert len(span["audio"]) == len(framewise["audio"])
    assert abs(len(span["audio"]) - len(clean["audio"])) <= 16
    # ... but within it the noisy pause between the words counts, as loudness alone says.
    assert span["voiced"].sum() > framewise["voiced"].sum() + 30
    assert span["voiced"].mean() > 0.95
    # A margin widens the span by as many frames on each side (here into the noise).
    d.voiced_floor_margin_s = 0.1
    assert len(frontend.clip_view(noisy, d)["audio"]) >= len(span["audio"]) + 2 * 10 - 8
    d.voiced_floor_margin_s = 0.0
    # Speech without pauses: its quietest frames stay voiced (the floor alone drops them).
    word = _features(speech[:16000])
    d.voiced_floor_db = 0.0
    plain = frontend.clip_view(word, d)["voiced"].sum()
    d.voiced_floor_db = 3.0
    kept = frontend.clip_view(word, d)["voiced"].sum()
    d.voiced_floor_span = False
    dropped = frontend.clip_view(word, d)["voiced"].sum()
    assert kept >= plain - 8 > dropped


def test_the_loud_frames_can_bound_the_span_under_a_fluctuating_masker():
    """A babble fills the silence around the speech: every frame is within 35 dB of the
    loudest, so the span is the whole file, and the masker comes and goes, so the noise floor
    finds no pause either. Bounded by the frames within 12 dB of the loudest (and a margin),
    the span is the speech's again; on the clean file it changes little. (This speech's
    loudest frame is 2 dB above its mean, a real voice's 7-10: a babble 15 dB below it here
    stands as far below the loudest frame as one 10 dB below real speech.)"""
    from data_prep.features import conditions

    d = _condition_config()
    speech = _speech_like(1.5)
    clean = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(16000, np.float32)])
    babbled = conditions.babble(clean, 15.0)
    speech_frames = len(frontend.clip_view(_features(clean), d)["audio"])
    assert len(frontend.clip_view(_features(babbled), d)["audio"]) > speech_frames + 150
    d.voiced_span_db, d.voiced_floor_margin_s = 12.0, 0.15
    for x in (babbled, clean):  # the speech and the margins
        assert 0 <= len(frontend.clip_view(_features(x), d)["audio"]) - speech_frames <= 32


def test_the_loud_span_reaches_out_to_quiet_onsets_but_not_into_a_masker():
    """A quiet onset (0.4 s, 20 dB below the speech) falls outside the frames within 12 dB of
    the loudest and their 0.15 s margin, so the loud span alone cuts it. Frames within 1 s of
    the loud ones that stand 15 dB above the noise floor widen the span again: the onset of a
    clean recording does, a babble's frames, hardly above its own quietest, do not."""
    from data_prep.features import conditions

    d = _condition_config()
    onset = 0.1 * _speech_like(0.4)
    speech = np.concatenate([onset, _speech_like(1.5)])
    silence = np.zeros(16000, np.float32)
    clean = np.concatenate([silence, speech, silence])
    babbled = conditions.babble(clean, 15.0)  # 15 dB below this speech, see above
    whole = len(frontend.clip_view(_features(clean), d)["audio"])
    d.voiced_span_db, d.voiced_floor_margin_s = 12.0, 0.15
    loud = len(frontend.clip_view(_features(clean), d)["audio"])
    assert loud <= whole - 20  # most of the onset cut
    d.voiced_reach_s, d.voiced_reach_floor_db = 1.0, 15.0
    assert len(frontend.clip_view(_features(clean), d)["audio"]) == whole
    assert len(frontend.clip_view(_features(babbled), d)["audio"]) <= whole + 32


def test_the_spectral_floor_hides_noise_below_it():
    d = _condition_config()
    speech = _speech_like()  # Harmonics up to 2 kHz; above them, hiss 60 dB down.
    hiss = np.random.default_rng(3).standard_normal(len(speech))
    noisy = (speech + np.sqrt(np.mean(speech**2) * 10 ** (-3.0)) * hiss).astype(np.float32)

    def change(spectral_floor_db):
        d.spectral_floor_db = spectral_floor_db
        a = frontend.clip_view(_features(speech), d)["audio"]
        b = frontend.clip_view(_features(noisy), d)["audio"]
        n = min(len(a), len(b))
        return a, np.abs(a[:n] - b[:n]).mean()

    plain, plain_change = change(0.0)
    floored, floored_change = change(20.0)
    # Noise at 30 dB SNR fills the empty bins: seen without a floor, hidden under one at 20 dB.
    assert plain_change > 1.0
    assert floored_change < plain_change / 4
    # Nothing falls below the floor (a mel channel of a constant power is that power), and
    # what stands well above it is untouched.
    floor = frontend.spectral_floor_log(d)
    assert floored.min() >= floor - 1e-4
    loud = plain > floor + 5
    np.testing.assert_allclose(floored[loud], plain[loud], atol=0.01)
    d.level_norm = False
    with pytest.raises(ValueError, match="level_norm"):
        frontend.clip_view(_features(speech), d)


@pytest.mark.parametrize(
    "floor_db,floor_span,margin_s,spectral_floor_db,span_db,reach_s,level_hz",
    [
        (0.0, False, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0)),
        (3.0, False, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0)),
        (3.0, True, 0.0, 0.0, 0.0, 0.0, (0.0, 0.0)),
        (3.0, True, 0.1, 0.0, 0.0, 0.0, (0.0, 0.0)),
        (0.0, False, 0.0, 20.0, 0.0, 0.0, (0.0, 0.0)),
        (0.0, False, 0.15, 0.0, 12.0, 0.0, (0.0, 0.0)),
        (0.0, False, 0.15, 0.0, 12.0, 1.0, (0.0, 0.0)),
        (0.0, False, 0.15, 0.0, 12.0, 1.0, (300.0, 3400.0)),
    ],
)
def test_clip_view_numpy_and_tensorflow_agree(
    floor_db, floor_span, margin_s, spectral_floor_db, span_db, reach_s, level_hz
):
    """Trimming, the level shift, the floor, the view and the statistics' voiced frames: the
    training pipeline (tf) and prediction (numpy) compute the same model input."""
    from fbp_jax.serving import clip

    d = _condition_config()
    d.voiced_floor_db = floor_db
    d.voiced_floor_span = floor_span
    d.voiced_floor_margin_s = margin_s
    d.spectral_floor_db = spectral_floor_db
    d.voiced_span_db = span_db
    d.voiced_reach_s, d.voiced_reach_floor_db = reach_s, 15.0
    d.level_low_hz, d.level_high_hz = level_hz
    speech = np.concatenate([_speech_like(2.0), _speech_like(0.3)])
    lead_s = margin_s  # how far before the speech the span starts
    if reach_s:  # 0.75 s of digital silence, then a quiet onset the reach takes in
        speech = np.concatenate([0.1 * _speech_like(0.4), speech])
        samples, lead_s = np.concatenate([np.zeros(12000, np.float32), speech]), 0.0
    elif floor_db or span_db:  # 0.75 s of noise at 15 dB SNR before the speech
        samples = _noisy_pauses(speech, snr_db=15.0)[4000:]
    else:  # 0.75 s of digital silence
        samples = np.concatenate([np.zeros(12000, np.float32), speech])
    features = _features(samples)
    view = frontend.clip_view(features, d)
    ex = _tf_example(features)
    got = input_pipeline._stats_view(ex, d)
    np.testing.assert_array_equal(got["voiced"].numpy(), view["voiced"])
    np.testing.assert_allclose(got["audio"].numpy(), view["audio"], rtol=1e-4, atol=2e-4)
    stats = clip.speaker_statistics([features], d.to_dict())
    tf_out = input_pipeline.preprocess(ex, data_config=d, stats=stats, train=False)
    np_batch, (start_s,) = clip.prepare_inputs(features, d.to_dict(), stats, ("audio",))
    np.testing.assert_array_equal(tf_out["audio_mask"].numpy(), np_batch["audio_mask"][0])
    np.testing.assert_allclose(tf_out["audio"].numpy(), np_batch["audio"][0], rtol=1e-3, atol=2e-3)
    assert 0.7 - lead_s <= start_s <= 0.8 - lead_s  # Where the speech starts (0.75 s).


@pytest.mark.parametrize(
    "fields",
    [
        {"freq_warp": 0.1},
        {"reverb_prob": 1.0},
        {"band_limit_prob": 1.0, "band_limit_hz": (2000.0, 2000.0)},
        {"band_limit_prob": 1.0, "band_limit_hz": (4000.0, 4000.0), "high_pass_hz": (400.0, 400.0)},
    ],
    ids=["warp", "reverb", "band_limit", "high_pass"],
)
def test_condition_augmentations_change_what_they_should(fields):
    config = tiny_config("audio")
    d = config.data
    with config.unlocked():
        d.num_bins = 200
    ex = dict(_example())
    spec = _features(_speech_like(1.2))["audio"]
    ex["audio"] = tf.constant(spec)
    ex["video"] = tf.zeros([-(-len(spec) // 4), 32])
    ex["video_valid"] = tf.ones([-(-len(spec) // 4)], tf.bool)
    seed = tf.constant([3, 4], tf.int64)
    plain = input_pipeline.preprocess(ex, data_config=d, stats=None, train=True, seed=seed)
    out = input_pipeline.preprocess(
        ex, data_config=d, stats=None, train=True, seed=seed, augment=_augment(**fields)
    )
    a, b = plain["audio"].numpy(), out["audio"].numpy()
    valid = plain["audio_mask"].numpy()
    a, b = a[valid], b[valid]
    assert b.shape == a.shape and np.isfinite(b).all() and not np.allclose(a, b)
    if "high_pass_hz" in fields:  # 400 Hz = bin 20: 24 dB at 200 Hz, 40 at most, none above.
        np.testing.assert_allclose(b[:, 20:], a[:, 20:], atol=1e-5)
        np.testing.assert_allclose(b[:, 10] - a[:, 10], -24 / frontend.DB_PER_NEPER, atol=1e-4)
        np.testing.assert_allclose(b[:, :4] - a[:, :4], -40 / frontend.DB_PER_NEPER, atol=1e-4)
    elif "band_limit_prob" in fields:  # 2 kHz = bin 100; 40 dB down from bin 115 on.
        np.testing.assert_allclose(b[:, :100], a[:, :100], atol=1e-5)
        np.testing.assert_allclose(b[:, 120:] - a[:, 120:], -40 / frontend.DB_PER_NEPER, atol=1e-4)
    if "reverb_prob" in fields:  # Power only added, from earlier frames.
        assert (b >= a - 1e-4).all()
    if "freq_warp" in fields:  # Harmonics move: the spectral peak of a frame shifts.
        assert np.mean(np.argmax(a, 1) != np.argmax(b, 1)) > 0.3
    evaluated = input_pipeline.preprocess(
        ex, data_config=d, stats=None, train=False, augment=_augment(**fields)
    )
    reference = input_pipeline.preprocess(ex, data_config=d, stats=None, train=False)
    np.testing.assert_array_equal(evaluated["audio"].numpy(), reference["audio"].numpy())


def test_whole_clip_augmentation_trains_on_what_serving_sees_of_a_changed_recording():
    """With `augment.whole_clip` the noise reaches the pauses before the voiced span and the
    level are found: the training input is the evaluation input of the noisy recording (here
    the clip is shorter than the crop, so both take all of it)."""
    d = _condition_config()
    silence = np.zeros(8000, np.float32)
    ex = _tf_example(_features(np.concatenate([silence, _speech_like(), silence])))
    spec = ex["audio"].numpy()
    seed = tf.constant([5, 6], tf.int64)
    aug = _augment(noise_prob=1.0, noise_snr_db=(10.0, 10.0), whole_clip=True)
    trained = input_pipeline.preprocess(
        ex, data_config=d, stats=None, train=True, seed=seed, augment=aug
    )
    seed_aug = tf.random.experimental.stateless_split(seed, 3)[1]
    speech = input_pipeline._voiced_frames(ex["audio"], d)
    noisy = input_pipeline._augment_log_power(ex["audio"], aug, seed_aug, d, speech=speech)
    # SNR against the clean clip's voiced frames: the pauses now hold a tenth of their power.
    ratio = np.exp(noisy.numpy()[:40]).mean() / np.exp(spec[speech.numpy()]).mean()
    assert 0.08 < ratio < 0.12
    served = input_pipeline.preprocess(
        dict(ex, audio=noisy), data_config=d, stats=None, train=False
    )
    np.testing.assert_array_equal(trained["audio_mask"].numpy(), served["audio_mask"].numpy())
    np.testing.assert_allclose(trained["audio"].numpy(), served["audio"].numpy(), atol=1e-5)
    # The noisy pauses are inside the span; noise on the crop alone never reaches them.
    aug.whole_clip = False
    cropped = input_pipeline.preprocess(
        ex, data_config=d, stats=None, train=True, seed=seed, augment=aug
    )
    clean = input_pipeline.preprocess(ex, data_config=d, stats=None, train=False)
    np.testing.assert_array_equal(cropped["audio_mask"].numpy(), clean["audio_mask"].numpy())
    assert trained["audio_mask"].numpy().sum() > clean["audio_mask"].numpy().sum() + 60


def test_statistics_pooling_beside_attention():
    config = tiny_config("audio")
    batch = random_batch(config, batch=3)
    outs = {}
    for pooling in ("attention", "attention_stats"):
        with config.unlocked():
            config.model.audio.pooling = pooling
        model, params = init(config, batch)
        outs[pooling] = (model.apply(params, frontend.model_inputs(batch, "audio")), params)
    logits, params = outs["attention_stats"]
    assert (
        "audio_statistics" in params["params"]
        and "audio_statistics" not in outs["attention"][1]["params"]
    )
    assert logits["logits"].shape == outs["attention"][0]["logits"].shape
    with config.unlocked():
        config.model.audio.pooling = "max"
    with pytest.raises(ValueError, match="audio pooling"):
        init(config, batch)


def test_auxiliary_stream_classifiers_train_beside_the_fusion():
    config = tiny_config("g_fbp")
    batch = labelled_batch(config, 4)
    inputs = frontend.model_inputs(batch, "g_fbp")
    model, params = init(config, batch)
    assert "audio_aux" not in params["params"]
    with config.unlocked():
        config.model.aux_loss_weight = 0.5
    model, params = init(config, batch)
    out = model.apply(params, inputs)
    assert out["aux_audio_logits"].shape == out["aux_video_logits"].shape == out["logits"].shape
    state = make_state(config)
    losses, kernels = {}, {}
    for w in (0.0, 0.5):
        step = functools.partial(
            steps.train_step, fusion="g_fbp", aux_loss_weight=w, rng=jax.random.key(0)
        )
        new, m = parallel.pmap(step)(parallel.replicate(state), parallel.shard(batch))
        losses[w] = parallel.unreplicate(m).compute()["loss"]
        kernels[w] = parallel.unreplicate(new).params["audio_encoder"]["conv1"]["kernel"]
    # The reported loss is the fusion's alone; the gradients have the auxiliary terms.
    np.testing.assert_allclose(losses[0.0], losses[0.5], rtol=1e-6)
    assert not np.allclose(kernels[0.0], kernels[0.5])
