"""Video decoding, MTCNN face detection and alignment, the FER2013 encoder, the face pipeline.

Every clip is made here with PyAV: scikit-image's astronaut photograph (a real face) moved and
scaled across frames over a textured background, some frames without it, and a speech-like
audio track.
"""

import os

import numpy as np
import pytest

from data_prep import testclips
from data_prep.builders.corpus import BadClip
from data_prep.features import faces, video
from tests.conftest import BLOCK_NETWORK, BLOCK_TENSORFLOW, run_script

NO_FACE = (0, 1, 14, 15, 16, 29)
NUM_FRAMES = 30


def _iou(a, b):
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


@pytest.fixture(scope="module")
def clip():
    return testclips.face_frames(NUM_FRAMES, size=(320, 240), no_face=NO_FACE)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, clip):
    """AFEW-like .avi (MPEG-4 + 44.1 kHz stereo PCM) and CREMA-D-like .flv (+ MP3)."""
    d = tmp_path_factory.mktemp("clips")
    seconds = NUM_FRAMES / 25
    testclips.write_clip(
        str(d / "face.avi"),
        clip.frames,
        audio=testclips.speech_like(seconds, 44100, 2),
        audio_rate=44100,
    )
    testclips.write_clip(
        str(d / "face.flv"),
        clip.frames,
        audio=testclips.speech_like(seconds, 22050),
        audio_rate=22050,
    )
    return d


@pytest.fixture(scope="module")
def pipeline():
    return faces.FacePipeline(batch_size=16)


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", ["face.avi", "face.flv"])
def test_read_video_frames_on_grid_and_audio(clip_dir, clip, name):
    v = video.read_video(str(clip_dir / name))
    assert v.frames.shape == (NUM_FRAMES, 240, 320, 3) and v.frames.dtype == np.uint8
    np.testing.assert_array_equal(v.frame_index, np.arange(NUM_FRAMES))
    np.testing.assert_allclose(v.source_times, np.arange(NUM_FRAMES) / 25, atol=2e-3)
    # Each decoded frame is the written one (lossy codec), not a neighbour.
    for i in range(1, NUM_FRAMES - 1):
        err = [np.abs(v.frames[i].astype(float) - clip.frames[j]).mean() for j in (i - 1, i, i + 1)]
        assert err[1] < 12 and (err[1] <= min(err)), (i, err)
    assert v.audio is not None and abs(v.audio.duration_s - NUM_FRAMES / 25) < 0.06
    assert any("resampled" in n and "-> 16000 Hz" in n for n in v.notes), v.notes


def test_other_frame_rates_resampled_by_timestamp(tmp_path, clip):
    # 30 frames/s: 30 frames (1 s) -> 25 grid steps, each the frame on screen at k / 25 s.
    path = str(tmp_path / "30fps.mkv")
    testclips.write_clip(path, clip.frames, audio=testclips.speech_like(1.0), fps=30)
    v = video.read_video(path)
    assert v.num_steps == 25 and not v.variable_frame_rate
    np.testing.assert_array_equal(v.frame_index, np.floor(np.arange(25) / 25 * 30 + 1e-6))
    np.testing.assert_array_equal(v.frames, video.read_video(path, fps=None).frames[v.frame_index])

    # Variable frame rate: intervals alternate 20 and 60 ms; reported and resampled.
    ts = np.concatenate([[0], np.cumsum(np.where(np.arange(NUM_FRAMES - 1) % 2, 0.02, 0.06))])
    path = str(tmp_path / "vfr.mkv")
    testclips.write_clip(path, clip.frames, timestamps=ts, audio=testclips.speech_like(1.3))
    v = video.read_video(path)
    assert v.variable_frame_rate
    assert any("variable frame rate" in n for n in v.notes)
    grid = np.arange(v.num_steps) / 25
    expected = np.searchsorted(ts, grid + 1e-4, side="right") - 1
    np.testing.assert_array_equal(v.frame_index, expected)
    assert v.num_steps == round((ts[-1] + 0.04) * 25)


def _write_bad(kind: str, d, clip) -> str:
    audio = testclips.speech_like(1.2)
    path = str(d / f"{kind}.avi")
    if kind == "unreadable":
        with open(path, "wb") as f:
            f.write(np.random.default_rng(0).bytes(4000))
    elif kind == "empty":
        open(path, "wb").close()
    elif kind == "truncated":
        testclips.write_clip(path, clip.frames, audio=audio)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif kind == "no_audio":
        testclips.write_clip(path, clip.frames, audio=None)
    elif kind == "audio_only":
        testclips.write_clip(path, None, audio=audio)
    elif kind == "zero_frames":
        testclips.write_clip(path, clip.frames[:0], audio=audio)
    elif kind == "silent":
        testclips.write_clip(path, clip.frames, audio=np.zeros((19200, 1), np.float32))
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("unreadable", "unreadable video"),
        ("empty", "unreadable video"),
        ("truncated", "truncated video"),
        ("no_audio", "no audio track"),
        ("audio_only", "no video stream"),
        ("zero_frames", "zero video frames"),
        ("silent", "silent clip"),
        ("missing", "file not found"),
    ],
)
def test_bad_video_raises_with_file_and_reason(tmp_path, clip, kind, reason):
    path = _write_bad(kind, tmp_path, clip)
    with pytest.raises(BadClip) as info:
        video.read_video(path)
    assert info.value.path == path and reason in info.value.reason
    assert path in str(info.value)


def test_audio_track_longer_than_the_video_is_not_truncation(tmp_path, clip):
    # FLV declares one duration for the whole file; here it is the audio's (2.5 s vs 1.2 s).
    path = str(tmp_path / "long_audio.flv")
    audio = testclips.speech_like(2.5, 22050)
    testclips.write_clip(path, clip.frames, audio=audio, audio_rate=22050)
    v = video.read_video(path, with_audio=False)
    assert v.num_steps == NUM_FRAMES and not v.notes
    assert abs(video.read_video(path).audio.duration_s - 2.5) < 0.05


# --------------------------------------------------------------------------- geometry


def test_similarity_transform_recovers_rotation_scale_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rot.T + shift
    m = faces.similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_warp_affine_identity_shift_and_antialiasing():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (20, 30)).astype(np.float32)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    np.testing.assert_allclose(faces.warp_affine(img, ident, (20, 30)), img, atol=1e-4)
    shifted = faces.warp_affine(img, np.array([[1.0, 0, 3], [0, 1.0, 2]]), (10, 10))
    np.testing.assert_allclose(shifted, img[2:12, 3:13], atol=1e-4)
    # A 1-pixel checkerboard shrunk 4x averages to grey instead of aliasing.
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.float32)
    small = faces.resize(checker, (16, 16))
    assert np.abs(small - 127.5).max() < 1.0


# --------------------------------------------------------------------------- MTCNN


def test_mtcnn_finds_the_face_where_it_is_and_not_where_it_is_not(pipeline, clip):
    found = pipeline.detector.detect_batch(clip.frames)
    for i, face in enumerate(found):
        if i in NO_FACE:
            assert face is None, f"frame {i}: a face where there is none ({face})"
        else:
            assert face is not None, f"frame {i}: face missed"
            assert _iou(face.box, clip.face_boxes[i]) > 0.6, (i, face.box, clip.face_boxes[i])
            # Landmarks inside the true box, eyes above the mouth, image-left eye first.
            x0, y0, x1, y1 = clip.face_boxes[i]
            lm = face.landmarks
            assert np.all((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1))
            assert lm[0, 0] < lm[1, 0] and lm[:2, 1].max() < lm[3:, 1].min()
    assert not pipeline.detector.failures


def test_jax_mtcnn_finds_the_faces_of_the_original(clip):
    """The JAX detector against the `mtcnn` package (TensorFlow) on the same frames: the same
    faces, boxes and landmarks within a pixel, the same confidences."""
    pytest.importorskip("tensorflow")
    frames = [clip.frames[:16], clip.frames[16:], testclips.face_frames(6, size=(480, 360)).frames]
    jax_detector = faces.FaceDetector(detect_max_side=None, min_confidence=0.5)
    tf_detector = faces.FaceDetector(detect_max_side=None, min_confidence=0.5, backend="tensorflow")
    found = 0
    for batch in frames:
        for mine, original in zip(
            jax_detector.detect_batch(batch), tf_detector.detect_batch(batch)
        ):
            assert (mine is None) == (original is None)
            if mine is not None:
                found += 1
                np.testing.assert_allclose(mine.box, original.box, atol=1.0)
                np.testing.assert_allclose(mine.landmarks, original.landmarks, atol=1.0)
                assert abs(mine.confidence - original.confidence) < 1e-3
    assert found == clip.has_face.sum() + 6


def test_jax_mtcnn_image_ops_match_tensorflow():
    tf = pytest.importorskip("tensorflow")
    from data_prep.features import mtcnn_net

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 37, 53, 3)).astype(np.float32)
    for size in [(22, 31), (5, 7), (37, 53)]:
        np.testing.assert_allclose(
            mtcnn_net.area_resize(images, size),
            tf.image.resize(images, size, method="area").numpy(),
            atol=1e-5,
        )
    # Boxes inside, across the border and outside the image (x0, y0, x1, y1 in pixels).
    boxes = np.array([[3, 4, 20, 30], [-6, -2, 15, 12], [40, 30, 70, 50]], np.float32)
    index = np.array([0, 1, 1], np.int32)
    selector = boxes[:, [1, 0, 3, 2]] / np.array([37, 53, 37, 53], np.float32)
    expected = tf.image.crop_and_resize(images, selector, index, (24, 24)).numpy()
    np.testing.assert_allclose(
        mtcnn_net.crop_and_resize(images, boxes, index, 24), expected, atol=1e-5
    )


def test_suppression_drops_boxes_overlapped_by_any_higher_box():
    from data_prep.features import mtcnn_net

    # b overlaps a (dropped); c overlaps b only: dropped too (the wheel's rule), d alone kept.
    rows = np.array(
        [
            [0, 0, 0, 10, 10, 0.9],
            [0, 3, 0, 13, 10, 0.8],
            [0, 8, 0, 18, 10, 0.7],
            [0, 50, 50, 60, 60, 0.6],
            [1, 3, 0, 13, 10, 0.5],
        ]
    )
    kept = mtcnn_net.suppress(rows[::-1], 0.3)
    np.testing.assert_array_equal(kept[:, 5], [0.9, 0.6, 0.5])


def test_aligned_crops_are_stable_across_position_and_scale(pipeline, clip):
    crops, valid, _ = pipeline.crops(clip.frames)
    np.testing.assert_array_equal(valid, clip.has_face)
    aligned = crops[valid].astype(float)
    # The same face at different places and sizes aligns to nearly the same crop.
    spread = np.abs(aligned - aligned.mean(0)).mean()
    whole = crops[~valid].astype(float)
    assert spread < 12, spread
    assert np.abs(whole.mean(0) - aligned.mean(0)).mean() > 2 * spread


# --------------------------------------------------------------------------- FER2013 encoder


def test_flax_encoder_matches_keras_original(pipeline, clip):
    keras = pytest.importorskip("keras")
    from data_prep.features import fer_net

    crops, _, _ = pipeline.crops(clip.frames)
    rng = np.random.default_rng(0)
    inputs = np.concatenate([crops, rng.integers(0, 256, (5, 64, 64), dtype=np.uint8)])
    features, posteriors = pipeline.encoder(inputs)

    model = keras.models.load_model(fer_net.fer_weights_file(), compile=False)
    sub = keras.Model(model.inputs, [model.get_layer("add_4").output, model.outputs[0]])
    x = ((inputs.astype(np.float32) / 255 - 0.5) * 2)[..., None]
    ref_block, ref_post = sub.predict(x, verbose=0)
    ref_features = ref_block.mean(axis=(1, 2))
    assert features.shape == (len(inputs), fer_net.FEATURE_DIM)
    np.testing.assert_allclose(features, ref_features, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(posteriors, ref_post, atol=2e-6)
    assert np.array_equal(posteriors.argmax(1), ref_post.argmax(1))


def test_face_pipeline_runs_without_tensorflow_or_network(clip_dir, clip, tmp_path, monkeypatch):
    # MTCNN in JAX, the FER encoder in Flax, PyAV decoding: what a GPU machine without
    # TensorFlow runs; every connection refused and an empty home (no cache): the weights come
    # with the project and the installed packages.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    proc = run_script(
        BLOCK_TENSORFLOW
        + BLOCK_NETWORK
        + f"""
import numpy as np
from data_prep.features import faces
result = faces.FacePipeline(batch_size=16)({str(clip_dir / "face.avi")!r})
assert result.features.shape == ({NUM_FRAMES}, 128) and result.posteriors.shape[1] == 7
print("valid", "".join("1" if v else "0" for v in result.valid))
"""
    )
    expected = "".join("1" if v else "0" for v in clip.has_face)
    assert f"valid {expected}" in proc.stdout, proc.stdout + proc.stderr


def test_h5_loader_names_a_missing_layer(tmp_path):
    import h5py

    from data_prep.features import fer_net

    path = str(tmp_path / "broken.h5")
    with h5py.File(path, "w") as f:
        f.create_group("model_weights")
    with pytest.raises(ValueError, match="broken.h5: no layer 'batch_normalization_1'"):
        fer_net.load_keras_h5(path)


# --------------------------------------------------------------------------- whole pipeline


def test_pipeline_features_valid_and_spectrogram(pipeline, clip_dir, clip):
    from data_prep.features import audio, fer_net

    result = pipeline(str(clip_dir / "face.avi"))
    assert result.features.shape == (NUM_FRAMES, fer_net.FEATURE_DIM)
    assert result.features.dtype == np.float32 and np.isfinite(result.features).all()
    np.testing.assert_array_equal(result.valid, clip.has_face)
    np.testing.assert_allclose(result.posteriors.sum(1), 1, atol=1e-5)
    # The astronaut smiles: the FER2013 network says "happy" on (nearly) every aligned face;
    # the smallest faces (about 45 pixels high here) are the exceptions.
    happy = fer_net.FER_CLASSES.index("happy")
    on_faces = result.posteriors[result.valid]
    assert (on_faces.argmax(1) == happy).mean() >= 0.8 and on_faces[:, happy].mean() > 0.8
    n = round(NUM_FRAMES / 25 * audio.SAMPLE_RATE)
    assert abs(len(result.spectrogram) - (1 + (n - audio.WINDOW) // audio.HOP)) <= 2
    assert result.spectrogram.shape[1] == audio.NUM_BINS
    assert set(result.seconds) == {"decode", "detect", "align", "encode", "audio"}


def test_pipeline_with_separate_audio_file(pipeline, clip_dir, tmp_path):
    import soundfile

    wav = str(tmp_path / "a.wav")
    soundfile.write(wav, testclips.speech_like(1.2)[:, 0], 16000)
    result = pipeline(str(clip_dir / "face.flv"), audio_path=wav)
    assert len(result.valid) == NUM_FRAMES
    assert abs(len(result.spectrogram) - 117) <= 1


def test_no_face_in_any_frame_is_a_bad_clip(pipeline, tmp_path, clip):
    path = str(tmp_path / "noface.avi")
    empty = testclips.face_frames(8, size=(320, 240), no_face=range(8))
    testclips.write_clip(path, empty.frames, audio=testclips.speech_like(0.4))
    with pytest.raises(BadClip, match="no face detected in any of the 8 frames") as info:
        pipeline(path)
    assert info.value.path == path


def test_features_from_file(clip_dir, tmp_path):
    path = str(clip_dir / "face.avi")
    rows = np.arange(NUM_FRAMES * 8, dtype=np.float32).reshape(NUM_FRAMES, 8)
    rows[3] = np.nan
    npy = str(tmp_path / "face.npy")
    np.save(npy, rows)
    result = faces.features_from_file(npy, path)
    assert result.features.shape == (NUM_FRAMES, 8) and result.posteriors is None
    assert not result.valid[3] and result.valid.sum() == NUM_FRAMES - 1
    np.testing.assert_array_equal(result.features[4], rows[4])
    np.save(npy, rows[:-2])
    with pytest.raises(BadClip, match=f"28 feature rows for the {NUM_FRAMES} frames"):
        faces.features_from_file(npy, path)
    with pytest.raises(BadClip, match="not found"):
        faces.features_from_file(os.path.join(tmp_path, "none.npy"), path)


@pytest.mark.slow
def test_benchmark_command_prints_a_table():
    proc = run_script(
        "from data_prep.features import faces; faces.main(['--benchmark', '--seconds', '0.8'])"
    )
    assert "whole f/s" in proc.stdout and "afew_like_720x576.avi" in proc.stdout
    assert "cremad_like_480x360.flv" in proc.stdout
