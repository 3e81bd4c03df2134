"""The voice floor: served in numpy as sklearn fitted it, and averaged into predict's answers."""

import dataclasses
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from data_prep.testclips import speech_like
from fbp_jax.evaluation import floors, voice_floor_fit
from fbp_jax.serving import bundle, predict, shipped, voice_floor

CLASSES = ("neutral", "happy", "sad", "angry")


def _corpus(seed=0, speakers=4, per_class=12, width=6):
    """Functionals whose class shows in the first two columns; each speaker shifted and scaled
    (what speaker standardisation removes)."""
    rng = np.random.default_rng(seed)
    x, labels, who = [], [], []
    for s in range(speakers):
        offset, scale = rng.normal(0, 5, width), rng.uniform(0.5, 3, width)
        for c in range(3):  # 'angry' never occurs
            rows = rng.normal(0, 1, (per_class, width))
            rows[:, c % 2] += 2.0 * (1 if c < 2 else -1)
            x.append(offset + scale * rows)
            labels += [c] * per_class
            who += [f"s{s}"] * per_class
    return np.concatenate(x), np.asarray(labels), np.asarray(who)


def test_served_posteriors_are_the_fitted_regressions():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, labels, speakers = _corpus()
    floor = voice_floor_fit.fit(x, labels, speakers, CLASSES, C=0.3, weight=0.25)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=5000))
    standardised = floors.standardise_per_speaker(x, speakers)
    reference.fit(standardised, labels)
    one = speakers == "s2"
    served = floor.speaker_posteriors(x[one], own=True)
    np.testing.assert_allclose(served[:, :3], reference.predict_proba(standardised[one]), atol=1e-6)
    assert np.all(served[:, 3] < 1e-12)  # a class it never saw is never answered
    assert np.mean(served.argmax(1) == labels[one]) > 0.7
    # A speaker too small for its own statistics: the training speakers' pooled ones, which
    # still classify (the speakers' offsets are part of their spread).
    pooled = floor.speaker_posteriors(x[one][:3], own=False)
    assert pooled.shape == (3, 4) and np.allclose(pooled.sum(1), 1.0)


def test_a_floor_trained_through_channels_counts_the_clean_clips_once_per_channel():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, labels, speakers = _corpus()
    rng = np.random.default_rng(1)
    sessions = [  # a channel that compresses and blurs the functionals, each its own speakers
        (0.5 * x + rng.normal(0, k + 1, x.shape), labels, np.char.add(speakers, f"@{k}"))
        for k in range(2)
    ]
    floor = voice_floor_fit.fit(x, labels, speakers, CLASSES, 0.3, 0.25, sessions=sessions)
    clean = floors.standardise_per_speaker(x, speakers)
    heard = [floors.standardise_per_speaker(sx, ss) for sx, _, ss in sessions]
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=5000))
    reference.fit(np.concatenate([clean, clean, *heard]), np.concatenate([labels] * 4))
    one = speakers == "s1"
    np.testing.assert_allclose(
        floor.speaker_posteriors(x[one], own=True)[:, :3],
        reference.predict_proba(clean[one]),
        atol=1e-6,
    )
    plain = voice_floor_fit.fit(x, labels, speakers, CLASSES, 0.3, 0.25)
    assert not np.allclose(floor.coef, plain.coef, atol=1e-3)
    # What serves a small speaker group is the clean clips' statistics, not the channels'.
    np.testing.assert_array_equal(floor.pooled_mean, plain.pooled_mean)
    np.testing.assert_array_equal(floor.pooled_std, plain.pooled_std)


def test_a_saved_floor_loads_as_it_was(tmp_path):
    x, labels, speakers = _corpus()
    floor = voice_floor_fit.fit(x, labels, speakers, CLASSES, C=0.1, weight=0.5)
    assert voice_floor.load(str(tmp_path)) is None
    voice_floor.save(floor, str(tmp_path))
    loaded = voice_floor.load(str(tmp_path))
    assert loaded.class_names == CLASSES and loaded.weight == 0.5 and loaded.C == 0.1
    assert loaded.face_features == 0
    for field in ("coef", "intercept", "scale_mean", "scale_std", "pooled_mean", "pooled_std"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(floor, field))
    assert [f for f in os.listdir(tmp_path)] == [voice_floor.FILE]  # no temporary file left


RAVDESS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def _answers(floor_class, width, face_features=0, face_coef=0.0):
    """A floor (weight 1/2) that answers class `floor_class` whatever it hears; with
    `face_coef`, from the first face feature alone (uniform where that is 0)."""
    n = len(RAVDESS)
    intercept, coef = np.full(n, -30.0), np.zeros((n, width))
    intercept[floor_class] = 30.0
    if face_coef:
        intercept[:] = 0.0
        coef[floor_class, width - face_features] = face_coef
    return voice_floor.VoiceFloor(
        RAVDESS, 0.5, np.zeros(width), np.ones(width), coef, intercept, np.zeros(width),
        np.ones(width), 1.0, face_features,
    )  # fmt: skip


def _without_floor(name, export):
    """A copy of the shipped model `name` at `export`, without a voice floor."""
    shutil.copytree(shipped.path(name), export)
    (export / voice_floor.FILE).unlink(missing_ok=True)
    return str(export)


@pytest.fixture
def audio_model(tmp_path):
    return _without_floor("ravdess-audio", tmp_path / "model")


@pytest.fixture
def av_model(tmp_path):
    """The shipped audio-visual model (action units), without a voice floor."""
    return _without_floor("ravdess-av", tmp_path / "av")


def test_predict_averages_the_floor_into_a_clip_and_leaves_a_recording(audio_model, tmp_path):
    folder = tmp_path / "speaker"
    folder.mkdir()
    paths = []
    for i, seconds in enumerate([2.0, 2.5, 3.0, 12.0]):  # the last is read as a timeline
        path = str(folder / f"{i}.wav")
        sf.write(path, 0.3 * speech_like(seconds, seed=i), 16000)
        paths.append(path)
    before = dict(predict.predict_files(bundle.load_serving_model(audio_model), paths))
    base = bundle.load_serving_model(audio_model)
    assert base.voice_floor is None
    names = base.class_names
    assert names == RAVDESS
    angry = names.index("angry")
    floor = _answers(angry, 51)  # this floor answers 'angry' whatever it hears
    voice_floor.save(floor, audio_model)
    model = bundle.load_serving_model(audio_model)
    assert dataclasses.asdict(model.voice_floor)["weight"] == 0.5
    after = dict(predict.predict_files(model, paths))
    for path in paths[:3]:
        expected = 0.5 * before[path].probabilities + 0.5 * np.eye(len(names))[angry]
        np.testing.assert_allclose(after[path].probabilities, expected, atol=1e-6)
        assert any("voice floor" in n for n in after[path].notes)
    long = paths[3]
    assert after[long].num_windows > 1
    np.testing.assert_allclose(after[long].probabilities, before[long].probabilities)
    # A floor of other classes than the model's is refused, naming the file.
    voice_floor.save(dataclasses.replace(floor, class_names=tuple(reversed(names))), audio_model)
    with pytest.raises(bundle.PredictError, match=voice_floor.FILE):
        bundle.load_serving_model(audio_model)


def test_a_face_floor_reads_the_files_face_row(av_model, audio_model, tmp_path):
    from data_prep.features import openface

    wav = tmp_path / "talk.wav"
    sf.write(wav, 0.3 * speech_like(3.0, seed=1), 16000)
    tables = {}
    for name, value in (("low", 0.0), ("high", 3.0)):
        tables[name] = tmp_path / f"{name}.csv"
        row = ",".join([f"{value:.1f}"] * len(openface.AU_COLUMNS))
        tables[name].write_text("clip_id," + ",".join(openface.AU_COLUMNS) + f"\ntalk,{row}\n")
    base = bundle.load_serving_model(av_model)
    assert base.class_names == RAVDESS
    happy = RAVDESS.index("happy")
    floor = _answers(happy, 51 + 35, face_features=35, face_coef=30.0)
    voice_floor.save(floor, av_model)
    model = bundle.load_serving_model(av_model)
    for name, expected_floor in (("low", np.full(8, 1 / 8)), ("high", np.eye(8)[happy])):
        kwargs = {"groups": "file", "openface": str(tables[name])}
        [(_, before)] = predict.predict_files(base, [str(wav)], **kwargs)
        [(_, after)] = predict.predict_files(model, [str(wav)], **kwargs)
        expected = 0.5 * before.probabilities + 0.5 * expected_floor
        np.testing.assert_allclose(after.probabilities, expected, atol=1e-5)
        assert any("voice+face floor's posteriors" in n for n in after.notes)
    # A face floor where the model reads no action units, or a face row of another width, is
    # refused, naming the file and why.
    voice_floor.save(floor, audio_model)
    with pytest.raises(bundle.PredictError, match=r"voice_floor.npz: reads a face row; the mod"):
        bundle.load_serving_model(audio_model)
    voice_floor.save(_answers(happy, 51 + 10, face_features=10), av_model)
    with pytest.raises(bundle.PredictError, match=r"row of 10 features; the model's has 35"):
        bundle.load_serving_model(av_model)


def test_the_command_fits_on_a_corpus_and_names_the_clips_it_left_out(
    audio_model, av_model, tmp_path
):
    from tests.test_corpora import write_ravdess

    corpus = tmp_path / "ravdess"
    write_ravdess(corpus)

    def command(model, *extra):
        return subprocess.run(
            [sys.executable, "-m", "fbp_jax", "voice-floor", f"--manual_dir={corpus}",
             f"--model={model}", "--C=0.1", "--weight=0.2", *extra],
            check=False, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    run = command(audio_model, "--face")  # the audio model reads no face: nothing written
    assert run.returncode != 0 and "reads no action-unit statistics" in run.stderr
    assert "%|" not in run.stderr and "silent" not in run.stderr  # no clip read: no bar
    assert bundle.load_serving_model(audio_model).voice_floor is None
    run = command(av_model, "--face")
    assert run.returncode == 0, run.stderr[-2000:]
    assert bundle.load_serving_model(av_model).voice_floor.face_features == 35
    run = command(audio_model, "--sessions=-1")
    assert run.returncode != 0 and "--sessions" in run.stderr
    run = command(audio_model, "--sessions=1", "--babble_sessions=1")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "6 clips, 2 speakers, and through 2 channels, weight 0.2" in run.stdout
    assert "voice functionals, 3 hearings each" in run.stderr  # one bar, each clip decoded once
    through = bundle.load_serving_model(audio_model).voice_floor
    run = command(audio_model)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "6 clips, 2 speakers, weight 0.2" in run.stdout
    assert re.search(r"03-01-03-01-01-01-02\.wav: skipped: .*silent", run.stderr)  # read, refused
    floor = bundle.load_serving_model(audio_model).voice_floor
    assert floor.weight == 0.2 and floor.C == 0.1
    assert not np.allclose(floor.coef, through.coef)  # the channels changed the regression
    np.testing.assert_array_equal(floor.pooled_mean, through.pooled_mean)
    seen = [floor.class_names.index(c) for c in ("neutral", "angry", "surprised")]
    assert np.all(floor.intercept[seen] > -1e8)
    assert np.all(np.delete(floor.intercept, seen) == -1e9)  # never heard: never answered
