"""OpenFace action units as a video stream: the FeatureExtraction CSV on the frame grid, and
tables of clip rows."""

import numpy as np
import pytest
import soundfile

from data_prep.errors import BadClip
from data_prep.features import openface
from data_prep.testclips import speech_like


def _openface_csv(path, times, success):
    header = ["frame", " face_id", " timestamp", " confidence", " success"]
    header += [f" {c}" for c in openface.AU_COLUMNS]
    lines = [",".join(header)]
    for i, (t, ok) in enumerate(zip(times, success)):
        values = [str(i + 1), "0", f"{t:.3f}", "0.98", str(int(ok))]
        values += [f"{(i + j) % 5 * 0.5:.2f}" for j in range(35)]
        lines.append(",".join(values))
    path.write_text("\n".join(lines) + "\n")


def test_openface_frames_go_on_the_grid_by_timestamp(tmp_path):
    path = tmp_path / "clip.csv"
    times = np.arange(30) / 30.0  # 30 frames/s for 1 s
    success = np.ones(30, bool)
    success[10:13] = False
    _openface_csv(path, times, success)
    t, rows, valid = openface.read_frames(str(path))
    assert rows.shape == (30, 35) and valid.sum() == 27 and not rows[11].any()
    video, ok = openface.on_grid(t, rows, valid, steps=40)
    assert video.shape == (40, 35)
    # Step k (k / 25 s) shows the last frame not later: 25 steps cover the second, then none.
    np.testing.assert_array_equal(video[5], rows[6])  # 0.2 s -> frame 6 (0.2 s)
    assert ok[:8].all() and not ok[9:11].any() and not ok[26:].any()


def test_bad_openface_files_and_tables_are_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,timestamp,AU01_r\n1,0.0,0.5\n")
    with pytest.raises(BadClip, match=r"bad.csv: not an OpenFace FeatureExtraction CSV"):
        openface.read_frames(str(bad))
    table = tmp_path / "table.csv"
    rows = ["clip_id," + ",".join(openface.AU_COLUMNS)]
    rows.append("01-01-05-01-01-01-01," + ",".join(["0.5"] * 35))
    table.write_text("\n".join(rows) + "\n")
    t = openface.read_table(str(table))
    # A RAVDESS audio file (modality 03) finds its audio-video clip's row (01).
    assert openface.table_row(t, "03-01-05-01-01-01-01") is not None
    assert openface.table_row(t, "other") is None
    table.write_text(rows[0] + "\nx," + ",".join(["nan"] * 35) + "\n")
    with pytest.raises(BadClip, match=r"line 2: not 35 finite values"):
        openface.read_table(str(table))


def test_the_shipped_av_model_reads_the_openface_csv_it_is_given(tmp_path):
    """`--openface=F.csv`: OpenFace's per-frame CSV of the file (any name) or a clip table."""
    from fbp_jax.serving import predict

    wav = tmp_path / "talk.wav"
    soundfile.write(wav, 0.3 * speech_like(3.0, 16000, seed=1)[:, 0], 16000)
    frames = tmp_path / "openface_out.csv"
    _openface_csv(frames, np.arange(75) / 25.0, np.ones(75, bool))
    assert openface.is_frame_csv(str(frames))
    table = tmp_path / "table.csv"
    table.write_text("clip_id," + ",".join(openface.AU_COLUMNS) + "\n")
    assert not openface.is_frame_csv(str(table))
    model = predict.resolve_model("ravdess-av")
    [(_, result)] = predict.predict_files(model, [str(wav)], openface=str(frames))
    assert not isinstance(result, str), result
    assert result.summary()["prediction"] in model.class_names
    [(_, result)] = predict.predict_files(model, [str(wav)], openface=str(table))
    assert isinstance(result, str) and "no row for 'talk'" in result


def test_one_file_alone_keeps_its_face_stream(tmp_path):
    """`--speaker_groups=file` with the clip-level AU model: one file's AU row standardised by
    itself would be all zeros (the face ignored); the face stream takes the training speakers'
    statistics instead, so the AU row still moves the answer."""
    from fbp_jax.serving import predict

    wav = tmp_path / "talk.wav"
    soundfile.write(wav, 0.3 * speech_like(3.0, 16000, seed=1)[:, 0], 16000)
    model = predict.resolve_model("ravdess-av")
    probs, labels = [], []
    for name, value in (("low", 0.0), ("high", 3.0)):
        table = tmp_path / f"{name}.csv"
        row = ",".join([f"{value:.1f}"] * len(openface.AU_COLUMNS))
        table.write_text("clip_id," + ",".join(openface.AU_COLUMNS) + f"\ntalk,{row}\n")
        [(_, result)] = predict.predict_files(model, [str(wav)], groups="file", openface=str(table))
        assert not isinstance(result, str), result
        probs.append(np.array(list(result.summary()["probabilities"].values())))
        labels.append(result.statistics)
    assert labels[0].startswith("own (video: training speakers")
    assert np.abs(probs[0] - probs[1]).max() > 0.01
