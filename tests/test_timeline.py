"""predict on recordings of any length and container: the timeline finds segments and their
classes, marks the pauses, gives the same answer whatever the container or sample rate, reads
the audio of files whose video is missing or damaged, and keeps memory flat."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from data_prep import testclips
from fbp_jax.serving import bundle, clip, predict, timeline
from tests.conftest import REPO

RATE = 16000
TONES = (300.0, 700.0, 1500.0)  # Class k's voice: harmonics-free tone at this frequency.
CLASSES = ("low", "mid", "high")
# (class, seconds) of speech, with GAP seconds of room noise before each and at the end.
SEGMENTS = ((0, 6.0), (2, 5.0), (1, 7.0), (0, 4.5))
GAP = 2.5


def _voice(freq, seconds, seed):
    """A tone with a syllable-rate envelope and a little jitter: voiced-like, one band."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f = freq * (1 + 0.01 * np.sin(2 * np.pi * 0.5 * t))
    x = np.sin(2 * np.pi * np.cumsum(f) / RATE)
    envelope = 0.4 + 0.6 * np.sin(2 * np.pi * 2.5 * t) ** 2
    return (0.3 * x * envelope + 0.002 * rng.standard_normal(len(t))).astype(np.float32)


def recording(segments=SEGMENTS, gap=GAP, seed=0):
    """Samples and the truth: [(start s, end s, class)] of the voiced segments."""
    rng = np.random.default_rng(seed)
    parts, truth, t = [], [], 0.0
    for i, (k, seconds) in enumerate(segments):
        parts.append((0.002 * rng.standard_normal(int(gap * RATE))).astype(np.float32))
        t += gap
        parts.append(_voice(TONES[k], seconds, seed + i))
        truth.append((t, t + seconds, k))
        t += seconds
    parts.append((0.002 * rng.standard_normal(int(gap * RATE))).astype(np.float32))
    return np.concatenate(parts), truth


def tone_model(clip_seconds=3.2):
    """A stand-in model that says which of the tones a window holds (the mean log power of
    each tone's bin over the valid frames, sharpened): what the timeline does is tested, not
    what a network learned."""
    bins = [round(f / 20.0) for f in TONES]

    def apply(batch):
        x, m = batch["audio"], batch["audio_mask"][..., None]
        mean = (x * m).sum(1) / np.maximum(m.sum(1), 1)
        scores = 4.0 * mean[:, bins]
        p = np.exp(scores - scores.max(1, keepdims=True))
        return {"probabilities": p / p.sum(1, keepdims=True)}

    data = {**bundle.DATA_FIELDS, "clip_seconds": clip_seconds, "audio_fps": 100}
    data.update(video_fps=25, num_bins=200, video_shape=[1], normalize=False)
    return bundle.ServingModel("tones", "audio", CLASSES, data, None, apply)


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    samples, truth = recording()
    path = str(folder / "recording.wav")
    soundfile.write(path, samples, RATE)
    return path, truth


def test_the_timeline_finds_the_segments_their_classes_and_the_pauses(long_file, tmp_path):
    path, truth = long_file
    model = tone_model()
    t = predict.predict_file(model, path)["timeline"]
    hop = 0.8
    assert t.num_windows > 20 and np.allclose(np.diff(t.starts)[:-1], hop)
    inside = lambda s, e, a, b: s >= a - 1e-6 and e <= b + 1e-6
    for s, e, v, p in zip(t.starts, t.ends, t.voiced, t.probabilities, strict=True):
        segment = [k for a, b, k in truth if inside(s, e, a, b)]
        if segment:  # A window within a segment: voiced, and that segment's class.
            assert v and int(np.argmax(p)) == segment[0], (s, e, p)
        if not any(s < b and e > a for a, b, _ in truth):  # Within a pause: not scored.
            assert not v and np.isnan(p).all(), (s, e)
    # The voice found matches the segments within one hop.
    assert len(t.regions) == len(truth), t.regions
    for (a, b, _), (ra, rb) in zip(truth, t.regions, strict=True):
        assert abs(ra - a) < hop and abs(rb - b) < hop, ((a, b), (ra, rb))
    summary = t.summary()
    assert summary["voiced_windows"] == int(t.voiced.sum())
    by_time = {k: sum(b - a for a, b, kk in truth if kk == k) for k in range(3)}
    assert summary["prediction"] == CLASSES[max(by_time, key=by_time.get)]
    # The outputs: CSV and JSON lines with a row per window, a PNG.
    timeline.write_rows([t], str(tmp_path / "t.csv"))
    timeline.write_rows([t], str(tmp_path / "t.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(rows) == t.num_windows and set(rows[0]) >= {"start_s", "end_s", "voiced", "prob_low"}
    assert len((tmp_path / "t.csv").read_text().splitlines()) == t.num_windows + 1
    timeline.plot(t, str(tmp_path / "t.png"))
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_short_clip_is_one_window_read_as_evaluation_reads_it(tmp_path):
    path = str(tmp_path / "short.flac")
    samples, _ = recording(segments=((1, 2.0),), gap=0.5)
    soundfile.write(path, samples, RATE)
    r = predict.predict_file(tone_model(), path)
    assert r["windows"] == 1 and r["prediction"] == "mid" and "crop_start_s" in r
    # The same as the clip path: the whole file's features through predict_features.
    features = predict.read_features(path, tone_model())
    direct = predict.predict_features(tone_model(), features)
    assert direct["probabilities"] == pytest.approx(r["probabilities"])


def test_one_clip_or_a_recording_is_decided_by_the_models_own_voiced_span(tmp_path):
    """A 2 s utterance in 9 s of steady noise at 15 dB SNR: by loudness alone every frame is
    within 35 dB of the loudest, so the span is the whole file (a long recording, read as
    windows); a model whose span is bounded by the noise floor (`voiced_floor_span`) reads the
    same file as it reads the utterance, one clip."""
    rng = np.random.default_rng(5)
    voice = _voice(TONES[1], 2.0, 5)
    noise = rng.standard_normal(int(9.0 * RATE)).astype(np.float32)
    noise *= np.sqrt(np.mean(voice**2) / 10**1.5)
    start = int(3.5 * RATE)
    noise[start : start + len(voice)] += voice
    path = str(tmp_path / "noisy.wav")
    soundfile.write(path, noise, RATE)
    model = tone_model()
    model.data.update(voiced_db=35.0)
    assert predict.predict_file(model, path)["windows"] > 1
    model.data.update(voiced_floor_db=3.0, voiced_floor_span=True)
    r = predict.predict_file(model, path)
    assert r["windows"] == 1 and r["prediction"] == "mid"
    assert 3.0 < r["crop_start_s"] < 3.6


def test_crop_starts_centre_or_every_quarter_window_to_the_end():
    assert clip.crop_starts(60, 80, "average") == [0]  # Within a window: as 'centre'.
    assert clip.crop_starts(100, 80, "centre") == [10]
    assert clip.crop_starts(100, 80, "average") == [0, 20]
    starts = clip.crop_starts(150, 80, "average")
    assert starts == [0, 20, 40, 60, 70]  # Every quarter window, the last ending at the end.
    with pytest.raises(predict.PredictError, match="crops must be one of"):
        clip.crop_starts(100, 80, "all")


def test_a_clip_longer_than_the_window_is_averaged_over_crops_covering_it(tmp_path):
    """'average': the posterior is the mean over crops that read every frame of the clip (the
    centre crop leaves out its ends); a clip within one window reads the same either way."""
    model = tone_model(clip_seconds=2.4)
    path = str(tmp_path / "two_tones.wav")
    # 1.6 s of 'high', then 2.8 s of 'mid' (one clip: within two windows); the centre 2.4 s are
    # mostly 'mid', the first 2.4 s mostly 'high'.
    samples, _ = recording(segments=((2, 1.6), (1, 2.8)), gap=0.05)
    soundfile.write(path, samples, RATE)
    features = predict.read_features(path, model)
    batch, offsets = clip.prepare_inputs(features, model.data, None, ("audio",), "average")
    ta = batch["audio"].shape[1]
    n = len(clip.frontend.clip_view(features, clip.data_config(model.data))["audio"])
    assert len(offsets) == len(batch["audio"]) >= 3
    read = np.zeros(n, bool)
    for start in np.round(np.asarray(offsets) * model.data["audio_fps"]).astype(int):
        read[start : start + ta] = True
    assert read.all()
    centre = predict.predict_features(model, features, crops="centre")
    averaged = predict.predict_features(model, features)  # The default.
    assert centre["crops"] == 1 and averaged["crops"] == len(offsets)
    assert centre["prediction"] == "mid" and centre["probabilities"]["high"] < 0.05
    expected = np.mean(model.apply(batch)["probabilities"], axis=0)
    got = [averaged["probabilities"][c] for c in CLASSES]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert averaged["probabilities"]["high"] > 0.1  # The first crop heard the 'high' tone.
    assert averaged["crop_start_s"] == pytest.approx(offsets[0])
    # The command line reads the file the same way.
    r = predict.predict_file(model, path)
    assert r["probabilities"] == pytest.approx(averaged["probabilities"]) and r["crops"] > 1
    short = str(tmp_path / "short.wav")
    soundfile.write(short, recording(segments=((1, 1.5),), gap=0.1)[0], RATE)
    features = predict.read_features(short, model)
    assert predict.predict_features(model, features) == (
        predict.predict_features(model, features, crops="centre")
    )


def _encode(path, samples, rate, codec):
    from scipy import signal

    x = signal.resample_poly(samples, rate // 1000, RATE // 1000) if rate != RATE else samples
    testclips.write_clip(path, None, audio=x[:, None], audio_rate=rate, audio_codec=codec)


def test_three_containers_and_two_rates_give_the_same_timeline(long_file, tmp_path):
    path, _ = long_file
    samples, _ = soundfile.read(path, dtype="float32")
    files = {"wav": path}
    files["mkv_flac_48k"] = str(tmp_path / "r.mkv")
    _encode(files["mkv_flac_48k"], samples, 48000, "flac")
    files["m4a_aac_48k"] = str(tmp_path / "r.m4a")
    _encode(files["m4a_aac_48k"], samples, 48000, "aac")
    files["ogg_opus_48k"] = str(tmp_path / "r.opus")
    _encode(files["ogg_opus_48k"], samples, 48000, "libopus")
    model = tone_model()
    rows = dict(predict.predict_files(model, list(files.values())))
    ref = rows[path]
    for name, f in files.items():
        t = rows[f]
        assert not isinstance(t, str), (name, t)
        assert t.num_windows == ref.num_windows, name
        agree = np.mean(t.voiced == ref.voiced)
        assert agree >= 0.95, (name, agree)
        both = t.voiced & ref.voiced
        same = np.argmax(t.probabilities[both], 1) == np.argmax(ref.probabilities[both], 1)
        assert same.mean() >= 0.95, (name, same.mean())
        assert t.summary()["prediction"] == ref.summary()["prediction"]


def test_an_audio_model_reads_the_audio_of_any_container_whatever_the_video(tmp_path):
    samples, _ = recording(segments=((2, 2.0),), gap=0.4)
    audio = samples[:, None]
    model = tone_model()
    mov = str(tmp_path / "voice.mov")  # Audio-only QuickTime.
    testclips.write_clip(mov, None, audio=audio, audio_codec="aac")
    # A video whose picture ends after 0.5 s of the 2.8 s its audio lasts.
    short_picture = str(tmp_path / "short_picture.mp4")
    testclips.write_clip(short_picture, testclips.face_frames(12).frames, audio=audio)
    r = predict.predict_file(model, mov)
    assert r["prediction"] == "high" and not r["timeline"].notes
    r = predict.predict_file(model, short_picture)
    assert r["prediction"] == "high"
    assert "video stream was not read" in r["timeline"].notes[0]
    # Without the stream a model needs: which stream is missing, and what the file has.
    video_only = str(tmp_path / "silent.mp4")
    testclips.write_clip(video_only, testclips.face_frames(12).frames, audio=None)
    with pytest.raises(bundle.PredictError, match=r"silent.mp4: .* no audio stream .*has: video"):
        predict.predict_file(model, video_only)
    face_model = tone_model()
    face_model.fusion = "am_fbp"
    with pytest.raises(bundle.PredictError, match=r"voice.mov: .* no video stream \(it has: audio"):
        predict.predict_file(face_model, mov)
    text = str(tmp_path / "notes.xyz")
    with open(text, "w") as f:
        f.write("not media")
    with pytest.raises(bundle.PredictError, match=r"notes.xyz: unreadable media file"):
        predict.predict_file(model, text)


WRITE_SCRIPT = """
import sys
import soundfile
from tests.test_timeline import recording
minutes = float(sys.argv[2])
segments = [(i % 3, 5.0) for i in range(int(minutes * 60 / 7.5))]
samples, _ = recording(segments=segments, gap=2.5)
soundfile.write(sys.argv[1], samples, 16000)
"""

PREDICT_SCRIPT = """
import resource, sys
from tests.test_timeline import tone_model
from fbp_jax.serving import predict
model = tone_model()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
r = predict.predict_file(model, sys.argv[1])
print(r["windows"], before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_memory_does_not_grow_with_the_length_of_the_file(tmp_path):
    """Peak memory added by predicting 2 and 12 minutes of audio (each in its own process,
    the file written by another): the chunked reading keeps it about the same."""
    grown = {}
    env = {**os.environ, "PYTHONPATH": REPO}
    for minutes in (2, 12):
        path = str(tmp_path / f"{minutes}.flac")
        for script, args in ((WRITE_SCRIPT, [path, str(minutes)]), (PREDICT_SCRIPT, [path])):
            proc = subprocess.run(
                [sys.executable, "-c", script, *args],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr[-2000:]
        windows, before, after = map(int, proc.stdout.split()[-3:])
        assert windows > minutes * 60 / 0.8 * 0.9
        grown[minutes] = (after - before) / 1024  # MB
    # Held whole, 10 more minutes of spectrogram alone would be about 460 MB in float64.
    assert grown[12] < grown[2] + 40, grown


def test_balance_weights_undo_a_shift_toward_one_class():
    """A group whose true classes are equally frequent, every answer pushed toward class 0:
    balanced, the group answers each class equally often on average and most clips right;
    a group already balanced is left as it is."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    logits = 2.0 * np.eye(4)[labels] + rng.normal(0, 0.5, (40, 4)) + [3.0, 0, 0, 0]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.mean(p.argmax(1) == labels) < 0.4
    q = p * timeline.balance_weights(p)
    q /= q.sum(1, keepdims=True)
    np.testing.assert_allclose(q.mean(0), 0.25, atol=0.01)
    assert np.mean(q.argmax(1) == labels) > 0.85
    fair = np.exp(logits - [3.0, 0, 0, 0])
    fair /= fair.sum(1, keepdims=True)
    w = timeline.balance_weights(fair)
    np.testing.assert_allclose(w, 0.25, atol=0.03)
    # Rows of several groups: each group of at least three rows per class is balanced on its
    # own; a group of fewer is left as it is.
    groups = ["shifted"] * 40 + ["fair"] * 40 + ["small"] * 11
    rows = np.concatenate([p, fair, p[:11]])
    out = timeline.balanced(rows, groups)
    np.testing.assert_allclose(out[:40], q, atol=1e-9)
    np.testing.assert_allclose(out[40:80].mean(0), 0.25, atol=0.01)
    np.testing.assert_allclose(out[80:], rows[80:])
    assert set(timeline.group_weights(rows, groups)) == {"shifted", "fair"}


def test_balance_rescales_each_folder_of_enough_files(tmp_path):
    """A hum at the 'low' tone in one speaker's recordings makes the stand-in model answer
    'low' for most of them; `balance` (a folder of at least three files per class) gives
    each file its own class again, and leaves a smaller folder as it was."""
    folder, small = tmp_path / "speaker", tmp_path / "small"
    folder.mkdir(), small.mkdir()
    t = np.arange(int(1.2 * RATE)) / RATE
    hum = 0.35 * np.sin(2 * np.pi * TONES[0] * t).astype(np.float32)
    paths, truth = [], []
    for i in range(12):
        k = i % 3
        samples, _ = recording(segments=((k, 1.2),), gap=0.0, seed=i)
        samples[: len(hum)] += hum[: len(samples)]
        path = str((folder if i < 10 else small) / f"clip{i:02d}.wav")
        soundfile.write(path, samples, RATE)
        paths.append(path)
        truth.append(CLASSES[k])
    model = tone_model()

    def answers(balance):
        rows = predict.predict_files(model, paths, balance=balance)
        return [t.summary()["prediction"] for _, t in rows], [t.notes for _, t in rows]

    plain, _ = answers(False)
    balanced, notes = answers(True)
    assert sum(a == b for a, b in zip(plain[:10], truth[:10])) <= 5
    assert balanced[:10] == truth[:10]
    assert balanced[10:] == plain[10:]  # two files: not a group to balance
    assert all("balanced over the 10 files" in n[-1] for n in notes[:10])
    assert not any("balanced" in " ".join(n) for n in notes[10:])
