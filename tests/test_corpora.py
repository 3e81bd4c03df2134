"""RAVDESS and IEMOCAP builders on small corpora written here in the real layouts."""

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds
from scipy import signal as sps

from data_prep import build
from data_prep.builders import corpus, iemocap, ravdess
from data_prep.features import audio as audio_lib
from tests.conftest import REPO

RAVDESS_DEV = os.path.join(REPO, "..", "shared", "data", "ravdess-dev")


def _tone(seconds: float, rate: int = 16000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.01, t.shape)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def _records(data_dir: str, name: str) -> dict[str, dict[str, dict]]:
    """split -> clip id -> example (numpy)."""
    builder = build.make_builder(name, data_dir)
    return {
        split: {ex["clip_id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split))}
        for split in builder.info.splits
    }


# ----------------------------------------------------------------------------------------------
# Spectrogram.


def test_spectrogram_matches_scipy_stft():
    x = _tone(0.5, freq=1000.0)
    ours = audio_lib.log_spectrogram(x)
    window = np.hamming(640)
    _, _, z = sps.stft(
        x.astype(np.float64),
        fs=16000,
        window=window,
        nperseg=640,
        noverlap=640 - 160,
        nfft=800,
        boundary=None,
        padded=False,
        detrend=False,
    )
    power = np.abs(z.T * window.sum()) ** 2  # scipy scales the DFT by 1 / sum(window)
    assert ours.shape == (1 + (len(x) - 640) // 160, 200) == (power.shape[0], 200)
    np.testing.assert_allclose(ours, np.log(np.maximum(power[:, :200], 1e-10)), atol=2e-3)
    assert np.all(ours.argmax(axis=1) == 50)  # 1 kHz / 20 Hz per bin


def test_a_dc_offset_changes_nothing():
    """A constant offset of the recording chain leaks through the window into every bin of
    the quiet frames unless it is removed (above -60 dBFS; a smaller one is left exactly as
    it is, so that clean recordings keep the features the models were trained on)."""
    x = np.concatenate([np.zeros(8000), _tone(0.5, freq=300.0), np.zeros(8000)]) * 0.3
    plain = audio_lib.log_spectrogram(x)
    assert audio_lib.dc_offset(x + 0.05) == pytest.approx(0.05, abs=1e-4)
    np.testing.assert_allclose(audio_lib.log_spectrogram(x + 0.05), plain, atol=1e-3)
    offset = audio_lib.log_spectrogram(x + 0.05, repair=False)
    assert np.median(offset[:40, 50:]) > np.median(plain[:40, 50:]) + 10  # quiet frames lit up
    small = x + 5e-4
    np.testing.assert_array_equal(
        audio_lib.log_spectrogram(small), audio_lib.log_spectrogram(small, repair=False)
    )


@pytest.mark.parametrize("mains", [50.0, 60.0, 50.2, 59.7, 51.0, 57.5])
def test_mains_hum_is_found_and_notched(mains):
    """A hum of either mains frequency, on it, a little off it as a grid runs or a few per
    cent off as a generator's, under speech-like sound with pauses is found (its harmonics,
    not the voice's, at the frequency it has) and notched, so the quiet frames go quiet again;
    the speech alone, or a recording shorter than a second, is left exactly as it is."""
    from data_prep.features import conditions
    from data_prep.testclips import speech_like

    voice = speech_like(2.0, 16000, seed=1).astype(np.float64).reshape(-1)
    x = np.concatenate([np.zeros(16000), 0.3 * voice / np.abs(voice).max(), np.zeros(16000)])
    x += 1e-4 * np.random.default_rng(0).standard_normal(len(x))  # the room
    hummed = conditions.hum(x.astype(np.float32), 20.0, mains_hz=mains).astype(np.float64)
    assert audio_lib.find_hum(x) is None
    hum = audio_lib.find_hum(hummed)
    assert abs(hum.mains_hz - mains) < 0.02, hum
    assert len(hum.lines) >= 10 and hum.lines[:4] == tuple(hum.mains_hz * k for k in range(1, 5))
    residual = audio_lib.remove_hum(hummed - x, hum)
    assert np.mean(residual**2) < 1e-3 * np.mean((hummed - x) ** 2)  # 30 dB of it gone
    clean, with_hum = audio_lib.log_spectrogram(x), audio_lib.log_spectrogram(hummed)
    unremoved = audio_lib.log_spectrogram(hummed, repair=False)
    quiet = slice(10, 90)  # frames of the first second's pause
    assert np.mean(unremoved[quiet, :20]) > np.mean(clean[quiet, :20]) + 5
    assert np.mean(with_hum[quiet, :20]) < np.mean(clean[quiet, :20]) + 2
    np.testing.assert_array_equal(
        audio_lib.log_spectrogram(x), audio_lib.log_spectrogram(x, repair=False)
    )
    assert audio_lib.find_hum(hummed[:15000]) is None


@pytest.mark.skipif(not os.path.isdir(RAVDESS_DEV), reason="../shared/data/ravdess-dev absent")
def test_a_voice_meeting_an_off_grid_comb_is_not_taken_for_a_hum():
    """Trimmed to its speech (1.6 s), a clip's quietest second is voiced, and 4 of the first 6
    harmonics of 57.8 Hz meet its voice's by chance: far off the grid, a hum needs 8 of its
    first 12 lines, and this is no hum (with the near-grid test everywhere it would be one)."""
    from data_prep.features import conditions

    path = os.path.join(RAVDESS_DEV, "Actor_01", "03-01-02-01-02-01-01.flac")
    trimmed = conditions.apply("trimmed", audio_lib.load_audio(path).samples).astype(np.float64)
    trimmed -= trimmed.mean()
    assert audio_lib.find_hum(trimmed) is None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audio_lib, "GRID_DRIFT_HZ", 10.0)
        assert audio_lib.find_hum(trimmed) is not None


@pytest.mark.skipif(not os.path.isdir(RAVDESS_DEV), reason="../shared/data/ravdess-dev absent")
def test_a_codec_frame_comb_is_not_taken_for_a_hum():
    """Opus's 20 ms frames leave a comb of lines every 50 Hz in a clip's quiet second, far
    below the speech: not a hum (without the level gate it would be notched 40-80 times); a
    real hum over the same coded clip still is one."""
    from data_prep.features import conditions

    path = os.path.join(RAVDESS_DEV, "Actor_01", "03-01-02-01-02-01-01.flac")
    x = audio_lib.load_audio(path).samples
    coded = conditions.apply("opus16", x).astype(np.float64)
    assert audio_lib.find_hum(coded - coded.mean()) is None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audio_lib, "HUM_RANGE_DB", 200.0)
        comb = audio_lib.find_hum(coded - coded.mean())
    assert (
        comb is not None and len(comb.lines) > 30 and comb.mains_hz == pytest.approx(50, abs=0.01)
    )
    hummed = conditions.apply("hum20+opus16", x).astype(np.float64)
    assert audio_lib.find_hum(hummed - hummed.mean()) is not None


def test_load_audio_converts_rate_and_channels(tmp_path):
    x = _tone(1.0, rate=48000)
    path = str(tmp_path / "stereo.wav")
    sf.write(path, np.stack([x, x], axis=1), 48000)
    decoded = audio_lib.load_audio(path)
    assert (decoded.source_rate, decoded.source_channels) == (48000, 2)
    assert len(decoded.samples) == 16000
    ref = _tone(1.0, rate=16000)
    assert np.corrcoef(decoded.samples[100:-100], ref[100:-100])[0, 1] > 0.99


# ----------------------------------------------------------------------------------------------
# RAVDESS.


def _ravdess_name(emotion: int, actor: int, rep: int = 1, modality: int = 3, channel: int = 1):
    return f"{modality:02d}-{channel:02d}-{emotion:02d}-01-01-{rep:02d}-{actor:02d}"


def write_ravdess(root) -> dict:
    """Two actors with good clips (WAV 48 kHz stereo, FLAC 16 kHz) and every bad case."""
    root.mkdir(parents=True, exist_ok=True)
    rows, expected = [], {}
    for actor in (1, 2):
        folder = root / f"Actor_{actor:02d}"
        folder.mkdir()
        for emotion in (1, 5, 8):
            stem = _ravdess_name(emotion, actor)
            x = _tone(1.2, freq=200 + 100 * emotion, seed=actor)
            if actor == 1:
                sf.write(folder / f"{stem}.wav", np.stack([_tone(1.2, 48000)] * 2, 1), 48000)
            else:
                sf.write(folder / f"{stem}.flac", x, 16000)
            rows.append(["01" + stem[2:]] + [f"{emotion + i / 10:.4f}" for i in range(35)])
            expected[stem] = (f"actor{actor:02d}", ravdess.EMOTIONS[emotion - 1])
    bad = root / "Actor_02"
    sf.write(bad / f"{_ravdess_name(3, 2)}.wav", np.zeros(16000, np.float32), 16000)  # silent
    sf.write(bad / f"{_ravdess_name(4, 2)}.wav", np.zeros(0, np.float32), 16000)  # empty
    (bad / f"{_ravdess_name(6, 2)}.wav").write_bytes(b"not audio at all")  # unreadable
    sf.write(bad / "tmp.wav", _tone(1.0), 16000)
    data = (bad / "tmp.wav").read_bytes()
    (bad / f"{_ravdess_name(7, 2)}.wav").write_bytes(data[: len(data) // 2])  # truncated
    (bad / "tmp.wav").unlink()
    sf.write(bad / f"{_ravdess_name(9, 2)}.wav", _tone(1.0), 16000)  # unknown emotion
    sf.write(bad / f"{_ravdess_name(2, 2, rep=2)}.wav", _tone(1.0), 16000)  # no features
    sf.write(bad / f"{_ravdess_name(2, 2, channel=2)}.wav", _tone(1.0), 16000)  # song
    for emotion in (3, 4, 6, 7, 9):
        rows.append(["01" + _ravdess_name(emotion, 2)[2:]] + ["0.5"] * 35)
    rows.append(["01-01-02-01-01-01-02"] + ["nan"] * 35)  # a bad CSV row
    header = ["clip_id"] + [f"AU{i:02d}_r" for i in range(35)]
    (root / "openface_au_clip_features.csv").write_text(
        "\n".join(",".join(r) for r in [header, *rows]) + "\n"
    )
    return expected


def _not_used(report):
    return {os.path.basename(e["path"]): e for e in report["not_used"]}


def test_ravdess_builds_good_clips_and_reports_bad_ones(tmp_path):
    expected = write_ravdess(tmp_path / "src")
    # A folder named in another case is read (and noted); a stray file and an empty actor
    # folder are reported, not passed over.
    os.rename(tmp_path / "src" / "Actor_02", tmp_path / "src" / "actor_02")
    (tmp_path / "src" / "notes.txt").write_text("my notes")
    (tmp_path / "src" / "Actor_03").mkdir()
    builder = build.build("ravdess", str(tmp_path / "out"), str(tmp_path / "src"), num_workers=0)
    records = _records(str(tmp_path / "out"), "ravdess")
    assert {s: len(r) for s, r in records.items()} == {"actor01": 3, "actor02": 3}
    for split, clips in records.items():
        for clip_id, ex in clips.items():
            assert (ex["speaker"].decode(), split) == (expected[clip_id][0],) * 2
            names = builder.info.features["label"].names
            assert names[ex["label"]] == expected[clip_id][1]
            assert ex["audio"].shape == (1 + (19200 - 640) // 160, 200)
            assert ex["video"].shape == (30, 35) and ex["video_valid"].all()
            emotion = int(clip_id.split("-")[2])
            np.testing.assert_allclose(ex["video"][0, :2], [emotion, emotion + 0.1], rtol=1e-6)
            assert abs(ex["duration_s"] - 1.2) < 1e-3
    report = builder.report()
    reasons = {s["clip_id"]: s["reason"] for s in report["skipped"]}
    src = str(tmp_path / "src" / "actor_02")
    assert "silent clip" in reasons[_ravdess_name(3, 2)]
    assert "zero-length" in reasons[_ravdess_name(4, 2)]
    assert "unreadable" in reasons[_ravdess_name(6, 2)]
    assert "truncated" in reasons[_ravdess_name(7, 2)]
    assert "unknown emotion code 09" in reasons[_ravdess_name(9, 2)]
    assert "no facial features" in reasons[_ravdess_name(2, 2, rep=2)]
    assert "song" in reasons[_ravdess_name(2, 2, channel=2)]
    assert any("bad feature row" in s["reason"] for s in report["skipped"])
    files = {s["clip_id"]: s["file"] for s in report["skipped"]}
    assert files[_ravdess_name(7, 2)] == os.path.join(src, f"{_ravdess_name(7, 2)}.wav")
    assert report["splits"]["actor02"] == {"written": 3, "skipped": 7}
    assert sum("resampled 48000 Hz" in n["note"] for n in report["converted"]) == 3
    assert sum("downmixed 2 channels" in n["note"] for n in report["converted"]) == 3
    assert any(n.startswith(src) and "read as 'Actor_02'" in n for n in report["listing_notes"]), (
        report["listing_notes"]
    )
    stray = _not_used(report)["notes.txt"]
    assert stray["kind"] == "file" and "Actor_XX/MM-VV-EE-II-SS-RR-AA" in stray["expected"]
    empty = [s for s in report["skipped"] if s["file"].endswith("Actor_03")]
    assert len(empty) == 1 and "no clip in this actor folder" in empty[0]["reason"]
    text = corpus.format_report(report)
    assert "notes.txt: not read" in text and "read as 'Actor_02'" in text


def test_ravdess_missing_features_csv_is_a_clear_error(tmp_path):
    write_ravdess(tmp_path / "src")
    (tmp_path / "src" / "openface_au_clip_features.csv").unlink()
    with pytest.raises(FileNotFoundError, match="openface_au_clip_features.csv"):
        build.build("ravdess", str(tmp_path / "out"), str(tmp_path / "src"), num_workers=0)


_SLOW_BUILD = """
import sys, time
from data_prep import build
from data_prep.builders import ravdess
fast = ravdess.extract
def slow(source):
    time.sleep(0.4)
    return fast(source)
ravdess.extract = slow
build.build("ravdess", sys.argv[1], sys.argv[2], num_workers=0)
"""


def test_killed_build_resumes_and_gives_the_same_records(tmp_path):
    write_ravdess(tmp_path / "src")
    src, killed, clean = (str(tmp_path / d) for d in ("src", "killed", "clean"))
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BUILD, killed, src],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cached = os.path.join(killed, "downloads", "extracted", "ravdess", "*", "*.npz")
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(glob.glob(cached)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Nothing that looks like a finished dataset was left behind.
    assert not os.path.exists(os.path.join(killed, "ravdess", "speech", "1.0.0"))

    resumed = build.build("ravdess", killed, src, num_workers=0)
    assert resumed.report()["reused_from_cache"] >= 3
    build.build("ravdess", clean, src, num_workers=2)  # also exercises the process pool
    a, b = _records(killed, "ravdess"), _records(clean, "ravdess")
    assert a.keys() == b.keys()
    for split in a:
        assert a[split].keys() == b[split].keys()
        for clip_id in a[split]:
            for key in ("audio", "video", "video_valid", "label", "speaker"):
                np.testing.assert_array_equal(a[split][clip_id][key], b[split][clip_id][key])


@pytest.mark.skipif(not os.path.isdir(RAVDESS_DEV), reason="../shared/data/ravdess-dev absent")
def test_ravdess_dev_copy_lists_every_clip():
    sources, skipped = ravdess.list_clips(RAVDESS_DEV, ravdess.Ravdess.BUILDER_CONFIGS[0])
    assert len(sources) == 719 and not skipped
    assert {s.split for s in sources} == {f"actor{a:02d}" for a in range(1, 13)}
    example, notes = ravdess.extract(sources[0])
    assert example["audio"].shape[1] == 200 and example["video"].shape[1] == 35 and not notes


# ----------------------------------------------------------------------------------------------
# IEMOCAP.


def _markers_file(path, frames: int, num_markers: int = 55, nan_rows=(), columns=None):
    names = [f"M{i}{axis}" for i in range(num_markers) for axis in "XYZ"]
    rng = np.random.default_rng(frames)
    lines = ["Frame# Time " + " ".join(names)]
    for i in range(frames):
        values = rng.normal(0, 10, 3 * num_markers)
        if i in nan_rows:
            values[:] = np.nan
        values = values[: columns if columns is not None else None]
        lines.append(f"{i + 1} {i / 120:.4f} " + " ".join(f"{v:.3f}" for v in values))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_iemocap(root) -> dict:
    """Sessions 1-2; returns turn -> (split, label) of the clips that must be written."""
    expected = {}
    for session in (1, 2):
        s = root / f"Session{session}"
        emo = s / "dialog" / "EmoEvaluation"
        emo.mkdir(parents=True)
        for dialog, codes in (
            (f"Ses0{session}F_impro01", ["neu", "hap", "exc", "fru", "sad", "ang"]),
            (f"Ses0{session}M_script01_1", ["neu", "ang"]),
        ):
            lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            for i, code in enumerate(codes):
                gender = "FM"[i % 2]
                turn = f"{dialog}_{gender}{i:03d}"
                lines += [f"[{i:.4f} - {i + 1:.4f}]\t{turn}\t{code}\t[2.5000, 2.5000, 2.5000]"]
                lines += ["C-E1:\tNeutral;\t()", ""]
                sf.write(
                    _mkdir(s / "sentences" / "wav" / dialog) / f"{turn}.wav",
                    _tone(1.0 + 0.2 * i, freq=300 + 50 * i),
                    16000,
                )
                _markers_file(
                    s / "sentences" / "MOCAP_rotated" / dialog / f"{turn}.txt",
                    frames=120 + 24 * i,
                    nan_rows=(0, 1, 2, 3, 4, 5) if i == 0 else (),
                )
                if "impro" in dialog and code in ("neu", "hap", "sad", "ang"):
                    expected[turn] = (f"session{session}", iemocap.CODES[code])
            (emo / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    # Bad cases, all in session 2's improvised dialog.
    s2, dialog = root / "Session2", "Ses02F_impro01"
    wav_dir, mocap_dir = (
        s2 / "sentences" / "wav" / dialog,
        s2 / "sentences" / "MOCAP_rotated" / dialog,
    )
    label_file = s2 / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
    extra = []

    def turn(i, code, wav=True, mocap="ok"):
        name = f"{dialog}_M{i:03d}"
        extra.append(f"[{i:.4f} - {i + 1:.4f}]\t{name}\t{code}\t[2.5000, 2.5000, 2.5000]")
        if wav:
            sf.write(wav_dir / f"{name}.wav", _tone(1.0), 16000)
        if mocap == "ok":
            _markers_file(mocap_dir / f"{name}.txt", 120)
        elif mocap == "short":
            _markers_file(mocap_dir / f"{name}.txt", 120, columns=100)
        elif mocap == "nan":
            _markers_file(mocap_dir / f"{name}.txt", 120, nan_rows=range(120))
        return name

    bad = {
        turn(101, "zzz"): "unknown emotion code 'zzz'",
        turn(102, "neu", wav=False): "audio file missing",
        turn(103, "sad", mocap=None): "marker file missing",
        turn(104, "ang", mocap="short"): "missing or extra columns",
        turn(105, "hap", mocap="nan"): "every marker row has NaN",
    }
    sf.write(wav_dir / f"{dialog}_F199.wav", _tone(1.0), 16000)  # a turn without label line
    bad[f"{dialog}_F199"] = "no label line"
    label_file.write_text(label_file.read_text() + "\n".join(extra) + "\n[broken line\n")
    return expected, bad


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("config", ["improvised", "improvised_exc"])
def test_iemocap_builds_improvised_turns_and_reports_bad_ones(tmp_path, config):
    expected, bad = write_iemocap(tmp_path / "src")
    if config == "improvised_exc":  # turn 2 of each session is 'exc'
        for session in (1, 2):
            expected[f"Ses0{session}F_impro01_F002"] = (f"session{session}", "happy")
    # Session 2 spelt in lower case is read (and noted); a stray file is reported; the
    # release's parts the builder leaves out (scripted dialogs, dialog videos) are counted.
    os.rename(tmp_path / "src" / "Session2", tmp_path / "src" / "session2")
    (tmp_path / "src" / "Session1" / "notes.txt").write_text("my notes")
    (tmp_path / "src" / "Session1" / "dialog" / "avi").mkdir()
    builder = build.build(
        f"iemocap/{config}", str(tmp_path / "out"), str(tmp_path / "src"), num_workers=0
    )
    records = _records(str(tmp_path / "out"), f"iemocap/{config}")
    got = {
        clip_id: (split, builder.info.features["label"].names[ex["label"]])
        for split, clips in records.items()
        for clip_id, ex in clips.items()
    }
    assert got == expected
    ex = records["session1"]["Ses01F_impro01_F000"]
    assert ex["video"].shape == (25, 55, 3)  # 120 frames at 120 fps -> 25 at 25 fps
    assert ex["audio"].shape == (97, 200)
    assert ex["speaker"].decode() == "Ses01F"
    np.testing.assert_array_equal(ex["video_valid"], np.arange(25) >= 2)  # NaN rows 0-5
    assert not ex["video"][:2].any()
    ex = records["session1"]["Ses01F_impro01_M001"]
    assert ex["video"].shape == (30, 55, 3) and ex["video_valid"].all()
    assert ex["speaker"].decode() == "Ses01M"
    report = builder.report()
    reasons = {s["clip_id"]: s["reason"] for s in report["skipped"]}
    for clip_id, reason in bad.items():
        assert reason in reasons[clip_id], (clip_id, reasons.get(clip_id))
    assert any("line" in s["reason"] and s["clip_id"] == "" for s in report["skipped"])
    lower = str(tmp_path / "src" / "session2")
    assert any(n.startswith(lower) and "'Session2'" in n for n in report["listing_notes"])
    stray = _not_used(report)["notes.txt"]
    assert stray["path"] == str(tmp_path / "src" / "Session1" / "notes.txt")
    ignored = report["ignored_by_design"]
    assert ignored["label file of a scripted dialog (improvised turns only)"] == 2
    assert ignored["IEMOCAP dialog/avi folder (not read by this builder)"] == 1
    assert len(report["not_used"]) == 1, report["not_used"]


def test_marker_header_with_names_then_xyz_row(tmp_path):
    path = tmp_path / "m.txt"
    rows = ["Frame# Time " + " ".join(f"M{i}" for i in range(2)), "X Y Z X Y Z"]
    rows += [f"{i} {i / 120:.4f} 1 2 3 4 5 6" for i in range(1, 4)]
    path.write_text("\n".join(rows) + "\n")
    markers = iemocap.read_markers(str(path), num_markers=2)
    np.testing.assert_array_equal(markers[0], [[1, 2, 3], [4, 5, 6]])
    assert markers.shape == (3, 2, 3)


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["ravdess", "iemocap"])
def test_corpus_config_trains_on_the_built_records(tmp_path, corpus):
    """The corpus's own config (shrunk) trains and evaluates on what its builder wrote."""
    from configs import common, iemocap_amfbp, ravdess_amfbp
    from fbp_jax.training import loop

    write = {"ravdess": write_ravdess, "iemocap": write_iemocap}[corpus]
    write(tmp_path / "src")
    config = {"ravdess": ravdess_amfbp, "iemocap": iemocap_amfbp}[corpus].get_config(None)
    build.build(config.data.name, str(tmp_path / "out"), str(tmp_path / "src"), num_workers=0)
    with config.unlocked():
        config.data.data_dir = str(tmp_path / "out")
        config.data.train_split, config.data.eval_split, config.data.test_split = {
            "ravdess": ("actor01+actor02", "actor02", "actor02"),
            "iemocap": ("session1", "session2", "session2"),
        }[corpus]
        config.data.clip_seconds = 1.2
        config.model.audio = common.fcn_config("tiny")
        config.model.video.fcn = common.fcn_config("tiny", first_stride=1)
        config.model.fbp.num_trunks = 3
        config.batch_size = 4
        config.num_train_steps = 2
    result = loop.train_and_evaluate(config, str(tmp_path / "work"))
    assert result["step"] == 2 and np.isfinite(result["eval_loss"])


@pytest.mark.slow
def test_beam_build_gives_the_records_and_report_of_the_pool_build(tmp_path):
    """The per-clip extraction as an Apache Beam pipeline (DirectRunner, 2 worker processes):
    the same records, value by value, and the same report as the process-pool build."""
    pytest.importorskip("apache_beam")
    write_ravdess(tmp_path / "src")
    src, pool, beam = (str(tmp_path / d) for d in ("src", "pool", "beam"))
    pooled = build.build("ravdess", pool, src, num_workers=2)
    beamed = build.build(
        "ravdess",
        beam,
        src,
        beam_runner="DirectRunner",
        beam_options=["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    )
    a, b = _records(pool, "ravdess"), _records(beam, "ravdess")
    assert a.keys() == b.keys() and sum(map(len, a.values())) == 6
    for split in a:
        assert a[split].keys() == b[split].keys()
        for clip_id, ex in a[split].items():
            for key, value in ex.items():
                np.testing.assert_array_equal(value, b[split][clip_id][key], err_msg=key)
    ra, rb = pooled.report(), beamed.report()
    for key in ("written", "splits", "skipped", "converted", "unexpected_errors"):
        assert ra[key] == rb[key], key
    assert rb["extracted_now"] == ra["extracted_now"] > 0 and rb["reused_from_cache"] == 0
