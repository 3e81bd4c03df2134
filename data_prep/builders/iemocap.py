r"""IEMOCAP (Busso et al., 2008): improvised dialogs, 4 classes, face markers, one split per session.

Source layout (``IEMOCAP_full_release`` as distributed)::

    MANUAL_DIR/SessionN/dialog/EmoEvaluation/<dialog>.txt     label lines
    MANUAL_DIR/SessionN/sentences/wav/<dialog>/<turn>.wav     16 kHz audio of each turn
    MANUAL_DIR/SessionN/sentences/MOCAP_rotated/<dialog>/<turn>.txt   face markers, 120 frames/s

A label line reads ``[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5, 2.5, 2.5]``.
Only improvised dialogs (``*_impro*``) and the classes neutral, happy, sad, angry are kept
(``improvised_exc`` also counts excited as happy, as several papers do); the other IEMOCAP
codes are left out silently, unknown codes are reported. A marker file has a header row
``Frame# Time <marker>X <marker>Y <marker>Z ...`` (or marker names, then a row of X Y Z), then
one row per frame; markers become [Tv, M, 3] resampled from 120 frames/s to the config's
frame rate (nearest frame), rows with NaN are marked invalid and zeroed.

    python -m data_prep.build iemocap --manual_dir=/path/IEMOCAP_full_release --data_dir=data

Splits ``session1`` .. ``session5`` (leave-one-session-out: configs/iemocap_*.py).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import math
import os
import re
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds

from data_prep.builders import base, corpus
from data_prep.features import audio as audio_lib
from data_prep.features import sync

CLASSES = ("neutral", "happy", "sad", "angry")
CODES = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry"}
# Every code of IEMOCAP's EmoEvaluation files; those not in CODES are left out silently.
KNOWN_CODES = frozenset(
    {"neu", "hap", "sad", "ang", "exc", "fru", "sur", "fea", "dis", "oth", "xxx"}
)
MOCAP_FPS = 120.0
NUM_MARKERS = 55
_LABEL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\t(\S+)\t(\S+)\t")


@dataclasses.dataclass(eq=False)
class IemocapConfig(tfds.core.BuilderConfig):
    """Attributes: merge_excited: count 'exc' as happy; video_fps: marker frames per second
    written; num_markers: markers per frame (55 in MOCAP_rotated)."""

    merge_excited: bool = False
    video_fps: int = 25
    num_markers: int = NUM_MARKERS


# IEMOCAP turn names: Ses<session 01-05><F|M: who wears the markers>_<impro|script><dialog>
# [_<part>]_<F|M: speaker><turn number>, e.g. Ses01F_impro01_F000, Ses05M_script01_1b_M013.
_TURN = re.compile(r"^Ses0([1-5])([FM])_(impro|script)\d{2}[a-z]?(_\d[a-z]?)?_([FM])(\d{3})$")


def read_labels(path: str) -> tuple[dict[str, list[tuple[str, int]]], list[str]]:
    """Turn id -> [(emotion code, line number)] of an EmoEvaluation file (more than one entry
    when the file labels a turn twice), and the lines that could not be read."""
    labels, problems = {}, []
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.startswith("["):
                continue
            match = _LABEL_LINE.match(line)
            if not match:
                problems.append(
                    f"line {number}: not '[start - end] TAB turn TAB code TAB [v, a, d]'"
                )
                continue
            labels.setdefault(match.group(3), []).append((match.group(4), number))
    return labels, problems


def turn_problem(turn: str, session: int) -> str | None:
    """Why a turn name cannot be an IEMOCAP turn of `session` (None when it can)."""
    match = _TURN.match(turn)
    if not match:
        return f"turn name {turn!r} is not Ses0N[FM]_(impro|script)NN[_part]_[FM]NNN"
    if int(match.group(1)) != session:
        return f"turn {turn} names session {match.group(1)} but is in Session{session}"
    return None


def read_markers(path: str, num_markers: int) -> np.ndarray:
    """Marker coordinates of a MOCAP_rotated file as float32 [frames, markers, 3] (NaN kept).

    Raises:
      corpus.BadClip: missing file, bad header, rows with missing columns, no rows.
    """
    if not os.path.isfile(path):
        raise corpus.BadClip(path, "marker file not found")
    with open(path, errors="replace") as f:
        lines = [ln.split() for ln in f if ln.strip()]
    if not lines or not lines[0] or not lines[0][0].lower().startswith("frame"):
        raise corpus.BadClip(path, "no 'Frame# Time ...' header row")
    header, rows = lines[0], lines[1:]
    if rows and not _is_number(rows[0][0]):  # marker names, then a row of X Y Z
        rows = rows[1:]
    expected = 2 + 3 * num_markers
    if len(header) not in (expected, 2 + num_markers):
        raise corpus.BadClip(
            path, f"header has {len(header) - 2} marker columns, expected {3 * num_markers}"
        )
    if not rows:
        raise corpus.BadClip(path, "no marker rows")
    short = [i for i, r in enumerate(rows) if len(r) != expected]
    if short:
        raise corpus.BadClip(
            path,
            f"{len(short)} rows with missing or extra columns (first: data row {short[0] + 1} "
            f"has {len(rows[short[0]])} values, expected {expected})",
        )
    try:
        values = np.array(rows, dtype=np.float64)[:, 2:]
    except ValueError as e:
        raise corpus.BadClip(path, f"non-numeric marker value ({e})") from e
    return values.reshape(len(rows), num_markers, 3).astype(np.float32)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def resample_markers(markers: np.ndarray, fps: float, source_fps: float = MOCAP_FPS):
    """Nearest source frame for each output frame; returns (values, valid) with NaN rows zeroed."""
    num = max(1, math.floor(len(markers) * fps / source_fps))
    index = np.minimum(np.round(np.arange(num) * source_fps / fps).astype(int), len(markers) - 1)
    out = markers[index]
    valid = np.all(np.isfinite(out), axis=(1, 2))
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32), valid


def extract(
    source: corpus.ClipSource,
    *,
    video_fps: int,
    num_markers: int,
    duration_mismatch: str = "keep",
):
    """One turn -> schema example (spectrogram, markers [Tv, M, 3]) and conversion notes."""
    path = source.files["audio"]
    audio = audio_lib.load_audio(path)
    notes = [f"{path}: {n}" for n in audio.notes] + list(source.extra.get("notes", ()))
    markers = read_markers(source.files["markers"], num_markers)
    notes += sync.check_durations(
        source.files["markers"],
        audio.duration_s,
        len(markers) / MOCAP_FPS,
        "markers",
        duration_mismatch,
    )
    if not np.isfinite(markers).all(axis=(1, 2)).any():
        raise corpus.BadClip(source.files["markers"], "every marker row has NaN values")
    video, valid = resample_markers(markers, video_fps)
    example = {
        "clip_id": source.clip_id,
        "speaker": source.speaker,
        "label": source.label,
        "audio": audio_lib.log_spectrogram(audio.samples, source.files["audio"]),
        "video": video,
        "video_valid": valid,
        "duration_s": np.float32(audio.duration_s),
    }
    return example, notes


# Parts of the IEMOCAP release this builder does not read (it reads the improvised turns'
# sentence audio, their markers and the dialogs' label files).
UNREAD_PARTS = (
    ("dialog", "avi"),
    ("dialog", "wav"),
    ("dialog", "lab"),
    ("dialog", "transcriptions"),
    ("dialog", "MOCAP_hand"),
    ("dialog", "MOCAP_head"),
    ("dialog", "MOCAP_rotated"),
    ("sentences", "ForcedAlignment"),
    ("sentences", "MOCAP_hand"),
    ("sentences", "MOCAP_head"),
    ("dialog", "EmoEvaluation", "Attribute"),
    ("dialog", "EmoEvaluation", "Categorical"),
    ("dialog", "EmoEvaluation", "Self-evaluation"),
)
LAYOUT = (
    "SessionN/dialog/EmoEvaluation/<dialog>.txt, SessionN/sentences/wav/<dialog>/<turn>.wav "
    "and SessionN/sentences/MOCAP_rotated/<dialog>/<turn>.txt of improvised dialogs"
)


def list_clips(
    manual_dir: str, config: IemocapConfig, seen: corpus.Seen | None = None
) -> tuple[list[corpus.ClipSource], list[corpus.Skipped]]:
    """Label lines of the improvised dialogs joined with their audio and marker files.

    Folders are found whatever the case of their names (`Session1`, `session1`), noted."""
    seen = seen or corpus.Seen()
    codes = dict(CODES, exc="happy") if config.merge_excited else CODES
    sources, skipped, duplicates = [], [], []
    for session in range(1, 6):
        root = seen.entry(manual_dir, f"Session{session}")
        split = f"session{session}"
        if root is None or not os.path.isdir(root):
            continue
        for part in UNREAD_PARTS:
            path = seen.path(root, *part)
            if path is not None:
                seen.ignore(path, f"IEMOCAP {'/'.join(part)} folder (not read by this builder)")
        before = len(sources) + len(skipped)
        label_dir = seen.path(root, "dialog", "EmoEvaluation") or os.path.join(
            root, "dialog", "EmoEvaluation"
        )
        entries: dict[str, list[tuple[str, str]]] = {}  # turn -> [(code, 'file, line n')]
        for path in sorted(glob.glob(os.path.join(label_dir, "*.txt"))):
            if "_impro" not in os.path.basename(path):
                seen.ignore(path, "label file of a scripted dialog (improvised turns only)")
                continue
            seen.file(path)
            file_labels, problems = read_labels(path)
            skipped += [corpus.Skipped("", split, path, p) for p in problems]
            for turn, found in file_labels.items():
                entries.setdefault(turn, []).extend(
                    (code, f"{path}, line {line}") for code, line in found
                )
        labels = {}
        for turn, found in entries.items():
            codes_found = {code for code, _ in found}
            where = "; ".join(place for _, place in found)
            if len(codes_found) > 1:
                skipped.append(
                    corpus.Skipped(
                        turn,
                        split,
                        found[0][1].rsplit(",", 1)[0],
                        f"labelled {len(found)} times with different codes "
                        f"({', '.join(code for code, _ in found)}: {where}); none is chosen",
                    )
                )
                continue
            problem = turn_problem(turn, session)
            if problem:
                skipped.append(corpus.Skipped(turn, split, found[0][1].rsplit(",", 1)[0], problem))
                continue
            labels[turn] = (found[0][0], found[0][1].rsplit(",", 1)[0])
            if len(found) > 1:
                duplicates.append(
                    f"{turn}: the same label {found[0][0]!r} {len(found)} times ({where})"
                )
        sentences = seen.entry(root, "sentences") or os.path.join(root, "sentences")
        wav_dir = seen.entry(sentences, "wav") or os.path.join(sentences, "wav")
        mocap_dir = seen.entry(sentences, "MOCAP_rotated") or os.path.join(
            sentences, "MOCAP_rotated"
        )
        for dialog in sorted(glob.glob(os.path.join(wav_dir, "*"))):
            if "_impro" not in os.path.basename(dialog):
                seen.ignore(dialog, "sentence folder of a scripted dialog (improvised turns only)")
        for dialog in sorted(glob.glob(os.path.join(mocap_dir, "*"))):
            if "_impro" not in os.path.basename(dialog):
                seen.ignore(dialog, "marker folder of a scripted dialog (improvised turns only)")
        wavs = sorted(glob.glob(os.path.join(wav_dir, "*_impro*", "*.wav")))
        turns = {os.path.splitext(os.path.basename(w))[0]: w for w in wavs}
        for turn in sorted(set(turns) - set(entries)):
            skipped.append(corpus.Skipped(turn, split, turns[turn], "no label line for this turn"))
        for turn, (code, label_path) in sorted(labels.items()):
            skip = functools.partial(corpus.Skipped, turn, split)
            dialog = turn.rsplit("_", 1)[0]
            wav = turns.get(turn, os.path.join(wav_dir, dialog, f"{turn}.wav"))
            mocap = os.path.join(mocap_dir, dialog, f"{turn}.txt")
            if code not in KNOWN_CODES:
                skipped.append(skip(label_path, f"unknown emotion code {code!r}"))
                continue
            if code not in codes:
                for path in (wav, mocap):
                    seen.ignore(path, "file of a turn of a class this config leaves out")
                continue
            if turn not in turns:
                skipped.append(skip(wav, "audio file missing"))
            elif not os.path.isfile(mocap):
                skipped.append(skip(mocap, "marker file missing"))
            else:
                sources.append(
                    corpus.ClipSource(
                        clip_id=turn,
                        split=split,
                        speaker=turn[:5] + turn.rsplit("_", 1)[1][0],  # e.g. Ses01F
                        label=codes[code],
                        files={"audio": wav, "markers": mocap},
                        extra={"notes": [d for d in duplicates if d.startswith(turn + ":")]},
                    )
                )
        if len(sources) + len(skipped) == before:
            skipped.append(corpus.Skipped("", split, root, f"no improvised turn found: {LAYOUT}"))
    return sources, skipped


class Iemocap(base.CorpusBuilder):
    """IEMOCAP improvised turns, 4 classes, audio and face markers, one split per session."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[IemocapConfig]] = [
        IemocapConfig(name="improvised", description="Improvised; neutral, happy, sad, angry."),
        IemocapConfig(
            name="improvised_exc",
            description="Improvised; neutral, happy + excited, sad, angry.",
            merge_excited=True,
        ),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "IEMOCAP is licensed by USC SAIL (https://sail.usc.edu/iemocap/). Pass the folder "
        "IEMOCAP_full_release (with Session1 .. Session5) as --manual_dir."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            description=__doc__.split("\n\n")[0],
            features=base.schema_features(
                CLASSES,
                (config.num_markers, 3),
                f"Face marker coordinates (MOCAP_rotated), {config.video_fps} frames/s.",
            ),
            homepage="https://sail.usc.edu/iemocap/",
        )

    LAYOUT = LAYOUT

    def list_clips(self, manual_dir):
        return list_clips(manual_dir, self.builder_config, self.seen)

    def extractor(self):
        config = self.builder_config
        return functools.partial(
            extract,
            video_fps=config.video_fps,
            num_markers=config.num_markers,
            duration_mismatch=self.duration_mismatch,
        )
