"""No single file stops a build or a prediction, and nothing broken passes as good.

Every case is a file the test writes, in the real layout of its corpus: damaged, odd, or valid
but unusual. Builds must report each bad clip with its file and a reason (and count the
unexpected errors), write the good ones, convert and note the unusual ones, and run the checks
that span clips before any extraction.
"""

import struct

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from data_prep import build, testclips
from data_prep.builders import corpus, iemocap, ravdess
from data_prep.errors import BadClip
from data_prep.features import audio as audio_lib
from data_prep.features import sync
from data_prep.features import video as video_lib
from tests.test_corpora import _markers_file, _ravdess_name, _tone


def _write(path, x, rate=16000, subtype=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)
    return str(path)


# ----------------------------------------------------------------------------------------------
# Audio content


def test_samples_far_outside_full_scale_are_refused_and_slightly_above_kept(tmp_path):
    loud = _write(tmp_path / "loud.wav", _tone(1.0) * 1000, subtype="FLOAT")
    with pytest.raises(BadClip, match=r"loud.wav: samples far outside \[-1, 1\] \(peak 3"):
        audio_lib.load_audio(loud)
    hot = audio_lib.load_audio(_write(tmp_path / "hot.wav", _tone(1.0) * 4.5, subtype="FLOAT"))
    assert any("above full scale (peak 1.4" in n for n in hot.notes)
    spec = audio_lib.log_spectrogram(hot.samples)
    assert np.isfinite(spec).all() and spec.max() < corpus.ExampleSpec(200, (1,)).max_log_power


def test_silence_is_measured_after_removing_dc(tmp_path):
    dc = _write(tmp_path / "dc.wav", np.full(16000, 0.5, np.float32), subtype="FLOAT")
    with pytest.raises(BadClip, match=r"dc.wav: silent clip .*DC removed"):
        audio_lib.load_audio(dc)
    offset = audio_lib.load_audio(_write(tmp_path / "o.wav", _tone(1.0) + 0.4, subtype="FLOAT"))
    assert len(offset.samples) == 16000  # a DC offset under real audio is kept


def test_a_downmix_that_cancels_keeps_one_channel(tmp_path):
    x = _tone(1.0)
    path = _write(tmp_path / "inverted.wav", np.stack([x, -x], axis=1))
    decoded = audio_lib.load_audio(path)
    assert any("cancel when averaged" in n and "kept channel" in n for n in decoded.notes)
    np.testing.assert_allclose(np.abs(decoded.samples), np.abs(x), atol=1e-4)


def _set_wav_rate(path, rate):
    with open(path, "rb") as f:
        data = bytearray(f.read())
    assert data[12:16] == b"fmt "
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", rate * 2)  # byte rate of 16-bit mono
    with open(path, "wb") as f:
        f.write(bytes(data))


@pytest.mark.parametrize("rate", [7, 1000, 4_000_000])
def test_an_implausible_header_sample_rate_is_refused(tmp_path, rate):
    path = _write(tmp_path / "rate.wav", _tone(1.0), subtype="PCM_16")
    _set_wav_rate(path, rate)
    with pytest.raises(BadClip, match=rf"implausible sample rate {rate} Hz"):
        audio_lib.load_audio(path)


def test_an_implausible_duration_is_refused_before_decoding(tmp_path):
    path = _write(tmp_path / "long.wav", _tone(3.0))
    with pytest.raises(BadClip, match=r"long.wav: 3 s long: a recording, not a clip"):
        audio_lib.load_audio(path, max_seconds=2.0)


@pytest.mark.parametrize(
    "name,subtype,rate,channels",
    [
        ("pcm8.wav", "PCM_U8", 22050, 1),
        ("pcm24.wav", "PCM_24", 44100, 2),
        ("double.wav", "DOUBLE", 16000, 1),
        ("six.wav", "PCM_16", 48000, 6),
        ("vorbis.ogg", "VORBIS", 32000, 2),
        ("flac24.flac", "PCM_24", 96000, 1),
    ],
)
def test_unusual_but_valid_encodings_are_converted_and_noted(
    tmp_path, name, subtype, rate, channels
):
    x = _tone(1.0, rate=rate)
    path = _write(tmp_path / name, np.stack([x] * channels, axis=1), rate, subtype)
    decoded = audio_lib.load_audio(path)
    assert abs(decoded.duration_s - 1.0) < 0.01
    assert (rate == 16000) or any(f"resampled {rate} Hz" in n for n in decoded.notes)
    assert (channels == 1) or any(f"downmixed {channels} channels" in n for n in decoded.notes)


def test_nan_samples_and_an_empty_file_are_refused(tmp_path):
    x = _tone(1.0)
    x[100] = np.nan
    with pytest.raises(BadClip, match="NaN or infinite"):
        audio_lib.load_audio(_write(tmp_path / "nan.wav", x, subtype="FLOAT"))
    (tmp_path / "zero.wav").write_bytes(b"")
    with pytest.raises(BadClip, match="zero.wav: unreadable audio"):
        audio_lib.load_audio(str(tmp_path / "zero.wav"))


def test_example_validation_names_the_problem():
    spec = corpus.ExampleSpec(num_bins=200, video_shape=(35,))
    good = {
        "audio": np.zeros((30, 200), np.float32),
        "video": np.zeros((8, 35), np.float32),
        "video_valid": np.ones(8, bool),
        "duration_s": np.float32(0.3),
    }
    corpus.validate_example(good, spec, "f.wav")
    cases = {
        "spectrogram has 30 non-finite": {"audio": np.where(np.eye(30, 200) > 0, np.inf, 0.0)},
        "log power in": {"audio": np.full((30, 200), 40.0)},
        "spectrogram of shape": {"audio": np.zeros((30, 100))},
        "video features of shape": {"video": np.zeros((8, 34))},
        "validity flags": {"video_valid": np.ones(7, bool)},
        "video features has 8 non-finite": {
            "video": np.where(np.eye(8, 35) > 0, np.nan, 0.0),
        },
        "duration": {"duration_s": np.float32(0.0)},
    }
    for message, change in cases.items():
        with pytest.raises(BadClip, match=message):
            corpus.validate_example({**good, **change}, spec, "f.wav")


def test_stream_durations_within_tolerance_or_reported():
    assert sync.check_durations("f", 3.0, 3.3) == []
    notes = sync.check_durations("f", 3.0, 5.0, "markers")
    assert "audio lasts 3.00 s but the markers 5.00 s" in notes[0] and "kept" in notes[0]
    with pytest.raises(BadClip, match="2.00 s apart"):
        sync.check_durations("f", 3.0, 5.0, policy="skip")


# ----------------------------------------------------------------------------------------------
# Video streams


def test_picture_size_and_audio_layout_changing_part_way(tmp_path):
    path = str(tmp_path / "switch.ts")
    frames = testclips.face_frames(25, size=(160, 120)).frames
    big = testclips.face_frames(25, size=(320, 240)).frames
    testclips.write_segments(
        path,
        [
            {"frames": frames, "audio": testclips.speech_like(1.0, 48000, 1), "audio_rate": 48000},
            {"frames": big, "audio": testclips.speech_like(1.0, 48000, 2), "audio_rate": 48000},
        ],
    )
    clip = video_lib.read_video(path)
    assert clip.frames.shape[1:] == (120, 160, 3)  # every frame at the first size
    assert any("picture size changes part-way (160x120 -> 320x240" in n for n in clip.notes)
    assert any("channel layout or rate changes part-way" in n for n in clip.notes)
    assert abs(clip.audio.duration_s - 2.0) < 0.1


def test_frames_are_scaled_down_while_decoding(tmp_path):
    path = str(tmp_path / "hd.mp4")
    frames = testclips.face_frames(5, size=(1280, 720)).frames
    testclips.write_clip(path, frames, audio=testclips.speech_like(0.2))
    clip = video_lib.read_video(path, max_side=480)
    assert clip.frames.shape[1:] == (240, 426, 3)  # 1280x720 / 3
    assert video_lib.scaled_size(1280, 720, None) == (1280, 720)


# ----------------------------------------------------------------------------------------------
# Listing-time checks and per-clip isolation


def _sources(tmp_path, ids_and_bytes):
    out = []
    for clip_id, name, data in ids_and_bytes:
        path = tmp_path / name
        path.write_bytes(data)
        out.append(corpus.ClipSource(clip_id, "s", "spk", "x", files={"audio": str(path)}))
    return out


def test_duplicate_clip_ids_are_caught_at_listing_naming_every_file(tmp_path):
    sources = _sources(
        tmp_path,
        [("a", "a.wav", b"1"), ("a", "a.flac", b"2"), ("b", "b.wav", b"3"), ("b", "b2.wav", b"3")],
    )
    kept, skipped = corpus.check_listing(sources)
    assert [s.files["audio"] for s in kept] == [str(tmp_path / "b.wav")]
    reasons = {s.file: s.reason for s in skipped}
    assert (
        "a.wav" in reasons[str(tmp_path / "a.flac")]
        and "none is written" in reasons[str(tmp_path / "a.flac")]
    )
    assert "identical files" in reasons[str(tmp_path / "b2.wav")]


def test_an_unexpected_exception_is_one_skipped_clip_and_is_counted(tmp_path, monkeypatch):
    from tests.test_corpora import write_ravdess

    write_ravdess(tmp_path / "src")
    real = ravdess.extract

    def flaky(source):
        if source.clip_id.endswith("-05-01-01-01-01"):  # one good clip of actor 1
            raise RuntimeError("codec exploded")
        return real(source)

    monkeypatch.setattr(ravdess, "extract", flaky)
    builder = build.build("ravdess", str(tmp_path / "out"), str(tmp_path / "src"), num_workers=0)
    report = builder.report()
    assert report["unexpected_errors"] == 1
    reason = next(
        s["reason"] for s in report["skipped"] if s["clip_id"].endswith("-05-01-01-01-01")
    )
    assert reason.startswith("unexpected error RuntimeError: codec exploded")
    assert report["splits"]["actor01"]["written"] == 2
    assert "unexpected errors" in corpus.format_report(report)


def test_a_clip_that_kills_its_worker_is_skipped_and_the_rest_written(tmp_path):
    sources = [
        corpus.ClipSource(f"c{i}", "s", "spk", "x", files={"audio": f"/nowhere/c{i}.wav"})
        for i in range(5)
    ]
    from tests import fault_extractors

    result = corpus.extract_all(
        sources, fault_extractors.die_on_c2, str(tmp_path / "cache"), "v", num_workers=2
    )
    assert [s.clip_id for s in result.clips["s"]] == ["c0", "c1", "c3", "c4"]
    (skip,) = result.skipped
    assert skip.clip_id == "c2" and "process died" in skip.reason and result.unexpected == 1


def test_ravdess_names_checked_against_the_specification(tmp_path):
    root = tmp_path / "src"
    folder = root / "Actor_01"
    rows = []
    cases = {
        "01-01-05-01-01-01-01": "modality 01 is a full audio-video file",
        "03-03-05-01-01-01-01": "vocal channel 03",
        "03-01-05-03-01-01-01": "intensity 03",
        "03-01-01-02-01-01-01": "intensity 02 does not exist for neutral",
        "03-01-05-01-03-01-01": "statement 03",
        "03-01-05-01-01-03-01": "repetition 03",
        "03-01-05-01-01-01-25": "actor 25 is not one of 01-24",
        "03-01-05-01-01-01-02": "actor 02 in the name, folder Actor_01",
    }
    for stem in [*cases, _ravdess_name(5, 1)]:
        _write(folder / f"{stem}.wav", _tone(1.0))
        rows.append(["01" + stem[2:]] + ["0.5"] * 35)
    # The same clip twice in the CSV: equal rows are noted, different rows leave it out.
    rows.append(["01" + _ravdess_name(5, 1)[2:]] + ["0.5"] * 35)
    _write(folder / f"{_ravdess_name(8, 1)}.wav", _tone(1.0))
    rows += [["01" + _ravdess_name(8, 1)[2:]] + [v] * 35 for v in ("0.1", "0.2")]
    header = ["clip_id"] + [f"f{i}" for i in range(35)]
    (root / "openface_au_clip_features.csv").write_text(
        "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    )
    sources, skipped = ravdess.list_clips(str(root), ravdess.Ravdess.BUILDER_CONFIGS[0])
    assert [s.clip_id for s in sources] == [_ravdess_name(5, 1)]
    reasons = {s.clip_id: s.reason for s in skipped}
    for stem, reason in cases.items():
        assert reason in reasons[stem], (stem, reasons.get(stem))
    text = " ".join(s.reason for s in skipped)
    assert "repeated with equal values" in text
    assert "2 different feature rows" in text and _ravdess_name(8, 1) in reasons


def test_iemocap_conflicting_labels_and_bad_turn_names(tmp_path):
    s1 = tmp_path / "Session1"
    emo = s1 / "dialog" / "EmoEvaluation"
    emo.mkdir(parents=True)
    dialog = "Ses01F_impro01"
    turns = {f"{dialog}_F000": "ang", f"{dialog}_M001": "sad", "Ses02F_impro01_F002": "neu"}
    lines = []
    for turn, code in turns.items():
        lines.append(f"[0.0 - 1.0]\t{turn}\t{code}\t[2.5, 2.5, 2.5]")
        folder = turn.rsplit("_", 1)[0]
        _write(s1 / "sentences" / "wav" / folder / f"{turn}.wav", _tone(1.0))
        _markers_file(s1 / "sentences" / "MOCAP_rotated" / folder / f"{turn}.txt", 120)
    lines.append(f"[2.0 - 3.0]\t{dialog}_F000\thap\t[2.5, 2.5, 2.5]")  # a second, other label
    lines.append(f"[2.0 - 3.0]\t{dialog}_M001\tsad\t[2.5, 2.5, 2.5]")  # the same label again
    (emo / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    sources, skipped = iemocap.list_clips(str(tmp_path), iemocap.Iemocap.BUILDER_CONFIGS[0])
    assert [s.clip_id for s in sources] == [f"{dialog}_M001"]
    assert "the same label 'sad' 2 times" in sources[0].extra["notes"][0]
    reasons = {s.clip_id: s.reason for s in skipped}
    assert "different codes (ang, hap" in reasons[f"{dialog}_F000"]
    assert "names session 2 but is in Session1" in reasons["Ses02F_impro01_F002"]


def test_markers_far_shorter_than_the_audio_are_noted_or_skipped(tmp_path):
    from data_prep.builders.iemocap import extract

    turn = "Ses01F_impro01_F000"
    wav = _write(tmp_path / f"{turn}.wav", _tone(4.0))
    markers = tmp_path / f"{turn}.txt"
    _markers_file(markers, 120)  # 1 s at 120 frames/s
    source = corpus.ClipSource(
        turn, "session1", "Ses01F", "neutral", files={"audio": wav, "markers": str(markers)}
    )
    _, notes = extract(source, video_fps=25, num_markers=55)
    assert any("audio lasts 4.00 s but the markers 1.00 s" in n for n in notes)
    with pytest.raises(BadClip, match="apart"):
        extract(source, video_fps=25, num_markers=55, duration_mismatch="skip")


# ----------------------------------------------------------------------------------------------
# Face features given as files


def test_feature_files_of_another_size_or_empty_are_caught_at_listing(tmp_path):
    from data_prep.builders import face_corpus

    sources = []
    for i, data in enumerate([(10, 128), (12, 128), (9, 64), None, (11, 128)]):
        path = tmp_path / f"c{i}.npy"
        if data is None:
            path.write_bytes(b"")
        else:
            np.save(path, np.zeros(data, np.float32))
        sources.append(
            corpus.ClipSource(f"c{i}", "s", "spk", "x", files={"video": "v", "features": str(path)})
        )
    kept, skipped = face_corpus.check_feature_sizes(sources)
    assert [s.clip_id for s in kept] == ["c0", "c1", "c4"]
    reasons = {s.clip_id: s.reason for s in skipped}
    assert "shape (9, 64), but 3 other clips have [frames, 128]" in reasons["c2"]
    assert "empty face feature file (0 bytes)" in reasons["c3"]


def test_records_of_a_build_with_bad_files_hold_only_finite_examples(tmp_path):
    from tests.test_corpora import write_ravdess

    write_ravdess(tmp_path / "src")
    _write(
        tmp_path / "src" / "Actor_01" / f"{_ravdess_name(3, 1)}.wav",
        _tone(1.2) * 3000,
        subtype="FLOAT",
    )
    csv = tmp_path / "src" / "openface_au_clip_features.csv"
    csv.write_text(csv.read_text() + ",".join(["01" + _ravdess_name(3, 1)[2:]] + ["1"] * 35) + "\n")
    builder = build.build("ravdess", str(tmp_path / "out"), str(tmp_path / "src"), num_workers=0)
    for split in builder.info.splits:
        for ex in tfds.as_numpy(builder.as_dataset(split)):
            assert np.isfinite(ex["audio"]).all() and np.isfinite(ex["video"]).all()
    reasons = {s["clip_id"]: s["reason"] for s in builder.report()["skipped"]}
    assert "far outside" in reasons[_ravdess_name(3, 1)]


def test_a_corpus_with_no_usable_clip_is_a_clear_error(tmp_path):
    root = tmp_path / "src" / "Actor_01"
    _write(root / f"{_ravdess_name(5, 1)}.wav", np.zeros(16000, np.float32))
    header = ["clip_id"] + [f"f{i}" for i in range(35)]
    (tmp_path / "src" / "openface_au_clip_features.csv").write_text(
        ",".join(header) + "\n" + ",".join(["01" + _ravdess_name(5, 1)[2:]] + ["0"] * 35) + "\n"
    )
    with pytest.raises(ValueError, match="No clip of ravdess .* could be used(.|\n)*silent clip"):
        build.build("ravdess", str(tmp_path / "out"), str(tmp_path / "src"), num_workers=0)


_DECODE_PEAK = """
import sys, tracemalloc
from data_prep.features import video
tracemalloc.start()
clip = video.read_video(sys.argv[1], max_side=int(sys.argv[2]) or None)
print(tracemalloc.get_traced_memory()[1] / 2**20, clip.frames.shape)
"""


def test_decoding_memory_follows_the_kept_size_not_the_source_resolution(tmp_path):
    """Peak memory of decoding a short 2560 x 1440 clip, measured in fresh processes: at the
    detector's size it stays under a bound that full-resolution decoding exceeds."""
    import subprocess
    import sys

    from tests.conftest import REPO

    path = str(tmp_path / "qhd.mp4")
    frames = testclips.face_frames(25, size=(2560, 1440)).frames
    testclips.write_clip(path, frames, audio=testclips.speech_like(1.0))
    del frames
    peaks = {}
    for side in (0, 480):
        proc = subprocess.run(
            [sys.executable, "-c", _DECODE_PEAK, path, str(side)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[side] = float(proc.stdout.split()[0])
    full_frames_mb = 25 * 2560 * 1440 * 3 / 2**20  # what keeping every frame costs: 264 MB
    assert peaks[0] > full_frames_mb, peaks
    assert peaks[480] < 100 and peaks[480] < peaks[0] / 3, peaks
