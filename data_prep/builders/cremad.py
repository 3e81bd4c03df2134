r"""CREMA-D (Cao et al., 2014): 91 actors, 12 sentences, 6 emotions, audio-visual, public.

Source layout (the release of github.com/CheyneyComputerScience/CREMA-D; the large files are
in Git LFS)::

    MANUAL_DIR/VideoFlash/1001_DFA_ANG_XX.flv      video (480 x 360, 30 frames/s)
    MANUAL_DIR/AudioWAV/1001_DFA_ANG_XX.wav        the same take's audio (16 kHz)

Clip ids are ``ACTOR_SENTENCE_EMOTION_LEVEL``: actor 1001-1091, a 3-letter sentence code, the
emotion (ANG, DIS, FEA, HAP, NEU, SAD) and the intensity (LO, MD, HI, XX). The spectrogram
comes from the WAV file, the face features from the FLV (its own audio track is not used).
Frames are small enough that faces are large: they are shrunk 2x for MTCNN.

Splits: five groups of consecutive actors, fixed here (`ACTOR_GROUPS`), ``group1`` (actors
1001-1018) .. ``group5`` (1073-1091); each actor's clips are in one split, so speaker-
independent protocols are split arithmetic (``configs/cremad_amfbp.py``: test on one group,
choose the checkpoint on the next, train on the other three).

    python -m data_prep.build cremad --manual_dir=/data/CREMA-D --data_dir=data       # cremad/fer
"""

from __future__ import annotations

import os
import re
from typing import ClassVar

import tensorflow_datasets as tfds

from data_prep.builders import corpus, face_corpus

EMOTION_CODES = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
CLASSES = tuple(EMOTION_CODES.values())
FIRST_ACTOR, LAST_ACTOR = 1001, 1091
# Split name -> (first actor, last actor), inclusive: 18, 18, 18, 18 and 19 actors.
ACTOR_GROUPS = {
    "group1": (1001, 1018),
    "group2": (1019, 1036),
    "group3": (1037, 1054),
    "group4": (1055, 1072),
    "group5": (1073, 1091),
}
# The 12 sentences and 4 emotion levels of the corpus's file names.
SENTENCES = frozenset(
    ["IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"]
)
LEVELS = frozenset({"LO", "MD", "HI", "XX"})
VIDEO_DIR, AUDIO_DIR = "VideoFlash", "AudioWAV"
_ID = re.compile(r"^(\d{4})_([A-Z0-9]{3})_([A-Z]{3})_([A-Z]{2})$")


def actor_group(actor: int) -> str:
    """The split of an actor (1001-1091)."""
    for split, (first, last) in ACTOR_GROUPS.items():
        if first <= actor <= last:
            return split
    raise ValueError(f"CREMA-D actor {actor} outside {FIRST_ACTOR}-{LAST_ACTOR}")


def _files(folder: str, extensions: tuple[str, ...]) -> dict[str, list[str]]:
    """Clip id -> its files in `folder` (more than one when an id has several extensions)."""
    if not os.path.isdir(folder):
        return {}
    out: dict[str, list[str]] = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in extensions:
            out.setdefault(stem, []).append(os.path.join(folder, name))
    return out


LAYOUT = f"{VIDEO_DIR}/<id>.flv and {AUDIO_DIR}/<id>.wav, ids like 1001_DFA_ANG_XX"


def list_videos(
    manual_dir: str, seen: corpus.Seen | None = None
) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
    """Pairs `VideoFlash/<id>.flv` with `AudioWAV/<id>.wav` (folder names in any case);
    unpaired or badly named files are reported as skipped, a missing folder too."""
    seen = seen or corpus.Seen()
    sources: list[corpus.ClipSource] = []
    skipped: list[corpus.Skipped] = []
    folders = {}
    for name in (VIDEO_DIR, AUDIO_DIR):
        folders[name] = seen.entry(manual_dir, name) or os.path.join(manual_dir, name)
        if not os.path.isdir(folders[name]):
            skipped.append(corpus.Skipped("", "", folders[name], f"folder not found ({LAYOUT})"))
    videos = _files(folders[VIDEO_DIR], face_corpus.VIDEO_EXTENSIONS)
    audios = _files(folders[AUDIO_DIR], (".wav",))
    for clip_id in sorted(set(videos) | set(audios)):
        path = (videos.get(clip_id) or audios[clip_id])[0]
        match = _ID.match(clip_id)
        if not match:
            skipped.append(
                corpus.Skipped(clip_id, "", path, "name is not ACTOR_SENTENCE_EMOTION_LEVEL")
            )
            continue
        actor, _, emotion, _ = match.groups()
        if not FIRST_ACTOR <= int(actor) <= LAST_ACTOR:
            skipped.append(
                corpus.Skipped(
                    clip_id, "", path, f"actor {actor} outside {FIRST_ACTOR}-{LAST_ACTOR}"
                )
            )
            continue
        split = actor_group(int(actor))
        _, sentence, _, level = match.groups()
        if sentence not in SENTENCES:
            skipped.append(corpus.Skipped(clip_id, split, path, f"unknown sentence {sentence}"))
        elif level not in LEVELS:
            skipped.append(corpus.Skipped(clip_id, split, path, f"unknown emotion level {level}"))
        elif emotion not in EMOTION_CODES:
            skipped.append(corpus.Skipped(clip_id, split, path, f"unknown emotion {emotion}"))
        elif clip_id not in videos:
            where = os.path.join(folders[VIDEO_DIR], f"{clip_id}.flv")
            skipped.append(
                corpus.Skipped(clip_id, split, path, f"audio without video ({where} missing)")
            )
        elif clip_id not in audios:
            where = os.path.join(folders[AUDIO_DIR], f"{clip_id}.wav")
            skipped.append(
                corpus.Skipped(clip_id, split, path, f"video without audio file ({where} missing)")
            )
        else:  # Every video x audio file of the id: corpus.check_listing judges duplicates.
            sources += [
                corpus.ClipSource(
                    clip_id,
                    split,
                    actor,
                    EMOTION_CODES[emotion],
                    files={"video": video, "audio": audio},
                )
                for video in videos[clip_id]
                for audio in audios[clip_id]
            ]
    return sources, skipped


class CremaD(face_corpus.FaceCorpusBuilder):
    """CREMA-D audio-visual clips with per-frame face features, one split per actor group."""

    name = "cremad"  # TFDS's own 'crema_d' is the audio-only version.
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[face_corpus.FaceCorpusConfig]] = face_corpus.face_configs(
        detect_max_side=240
    )
    CLASSES = CLASSES
    HOMEPAGE = "https://github.com/CheyneyComputerScience/CREMA-D"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download CREMA-D (Open Database License) from "
        "https://github.com/CheyneyComputerScience/CREMA-D (git lfs pull for the media) and "
        "pass its folder as --manual_dir: it must hold VideoFlash/<id>.flv and "
        "AudioWAV/<id>.wav (ids like 1001_DFA_ANG_XX). For the 'features' config, also give "
        "--face_features_dir with one <id>.npy [frames, D1] per clip (default: "
        "MANUAL_DIR/face_features)."
    )

    LAYOUT = LAYOUT

    def list_videos(self, manual_dir):
        return list_videos(manual_dir, self.seen)
