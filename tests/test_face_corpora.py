"""AFEW and CREMA-D builders on tiny corpora written here in the real layouts.

Good clips show scikit-image's astronaut (a real face) with one frame without it; every bad
input of the issue is present once and must be reported with its file and reason.
"""

import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from data_prep import build, testclips
from data_prep.builders import afew, cremad

FRAMES = 8  # 0.32 s clips: MTCNN costs ~0.1 s per frame on 2 cores.
NO_FACE_FRAME = 5


def _good(path, seed=0, **kw):
    clip = testclips.face_frames(FRAMES, size=(320, 240), no_face=[NO_FACE_FRAME], seed=seed)
    rate = 22050 if path.endswith(".flv") else 44100
    audio = testclips.speech_like(FRAMES / 25 + 0.05, rate, 2, seed=seed)
    testclips.write_clip(path, clip.frames, audio=audio, audio_rate=rate, **kw)


def _vfr(path):
    ts = np.concatenate([[0], np.cumsum(np.where(np.arange(FRAMES - 1) % 2, 0.02, 0.06))])
    clip = testclips.face_frames(FRAMES, size=(320, 240), timestamps=ts)
    rate = 22050 if path.endswith(".flv") else 44100
    testclips.write_clip(
        path, clip.frames, timestamps=ts, audio=testclips.speech_like(0.4, rate), audio_rate=rate
    )


def _truncated(path):
    clip = testclips.face_frames(50, size=(320, 240))
    rate = 22050 if path.endswith(".flv") else 44100
    testclips.write_clip(path, clip.frames, audio=testclips.speech_like(2.0, rate), audio_rate=rate)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def _no_face(path):
    clip = testclips.face_frames(FRAMES, size=(320, 240), no_face=range(FRAMES))
    testclips.write_clip(
        path, clip.frames, audio=testclips.speech_like(0.4, 44100), audio_rate=44100
    )


def write_afew(root) -> dict:
    """Train_AFEW / Val_AFEW with 3 + 3 usable clips and every bad case; returns id -> label."""
    good = {
        ("Train_AFEW", "Angry", "000001"): "angry",
        ("Train_AFEW", "Happy", "000002"): "happy",
        ("Train_AFEW", "Sad", "000005"): "sad",
        ("Val_AFEW", "Neutral", "000003"): "neutral",
        ("Val_AFEW", "surprise", "000004"): "surprise",
    }
    for i, (parts, _) in enumerate(good.items()):
        os.makedirs(os.path.join(root, *parts[:2]), exist_ok=True)
        _good(os.path.join(root, *parts) + ".avi", seed=i)
    fear = os.path.join(root, "Train_AFEW", "Fear")
    os.makedirs(fear)
    with open(os.path.join(fear, "000010.avi"), "wb") as f:
        f.write(np.random.default_rng(0).bytes(3000))  # unreadable
    _truncated(os.path.join(fear, "000011.avi"))
    clip = testclips.face_frames(FRAMES, size=(320, 240))
    testclips.write_clip(os.path.join(fear, "000012.avi"), clip.frames, audio=None)
    testclips.write_clip(os.path.join(fear, "000013.avi"), None, audio=testclips.speech_like(0.4))
    testclips.write_clip(
        os.path.join(fear, "000014.avi"), clip.frames[:0], audio=testclips.speech_like(0.4)
    )
    _no_face(os.path.join(fear, "000015.avi"))
    os.makedirs(os.path.join(root, "Train_AFEW", "Contempt"))
    _good(os.path.join(root, "Train_AFEW", "Contempt", "000020.avi"))
    _vfr(os.path.join(root, "Val_AFEW", "surprise", "000016.mkv"))
    os.makedirs(os.path.join(root, "Val_AFEW", "Disgust"))
    _good(os.path.join(root, "Val_AFEW", "Disgust", "000001.avi"))  # id used in Train_AFEW
    expected = {parts[2]: label for parts, label in good.items()}
    expected["000016"] = "surprise"
    # Val_AFEW spelt in lower case is read (noted); a stray file and an empty emotion folder
    # are reported.
    os.rename(os.path.join(root, "Val_AFEW"), os.path.join(root, "val_afew"))
    with open(os.path.join(root, "Train_AFEW", "list.txt"), "w") as f:
        f.write("my list")
    os.makedirs(os.path.join(root, "Train_AFEW", "Angry_old"))
    return expected


def write_cremad(root) -> dict:
    """VideoFlash + AudioWAV of actors 1001, 1019, 1091 with every bad case."""
    video, audio = os.path.join(root, "VideoFlash"), os.path.join(root, "AudioWAV")
    os.makedirs(video)
    os.makedirs(audio)

    def wav(clip_id, seconds=FRAMES / 25 + 0.05):
        sf.write(os.path.join(audio, f"{clip_id}.wav"), testclips.speech_like(seconds)[:, 0], 16000)

    good = {"1001_DFA_ANG_XX": "group1", "1019_IEO_HAP_HI": "group2", "1091_TIE_SAD_LO": "group5"}
    for i, clip_id in enumerate(good):
        _good(os.path.join(video, f"{clip_id}.flv"), seed=i)
        wav(clip_id)
    _vfr(os.path.join(video, "1001_IOM_NEU_XX.flv"))
    wav("1001_IOM_NEU_XX", 0.4)
    wav("1019_DFA_FEA_XX")  # audio without video
    _good(os.path.join(video, "1019_DFA_DIS_XX.flv"))  # video without audio file
    _truncated(os.path.join(video, "1001_ITS_ANG_XX.flv"))
    wav("1001_ITS_ANG_XX", 2.0)
    _good(os.path.join(video, "1001_MTI_SAD_XX.flv"))
    sf.write(os.path.join(audio, "1001_MTI_SAD_XX.wav"), np.zeros(0, np.float32), 16000)
    testclips.write_clip(
        os.path.join(video, "1019_TAI_NEU_XX.flv"),
        None,
        audio=testclips.speech_like(0.4, 22050),
        audio_rate=22050,
    )
    wav("1019_TAI_NEU_XX")
    wav("1001_WSI_BOR_XX")  # unknown emotion
    wav("1100_WSI_ANG_XX")  # actor outside 1001-1091
    wav("notes")  # not a clip id
    # AudioWAV spelt in lower case is read (noted); a stray file is reported.
    os.rename(audio, os.path.join(root, "audiowav"))
    with open(os.path.join(root, "SentenceFilenames.csv"), "w") as f:
        f.write("Filename\n")
    expected = {k: (v, k.split("_")[2]) for k, v in good.items()}
    expected["1001_IOM_NEU_XX"] = ("group1", "NEU")
    return expected


def _records(builder) -> dict:
    return {
        split: {ex["clip_id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split))}
        for split in builder.info.splits
    }


@pytest.fixture(scope="module")
def afew_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("afew")
    expected = write_afew(str(root / "src"))
    builder = build.build("afew", str(root / "out"), str(root / "src"), num_workers=0)
    return root, builder, expected


@pytest.fixture(scope="module")
def cremad_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad")
    expected = write_cremad(str(root / "src"))
    builder = build.build("cremad", str(root / "out"), str(root / "src"), num_workers=0)
    return root, builder, expected


def _check_example(ex, names, label):
    assert names[ex["label"]] == label
    tv = len(ex["video_valid"])
    assert ex["video"].shape == (tv, 128) and ex["fer_posteriors"].shape == (tv, 7)
    assert np.isfinite(ex["video"]).all()
    np.testing.assert_allclose(ex["fer_posteriors"].sum(1), 1, atol=1e-5)
    assert ex["audio"].shape[1] == 200 and abs(len(ex["audio"]) - 4 * tv) <= 8


def test_afew_builds_train_and_validation_and_reports_bad_clips(afew_built):
    root, builder, expected = afew_built
    records = _records(builder)
    assert {s: sorted(r) for s, r in records.items()} == {
        "train": ["000002", "000005"],
        "validation": ["000003", "000004", "000016"],
    }
    names = builder.info.features["label"].names
    assert tuple(names) == afew.CLASSES
    for clips in records.values():
        for clip_id, ex in clips.items():
            _check_example(ex, names, expected[clip_id])
            assert ex["speaker"] == b"unknown"
            if clip_id != "000016":
                assert len(ex["video_valid"]) == FRAMES
                assert list(np.flatnonzero(~ex["video_valid"])) == [NO_FACE_FRAME]
    report = builder.report()
    reasons = {(s["clip_id"], s["split"]): (s["file"], s["reason"]) for s in report["skipped"]}
    fear = os.path.join(str(root / "src"), "Train_AFEW", "Fear")
    for clip_id, reason in {
        "000010": "unreadable video",
        "000011": "truncated video",
        "000012": "no audio track",
        "000013": "no video stream",
        "000014": "zero video frames",
        "000015": "no face detected in any of the 8 frames",
    }.items():
        file, why = reasons[(clip_id, "train")]
        assert file == os.path.join(fear, f"{clip_id}.avi") and reason in why, (clip_id, why)
    assert "not an AFEW emotion" in reasons[("000020", "train")][1]
    # The same file as an angry training clip and a disgusted validation clip: neither kept.
    for split in ("train", "validation"):
        why = reasons[("000001", split)][1]
        assert "identical files" in why and "different labels angry, disgust" in why, why
    assert report["splits"] == {
        "train": {"written": 2, "skipped": 9},  # and the empty folder Angry_old
        "validation": {"written": 3, "skipped": 1},
    }
    src = str(root / "src")
    assert any(
        n.startswith(os.path.join(src, "val_afew")) and "'Val_AFEW'" in n
        for n in report["listing_notes"]
    )
    empty = reasons[("", "train")]
    assert empty[0].endswith("Angry_old") and "no video in this folder" in empty[1]
    assert [e["path"] for e in report["not_used"]] == [os.path.join(src, "Train_AFEW", "list.txt")]
    vfr = [n["note"] for n in report["converted"] if n["clip_id"] == "000016"]
    assert any("000016.mkv: variable frame rate" in n for n in vfr), vfr
    stats = report["face_pipeline"]
    assert stats["clips"] == 5 and stats["frames"] == sum(
        len(ex["video_valid"]) for r in records.values() for ex in r.values()
    )
    assert stats["frames_with_face"] == stats["frames"] - 4
    assert stats["frames_per_second_per_worker"] > 0


def test_cremad_builds_actor_groups_and_reports_bad_clips(cremad_built):
    root, builder, expected = cremad_built
    records = _records(builder)
    assert {s: sorted(r) for s, r in records.items()} == {
        "group1": ["1001_DFA_ANG_XX", "1001_IOM_NEU_XX"],
        "group2": ["1019_IEO_HAP_HI"],
        "group5": ["1091_TIE_SAD_LO"],
    }
    names = builder.info.features["label"].names
    for split, clips in records.items():
        for clip_id, ex in clips.items():
            group, code = expected[clip_id]
            assert split == group and ex["speaker"].decode() == clip_id[:4]
            _check_example(ex, names, cremad.EMOTION_CODES[code])
    report = builder.report()
    reasons = {s["clip_id"]: (s["file"], s["reason"]) for s in report["skipped"]}
    src = str(root / "src")
    assert reasons["1019_DFA_FEA_XX"][1].startswith("audio without video")
    assert reasons["1019_DFA_DIS_XX"][1].startswith("video without audio file")
    assert reasons["1001_ITS_ANG_XX"] == (
        os.path.join(src, "VideoFlash", "1001_ITS_ANG_XX.flv"),
        reasons["1001_ITS_ANG_XX"][1],
    )
    assert "truncated video" in reasons["1001_ITS_ANG_XX"][1]
    assert reasons["1001_MTI_SAD_XX"][0].endswith("audiowav/1001_MTI_SAD_XX.wav")
    assert any(
        n.startswith(os.path.join(src, "audiowav")) and "'AudioWAV'" in n
        for n in report["listing_notes"]
    )
    stray = [e["path"] for e in report["not_used"]]
    assert stray == [os.path.join(src, "SentenceFilenames.csv")], stray
    assert "zero-length" in reasons["1001_MTI_SAD_XX"][1]
    assert "no video stream" in reasons["1019_TAI_NEU_XX"][1]
    assert "unknown emotion BOR" in reasons["1001_WSI_BOR_XX"][1]
    assert "outside 1001-1091" in reasons["1100_WSI_ANG_XX"][1]
    assert "not ACTOR_SENTENCE_EMOTION_LEVEL" in reasons["notes"][1]
    assert report["written"] == 4 and len(report["skipped"]) == 8
    assert any(
        n["clip_id"] == "1001_IOM_NEU_XX" and "variable frame rate" in n["note"]
        for n in report["converted"]
    )


def test_actor_groups_cover_every_actor_once():
    groups = [cremad.actor_group(a) for a in range(cremad.FIRST_ACTOR, cremad.LAST_ACTOR + 1)]
    assert sorted(set(groups)) == [f"group{k}" for k in range(1, 6)]
    assert [groups.count(f"group{k}") for k in range(1, 6)] == [18, 18, 18, 18, 19]
    with pytest.raises(ValueError, match="outside"):
        cremad.actor_group(1092)


def test_afew_user_features_config(afew_built, tmp_path):
    """`afew/features` reads one <clip_id>.npy per clip from --face_features_dir."""
    root, _, _ = afew_built
    src = str(root / "src")
    feats = tmp_path / "feats"
    feats.mkdir()
    rows = {"000001": 8, "000002": 8, "000005": 8, "000003": 8, "000004": 7, "000016": 8}
    for clip_id, n in rows.items():
        x = np.full((n, 12), float(clip_id[-2:]), np.float32)
        x[2] = np.nan  # a frame without a face in the user's own pipeline
        np.save(feats / f"{clip_id}.npy", x)
    builder = build.build(
        "afew/features", str(tmp_path / "out"), src, num_workers=0, face_features_dir=str(feats)
    )
    records = _records(builder)
    assert sorted(records["train"]) == ["000002", "000005"]
    assert sorted(records["validation"]) == ["000003", "000016"]
    ex = records["train"]["000002"]
    assert ex["video"].shape == (FRAMES, 12) and not ex["video_valid"][2]
    np.testing.assert_array_equal(ex["video"][0], np.full(12, 2.0))
    assert "fer_posteriors" not in ex
    reasons = {s["clip_id"]: s["reason"] for s in builder.report()["skipped"]}
    assert "7 feature rows for the 8 frames" in reasons["000004"]
    assert "face feature file not found" in reasons["000015"]


def test_features_config_without_folder_is_a_clear_error(afew_built, tmp_path):
    root, _, _ = afew_built
    with pytest.raises(FileNotFoundError, match="face_features"):
        build.build("afew/features", str(tmp_path / "out"), str(root / "src"), num_workers=0)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["afew", "cremad"])
def test_corpus_config_trains_on_the_built_records(request, tmp_path, corpus):
    """configs/afew_amfbp.py and configs/cremad_amfbp.py (shrunk) train on the built records."""
    from configs import afew_amfbp, common, cremad_amfbp
    from fbp_jax.training import loop

    root, _, _ = request.getfixturevalue(f"{corpus}_built")
    config = {"afew": afew_amfbp, "cremad": cremad_amfbp}[corpus].get_config()
    assert config.data.name == f"{corpus}/fer" and config.data.video_shape == (128,)
    with config.unlocked():
        config.data.data_dir = str(root / "out")
        if corpus == "cremad":
            config.data.train_split, config.data.eval_split = "group1+group5", "group2"
            config.data.test_split = ""
        config.data.clip_seconds = 1.2
        config.model.audio = common.fcn_config("tiny")
        config.model.fbp.num_trunks = 3
        config.batch_size = 2
        config.num_train_steps = 2
    result = loop.train_and_evaluate(config, str(tmp_path / "work"))
    assert result["step"] == 2 and np.isfinite(result["eval_loss"])
