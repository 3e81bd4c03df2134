r"""RAVDESS speech (Livingstone & Russo, 2018): 24 actors, 8 emotions, one split per actor.

Source layout (the official release, or the 16 kHz FLAC development copy)::

    MANUAL_DIR/Actor_01/03-01-EE-II-SS-RR-01.wav     (or .flac)
    ...
    MANUAL_DIR/Actor_24/...
    MANUAL_DIR/openface_au_clip_features.csv          clip-level facial features

File names are ``MM-VV-EE-II-SS-RR-AA``: modality (03 audio only), vocal channel (01 speech),
emotion (01 neutral .. 08 surprised), intensity, statement, repetition, actor. Audio of any
sample rate and channel count is downmixed to mono and resampled to 16 kHz (noted in the
report). The CSV has one row per clip keyed by the audio-video clip id (modality 01) and one
column per feature; each clip's row is repeated at 25 frames/s as its "video" stream
(D1 = number of columns, 35 OpenFace action-unit features in the development copy).

    python -m data_prep.build ravdess --manual_dir=../shared/data/ravdess-dev --data_dir=data

Splits ``actor01`` .. ``actor24`` (those present); protocols are split arithmetic in the
configs (``configs/ravdess_common.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
import re
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from data_prep.builders import base, corpus
from data_prep.features import audio as audio_lib

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NUM_ACTORS = 24
VIDEO_FPS = 25
AUDIO_EXTENSIONS = audio_lib.AUDIO_EXTENSIONS
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def split_name(actor: int) -> str:
    return f"actor{actor:02d}"


@dataclasses.dataclass(eq=False)
class RavdessConfig(tfds.core.BuilderConfig):
    """Attributes: features_csv: file name of the clip-level features in the manual dir;
    num_features: its number of feature columns (D1)."""

    features_csv: str = "openface_au_clip_features.csv"
    num_features: int = 35


def read_features(path: str, num_features: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """Clip-level features from a CSV keyed by clip id.

    Returns:
      (clip id -> float32 [num_features], problems): rows with a wrong number of values or
      non-finite values are left out and described in `problems`.

    Raises:
      corpus.BadClip: the file is missing or its header does not have `num_features` columns.
    """
    if not os.path.isfile(path):
        raise corpus.BadClip(path, "features CSV not found")
    features, problems = {}, []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if len(header) != num_features + 1:
            raise corpus.BadClip(
                path,
                f"expected a clip id column and {num_features} feature columns, "
                f"found {len(header)} columns",
            )
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                values = np.array([float(v) for v in row[1:]], np.float32)
            except ValueError:
                values = None
            if values is None or len(values) != num_features or not np.all(np.isfinite(values)):
                problems.append(f"{path}, line {line}: bad feature row for {row[0]!r}")
                continue
            features[row[0]] = values
    return features, problems


def extract(source: corpus.ClipSource) -> tuple[dict[str, Any], list[str]]:
    """One clip -> schema example (spectrogram, repeated clip features) and conversion notes."""
    path = source.files["audio"]
    audio = audio_lib.load_audio(path)
    notes = []
    if audio.source_rate != audio_lib.SAMPLE_RATE:
        notes.append(f"{path}: resampled {audio.source_rate} Hz -> {audio_lib.SAMPLE_RATE} Hz")
    if audio.source_channels != 1:
        notes.append(f"{path}: downmixed {audio.source_channels} channels to mono")
    spectrogram = audio_lib.log_spectrogram(audio.samples, path)
    num_frames = max(1, math.ceil(len(spectrogram) / (audio_lib.FRAMES_PER_SECOND // VIDEO_FPS)))
    features = np.asarray(source.extra["features"], np.float32)
    example = {
        "clip_id": source.clip_id,
        "speaker": source.speaker,
        "label": source.label,
        "audio": spectrogram,
        "video": np.tile(features, (num_frames, 1)),
        "video_valid": np.ones(num_frames, bool),
        "duration_s": np.float32(audio.duration_s),
    }
    return example, notes


def list_clips(
    manual_dir: str, config: RavdessConfig
) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
    """Finds the speech clips of every `Actor_XX` folder and joins them with their features."""
    csv_path = os.path.join(manual_dir, config.features_csv)
    try:
        features, problems = read_features(csv_path, config.num_features)
    except corpus.BadClip as e:
        raise FileNotFoundError(f"{e}\n{Ravdess.MANUAL_DOWNLOAD_INSTRUCTIONS}") from e
    skipped = [corpus.Skipped("", "", csv_path, p) for p in problems]
    sources = []
    for folder in sorted(os.listdir(manual_dir)):
        match = re.fullmatch(r"Actor_(\d\d)", folder)
        if not match or not os.path.isdir(os.path.join(manual_dir, folder)):
            continue
        actor = int(match.group(1))
        for name in sorted(os.listdir(os.path.join(manual_dir, folder))):
            path = os.path.join(manual_dir, folder, name)
            stem, ext = os.path.splitext(name)
            skip = functools.partial(corpus.Skipped, stem, split_name(actor), path)
            if ext.lower() not in AUDIO_EXTENSIONS:
                continue
            fields = _NAME.match(stem)
            if not fields:
                skipped.append(skip("file name is not MM-VV-EE-II-SS-RR-AA"))
                continue
            _, channel, emotion, _, _, _, file_actor = (int(v) for v in fields.groups())
            if channel != 1:
                skipped.append(skip(f"vocal channel {channel:02d} is song, not speech"))
            elif not 1 <= emotion <= len(EMOTIONS):
                skipped.append(skip(f"unknown emotion code {emotion:02d}"))
            elif file_actor != actor:
                skipped.append(skip(f"actor {file_actor:02d} in the name, folder {folder}"))
            elif "01" + stem[2:] not in features:
                skipped.append(skip(f"no facial features for {'01' + stem[2:]} in {csv_path}"))
            else:
                sources.append(
                    corpus.ClipSource(
                        clip_id=stem,
                        split=split_name(actor),
                        speaker=split_name(actor),
                        label=EMOTIONS[emotion - 1],
                        files={"audio": path},
                        extra={"features": features["01" + stem[2:]].tolist()},
                    )
                )
    return sources, skipped


class Ravdess(base.CorpusBuilder):
    """RAVDESS speech with clip-level facial features, one split per actor."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[RavdessConfig]] = [
        RavdessConfig(
            name="speech",
            description="Speech clips, 8 emotions, OpenFace AU clip features (35 columns).",
        )
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the RAVDESS speech audio (Audio_Speech_Actors_01-24: Actor_XX/03-01-*.wav, or the "
        "FLAC development copy) in --manual_dir, with the clip-level facial features CSV "
        "(openface_au_clip_features.csv: a clip_id column, then one column per feature) beside "
        "the Actor_XX folders."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[0],
            features=base.schema_features(
                EMOTIONS,
                (config.num_features,),
                "Clip-level facial features repeated at 25 frames/s.",
            ),
            homepage="https://zenodo.org/record/1188976",
        )

    def list_clips(self, manual_dir):
        return list_clips(manual_dir, self.builder_config)

    def extractor(self):
        return extract
