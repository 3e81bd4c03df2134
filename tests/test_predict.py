"""predict: a generated audio file through data_prep's features, the training statistics and the
evaluation crop gives the posteriors that `evaluate` gives for the same clip; refusals are clear."""

import io
import math
import os
from typing import ClassVar

import numpy as np
import pytest
import soundfile

from data_prep.features import audio as audio_lib
from fbp_jax.evaluation import evaluate as evaluate_lib
from fbp_jax.serving import bundle, export, predict, timeline
from fbp_jax.serving.bundle import PredictError

# One worker trains the shared runs of conftest (amfbp_workdir, audio_workdir) for all.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("trained_runs")]
CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
CLIP_SECONDS = {"long": 2.13, "short": 0.71}  # longer and shorter than the 1.2 s crop


def speech_like(seconds, seed):
    """A harmonic signal with a gliding f0 and a syllable-rate envelope, 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * 16000)) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.8 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voice = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = 0.3 + 0.7 * np.sin(2 * np.pi * 3.5 * t) ** 2
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Generated .wav / .flac files, their labels, and a TFDS dataset of the same clips."""
    import tensorflow_datasets as tfds

    from data_prep.builders import base

    folder = tmp_path_factory.mktemp("clips")
    files, examples = {}, []
    for i, (name, seconds) in enumerate(CLIP_SECONDS.items()):
        ext = ".wav" if i == 0 else ".flac"
        path = str(folder / f"{name}{ext}")
        soundfile.write(path, speech_like(seconds, i), 16000)
        files[name] = path
        spec = audio_lib.log_spectrogram(audio_lib.load_audio(path).samples)
        frames = math.ceil(len(spec) / 4)
        examples.append(
            {
                "clip_id": name,
                "speaker": "gen",
                "label": i,
                "audio": spec,
                "video": np.zeros((frames, 32), np.float32),
                "video_valid": np.ones(frames, bool),
                "duration_s": np.float32(seconds),
            }
        )

    class GeneratedClips(tfds.core.GeneratorBasedBuilder):
        """The generated files in the corpus schema (features from data_prep.features.audio)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Test clips."}

        @tfds.core.utils.classproperty
        @classmethod
        def url_infos(cls):
            return None

        def _info(self):
            features = base.schema_features(CLASSES, (32,), "zeros")
            # Not dataset_info_from_configs: it looks for metadata files beside the module.
            return tfds.core.DatasetInfo(builder=self, description="test", features=features)

        def _split_generators(self, dl_manager):
            return {"test": self._generate_examples()}

        def _generate_examples(self):
            for ex in examples:
                yield ex["clip_id"], ex

    data_dir = str(tmp_path_factory.mktemp("tfds_generated"))
    GeneratedClips(data_dir=data_dir).download_and_prepare()
    return {"files": files, "data_dir": data_dir, "folder": str(folder)}


@pytest.fixture(scope="module")
def audio_export(audio_workdir, tmp_path_factory):
    """The audio model exported for serving."""
    return export.export_model(audio_workdir, str(tmp_path_factory.mktemp("export") / "e"))


def test_predict_matches_evaluate_on_generated_clips(audio_workdir, audio_export, clips):
    evaluated = evaluate_lib.evaluate(
        audio_workdir,
        "test",
        data_dir=clips["data_dir"],
        data_name="generated_clips",
        batch_size=16,  # one padded batch
    )
    by_id = dict(zip(evaluated.clip_ids, evaluated.probabilities, strict=True))
    model = bundle.load_serving_model(audio_workdir)
    assert model.class_names == CLASSES
    exported = bundle.load_exported(audio_export)
    for name, path in clips["files"].items():
        r = predict.predict_file(model, path, span_seconds=0.5, crops="centre")
        probs = np.array([r["probabilities"][c] for c in CLASSES])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(probs, by_id[name], atol=1e-5)
        assert r["prediction"] == CLASSES[int(np.argmax(by_id[name]))]
        start, end, weight = r["audio_span"]
        assert 0 <= start < end <= CLIP_SECONDS[name] + 1e-6 and 0 < weight <= 1 + 1e-6
        if name == "long":  # centre crop of 1.2 s out of 2.13 s
            assert r["crop_start_s"] == pytest.approx(0.44)
            assert start >= r["crop_start_s"] - 1e-9
        # The exported model serves the same prediction without the model code.
        e = predict.predict_file(exported, path, span_seconds=0.5, crops="centre")
        for c in CLASSES:
            assert e["probabilities"][c] == pytest.approx(r["probabilities"][c], abs=1e-5)


def test_a_directory_gives_a_csv_with_errors_named(audio_workdir, clips, tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    for path in clips["files"].values():
        os.symlink(path, folder / os.path.basename(path))
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEnot audio")
    (folder / "notes.txt").write_text("ignored")
    model = bundle.load_serving_model(audio_workdir)
    files, notes = predict.find_media([str(folder)])
    assert [os.path.basename(f) for f in files] == ["broken.wav", "long.wav", "short.flac"]
    assert notes == [f"{folder}: 1 files not read (1 .txt)"]
    rows = predict.predict_files(model, files)
    out = io.StringIO()
    predict.rows_to_csv(model, rows, out)
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("file,prediction,confidence,duration_s,prob_angry")
    assert len(lines) == 4 and "broken.wav: unreadable media file" in lines[1]
    assert lines[2].split(",")[1] in CLASSES


def test_classes_restrict_the_answers_to_a_target_corpus(audio_workdir, clips):
    model = bundle.load_serving_model(audio_workdir)
    files = [clips["files"]["short"], clips["files"]["long"]]
    full = dict(predict.predict_files(model, files))
    spec = "calm=neutral+sad,angry,surprise"
    rows = predict.predict_files(model, files, classes=spec)
    for path, t in rows:
        assert t.class_names == ("calm", "angry", "surprise")
        p, q = full[path].probabilities, t.probabilities
        k = {c: i for i, c in enumerate(full[path].class_names)}
        kept = p[:, [k["neutral"], k["sad"], k["angry"], k["surprise"]]].sum(1)
        np.testing.assert_allclose(q[:, 0], (p[:, k["neutral"]] + p[:, k["sad"]]) / kept, rtol=1e-5)
        np.testing.assert_allclose(q[:, 2], p[:, k["surprise"]] / kept, rtol=1e-5)
        np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
        assert t.summary()["prediction"] in t.class_names
    out = io.StringIO()
    predict.rows_to_csv(model, rows, out)
    header = out.getvalue().splitlines()[0].split(",")
    assert [h for h in header if h.startswith("prob_")] == [
        "prob_calm",
        "prob_angry",
        "prob_surprise",
    ]
    for bad, message in [
        ("angry,calm", "'calm' is not a class of the model"),
        ("angry,fear+angry", "'angry' is in the groups"),
        ("angry,,sad", "an empty group"),
        ("x=angry,x=sad", "two groups of one name"),
    ]:
        with pytest.raises(ValueError, match=message):
            timeline.class_groups(bad, CLASSES)


def test_refusals_name_the_file_and_the_reason(amfbp_workdir, audio_workdir, clips, tmp_path):
    av_model = bundle.load_serving_model(amfbp_workdir)
    wav = clips["files"]["long"]
    with pytest.raises(PredictError, match=r"long.wav: the model \(am_fbp, .* no video stream"):
        predict.predict_file(av_model, wav)
    # A real video goes through the face pipeline (MTCNN + FER2013 encoder, D1 = 128), which
    # this model, trained on 32-d synthetic face features, cannot take.
    from data_prep import testclips

    video = str(tmp_path / "clip.mp4")
    testclips.write_clip(video, testclips.face_frames(10).frames, audio=testclips.speech_like(0.4))
    with pytest.raises(PredictError, match=r"clip.mp4: .* shape \(32,\) per frame, .* \(128,\)"):
        predict.predict_file(av_model, video)
    audio_model = bundle.load_serving_model(audio_workdir)
    (tmp_path / "x.mp3").write_text("not an mp3")
    with pytest.raises(PredictError, match=r"x.mp3: unreadable media file"):
        predict.predict_file(audio_model, str(tmp_path / "x.mp3"))
    with pytest.raises(PredictError, match=r"missing.wav: file not found"):
        predict.predict_file(audio_model, str(tmp_path / "missing.wav"))
    with pytest.raises(PredictError, match=r"neither a training workdir"):
        bundle.load_serving_model(str(tmp_path))
    with pytest.raises(PredictError, match=r"ravdess-robust: .* shipped model \(.*ravdess-audio"):
        predict.resolve_model("ravdess-robust")  # a mistyped name lists the shipped ones


def test_predict_and_the_export_need_no_tensorflow(audio_workdir, audio_export, clips, monkeypatch):
    from tests.conftest import BLOCK_TENSORFLOW, run_script

    # etils asks importlib whether TensorFlow is installed, which the blocker would answer with
    # an ImportError; on a machine without TensorFlow the answer is simply no.
    monkeypatch.setenv("EPATH_USE_TF", "0")
    script = (
        BLOCK_TENSORFLOW
        + """
from fbp_jax.serving import bundle, predict
for model in sys.argv[1:3]:
    r = predict.predict_file(bundle.load_serving_model(model), sys.argv[3])
    print(r["prediction"], round(sum(r["probabilities"].values()), 5))
"""
    )
    proc = run_script(script, audio_workdir, audio_export, clips["files"]["long"])
    lines = proc.stdout.split("\n")
    assert lines[0] == lines[1] and lines[0].endswith(" 1.0"), proc.stdout


def test_speaker_normalised_model_predicts_as_it_evaluates(tiny_folds_data_dir, clips, tmp_path):
    """A model trained with per-speaker standardisation: predicting the files of one speaker
    (one folder) equals evaluating them with that speaker's own statistics, and a group too
    small for statistics equals evaluating with the training speakers' pooled ones."""
    from fbp_jax.training import loop
    from tests.conftest import tiny_folds_config

    workdir = str(tmp_path / "spk")
    config = tiny_folds_config(tiny_folds_data_dir, "audio", num_train_steps=2, eval_every_steps=2)
    with config.unlocked():
        config.data.speaker_norm = True
        config.data.frontend = "mel"
        config.data.num_mel = 32
    loop.train_and_evaluate(config, workdir)
    model = bundle.load_serving_model(workdir)
    assert "speakers" in model.stats and model.stats["audio_mean"].shape[1] == 32
    paths = list(clips["files"].values())
    for speaker_stats, groups, min_clips in (("own", "all", 2), ("training", "all", 3)):
        evaluated = evaluate_lib.evaluate(
            workdir,
            "test",
            data_dir=clips["data_dir"],
            data_name="generated_clips",
            batch_size=16,
            speaker_stats=speaker_stats,
        )
        by_id = dict(zip(evaluated.clip_ids, evaluated.probabilities, strict=True))
        rows = predict.predict_files(
            model, paths, groups=groups, min_speaker_clips=min_clips, crops="centre"
        )
        for path, t in rows:
            name = os.path.splitext(os.path.basename(path))[0]
            probs = np.array([t.summary()["probabilities"][c] for c in CLASSES])
            np.testing.assert_allclose(probs, by_id[name], atol=1e-5, err_msg=speaker_stats)


def test_a_long_recording_is_streamed_without_holding_its_blocks(audio_export, tmp_path):
    """A recording of several decoder chunks is read block by block, each pass decoding again:
    no pass holds the blocks it has already given (memory stays flat with the length); a
    file of one block is decoded once and kept for the passes."""
    import weakref

    from data_prep.features import media

    model = predict.resolve_model(audio_export)
    path = tmp_path / "long.wav"
    soundfile.write(path, speech_like(3.5 * media.CHUNK_SECONDS, seed=3), 16000)
    source = predict.open_source(str(path), model)
    for _ in range(2):  # both passes
        alive, count = [], 0
        for block in source.audio_blocks():
            count += 1
            alive = [r for r in alive if r() is not None] + [weakref.ref(block)]
            del block
            assert len(alive) <= 2, f"{len(alive)} blocks held after {count}"
        assert count >= 4
    short = tmp_path / "short.wav"
    soundfile.write(short, speech_like(2.0, seed=4), 16000)
    source = predict.open_source(str(short), model)
    first = list(source.audio_blocks())
    assert len(first) == 1 and next(iter(source.audio_blocks())) is first[0]
