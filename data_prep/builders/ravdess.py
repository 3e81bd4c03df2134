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

    python -m data_prep.build ravdess --manual_dir=<RAVDESS folder> --data_dir=data

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
      non-finite values are left out and described in `problems`; a clip id with two rows is
      kept once if the rows are equal (and noted), and left out if they differ.

    Raises:
      corpus.BadClip: the file is missing, empty, or its header does not have `num_features`
        columns.
    """
    if not os.path.isfile(path):
        raise corpus.BadClip(path, "features CSV not found")
    rows: dict[str, list[tuple[int, np.ndarray]]] = {}
    problems = []
    with open(path, newline="", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        if len(header) != num_features + 1:
            raise corpus.BadClip(
                path,
                f"expected a clip id column and {num_features} feature columns, "
                f"found {len(header)} columns",
            )
        for line, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            try:
                values = np.array([float(v) for v in row[1:]], np.float32)
            except ValueError:
                values = None
            if values is None or len(values) != num_features or not np.all(np.isfinite(values)):
                problems.append(f"{path}, line {line}: bad feature row for {row[0]!r}")
                continue
            rows.setdefault(row[0].strip(), []).append((line, values))
    features = {}
    for clip, found in rows.items():
        lines = ", ".join(str(line) for line, _ in found)
        if all(np.array_equal(found[0][1], v) for _, v in found[1:]):
            features[clip] = found[0][1]
            if len(found) > 1:
                problems.append(f"{path}, lines {lines}: {clip!r} repeated with equal values")
        else:
            problems.append(
                f"{path}, lines {lines}: {len(found)} different feature rows for {clip!r}; "
                "none is used"
            )
    return features, problems


def name_problem(fields: tuple[int, ...], folder_actor: int) -> str | None:
    """Why MM-VV-EE-II-SS-RR-AA cannot name a RAVDESS speech audio file of `folder_actor`
    (None when it can), after the corpus's own specification."""
    modality, channel, emotion, intensity, statement, repetition, actor = fields
    if modality != 3:
        kind = {1: "a full audio-video", 2: "a video-only"}.get(modality, "an unknown")
        return f"modality {modality:02d} is {kind} file; audio files are 03"
    if channel not in (1, 2):
        return f"vocal channel {channel:02d} is neither 01 (speech) nor 02 (song)"
    if channel == 2:
        return f"vocal channel {channel:02d} is song, not speech"
    if not 1 <= emotion <= len(EMOTIONS):
        return f"unknown emotion code {emotion:02d}"
    if intensity not in (1, 2):
        return f"intensity {intensity:02d} is neither 01 (normal) nor 02 (strong)"
    if emotion == 1 and intensity == 2:
        return "intensity 02 does not exist for neutral (01)"
    if statement not in (1, 2):
        return f"statement {statement:02d} is neither 01 nor 02"
    if repetition not in (1, 2):
        return f"repetition {repetition:02d} is neither 01 nor 02"
    if not 1 <= actor <= NUM_ACTORS:
        return f"actor {actor:02d} is not one of 01-{NUM_ACTORS}"
    if actor != folder_actor:
        return f"actor {actor:02d} in the name, folder Actor_{folder_actor:02d}"
    return None


def extract(source: corpus.ClipSource) -> tuple[dict[str, Any], list[str]]:
    """One clip -> schema example (spectrogram, repeated clip features) and conversion notes."""
    path = source.files["audio"]
    audio = audio_lib.load_audio(path)
    notes = [f"{path}: {n}" for n in audio.notes]
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


LAYOUT = "Actor_XX/MM-VV-EE-II-SS-RR-AA" + "|".join(AUDIO_EXTENSIONS) + " and the features CSV"


def list_clips(
    manual_dir: str, config: RavdessConfig, seen: corpus.Seen | None = None
) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
    """Finds the speech clips of every `Actor_XX` folder (any case) and joins them with their
    features."""
    seen = seen or corpus.Seen()
    csv_path = seen.entry(manual_dir, config.features_csv) or os.path.join(
        manual_dir, config.features_csv
    )
    seen.file(csv_path)
    try:
        features, problems = read_features(csv_path, config.num_features)
    except corpus.BadClip as e:
        raise FileNotFoundError(f"{e}\n{Ravdess.MANUAL_DOWNLOAD_INSTRUCTIONS}") from e
    skipped = [corpus.Skipped("", "", csv_path, p) for p in problems]
    sources = []
    for folder in sorted(os.listdir(manual_dir)):
        match = re.fullmatch(r"Actor_(\d\d)", folder, re.IGNORECASE)
        if not match or not os.path.isdir(os.path.join(manual_dir, folder)):
            continue
        actor = int(match.group(1))
        if folder != f"Actor_{actor:02d}":
            seen.notes.append(
                f"{os.path.join(manual_dir, folder)}: read as 'Actor_{actor:02d}' (the name "
                "differs only in case)"
            )
        before = len(sources) + len(skipped)
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
            values = tuple(int(v) for v in fields.groups())
            emotion = values[2]
            problem = name_problem(values, actor)
            if problem:
                skipped.append(skip(problem))
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
        if len(sources) + len(skipped) == before:
            skipped.append(
                corpus.Skipped(
                    "",
                    split_name(actor),
                    os.path.join(manual_dir, folder),
                    "no clip in this actor folder: looked for MM-VV-EE-II-SS-RR-AA"
                    + "|".join(AUDIO_EXTENSIONS),
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

    LAYOUT = LAYOUT

    def list_clips(self, manual_dir):
        return list_clips(manual_dir, self.builder_config, self.seen)

    def extractor(self):
        return extract
