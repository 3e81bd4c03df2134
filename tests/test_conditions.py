"""The condition-shift test set: each recording condition does what it says, and the
`conditions` command scores cross-validated systems and floors under them."""

import os
import textwrap

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from data_prep import build
from data_prep.features import conditions
from data_prep.features import voice as voice_lib
from data_prep.testclips import speech_like
from fbp_jax.evaluation import conditions as conditions_cmd
from fbp_jax.evaluation import cross_validation as cv
from fbp_jax.evaluation import predictions, voice_floor_fit
from fbp_jax.serving import bundle

RATE = 16000


def _speech(seconds=1.5, seed=0, room=0.0):
    """Half a second of silence (digital, or room noise `room` below the peak), speech-like
    harmonics, and half a second of silence again."""
    x = speech_like(seconds, RATE, seed=seed).astype(np.float32).reshape(-1)
    silence = np.zeros(RATE // 2, np.float32)
    x = np.concatenate([silence, 0.3 * x / np.abs(x).max(), silence])
    noise = np.random.default_rng(seed).standard_normal(len(x)).astype(np.float32)
    return x + room * noise


def _band_power(x, lo, hi):
    f, p = signal.welch(x, RATE, nperseg=1024)
    return p[(f >= lo) & (f < hi)].sum()


def test_each_condition_changes_what_it_names():
    x = _speech()
    out = {name: conditions.apply(name, x) for name in conditions.CONDITIONS}
    assert all(np.isfinite(y).all() and y.dtype == np.float32 for y in out.values())
    np.testing.assert_array_equal(out["original"], x)
    assert len(out["trimmed"]) < len(x) - RATE * 0.8  # the half seconds of silence went
    assert len(out["padded"]) == len(x) + 4 * RATE and not out["padded"][: 2 * RATE].any()
    np.testing.assert_allclose(out["quiet"], x / 10, rtol=1e-6)
    clipped = out["clipped"]
    assert np.abs(clipped).max() == 1.0 and np.mean(np.abs(clipped) == 1.0) > 0.01
    np.testing.assert_allclose(out["dc_offset"] - x, 0.05, atol=1e-6)
    assert _band_power(out["telephone"], 0, 150) < 1e-3 * _band_power(x, 0, 150)
    # Its two edges, one at a time: each cuts its own side and keeps the other.
    low, high = out["telephone_low"], out["telephone_high"]
    assert _band_power(low, 0, 100) < 1e-2 * _band_power(x, 0, 100)
    assert _band_power(high, 5000, 8000) < 1e-2 * _band_power(x, 5000, 8000)
    assert abs(10 * np.log10(_band_power(low, 4000, 8000) / _band_power(x, 4000, 8000))) < 0.5
    assert abs(10 * np.log10(_band_power(high, 0, 150) / _band_power(x, 0, 150))) < 0.5
    # Another microphone: the lows rolled off, the presence band raised, the middle kept.
    gain_db = lambda lo, hi: (
        10 * np.log10(_band_power(out["microphone"], lo, hi) / _band_power(x, lo, hi))
    )
    assert gain_db(20, 100) < -10 and 5 < gain_db(2000, 3000) < 9 and abs(gain_db(500, 1000)) < 1.5
    for name, snr in (("noise20", 20.0), ("noise10", 10.0)):
        noise = out[name] - x
        measured = 10 * np.log10(conditions.voiced_power(x) / np.mean(noise**2))
        assert abs(measured - snr) < 0.5, name
    for name in ("pink10", "babble10", "hum20"):
        noise = out[name] - x
        measured = 10 * np.log10(conditions.voiced_power(x) / np.mean(noise**2))
        assert abs(measured - (20.0 if name == "hum20" else 10.0)) < 0.5, name
    f, p = signal.welch(out["hum20"] - x, RATE, nperseg=8192)
    band = lambda lo, hi: p[(f >= lo) & (f < hi)].sum()
    assert band(45, 55) > 100 * band(65, 85)  # 50 Hz and its harmonics, nothing between them
    assert band(145, 155) > 100 * band(165, 185) and band(1010, 1500) < 1e-3 * band(45, 55)
    # The drifting grid's hum: the same, its sixth harmonic at 301.2 Hz (zero-padded to 0.1 Hz).
    drift = np.abs(np.fft.rfft(out["hum20_drift"] - x, 10 * RATE))
    assert abs(np.argmax(drift[2900:3100]) / 10 + 290 - 301.2) < 0.15
    generator = np.abs(np.fft.rfft(out["hum20_generator"] - x, 10 * RATE))  # 51.0 Hz
    assert abs(np.argmax(generator[2900:3200]) / 10 + 290 - 306.0) < 0.15
    white, pink = out["noise10"] - x, out["pink10"] - x
    # Pink: power falls with frequency (1/f: 10 dB a decade), white: flat.
    assert _band_power(pink, 100, 1000) > 5 * _band_power(pink, 1000, 8000) / 7
    assert _band_power(white, 100, 1000) < 2 * _band_power(white, 1000, 8000) / 7
    # Babble: the clip's own spectrum, fluctuating: its power changes from frame to frame far
    # more than white noise's does.
    frames = lambda y: np.square(y[: len(y) // 400 * 400].reshape(-1, 400)).mean(1)
    babble = out["babble10"] - x
    assert np.std(np.log(frames(babble))) > 3 * np.std(np.log(frames(white)))
    # Inside the voiced span only: the half seconds of silence around it stay silent.
    for name, masked in (("noise10_inside", "noise10"), ("babble10_inside", "babble10")):
        span = np.flatnonzero(out[name] != x)
        assert RATE * 0.45 < span[0] and span[-1] < len(x) - RATE * 0.45, name
        assert not out[name][: RATE // 4].any() and np.abs(out[masked][: RATE // 4]).max() > 0
        noise = (out[name] - x)[span[0] : span[-1] + 1]
        measured = 10 * np.log10(conditions.voiced_power(x) / np.mean(noise**2))
        assert abs(measured - 10.0) < 1.0, name
    assert _band_power(out["resampled"], 4500, 8000) < 1e-2 * _band_power(x, 4500, 8000)
    assert len(out["reverb"]) > len(x)
    for name in ("opus16", "mp3_32"):
        y = out[name][: len(x)]
        assert len(out[name]) >= len(x) - 200, name
        assert np.corrcoef(x[: len(y)], y)[0, 1] > 0.8, name  # aligned and alike
    with pytest.raises(ValueError, match="unknown condition"):
        conditions.apply("underwater", x)


PROTOCOL = """
from configs import ravdess_common

FOLDS = {{"a": ((3, 4, 5, 6), (1,), (2,)), "b": ((1, 2, 5, 6), (3,), (4,))}}


def get_config(fold=None):
    fold = fold or "a"
    config = ravdess_common.get_config("audio", "dev1")
    train, val, test = FOLDS[fold]
    name = lambda actors: "+".join(f"actor{{a:02d}}" for a in actors)
    with config.unlocked():
        config.fold, config.folds = fold, tuple(FOLDS)
        config.data.train_split, config.data.eval_split = name(train), name(val)
        config.data.test_split = name(test)
        config.data.data_dir = {data_dir!r}
        config.data.voiced_db = 35.0
        config.data.level_norm = True
        config.num_train_steps, config.eval_every_steps, config.batch_size = 2, 1, 4
    return config.lock()
"""


def write_corpus(root, actors=6):
    """RAVDESS-layout clips: 4 emotions per actor, each with its own pitch and loudness."""
    rows = []
    for actor in range(1, actors + 1):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for k, emotion in enumerate((1, 4, 5, 8)):
            stem = f"03-01-{emotion:02d}-01-01-01-{actor:02d}"
            x = _speech(1.0 + 0.1 * k, seed=actor * 10 + k, room=1e-3) * (0.3 + 0.2 * k)
            sf.write(folder / f"{stem}.flac", x, RATE)
            rows.append(
                ",".join(["01" + stem[2:]] + [f"{emotion + i / 10:.3f}" for i in range(35)])
            )
    header = ",".join(["clip_id"] + [f"AU{i:02d}_r" for i in range(35)])
    (root / "openface_au_clip_features.csv").write_text("\n".join([header, *rows]) + "\n")


def test_a_session_channel_and_other_talkers_add_noise_at_the_snr():
    x = _speech(seed=1)
    heard = conditions.session_channel(x, 2500.0, 0.0, 12.0, seed=3)
    limited = conditions.butterworth(x, 2500.0, "lowpass")
    noise = heard.astype(np.float64) - limited
    snr = 10 * np.log10(conditions.voiced_power(limited) / np.mean(np.square(noise)))
    assert snr == pytest.approx(12.0, abs=0.05)
    np.testing.assert_array_equal(heard, conditions.session_channel(x, 2500.0, 0.0, 12.0, seed=3))
    others = [_speech(1.3, seed=5), _speech(0.8, seed=6)]
    babble = conditions.other_talkers(x, others, 8.0, seed=2)
    noise = babble.astype(np.float64) - x
    snr = 10 * np.log10(conditions.voiced_power(x) / np.mean(np.square(noise)))
    assert babble.shape == x.shape and snr == pytest.approx(8.0, abs=0.05)
    assert not np.array_equal(babble, conditions.other_talkers(x, others, 8.0, seed=4))
    # The talkers' silences are cut: the babble never stops while the clip plays.
    rms = np.sqrt(np.mean(np.square(noise).reshape(-1, 1600), 1))  # 0.1 s frames
    assert rms.min() > 0.2 * rms.max()


def test_conditions_chain_left_to_right():
    x = _speech()
    chained = conditions.apply("microphone+noise20+quiet", x)
    by_hand = conditions.apply(
        "quiet", conditions.apply("noise20", conditions.apply("microphone", x))
    )
    np.testing.assert_array_equal(chained, by_hand)
    assert chained.dtype == np.float32 and conditions.known("trimmed+padded")
    assert (
        len(conditions.apply("trimmed+padded", x)) == len(conditions.apply("trimmed", x)) + 4 * RATE
    )
    with pytest.raises(ValueError, match="underwater"):
        conditions.apply("quiet+underwater", x)


@pytest.mark.slow
def test_conditions_command_scores_systems_and_floors(tmp_path, monkeypatch):
    src, data = tmp_path / "src", str(tmp_path / "data")
    write_corpus(src)
    build.build("ravdess", data, str(src), num_workers=0)
    config_file = tmp_path / "protocol.py"
    config_file.write_text(textwrap.dedent(PROTOCOL.format(data_dir=data)))
    workdir = str(tmp_path / "cv")
    cv.run_cross_validation(cv.load_folds(str(config_file)), workdir, config_file=str(config_file))
    out = str(tmp_path / "conditions")
    # Each run is scored once per fold and condition, whatever systems share it, and one fold's
    # runs are loaded at a time (memory does not grow with the number of folds).
    events = []
    score, load = conditions_cmd._system_posteriors, bundle.load_serving_model
    monkeypatch.setattr(
        conditions_cmd,
        "_system_posteriors",
        lambda *a: events.append(("score", a[0].source)) or score(*a),
    )
    monkeypatch.setattr(
        bundle, "load_serving_model", lambda d: events.append(("load", d)) or load(d)
    )
    functionals = voice_lib.functionals
    monkeypatch.setattr(
        voice_lib, "functionals", lambda *a: events.append(("voice",)) or functionals(*a)
    )
    result = conditions_cmd.run(
        [workdir, f"{workdir}+{workdir}"],
        ["audio_speaker"],
        str(src),
        out,
        ["original", "padded", "quiet", "quiet+padded"],
        balance=True,
        voice_floor=True,
    )
    rows = result["pooled_wa"]

    def read(system, condition="original"):
        path = os.path.join(out, conditions_cmd.PREDICTIONS_DIR, system, f"{condition}.csv")
        return predictions.read_predictions(path)

    systems = ["cv", "cv+cv", "audio_speaker", "voice floor", "cv + voice floor"]
    systems.append("cv+cv + voice floor")
    assert set(rows) == {*systems, *(s + " balanced" for s in systems)}
    assert rows["cv+cv"] == rows["cv"]  # an ensemble of one run twice is that run
    fold_dirs = [cv.fold_dir(workdir, r["fold"]) for r in cv.summarize(workdir)["folds"]]
    # The voice floor's inputs: each clip's as recorded once (the fits' and the scored's), and
    # each scored clip's once per other condition.
    scored = len(read("voice floor").clip_ids)
    assert events.count(("voice",)) == 6 * 4 + 3 * scored
    events = [e for e in events if e != ("voice",)]
    assert [d for kind, d in events if kind == "load"] == fold_dirs  # one run per fold
    sources = {d: load(d).source for d in fold_dirs}
    assert events == [  # four conditions, each fold done before the next is loaded
        e for d in fold_dirs for e in [("load", d)] + [("score", sources[d])] * 4
    ]
    assert rows["cv+cv balanced"] == rows["cv balanced"]
    assert all(set(r) == {"original", "padded", "quiet", "quiet+padded"} for r in rows.values())
    assert all(0.0 <= v <= 1.0 for r in rows.values() for v in r.values())
    # Speaker standardisation with the condition's own clips: 20 dB quieter changes nothing
    # for the level-normalised network and the speaker-standardised floor.
    assert rows["cv"]["quiet"] == rows["cv"]["original"]
    assert rows["audio_speaker"]["quiet"] == rows["audio_speaker"]["original"]
    assert rows["cv"]["quiet+padded"] == rows["cv"]["padded"]  # chained: the same again
    assert rows["voice floor"]["quiet"] == rows["voice floor"]["original"]
    assert rows["voice floor"]["padded"] == rows["voice floor"]["original"]

    # A system with the voice floor, as predict serves it: the floor an equal member beside
    # the system's runs (one run: half; the same run twice: a third).
    voice, one = read("voice floor"), read("cv").aligned_to(read("voice floor"))
    for system, w in (("cv + voice floor", 1 / 2), ("cv+cv + voice floor", 1 / 3)):
        average = read(system).aligned_to(voice)
        expected = (1 - w) * one.probabilities + w * voice.probabilities
        np.testing.assert_allclose(average.probabilities, expected, atol=1e-5)
    assert os.path.isfile(os.path.join(out, "conditions.csv"))
    # The floor of an audio-visual export reads each clip's face row beside its voice.
    face_out = str(tmp_path / "face")
    face = conditions_cmd.run(
        [workdir], [], str(src), face_out, ["original"], voice_floor_face=True
    )
    assert set(face["pooled_wa"]) == {"cv", "voice+face floor", "cv + voice+face floor"}
    path = os.path.join(
        face_out, conditions_cmd.PREDICTIONS_DIR, "voice+face floor", "original.csv"
    )
    with_face = predictions.read_predictions(path).aligned_to(voice)
    assert not np.allclose(with_face.probabilities, voice.probabilities, atol=1e-3)
    # A fold's floor that also hears its training clips through a channel of the recipe and
    # among a babble of the fold's other training speakers, as `voice-floor --sessions=1
    # --babble_sessions=1` hears a corpus: each clip through the channel once over the folds,
    # the babbles drawn per fold from its training speakers only.
    drawn, passes, heard = [], [], []
    changes, clip_functionals = voice_floor_fit.session_changes, voice_floor_fit.clip_functionals
    fit = voice_floor_fit.fit
    monkeypatch.setattr(
        voice_floor_fit,
        "session_changes",
        lambda sources, *a: drawn.append({c.split for c in sources}) or changes(sources, *a),
    )
    monkeypatch.setattr(
        voice_floor_fit,
        "clip_functionals",
        lambda s, p, f, c=(), **kw: (
            passes.append((len(s), len(c))) or clip_functionals(s, p, f, c, **kw)
        ),
    )
    monkeypatch.setattr(voice_floor_fit, "fit", lambda *a: heard.append(a[7]) or fit(*a))
    sessions_out = str(tmp_path / "sessions")
    with_channels = conditions_cmd.run(
        [workdir],
        [],
        str(src),
        sessions_out,
        ["original"],
        voice_floor=True,
        voice_floor_sessions=1,
        voice_floor_babble=1,
    )
    assert with_channels["voice_floor_sessions"] == with_channels["voice_floor_babble"] == 1
    folds = [r["splits"] for r in cv.summarize(workdir)["folds"]]
    assert drawn == [cv.split_parts(f["train"]) for f in folds]
    # Fold a trains on actors 3-6 (16 clips), b on 1, 2, 5, 6: 5 and 6 already heard.
    assert [p for p in passes if p[1]] == [(16, 1), (16, 1), (8, 1), (16, 1)]
    for sessions in heard:
        assert len(sessions) == 2 and all(len(x) == 16 for x, _, _ in sessions)
        assert {s.split("@")[1] for _, _, speakers in sessions for s in speakers} == {"0", "1"}
    path = os.path.join(sessions_out, conditions_cmd.PREDICTIONS_DIR, "voice floor", "original.csv")
    with_sessions = predictions.read_predictions(path).aligned_to(voice)
    assert not np.allclose(with_sessions.probabilities, voice.probabilities, atol=1e-3)
    # Every clip's posteriors, per system and condition, pooled over the folds: what the table
    # counts, for systems scored elsewhere to be averaged with them.
    for system, condition in (("cv", "original"), ("cv+cv", "quiet"), ("audio_speaker", "padded")):
        path = os.path.join(out, conditions_cmd.PREDICTIONS_DIR, system, f"{condition}.csv")
        p = predictions.read_predictions(path)
        assert len(set(p.clip_ids)) == len(p.clip_ids) > 0
        assert p.correct.mean() == pytest.approx(rows[system][condition])
    table = conditions_cmd.format_table(result)
    assert ("padded" in table and "(+" in table) or "(-" in table
    with pytest.raises(cv.CrossValidationError, match="unknown conditions"):
        conditions_cmd.run([workdir], [], str(src), out, ["underwater"])


def test_a_system_reads_long_clips_as_crops_and_scores_their_mean():
    """`--crops=average`: clips of one to five crops in one pass; each clip's answer is the
    argmax of the mean over its own crops, in the clips' order."""
    import types

    from data_prep.features import audio as audio_lib
    from fbp_jax.serving import clip
    from tests.test_timeline import CLASSES, RATE, recording, tone_model

    model = tone_model(clip_seconds=2.4)
    clips, features = [], []
    for segments, label in (
        (((2, 1.6), (1, 2.8)), "mid"),  # Its first crop is 'high', the others 'mid'.
        (((0, 1.5),), "low"),  # One crop.
        (((2, 2.8), (1, 1.6)), "high"),
        (((1, 1.5),), "low"),  # Wrong, on purpose.
    ):
        samples, _ = recording(segments=segments, gap=0.05)
        features.append(
            {"audio": audio_lib.log_spectrogram(samples), "duration_s": len(samples) / RATE}
        )
        clips.append(types.SimpleNamespace(speaker="s", label=label))
    for crops in ("centre", "average"):
        expected = []
        for f in features:
            batch, _ = clip.prepare_inputs(f, model.data, None, ("audio",), crops)
            mean = np.mean(model.apply(batch)["probabilities"], axis=0)
            expected.append(CLASSES[int(np.argmax(mean))])
        posteriors = conditions_cmd._system_posteriors(model, clips, features, "own", crops)
        got = [model.class_names[k] == c.label for k, c in zip(posteriors.argmax(1), clips)]
        np.testing.assert_array_equal(got, [e == c.label for e, c in zip(expected, clips)])
    assert list(got) == [True, True, True, False]
