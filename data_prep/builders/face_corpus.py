"""What the video corpora (AFEW, CREMA-D) share: face-feature extraction inside `CorpusBuilder`.

Two builder configs per corpus:

* ``fer`` (default): the face pipeline of `data_prep.features.faces` on every clip (PyAV decoding,
  MTCNN, alignment, the FER2013 mini-Xception in JAX). ``video`` is [Tv, 128] at 25 frames/s,
  ``video_valid`` marks the frames with a detected face, and ``fer_posteriors`` [Tv, 7] keeps
  the FER2013 class posteriors (`data_prep.features.fer_net.FER_CLASSES` order) for analysis.
* ``features``: per-frame features the user already has (the paper's FR-Net-B, or any other):
  one ``<clip_id>.npy`` [frames, D1] per clip in ``--face_features_dir`` (default:
  ``MANUAL_DIR/face_features``), row i for the i-th frame of the video, resampled onto the
  25 frames/s grid by the frames' timestamps (`data_prep.features.faces.features_from_file`). The
  video is still decoded for its timestamps (and, for AFEW, its audio track). D1 is whatever
  the files hold (the same for every clip); set ``data.video_shape`` to it.

The build report gets a ``face_pipeline`` entry: frames processed, seconds spent in each stage
(summed over the extraction workers) and frames/s per worker.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from data_prep.builders import base, corpus
from data_prep.features import faces
from data_prep.features import video as video_lib

VIDEO_EXTENSIONS = video_lib.VIDEO_EXTENSIONS
FEATURES_SUBDIR = "face_features"  # Default --face_features_dir inside the manual dir.
_STATS_KEY = "__face_seconds__"  # Per-clip stage seconds, kept in the cache, not the records.
_STAGES = ("decode", "detect", "align", "encode", "audio")


@dataclasses.dataclass(eq=False)
class FaceCorpusConfig(tfds.core.BuilderConfig):
    """Attributes: features: 'fer' (face pipeline) or 'files' (user's .npy features);
    detect_max_side: frames are shrunk by an integer factor to at most this longer side
    before MTCNN (see `data_prep.features.faces.FaceDetector`)."""

    features: str = "fer"
    detect_max_side: int = 480


def face_configs(detect_max_side: int) -> list[FaceCorpusConfig]:
    return [
        FaceCorpusConfig(
            name="fer",
            description="MTCNN + aligned 64x64 faces + FER2013 mini-Xception: 128-d features.",
            features="fer",
            detect_max_side=detect_max_side,
        ),
        FaceCorpusConfig(
            name="features",
            description="The user's per-frame features, one <clip_id>.npy per clip.",
            features="files",
            detect_max_side=detect_max_side,
        ),
    ]


@functools.lru_cache(maxsize=2)
def _pipeline(detect_max_side: int) -> faces.FacePipeline:
    """One pipeline per worker process and setting: MTCNN and the encoder load once."""
    return faces.FacePipeline(detector=faces.FaceDetector(detect_max_side=detect_max_side))


def extract(
    source: corpus.ClipSource,
    mode: str = "fer",
    detect_max_side: int = 480,
    duration_mismatch: str = "keep",
) -> tuple[dict[str, Any], list[str]]:
    """One clip -> schema example and notes. `source.files`: 'video', optional 'audio' (a
    separate audio file), and 'features' (the .npy, mode 'files')."""
    video_path = source.files["video"]
    audio_path = source.files.get("audio")
    if mode == "fer":
        pipeline = _pipeline(detect_max_side)
        pipeline.duration_mismatch = duration_mismatch
        result = pipeline(video_path, audio_path)
    elif mode == "files":
        result = faces.features_from_file(
            source.files["features"], video_path, audio_path, duration_mismatch
        )
    else:
        raise ValueError(f"Unknown face feature mode {mode!r}.")
    example = {
        "clip_id": source.clip_id,
        "speaker": source.speaker,
        "label": source.label,
        "audio": result.spectrogram,
        "video": result.features,
        "video_valid": result.valid,
        "duration_s": np.float32(result.duration_s),
    }
    if mode == "fer":
        example["fer_posteriors"] = result.posteriors
        example[_STATS_KEY] = np.array([result.seconds[s] for s in _STAGES], np.float64)
    notes = [f"{video_path}: {n}" for n in result.notes]
    return example, notes


def check_feature_sizes(
    sources: list[corpus.ClipSource],
) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
    """Every clip's .npy features must have the same per-frame size D1, checked on the files'
    headers before any extraction. The size most files have is taken as D1; a file of another
    size, an empty or unreadable one is skipped with a reason naming it, the size it has and
    the size (and an example file) of the others."""
    shapes, skipped = {}, []
    for s in sources:
        path = s.files["features"]
        try:
            shapes[s.clip_id] = faces.feature_file_shape(path)
        except corpus.BadClip as e:
            skipped.append(corpus.Skipped(s.clip_id, s.split, e.path, e.reason))
    sizes: dict[tuple, list[str]] = {}
    for s in sources:
        if s.clip_id in shapes:
            sizes.setdefault(shapes[s.clip_id][1:], []).append(s.files["features"])
    if not sizes:
        return [], skipped
    common = max(sizes, key=lambda k: len(sizes[k]))
    kept = []
    for s in sources:
        if s.clip_id not in shapes:
            continue
        if shapes[s.clip_id][1:] != common:
            skipped.append(
                corpus.Skipped(
                    s.clip_id,
                    s.split,
                    s.files["features"],
                    f"features of shape {shapes[s.clip_id]}, but {len(sizes[common])} other "
                    f"clips have [frames, {', '.join(map(str, common))}] (e.g. "
                    f"{sizes[common][0]}); every clip needs the same D1",
                )
            )
        else:
            kept.append(s)
    return kept, skipped


class FaceCorpusBuilder(base.CorpusBuilder, skip_registration=True):
    """A `CorpusBuilder` whose clips are videos turned into face features.

    Subclasses give `CLASSES`, `list_videos(manual_dir)` and the manual download instructions.
    `face_features_dir` (set by `data_prep.build --face_features_dir`) is where the
    ``features`` config reads its .npy files.
    """

    # 2: frames decoded at the detector's size (aligned from it, not from the full frame).
    # 3: a mains hum and a DC offset above -60 dBFS removed before the spectrogram.
    # 4: a hum notched at the harmonics of its measured fundamental, only within 45 dB of the
    #    loudest frame (a grid off 50 / 60 Hz; a codec's frame comb is not a hum).
    # 5: a hum's fundamental searched within 3 Hz of 50 / 60 Hz (a generator's).
    EXTRACTION_VERSION: ClassVar[str] = "5"
    INTERNAL_KEYS: ClassVar[tuple[str, ...]] = ("__notes__", _STATS_KEY)
    CLASSES: ClassVar[tuple[str, ...]] = ()
    HOMEPAGE: ClassVar[str] = ""
    face_features_dir: str | None = None

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        if config.features == "fer":
            from data_prep.features import fer_net  # JAX: imported only when a builder is used

            video_shape, doc = (
                (fer_net.FEATURE_DIM,),
                (
                    "FER2013 mini-Xception features (last residual block, spatially averaged) of "
                    "the aligned face, or of the whole frame where video_valid is False; 25 frames/s."
                ),
            )
        else:
            video_shape, doc = (None,), "The user's per-frame face features, 25 frames/s."
        features = base.schema_features(self.CLASSES, video_shape, doc)
        if config.features == "fer":
            features = tfds.features.FeaturesDict(
                {
                    **dict(features.items()),
                    "fer_posteriors": tfds.features.Tensor(
                        shape=(None, 7),
                        dtype=np.float32,
                        encoding=tfds.features.Encoding.BYTES,
                        doc="FER2013 class posteriors per frame "
                        "(angry, disgust, fear, happy, sad, surprise, neutral).",
                    ),
                }
            )
        return self.dataset_info_from_configs(
            description=(self.__doc__ or "").split("\n\n")[0],
            features=features,
            homepage=self.HOMEPAGE,
        )

    def list_videos(self, manual_dir: str) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
        """The corpus's clips with files {'video': ..., optionally 'audio': ...}."""
        raise NotImplementedError

    def features_dir(self, manual_dir: str) -> str:
        return self.face_features_dir or os.path.join(manual_dir, FEATURES_SUBDIR)

    def list_clips(self, manual_dir: str):
        sources, skipped = self.list_videos(manual_dir)
        if self.builder_config.features == "files":
            folder = self.features_dir(manual_dir)
            if not os.path.isdir(folder):
                raise FileNotFoundError(
                    f"Face feature folder {folder} not found: the '{self.builder_config.name}' "
                    f"config reads one <clip_id>.npy [frames, D1] per clip from "
                    f"--face_features_dir (default MANUAL_DIR/{FEATURES_SUBDIR})."
                )
            sources = [
                dataclasses.replace(
                    s, files={**s.files, "features": os.path.join(folder, f"{s.clip_id}.npy")}
                )
                for s in sources
            ]
            sources, odd = check_feature_sizes(sources)
            skipped = list(skipped) + odd
        return sources, skipped

    def extractor(self):
        config = self.builder_config
        return functools.partial(
            extract,
            mode=config.features,
            detect_max_side=config.detect_max_side,
            duration_mismatch=self.duration_mismatch,
        )

    def report_extras(self, extraction, cache_dir, version):
        """`face_pipeline`: frames, frames with a face and seconds per stage, from the cache."""
        stats = {
            "clips": 0,
            "frames": 0,
            "frames_with_face": 0,
            "seconds": dict.fromkeys(_STAGES, 0.0),
        }
        for clips in extraction.clips.values():
            for source in clips:
                example = corpus.load_cached(cache_dir, source, version)
                seconds = example.get(_STATS_KEY)
                if seconds is None:
                    continue
                stats["clips"] += 1
                stats["frames"] += len(example["video_valid"])
                stats["frames_with_face"] += int(example["video_valid"].sum())
                for stage, s in zip(_STAGES, np.atleast_1d(seconds)):
                    stats["seconds"][stage] = round(stats["seconds"][stage] + float(s), 3)
        if not stats["clips"]:
            return {}
        total = sum(stats["seconds"].values())
        stats["frames_per_second_per_worker"] = round(stats["frames"] / max(total, 1e-9), 2)
        return {"face_pipeline": stats}

    def download_and_prepare(self, *args: Any, **kwargs: Any) -> None:
        super().download_and_prepare(*args, **kwargs)
        stats = (self._report or {}).get("face_pipeline")
        if stats and stats["frames"]:
            logging.info(
                "Face pipeline: %d frames (%d with a face) of %d clips, %.2f frames/s per "
                "worker (%s)",
                stats["frames"],
                stats["frames_with_face"],
                stats["clips"],
                stats["frames_per_second_per_worker"],
                ", ".join(f"{k} {v:.1f} s" for k, v in stats["seconds"].items()),
            )
