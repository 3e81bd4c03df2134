r"""AFEW (Acted Facial Expressions in the Wild, EmotiW): film clips, 7 emotions, train/validation.

Source layout (as the EmotiW organisers distribute it; folder names of any case)::

    MANUAL_DIR/Train_AFEW/Angry/000046280.avi
    MANUAL_DIR/Train_AFEW/Disgust/...            Angry Disgust Fear Happy Neutral Sad Surprise
    MANUAL_DIR/Val_AFEW/Angry/...

Splits ``train`` and ``validation`` (the test labels are not public). The clip id is the file
name without extension; speakers are not annotated (``speaker`` is "unknown"). The audio is the
clip's own track; the video goes through the face pipeline (`data_prep.builders.face_corpus`), frames of
720 x 576 are shrunk 2x for MTCNN.

    python -m data_prep.build afew --manual_dir=/data/AFEW --data_dir=data            # afew/fer
    python -m data_prep.build afew/features --manual_dir=/data/AFEW \
        --face_features_dir=/data/AFEW/frnet_b --data_dir=data
"""

from __future__ import annotations

import os
from typing import ClassVar

import tensorflow_datasets as tfds

from data_prep.builders import corpus, face_corpus

CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SPLIT_FOLDERS = {"train": "Train_AFEW", "validation": "Val_AFEW"}
SPEAKER = "unknown"


LAYOUT = "Train_AFEW/<Emotion>/<id>.avi and Val_AFEW/<Emotion>/<id>.avi"


def list_videos(
    manual_dir: str, seen: corpus.Seen | None = None
) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
    """Every video of `Train_AFEW/<Emotion>/` and `Val_AFEW/<Emotion>/` (any case).

    Videos in folders that are not one of the 7 emotions, an emotion folder without videos and
    a split folder that is missing are reported as skipped (clip ids seen twice are checked by
    the builder's listing check).
    """
    seen = seen or corpus.Seen()
    sources: list[corpus.ClipSource] = []
    skipped: list[corpus.Skipped] = []
    for split, folder_name in SPLIT_FOLDERS.items():
        split_dir = seen.entry(manual_dir, folder_name)
        if split_dir is None:
            skipped.append(
                corpus.Skipped(
                    "", split, os.path.join(manual_dir, folder_name), f"folder not found ({LAYOUT})"
                )
            )
            continue
        for emotion_dir in sorted(os.listdir(split_dir)):
            folder = os.path.join(split_dir, emotion_dir)
            if not os.path.isdir(folder):
                continue
            label = emotion_dir.lower()
            before = len(sources) + len(skipped)
            for name in sorted(os.listdir(folder)):
                stem, ext = os.path.splitext(name)
                path = os.path.join(folder, name)
                if ext.lower() not in face_corpus.VIDEO_EXTENSIONS:
                    continue
                if label not in CLASSES:
                    skipped.append(
                        corpus.Skipped(
                            stem, split, path, f"folder {emotion_dir!r} is not an AFEW emotion"
                        )
                    )
                else:  # The same id twice is caught by corpus.check_listing.
                    sources.append(
                        corpus.ClipSource(stem, split, SPEAKER, label, files={"video": path})
                    )
            if len(sources) + len(skipped) == before:
                extensions = "|".join(face_corpus.VIDEO_EXTENSIONS)
                skipped.append(
                    corpus.Skipped("", split, folder, f"no video in this folder ({extensions})")
                )
    return sources, skipped


class Afew(face_corpus.FaceCorpusBuilder):
    """AFEW film clips with per-frame face features, train and validation splits."""

    name = "afew"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[face_corpus.FaceCorpusConfig]] = face_corpus.face_configs(
        detect_max_side=480
    )
    CLASSES = CLASSES
    HOMEPAGE = "https://sites.google.com/view/emotiw2020"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "AFEW is distributed by the EmotiW organisers to registered researchers (signed EULA). "
        "Put the unpacked Train_AFEW/ and Val_AFEW/ folders (one sub-folder per emotion: "
        "Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise, holding the .avi clips) in "
        "--manual_dir. For the 'features' config, also give --face_features_dir with one "
        "<clip_id>.npy [frames, D1] per clip (default: MANUAL_DIR/face_features)."
    )

    LAYOUT = LAYOUT

    def list_videos(self, manual_dir):
        return list_videos(manual_dir, self.seen)
