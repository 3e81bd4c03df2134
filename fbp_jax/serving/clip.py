"""One clip as a served model reads it: its view, its speaker's statistics, its crops.

What `input_pipeline.preprocess(train=False)` does to a record's clip, in numpy, for features
read from a media file: `prepare_inputs` turns a clip into the model's batch (the audio view,
standardisation, the crop or crops, padding), `speaker_statistics` gives the standardisation
of one speaker's clips, `crop_starts` says where the window stands in a longer clip. Used by
`predict` (a file read as one clip), `timeline` (every window of a long file) and
`fbp_jax.evaluation.conditions` (changed recordings of the test speakers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from fbp_jax.model import frontend
from fbp_jax.serving.bundle import PredictError

# How a clip longer than the model's window is read (`crop_starts`). 'average' by default: on
# the RAVDESS folds' validation actors it was at least as accurate as the centre crop
# (docs/recipe.md), and it reads all of a clip's speech where the centre crop leaves up to half
# of it out.
CROPS = ("centre", "average")
DEFAULT_CROPS = "average"


def data_config(data: dict[str, Any]) -> ml_collections.ConfigDict:
    """A model's `data` settings (`bundle.DATA_FIELDS`) as the config `frontend` reads."""
    return ml_collections.ConfigDict(dict(data))


def crop_starts(n_units: int, window: int, crops: str = "centre") -> list[int]:
    """Where the model's window starts in a clip of `n_units` video frames.

    'centre': one window at the centre (evaluation's crop). 'average': a clip longer than the
    window is read as windows every quarter window from its start, the last ending at its
    end (so every frame is read), for the posteriors to be averaged; a shorter clip is one
    window, as with 'centre'.
    """
    if crops not in CROPS:
        raise PredictError(f"crops must be one of {CROPS}, got {crops!r}")
    slack = max(n_units - window, 0)
    if crops == "centre" or slack == 0:
        return [slack // 2]
    hop = max(window // 4, 1)
    return list(range(0, slack, hop)) + [slack]


def prepare_inputs(
    features: dict[str, np.ndarray],
    data: dict[str, Any],
    stats: dict[str, np.ndarray] | None,
    streams: Sequence[str],
    crops: str = "centre",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One clip as the evaluation pipeline gives it to the model (`input_pipeline.preprocess`
    with train=False), in numpy: the audio view, standardisation, the crop(s) and padding.

    Args:
      features: `audio` [Ta, bins], and `video` [Tv, ...] / `video_valid` [Tv] if present.
      data: the model's `data` settings (`bundle.DATA_FIELDS`).
      stats: {audio,video}_{mean,std} of one row (the training split's, or the clip's
        speaker's), or None.
      streams: the model's streams.
      crops: `crop_starts`'s 'centre' (evaluation's) or 'average'.

    Returns:
      (the clip's K crops as a batch: audio [K, ta, F], audio_mask [K, ta], and for a face
      stream video [K, tv, ...], video_mask [K, tv], K = 1 for 'centre'; [K] the crops'
      starts in seconds).
    """
    config = data_config(data)
    ratio = data["audio_fps"] // data["video_fps"]
    ta, tv = frontend.clip_frames(config)
    view = frontend.clip_view(features, config)
    audio = view["audio"]
    has_video = "video" in features
    if stats is not None:
        audio = (audio - stats["audio_mean"]) / stats["audio_std"]
    audio_units = -(-len(audio) // ratio)
    n_units = min(len(view["video"]), audio_units) if has_video else audio_units
    starts = crop_starts(n_units, tv, crops)
    if "video" in streams:
        video = np.asarray(view["video"], np.float32)
        if stats is not None:
            video = (video - stats["video_mean"]) / stats["video_std"]
    rows = []
    for start in starts:
        row = {}
        row["audio"], row["audio_mask"] = frontend.crop_or_pad(audio, start * ratio, ta)
        if "video" in streams:
            row["video"], mask = frontend.crop_or_pad(video, start, tv)
            if data["use_video_valid"]:
                valid, _ = frontend.crop_or_pad(np.asarray(view["video_valid"], bool), start, tv)
                mask &= valid
            row["video_mask"] = mask
        rows.append(row)
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    return batch, (view["first"] + np.asarray(starts)) * ratio / data["audio_fps"]


def speaker_statistics(
    clips: Sequence[dict[str, np.ndarray]], data: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Per-feature mean and std over the frames of one speaker's clips, in the model's view
    (what `input_pipeline.compute_stats(by_speaker=True)` computes for a record split)."""
    config = data_config(data)
    views = [frontend.clip_view(c, config) for c in clips]
    stats = {}
    for key in ("audio", "video"):
        if not all(key in v for v in views):
            continue
        frames = [v[key][v["voiced"]] if key == "audio" else v[key] for v in views]
        x = np.concatenate(frames).astype(np.float64)
        stats[f"{key}_mean"] = x.mean(0).astype(np.float32)
        stats[f"{key}_std"] = np.maximum(x.std(0), frontend.STD_FLOOR).astype(np.float32)
    return stats
