"""Tests of the synthetic audio-visual emotion corpus (data_prep/synthetic.py, data_prep/build.py).

Run: ``python -m pytest -q tests/test_synthetic.py`` (the ``slow`` test reproduces the linear-probe
figures of the module docstring on the full ``afew`` config).
"""

import dataclasses

import numpy as np
import pytest

from data_prep.builders import synthetic

TINY = synthetic.TINY_CONFIG
SCHEMA_KEYS = {"clip_id", "speaker", "label", "audio", "video", "video_valid", "duration_s"}

# A small config on which the linear probe is reliable: enough clips and speakers for stable
# accuracies, small features for speed. Corrupted clips are left out here: a linear probe on
# concatenated statistics cannot down-weight a broken modality per clip (that is AG-FBP's job),
# so they only add variance; the slow test below covers the full `afew` config with them.
PROBE_CONFIG = synthetic.SyntheticAVConfig(
    name="probe",
    num_bins=40,
    face_dim=128,
    num_train=800,
    num_validation=400,
    num_train_speakers=32,
    num_validation_speakers=12,
    min_duration_s=1.0,
    max_duration_s=2.0,
    noisy_audio_prob=(0.0, 0.0),
    bad_face_prob=(0.0, 0.0),
    seed=0,
)


# ----------------------------------------------------------------------------------------------
# A numpy linear probe: clip-level statistics + multinomial logistic regression.


def clip_statistics(example):
    """Mean and std over time of ~25 audio bands and ~64 face-feature groups.

    Returns:
      (audio_stats, video_stats); video statistics are over valid frames only, NaN (imputed
      later with the training mean) when the clip has no face at all.
    """
    audio = example["audio"]
    frames, bins = audio.shape
    pool = max(1, round(bins / 25))
    bands = audio[:, : bins // pool * pool].reshape(frames, bins // pool, pool).mean(-1)
    audio_stats = np.concatenate([bands.mean(0), bands.std(0)])
    video, valid = example["video"], example["video_valid"]
    dim = video.shape[1]
    group = max(1, dim // 64)
    num_groups = dim // group
    groups = video[:, : num_groups * group].reshape(len(video), num_groups, group).mean(-1)
    groups = groups[valid]
    if len(groups):
        video_stats = np.concatenate([groups.mean(0), groups.std(0), [valid.mean()]])
    else:
        video_stats = np.concatenate([np.full(2 * num_groups, np.nan), [0.0]])
    return audio_stats, video_stats


def probe_accuracy(x_train, y_train, x_test, y_test, num_classes, l2=1e-2, steps=500, lr=0.5):
    """Accuracy of L2-regularised softmax regression fitted by full-batch momentum descent."""
    mean = np.nanmean(x_train, 0)
    std = np.nanstd(x_train, 0) + 1e-6
    x_train = np.nan_to_num((x_train - mean) / std)
    x_test = np.nan_to_num((x_test - mean) / std)
    onehot = np.eye(num_classes)[y_train]
    w = np.zeros((x_train.shape[1], num_classes))
    b = np.zeros(num_classes)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(steps):
        logits = x_train @ w + b
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        grad = (probs - onehot) / len(x_train)
        vw = 0.9 * vw + x_train.T @ grad + l2 * w
        vb = 0.9 * vb + grad.sum(0)
        w -= lr * vw
        b -= lr * vb
    return float(np.mean(np.argmax(x_test @ w + b, 1) == y_test))


def probe_accuracies(config):
    """Probe accuracies on the validation split: {'audio', 'video', 'both'}."""
    data = {}
    for split in synthetic.SPLITS:
        examples = [
            synthetic.generate_example(config, split, i)
            for i in range(synthetic.num_examples(config, split))
        ]
        audio, video = zip(*map(clip_statistics, examples), strict=True)
        labels = np.array([e["label"] for e in examples])
        data[split] = {"audio": np.array(audio), "video": np.array(video), "label": labels}
        data[split]["both"] = np.hstack([data[split]["audio"], data[split]["video"]])
    train, val = data["train"], data["validation"]
    return {
        m: probe_accuracy(train[m], train["label"], val[m], val["label"], len(config.class_names))
        for m in ("audio", "video", "both")
    }


# ----------------------------------------------------------------------------------------------
# In-memory generator.


def assert_schema(example, config):
    assert set(example) == SCHEMA_KEYS
    num_video = example["video"].shape[0]
    assert example["audio"].shape == (4 * num_video, config.num_bins)
    assert example["video"].shape == (num_video, config.face_dim)
    assert example["video_valid"].shape == (num_video,)
    assert example["audio"].dtype == np.float32
    assert example["video"].dtype == np.float32
    assert example["video_valid"].dtype == np.bool_
    assert example["duration_s"].dtype == np.float32
    assert round(float(example["duration_s"]) * 100) == 4 * num_video
    assert round(float(example["duration_s"]) * 25) == num_video
    assert 0 <= example["label"] < len(config.class_names)
    assert np.all(np.isfinite(example["audio"]))
    assert np.all(example["video"] >= 0)


@pytest.mark.parametrize("config", [synthetic.AFEW_CONFIG, TINY], ids=lambda c: c.name)
def test_generate_example_schema(config):
    for split in synthetic.SPLITS:
        for index in range(5):
            example = synthetic.generate_example(config, split, index)
            assert_schema(example, config)
            assert example["clip_id"] == f"{split}_{index:05d}"
            assert example["speaker"] in synthetic.speakers_for_split(config, split)
            duration = float(example["duration_s"])
            assert config.min_duration_s - 1e-6 <= duration <= config.max_duration_s + 1e-6
            # Log power in a realistic range.
            assert -25 < example["audio"].min() and example["audio"].max() < 20


def test_generate_example_is_deterministic_and_order_free():
    forward = [synthetic.generate_example(TINY, "train", i) for i in range(6)]
    backward = [synthetic.generate_example(TINY, "train", i) for i in reversed(range(6))][::-1]
    for a, b in zip(forward, backward, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_seeds_and_splits_differ():
    other_seed = dataclasses.replace(TINY, seed=1)
    a = synthetic.generate_example(TINY, "train", 3)
    b = synthetic.generate_example(other_seed, "train", 3)
    c = synthetic.generate_example(TINY, "validation", 3)
    assert a["audio"].shape != b["audio"].shape or not np.array_equal(a["audio"], b["audio"])
    assert a["audio"].shape != c["audio"].shape or not np.array_equal(a["audio"], c["audio"])


def test_speakers_are_fixed_and_disjoint():
    for config in (synthetic.AFEW_CONFIG, TINY):
        train = synthetic.speakers_for_split(config, "train")
        val = synthetic.speakers_for_split(config, "validation")
        assert len(train) == config.num_train_speakers
        assert len(val) == config.num_validation_speakers
        assert not set(train) & set(val)
    assert synthetic.speakers_for_split(synthetic.AFEW_CONFIG, "validation")[0] == "spk40"


def test_corrupted_modalities():
    config = dataclasses.replace(
        PROBE_CONFIG, noisy_audio_prob=(0.15, 0.3), bad_face_prob=(0.15, 0.3), face_dim=32
    )
    examples = [
        synthetic.generate_example(config, "train", i, with_metadata=True) for i in range(300)
    ]
    conditions = np.array([e["metadata"]["condition"] for e in examples])
    assert 0.1 < np.mean(conditions == "noisy_audio") < 0.35
    assert 0.1 < np.mean(conditions == "bad_face") < 0.35
    # Noise buries the speech: louder and flatter spectra.
    level = np.array([e["audio"].mean() for e in examples])
    assert level[conditions == "noisy_audio"].mean() > level[conditions == "clean"].mean() + 1
    issues = [e["metadata"]["face_issue"] for e in examples]
    assert {"absent", "occluded", "bystander"} <= set(issues)
    for e, issue in zip(examples, issues, strict=True):
        if issue == "absent":
            assert not e["video_valid"].all()
    valid_fraction = np.array([e["video_valid"].mean() for e in examples])
    assert valid_fraction[conditions == "clean"].mean() > 0.95


def test_class_prototypes():
    protos = synthetic.class_prototypes()
    num_classes = len(synthetic.AFEW_CLASSES)
    assert protos["arousal"].shape == (num_classes,)
    assert protos["face_units"].shape == (num_classes, len(synthetic.FACE_UNITS))
    assert protos["audio_cues"].shape == (num_classes, len(synthetic.AUDIO_CUES))
    angry, fear = synthetic.AFEW_CLASSES.index("angry"), synthetic.AFEW_CLASSES.index("fear")
    # Same corner of the arousal / valence plane, told apart by secondary cues.
    assert abs(protos["arousal"][angry] - protos["arousal"][fear]) < 0.2
    assert not np.allclose(protos["audio_cues"][angry], protos["audio_cues"][fear])
    assert not np.allclose(protos["face_units"][angry], protos["face_units"][fear])


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid splits"):
        synthetic.generate_example(TINY, "test", 0)
    with pytest.raises(ValueError, match="known"):
        synthetic.class_prototypes(("angry", "bored"))


def test_each_modality_below_fusion():
    acc = probe_accuracies(PROBE_CONFIG)
    chance = 1 / len(PROBE_CONFIG.class_names)
    assert acc["audio"] > 2 * chance, acc
    assert acc["video"] > 2 * chance, acc
    assert acc["both"] > max(acc["audio"], acc["video"]) + 0.08, acc


@pytest.mark.slow
def test_afew_probe_figures():
    acc = probe_accuracies(synthetic.AFEW_CONFIG)
    assert 0.35 <= acc["audio"] <= 0.55, acc
    assert 0.40 <= acc["video"] <= 0.62, acc
    assert 0.65 <= acc["both"] <= 0.85, acc
    assert acc["both"] > max(acc["audio"], acc["video"]) + 0.08, acc


# ----------------------------------------------------------------------------------------------
# TFDS builder and CLI.


def read_split(builder, split):
    tfds = pytest.importorskip("tensorflow_datasets")
    records = tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))
    records = {r["clip_id"].decode(): r for r in records}
    return [records[k] for k in sorted(records)]


@pytest.fixture(scope="module")
def tiny_builder(tmp_path_factory):
    pytest.importorskip("tensorflow_datasets")
    builder = synthetic.SyntheticAV(config="tiny", data_dir=str(tmp_path_factory.mktemp("a")))
    builder.download_and_prepare()
    return builder


def test_tiny_builds(tiny_builder):
    info = tiny_builder.info
    assert info.full_name == "synthetic_av/tiny/1.0.0"
    assert info.splits["train"].num_examples == TINY.num_train
    assert info.splits["validation"].num_examples == TINY.num_validation
    assert info.features["label"].names == list(synthetic.AFEW_CLASSES)
    speakers = {}
    for split in synthetic.SPLITS:
        records = read_split(tiny_builder, split)
        assert len(records) == synthetic.num_examples(TINY, split)
        for r in records:
            r = dict(r, clip_id=r["clip_id"].decode(), speaker=r["speaker"].decode())
            assert_schema(r, TINY)
        speakers[split] = {r["speaker"] for r in records}
    assert speakers["train"] and speakers["validation"]
    assert not speakers["train"] & speakers["validation"]


def test_records_equal_generated_examples(tiny_builder):
    for split in synthetic.SPLITS:
        for r in read_split(tiny_builder, split)[:10]:
            index = int(r["clip_id"].decode().split("_")[-1])
            example = synthetic.generate_example(TINY, split, index)
            assert r["speaker"].decode() == example["speaker"]
            for key in ("label", "audio", "video", "video_valid", "duration_s"):
                np.testing.assert_array_equal(r[key], example[key])


def test_build_twice_gives_identical_records(tiny_builder, tmp_path):
    from data_prep import build

    again = build.build("synthetic_av/tiny", data_dir=str(tmp_path))
    for split in synthetic.SPLITS:
        first, second = read_split(tiny_builder, split), read_split(again, split)
        assert len(first) == len(second)
        for a, b in zip(first, second, strict=True):
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])


def test_make_builder_names():
    pytest.importorskip("tensorflow_datasets")
    from data_prep import build

    assert build.make_builder("synthetic_av/tiny", data_dir="/nonexistent").info.name == (
        "synthetic_av"
    )
    with pytest.raises(ValueError, match="valid corpora"):
        build.make_builder("nosuchcorpus/foo")
    with pytest.raises(ValueError, match="valid configs"):
        build.make_builder("synthetic_av/huge")
