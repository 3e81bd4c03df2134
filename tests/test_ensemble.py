"""Seed ensembles served as one model (`bundle.ensemble`): the mean of the members' outputs,
and only members that read their inputs the same way. Stand-in models; the trained and
exported case is in test_export.py."""

import numpy as np
import pytest

from fbp_jax.serving import bundle

CLASSES = ("a", "b", "c")


def stand_in(fusion="audio", scale=1.0, stats=None, **data):
    def apply(batch):
        logits = scale * batch["audio"].mean(1)[:, :3]
        p = np.exp(logits - logits.max(1, keepdims=True))
        return {"logits": logits, "probabilities": p / p.sum(1, keepdims=True)}

    settings = {**bundle.DATA_FIELDS, "clip_seconds": 1.0, "audio_fps": 100, **data}
    return bundle.ServingModel(f"m{scale}", fusion, CLASSES, settings, stats, apply, step=10)


def _stats(speakers=("s1", "s2"), shift=0.0, video_shift=0.0):
    return {
        "speakers": np.asarray(speakers),
        "audio_mean": np.zeros((len(speakers), 4), np.float32) + shift,
        "video_mean": np.zeros((len(speakers), 2), np.float32) + video_shift,
    }


def test_the_ensemble_outputs_the_mean_of_its_members():
    batch = {"audio": np.random.default_rng(0).normal(size=(5, 7, 4)).astype(np.float32)}
    members = [stand_in(scale=s, stats=_stats()) for s in (1.0, 3.0)]
    joined = bundle.ensemble(members)
    outs = [m.apply(batch) for m in members]
    got = joined.apply(batch)
    for key in ("logits", "probabilities"):
        np.testing.assert_allclose(got[key], (outs[0][key] + outs[1][key]) / 2, rtol=1e-6)
    assert not np.allclose(outs[0]["probabilities"], outs[1]["probabilities"])
    assert joined.source == "m1.0+m3.0" and joined.step is None
    assert joined.class_names == CLASSES and joined.stats is members[0].stats
    assert bundle.ensemble(members[:1]) is members[0]


def test_members_must_read_their_inputs_the_same_way():
    base = stand_in(stats=_stats())
    # An audio model does not read the video settings or statistics: those may differ.
    other_video = stand_in(
        scale=2.0, stats=_stats(video_shift=1.0), video_features="openface_au", use_video_valid=True
    )
    bundle.ensemble([base, other_video])
    cases = [
        (
            "different preprocessing level_norm False vs True",
            stand_in(level_norm=True, stats=_stats()),
        ),
        ("different fusion", stand_in("am_fbp", stats=_stats())),
        ("different normalisation statistics", stand_in(stats=_stats(shift=0.5))),
        ("different normalisation statistics", stand_in(stats=_stats(("s1", "s3")))),
    ]
    for message, member in cases:
        with pytest.raises(bundle.PredictError, match=f"cannot be averaged with m1.0: {message}"):
            bundle.ensemble([base, member])
    # A two-stream model depends on its video settings.
    two = stand_in("am_fbp", stats=_stats())
    with pytest.raises(bundle.PredictError, match="video_features"):
        bundle.ensemble([two, stand_in("am_fbp", stats=_stats(), video_features="openface_au")])
    assert bundle.mismatch(vars(two), vars(stand_in("am_fbp", 2.0, stats=_stats()))) == ""
