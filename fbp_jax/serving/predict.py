r"""Run a trained model on media files: class probabilities, mu and the most attended span.

    fbp-jax predict --model=W clip.wav                     # a workdir (its chosen checkpoint)
    fbp-jax predict --model=E clips/ --output=predictions.csv   # an export dir, a folder
    fbp-jax predict --model=W a.flac b.wav --span_seconds=0.5

`--model` is a training workdir (its checkpoint chosen on validation, or `--step`), a directory
written by `fbp-jax export`, or a model shipped in the package (`fbp_jax.serving.shipped`).
Each file goes through the feature extraction of data_prep (16 kHz mono, the paper's 200-bin
log spectrogram), the model's view of it (linear bins or log-mel), the normalisation of the
training run, and the centre crop / zero padding to `data.clip_seconds` of evaluation, then the
model. A file whose speech is longer than that window (up to two windows; longer files are read
as a timeline of windows) is read as the mean over windows every quarter window that together
read all of it (`--crops=average`, the default), or by its centre window (`--crops=centre`, as
evaluation reads a clip). For every file it reports the posterior of each class, the predicted
class, the audio adaptive factor mu (two-stream models), and per stream the window of
`--span_seconds` that holds the most attention weight, in seconds from the start of the file.

A model trained with per-speaker standardisation (`data.speaker_norm`) standardises each clip
with statistics of its speaker's clips, taken from the files it is given:
`--speaker_groups=folder` (default: the files of one folder are one speaker), `all` (every file
given is one speaker), `file` (each file alone) or `training` (the training speakers' pooled
statistics, nothing of the speaker). A group of fewer than `--min_speaker_clips` (10) clips
uses the training speakers' pooled statistics, which classify a single clip almost as well.
A stream that is the same in every frame of a group (one file with one clip-level row of
face features, `file`) cannot be standardised by itself and takes the training speakers'
statistics too.

An export that holds a voice floor (`fbp-jax voice-floor`; the shipped `ravdess-audio` does)
answers a file read as one clip with its network's posteriors averaged with a logistic
regression on the file's voice functionals (`fbp_jax.serving.voice_floor`), standardised per
speaker group as above; a longer recording is left to the network.
One file's failure never stops the others: a folder or several files give a CSV (`--output`,
else stdout) whose `error` column names the problem (a file that cannot be read, or whose
features or outputs are not finite), and the command exits with status 1 when any file failed.
The same file named twice (or found twice under the folders given) is predicted once.

Audio files and the audio track of video files for audio-only models need no TensorFlow;
models with a face stream run the face pipeline of the AFEW / CREMA-D builders
(`data_prep.features.faces.clip_features`: MTCNN, alignment, FER2013 encoder).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

from fbp_jax import io
from fbp_jax.model import frontend
from fbp_jax.serving import shipped, timeline
from fbp_jax.serving.bundle import PredictError, ServingModel, load_serving_model
from fbp_jax.serving.clip import CROPS, DEFAULT_CROPS, prepare_inputs

SPEAKER_GROUPS = ("folder", "all", "file", "training")
# Fewer clips than this estimate a speaker's statistics poorly: such a group is standardised
# with the training speakers' pooled statistics instead (see docs/recipe.md for both).
MIN_SPEAKER_CLIPS = 10


# What a folder walk picks up (a file named explicitly is opened whatever its extension; the
# streams it holds decide what can be read from it).
MEDIA_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".aif", ".aiff",
    ".caf", ".amr", ".avi", ".flv", ".mp4", ".m4v", ".mkv", ".mov", ".mpg", ".mpeg", ".webm",
    ".3gp", ".ts", ".wmv",
)  # fmt: skip


OPENFACE_AU = "openface_au"


def _openface_video(path: str, openface: str | None, duration_s: float | None, model):
    """The AU rows of a media file for a model trained on OpenFace AUs: ([steps, 35], valid).

    `openface`: None or 'auto' (the OpenFace CSV `<stem>.csv` beside the file), a folder (its
    `<stem>.csv`), OpenFace's CSV of this file itself, or a table of clip-level rows (a CSV
    file with a clip_id column).
    """
    from data_prep.errors import BadClip
    from data_prep.features import openface as openface_lib

    stem = os.path.splitext(os.path.basename(path))[0]
    steps = int(np.ceil((duration_s or 0.0) * openface_lib.FPS)) + openface_lib.FPS
    try:
        if (
            openface
            and os.path.isfile(openface)
            and openface not in _TABLES
            and openface_lib.is_frame_csv(openface)
        ):
            times, rows, valid = openface_lib.read_frames(openface)
            return openface_lib.on_grid(times, rows, valid, steps)
        if openface and os.path.isfile(openface):
            row = openface_lib.table_row(_table(openface), stem)
            if row is None:
                raise PredictError(f"{path}: no row for {stem!r} in the AU table {openface}")
            return np.tile(row, (steps, 1)), np.ones(steps, bool)
        folder = os.path.dirname(path) if openface in (None, "", "auto") else openface
        csv_path = os.path.join(folder, f"{stem}.csv")
        if not os.path.isfile(csv_path):
            raise PredictError(
                f"{path}: the model ({model.source}) reads the face as OpenFace action units, "
                f"and {csv_path} is not there: run OpenFace's FeatureExtraction on the video "
                "(its CSV beside the file, named like it), or give --openface=FOLDER or a "
                "table of clip rows"
            )
        times, rows, valid = openface_lib.read_frames(csv_path)
        return openface_lib.on_grid(times, rows, valid, steps)
    except BadClip as e:
        raise PredictError(str(e)) from e


_TABLES: dict[str, dict] = {}


def _table(path: str) -> dict:
    from data_prep.features import openface as openface_lib

    if path not in _TABLES:
        _TABLES[path] = openface_lib.read_table(path)
    return _TABLES[path]


def open_source(path: str, model: ServingModel, openface: str | None = None) -> timeline.Source:
    """A media file as the streams the model needs, chosen by what the file holds.

    An audio-only model reads the first audio stream of any container PyAV opens, in chunks,
    and never decodes a video stream beside it (its state does not matter; a note says it was
    not read). A model with a face stream runs the face pipeline of the AFEW / CREMA-D builders
    on the whole file (MTCNN, alignment, FER2013 encoder) and needs both streams.

    Raises:
      PredictError: a missing or unreadable file, or one without a stream the model needs
        (naming the streams it has).
    """
    from data_prep.errors import BadClip
    from data_prep.features import audio as audio_lib
    from data_prep.features import media

    try:
        info = media.probe(path)
    except BadClip as e:
        raise PredictError(str(e)) from e
    au_model = "video" in model.streams and model.data.get("video_features") == OPENFACE_AU
    needed = ("audio", "video") if "video" in model.streams and not au_model else ("audio",)
    missing = [k for k in needed if k not in info.streams]
    if missing:
        raise PredictError(
            f"{path}: the model ({model.fusion}, {model.source}) needs the "
            f"{' and '.join(needed)} streams; the file has no {' and no '.join(missing)} "
            f"stream (it has: {info.describe()})"
        )
    bins_problem = (
        f"{path}: the model ({model.source}) takes {model.data['num_bins']}-bin spectrograms, "
        f"data_prep gives {audio_lib.NUM_BINS}; it was trained on a corpus whose features "
        "cannot be computed from a media file"
    )
    if "video" in model.streams and not au_model:
        from fbp_jax import extras

        try:
            faces = extras.require("data_prep.features.faces", "faces", "a face-stream model")
        except extras.MissingExtraError as e:
            raise PredictError(f"{path}: {e}") from e
        try:
            features = faces.clip_features(path)
        except BadClip as e:
            raise PredictError(str(e)) from e
        shape = tuple(features["video"].shape[1:])
        if shape != tuple(model.data["video_shape"]):
            raise PredictError(
                f"{path}: the model ({model.source}) takes video features of shape "
                f"{tuple(model.data['video_shape'])} per frame, the face pipeline gives {shape}"
            )
        if model.data["num_bins"] != audio_lib.NUM_BINS:
            raise PredictError(bins_problem)
        spectrogram = features["audio"]
        return timeline.Source(
            path,
            lambda: iter([spectrogram]),
            video=np.asarray(features["video"], np.float32),
            video_valid=np.asarray(features["video_valid"], bool),
            duration_s=float(features["duration_s"]),
        )
    if model.data["num_bins"] != audio_lib.NUM_BINS:
        raise PredictError(bins_problem)
    notes = []
    if info.has_video:
        notes.append("the video stream was not read (the model reads audio only)")

    kept: list[np.ndarray] = []  # A file of one block, kept: the passes over it decode once.

    def blocks():
        if kept:
            yield from kept
            return
        first, count = None, 0  # Only a first block is held: a longer recording streams again.
        try:
            for block in media.spectrogram_blocks(media.audio_chunks(path), path):
                count += 1
                first = block if count == 1 else None
                yield block
        except BadClip as e:
            raise PredictError(str(e)) from e
        if count == 1:
            kept.append(first)

    if au_model:
        video, valid = _openface_video(path, openface, info.duration_s, model)
        return timeline.Source(
            path, blocks, video=video, video_valid=valid, duration_s=info.duration_s
        )
    return timeline.Source(path, blocks, duration_s=info.duration_s, notes=tuple(notes))


def read_features(path: str, model: ServingModel) -> dict[str, Any]:
    """The schema features of a whole media file that the model needs (for clips: the whole
    spectrogram is held in memory; `predict_files` streams long recordings instead).

    Returns:
      dict with `audio` [Ta, 200] (log spectrogram), and for models with a face stream `video`
      [Tv, ...] and `video_valid` [Tv]; `duration_s`.

    Raises:
      PredictError: see `open_source`; also a file without any sample or whose features are
        not finite.
    """
    source = open_source(path, model)
    blocks = list(source.audio_blocks())
    if not blocks:
        raise PredictError(f"{path}: too short for one spectrogram frame (40 ms)")
    features: dict[str, Any] = {"audio": np.concatenate(blocks)}
    if source.video is not None:
        features["video"], features["video_valid"] = source.video, source.video_valid
    features["duration_s"] = float(
        source.duration_s or len(features["audio"]) / model.data["audio_fps"]
    )
    for key in ("audio", "video"):
        if key in features and not np.all(np.isfinite(features[key])):
            raise PredictError(f"{path}: its {key} features are not finite")
    return features


def _own_statistics(
    own: dict[str, np.ndarray], pooled: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], str]:
    """A group's own statistics, except for a stream that is the same in all its frames (one
    file with one clip-level row of face features): standardised by itself it would be all
    zeros, so that stream takes the training speakers' pooled statistics. Returns (statistics,
    the label of the output's `statistics` column)."""
    out, fallback = dict(own), []
    for key in ("audio", "video"):
        std = own.get(f"{key}_std")
        if std is not None and np.all(std <= frontend.STD_FLOOR):
            out[f"{key}_mean"], out[f"{key}_std"] = pooled[f"{key}_mean"], pooled[f"{key}_std"]
            fallback.append(key)
    if not fallback:
        return out, "own"
    return out, f"own ({', '.join(fallback)}: training speakers, constant in the group)"


def most_attended_span(
    weights: np.ndarray, mask: np.ndarray, clip_seconds: float, span_seconds: float
) -> tuple[float, float, float]:
    """The window of about `span_seconds` holding the most attention weight.

    Args:
      weights: [T] attention weights over the encoder steps of the padded crop.
      mask: [T] valid steps.
      clip_seconds: duration the T steps cover.
      span_seconds: window length.

    Returns:
      (start, end) in seconds from the crop start, and the attention weight inside.
    """
    w = np.where(np.asarray(mask, bool), np.asarray(weights, np.float64), 0.0)
    step = clip_seconds / len(w)
    valid = int(np.sum(mask))
    window = int(min(max(1, round(span_seconds / step)), max(valid, 1)))
    sums = np.convolve(w, np.ones(window), mode="valid")
    i = int(np.argmax(sums))
    return i * step, (i + window) * step, float(sums[i])


def predict_features(
    model: ServingModel,
    features: dict[str, np.ndarray],
    span_seconds: float = 1.0,
    stats: dict[str, np.ndarray] | None = None,
    crops: str = DEFAULT_CROPS,
) -> dict[str, Any]:
    """Prediction for one clip's features (see `predict_file`).

    `stats` overrides the model's statistics (a speaker's own, for speaker-normalised models).
    `crops`: how a clip longer than the window is read (`clip.crop_starts`); with several crops
    the posteriors, mu and eta are their means, and a stream's most attended span is the
    one holding the most weight of its crop.
    """
    if stats is None:
        stats = model.stats
        if stats is not None and "speakers" in stats:
            raise PredictError(
                f"{model.source} standardises each speaker with its own statistics; give "
                "speaker statistics (see `fbp_jax.serving.clip.speaker_statistics`)"
            )
    batch, offsets = prepare_inputs(features, model.data, stats, model.streams, crops)
    out = model.apply(batch)
    probs = np.asarray(out["probabilities"], np.float64).mean(axis=0)
    if not np.all(np.isfinite(probs)):
        raise PredictError(f"{model.source}: the model's outputs are not finite for this clip")
    k = int(np.argmax(probs))
    result: dict[str, Any] = {
        "prediction": model.class_names[k],
        "confidence": float(probs[k]),
        "probabilities": dict(zip(model.class_names, map(float, probs), strict=True)),
        "duration_s": float(features["duration_s"]),
        "crop_start_s": float(offsets[0]),
        "crops": len(offsets),
    }
    for key in ("mu", "eta"):
        if key in out:
            result[key] = float(np.mean(out[key]))
    for stream in model.streams:
        if f"{stream}_attention" not in out:
            continue
        spans = [
            most_attended_span(
                out[f"{stream}_attention"][i],
                out[f"{stream}_mask"][i],
                model.data["clip_seconds"],
                span_seconds,
            )
            for i in range(len(offsets))
        ]
        i = int(np.argmax([mass for _, _, mass in spans]))
        start, end, mass = spans[i]
        end = min(offsets[i] + end, result["duration_s"])
        result[f"{stream}_span"] = (round(float(offsets[i] + start), 3), round(float(end), 3), mass)
    return result


def predict_file(
    model: ServingModel, path: str, span_seconds: float = 1.0, **options: Any
) -> dict[str, Any]:
    """Prediction for one media file: `predict_files` of that file alone (so a
    speaker-normalised model, given one short file, uses the training speakers' pooled
    statistics, as the command line does), its whole-file answer.

    Returns:
      dict with `prediction`, `confidence`, `probabilities` {class: p} (the posterior mean
      over voiced windows), `duration_s`, `windows`, `voiced_windows`, `statistics`, `mu`
      (two streams), `timeline` (the `timeline.Timeline`), and for a file read as one clip
      `crop_start_s`, `eta` and `{stream}_span` = (start s, end s, attention weight inside).

    Raises:
      PredictError: the file cannot be used (see `open_source`), or has no voice.
    """
    ((_, result),) = predict_files(model, [path], span_seconds=span_seconds, **options)
    if isinstance(result, str):
        raise PredictError(result)
    return {**result.summary(), **result.details, "timeline": result}


def _speaker_normalised(model: ServingModel) -> bool:
    return model.stats is not None and "speakers" in model.stats


def _speaker_key(path: str, groups: str) -> str:
    if groups == "all":
        return ""
    if groups in ("file", "training"):
        return path
    return os.path.dirname(os.path.realpath(path))


def predict_files(
    model: ServingModel,
    paths: Sequence[str],
    span_seconds: float = 1.0,
    groups: str = "folder",
    min_speaker_clips: int = MIN_SPEAKER_CLIPS,
    hop_seconds: float | None = None,
    progress: bool = False,
    openface: str | None = None,
    classes: str | None = None,
    crops: str = DEFAULT_CROPS,
    balance: bool = False,
) -> list[tuple[str, timeline.Timeline | str]]:
    """The timeline of every file (`fbp_jax.serving.timeline`), each file isolated from the
    others.

    A file whose speech spans at most two of the model's windows is one clip, read as
    evaluation reads a clip (`crops`: its centre window, or the mean over windows covering it,
    `clip.crop_starts`); a longer one is read in chunks and scored every `hop_seconds` (default: a
    quarter of the window). A speaker-normalised model standardises each group of files
    (`groups`: one folder, all, one file) with the statistics of the group's voiced clips (a
    short file is one clip, a long one a clip per window length); a group of fewer than
    `min_speaker_clips`, or `groups='training'`, takes the training speakers' pooled
    statistics instead. `classes` restricts the answers to some of the model's classes
    (`timeline.class_groups`: e.g. the classes a target corpus shares with the model's).
    `balance`: each folder of at least three files per class (all files with
    `groups='all'`) answers every class equally often on average (`balance_groups`).

    Returns:
      (path, Timeline) for each file predicted, (path, 'message') for each file that failed,
      in the order of `paths`. `Timeline.summary()` is the whole-file answer; its arrays
      (`starts`, `ends`, `voiced`, `probabilities`, `mu`) are the timeline.
    """
    if groups not in SPEAKER_GROUPS:
        raise ValueError(f"speaker groups must be one of {SPEAKER_GROUPS}, got {groups!r}")
    merged = timeline.class_groups(classes, model.class_names) if classes else None
    sources: dict[str, tuple[timeline.Source, timeline.Scan] | str] = {}
    for path in paths:
        try:
            source = open_source(path, model, openface)
            scan = timeline.scan(source, model.data)
            if not scan.voiced_frames:
                raise PredictError(
                    f"{path}: no voice found (every frame below the file's voice threshold, "
                    f"{scan.threshold:.0f} dB)"
                )
            sources[path] = (source, scan)
        except Exception as e:
            sources[path] = _error(e)
    stats: dict[str, tuple[dict | None, str]] = {}
    if _speaker_normalised(model):
        pooled = frontend.pooled_statistics(model.stats)
        members = collections.defaultdict(list)
        for path, found in sources.items():
            if not isinstance(found, str):
                members[_speaker_key(path, groups)] += found[1].blocks
        for key, blocks in members.items():
            own = groups == "file" or (groups != "training" and len(blocks) >= min_speaker_clips)
            stats[key] = (
                _own_statistics(timeline.statistics_of(blocks, model.data["video_shape"]), pooled)
                if own
                else (pooled, "training speakers")
            )
        few = [k for k in members if stats[k][1] == "training speakers" and groups != "training"]
        if few:
            logging.info(
                "%d speaker group(s) with fewer than %d clips use the training speakers' pooled "
                "statistics (e.g. %s).",
                len(few),
                min_speaker_clips,
                few[0] or "all files",
            )
    floor = _voice_floor_posteriors(model, sources, groups, min_speaker_clips)
    rows = []
    for path in paths:
        found = sources[path]
        if isinstance(found, str):
            rows.append((path, found))
            continue
        source, scan = found
        s, label = stats.get(_speaker_key(path, groups), (model.stats, ""))
        try:
            if scan.single:
                t = _single_window(model, source, scan, s, span_seconds, crops)
                if path in floor:
                    w = model.voice_floor.weight
                    p = (1 - w) * t.probabilities + w * floor[path]
                    kind = "voice+face" if model.voice_floor.face_features else "voice"
                    note = f"the {kind} floor's posteriors averaged in (weight {w:g})"
                    t = dataclasses.replace(t, probabilities=p, notes=(*t.notes, note))
            else:
                t = timeline.run_windows(model, source, scan, s, hop_seconds, progress)
            t = dataclasses.replace(t, statistics=label)
            rows.append((path, timeline.merge_classes(t, merged) if merged else t))
        except Exception as e:
            rows.append((path, _error(e)))
    return balance_groups(rows, groups) if balance else rows


def _voice_floor_posteriors(
    model: ServingModel, sources: dict, groups: str, min_speaker_clips: int
) -> dict[str, np.ndarray]:
    """{path: [C] posteriors} of the model's voice floor (`fbp_jax.serving.voice_floor`) for
    every file read as one clip: each speaker group of at least `min_speaker_clips` such files
    standardised with its own statistics, a smaller group (or `groups` 'file' or 'training')
    with the training speakers' pooled ones. A floor that reads the face too gets the file's
    face row: the mean of its face features over the frames with a face. A file whose samples
    cannot be read again, or without a face frame for such a floor, is left to the network
    alone (logged)."""
    if model.voice_floor is None:
        return {}
    from data_prep.features import media, voice

    functionals, members = {}, collections.defaultdict(list)
    for path, found in sources.items():
        if isinstance(found, str) or not found[1].single:
            continue
        try:
            x = voice.functionals(np.concatenate(list(media.audio_chunks(path))))
            if model.voice_floor.face_features:
                x = np.concatenate([x, _face_row(found[0])])
        except Exception as e:
            logging.warning("%s: no floor inputs (%s); the network answers alone.", path, e)
            continue
        functionals[path] = x
        members[_speaker_key(path, groups)].append(path)
    out = {}
    for group in members.values():
        own = groups not in ("file", "training") and len(group) >= min_speaker_clips
        x = np.stack([functionals[p] for p in group])
        out.update(zip(group, model.voice_floor.speaker_posteriors(x, own)))
    return out


def _face_row(source: timeline.Source) -> np.ndarray:
    """The mean of a file's face features over the frames where a face was found."""
    video = np.asarray(source.video, np.float64).reshape(len(source.video), -1)
    valid = np.ones(len(video), bool) if source.video_valid is None else source.video_valid
    if not valid.any():
        raise PredictError("no frame with a face")
    return video[valid].mean(0)


def balance_groups(
    rows: list[tuple[str, timeline.Timeline | str]], groups: str
) -> list[tuple[str, timeline.Timeline | str]]:
    """`predict_files` rows with each group's answers balanced: every file's posteriors
    times the class weights (`timeline.group_weights`) under which the group's files answer
    every class equally often on average. A group is a folder (all files with `groups='all'`)
    of at least `timeline.BALANCE_FILES_PER_CLASS` files per class answered; smaller ones are
    left as they are. It assumes that the group holds its classes about equally often, as an
    acted corpus's speaker folders do."""
    idx = [i for i, (_, t) in enumerate(rows) if not isinstance(t, str) and t.voiced.any()]
    if not idx:
        return rows
    keys = [_speaker_key(rows[i][0], "all" if groups == "all" else "folder") for i in idx]
    answers = [list(rows[i][1].summary()["probabilities"].values()) for i in idx]
    weights = timeline.group_weights(answers, keys)
    sizes = collections.Counter(keys)
    for key in sizes.keys() - weights.keys():
        logging.info("%s: %d files, too few to balance.", key or "all files", sizes[key])
    out = list(rows)
    for i, key in zip(idx, keys):
        if key in weights:
            note = f"answers balanced over the {sizes[key]} files of its group"
            out[i] = (rows[i][0], timeline.reweighted(rows[i][1], weights[key], note))
    return out


def _single_window(model, source, scan, stats, span_seconds, crops) -> timeline.Timeline:
    """A file read as one clip (`predict_features`), as a timeline of one window."""
    features: dict[str, Any] = {"audio": np.concatenate(list(source.audio_blocks()))}
    if source.video is not None:
        n_video = -(-len(features["audio"]) // (model.data["audio_fps"] // model.data["video_fps"]))
        features["video"] = source.video[:n_video]
        features["video_valid"] = source.video_valid[:n_video]
    fps = model.data["audio_fps"]
    features["duration_s"] = float(source.duration_s or scan.frames / fps)
    if not np.all(np.isfinite(features["audio"])):
        raise PredictError(f"{source.path}: its audio features are not finite")
    r = predict_features(model, features, span_seconds, stats, crops)
    probs = np.array([[r["probabilities"][c] for c in model.class_names]], np.float32)
    return timeline.Timeline(
        path=source.path,
        class_names=tuple(model.class_names),
        starts=np.zeros(1),
        ends=np.array([features["duration_s"]]),
        voiced=np.ones(1, bool),
        probabilities=probs,
        mu=np.array([r["mu"]], np.float32) if "mu" in r else None,
        duration_s=features["duration_s"],
        notes=tuple(source.notes),
        details={
            k: v
            for k, v in r.items()
            if k.endswith("_span") or k in ("crop_start_s", "crops", "eta")
        },
        regions=timeline.voiced_regions(scan.levels, scan.threshold, fps),
    )


def _error(e: Exception) -> str:
    return str(e) if isinstance(e, PredictError) else f"{type(e).__name__}: {e}"


def find_media(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Files named (any extension: their streams decide), and the media files under folders
    named (by extension, `MEDIA_EXTENSIONS`; recursively, sorted).

    Returns:
      (files, notes): each file once (by its real path); a note per duplicate left out and per
      folder with files of other extensions (counted, not read).

    Raises:
      PredictError: a path that does not exist, or a folder without media files.
    """
    files, seen, notes = [], {}, []
    for p in paths:
        if os.path.isdir(p):
            found, other = [], collections.Counter()
            for root, _, names in os.walk(p):
                for n in names:
                    ext = os.path.splitext(n)[1].lower()
                    if ext in MEDIA_EXTENSIONS:
                        found.append(os.path.join(root, n))
                    else:
                        other[ext or "(none)"] += 1
            if not found:
                raise PredictError(f"{p}: no media files ({', '.join(MEDIA_EXTENSIONS)})")
            if other:
                kinds = ", ".join(f"{n} {ext}" for ext, n in sorted(other.items()))
                notes.append(f"{p}: {sum(other.values())} files not read ({kinds})")
            candidates = sorted(found)
        elif os.path.isfile(p):
            candidates = [p]
        else:
            raise PredictError(f"{p}: no such file or directory")
        for c in candidates:
            real = os.path.realpath(c)
            if real in seen:
                notes.append(f"{c}: the same file as {seen[real]}; predicted once")
                continue
            seen[real] = c
            files.append(c)
    return files, notes


def rows_to_csv(model: ServingModel, rows: list[tuple[str, timeline.Timeline | str]], out) -> None:
    """The whole-file answer of each (path, Timeline or error message) row as CSV; one
    `prob_<class>` column per class the timelines answer with (the model's, or `--classes`)."""
    answered = (t.class_names for _, t in rows if not isinstance(t, str))
    class_names = next(answered, model.class_names)
    span_cols = [f"{s}_span_{x}" for s in model.streams for x in ("start_s", "end_s", "weight")]
    header = ["file", "prediction", "confidence", "duration_s"]
    header += [f"prob_{c}" for c in class_names]
    header += ["windows", "voiced_windows", "statistics"]
    header += (["mu"] if len(model.streams) == 2 else []) + span_cols + ["notes", "error"]
    writer = csv.writer(out)
    writer.writerow(header)
    for path, t in rows:
        if isinstance(t, str):
            writer.writerow([path] + [""] * (len(header) - 2) + [t])
            continue
        r = {**t.summary(), **t.details}
        row = [path, r["prediction"], f"{r['confidence']:.6f}", f"{r['duration_s']:.3f}"]
        row += [f"{r['probabilities'][c]:.6f}" for c in class_names]
        row += [r["windows"], r["voiced_windows"], r["statistics"]]
        if len(model.streams) == 2:
            row += [f"{r.get('mu', math.nan):.6f}"]
        for s in model.streams:
            span = r.get(f"{s}_span")
            row += ["", "", ""] if span is None else [span[0], span[1], f"{span[2]:.4f}"]
        writer.writerow([*row, "; ".join(t.notes), ""])


def format_result(path: str, model: ServingModel, t: timeline.Timeline) -> str:
    r = {**t.summary(), **t.details}
    lines = [
        f"{path}: {r['prediction']} ({100 * r['confidence']:.1f}%), {r['duration_s']:.2f} s"
        + (
            f", the mean of {r['voiced_windows']} voiced windows of {r['windows']}"
            if r["windows"] > 1
            else ""
        )
    ]
    for name, p in sorted(r["probabilities"].items(), key=lambda x: -x[1]):
        lines.append(f"  {name:<12} {p:.4f}")
    if "mu" in r:
        lines.append(f"  audio adaptive factor mu {r['mu']:.4f}")
    for s in model.streams:
        if f"{s}_span" in r:
            a, b, w = r[f"{s}_span"]
            lines.append(f"  most attended {s}: {a:.2f}-{b:.2f} s ({100 * w:.0f}% of its weight)")
    if r["windows"] > 1:
        lines.append("  timeline (window start-end s: prediction):")
        for row in t.rows():
            what = row["prediction"] or "(no voice)"
            lines.append(f"    {row['start_s']:8.2f}-{row['end_s']:<8.2f} {what}")
    for note in t.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def resolve_model(name: str, step: str = "best") -> ServingModel:
    """`--model`: a workdir, an export directory or the name of a shipped model."""
    if not os.path.exists(name) and "+" not in name:
        if name in shipped.available():
            return load_serving_model(shipped.path(name))
        raise PredictError(
            f"{name}: no such workdir or export, and not a shipped model "
            f"({', '.join(shipped.available())})"
        )
    return load_serving_model(name, step)


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string(
        "model",
        None,
        "A training workdir, an export directory or a shipped model's name ("
        + ", ".join(shipped.available())
        + "); A+B averages the outputs of models of one recipe (e.g. seeds).",
    )
    flags.DEFINE_string("step", "best", "Workdir checkpoint: 'best', 'latest' or a step.")
    flags.DEFINE_string("output", None, "CSV of the whole-file answers (default: stdout).")
    flags.DEFINE_string(
        "timeline", None, "Per-window rows of every file: CSV, or JSON lines if it ends .jsonl."
    )
    flags.DEFINE_string(
        "plot",
        None,
        "PNG of the posteriors over time (one file), or a folder of <file>.png (several).",
    )
    flags.DEFINE_float(
        "hop_seconds", None, "Step between windows of long files (default: a quarter window)."
    )
    flags.DEFINE_float("span_seconds", 1.0, "Length of the most attended span reported.")
    flags.DEFINE_enum(
        "crops",
        DEFAULT_CROPS,
        list(CROPS),
        "A file read as one clip whose speech is longer than the model's window: its centre "
        "window, or the mean over windows every quarter window covering all of it.",
    )
    flags.DEFINE_string(
        "openface",
        None,
        "Models on OpenFace action units: where the AUs of each file are (default: the "
        "OpenFace CSV <stem>.csv beside it; a folder of such CSVs; the OpenFace CSV of a "
        "single file; or a table of clip rows).",
    )
    flags.DEFINE_bool("json", False, "Print one JSON object per file (answer and windows).")
    flags.DEFINE_enum(
        "speaker_groups",
        "folder",
        list(SPEAKER_GROUPS),
        "Speaker-normalised models: which files share a speaker's statistics.",
    )
    flags.DEFINE_integer(
        "min_speaker_clips",
        MIN_SPEAKER_CLIPS,
        "Speaker groups with fewer clips take the training speakers' pooled statistics.",
    )
    flags.DEFINE_bool(
        "balance",
        False,
        "Rescale the answers of each folder of at least three files per class so that it "
        "answers every class equally often on average: only for folders that hold every "
        "emotion about equally often, as an acted corpus's speaker folders do (a folder "
        "lacking some loses accuracy; docs/evaluation.md).",
    )
    flags.DEFINE_string(
        "classes",
        None,
        "Answer with some of the model's classes only, e.g. the ones a corpus shares with it: "
        "comma-separated groups [NAME=]a[+b...], each group's posteriors summed, e.g. "
        "'neutral,happy,sad,angry,fear=fearful,disgust' (CREMA-D's six of RAVDESS's eight).",
    )


def _plot_path(path: str, several: bool) -> str:
    if not several:
        return FLAGS.plot
    os.makedirs(FLAGS.plot, exist_ok=True)
    return os.path.join(FLAGS.plot, os.path.splitext(os.path.basename(path))[0] + ".png")


def main(argv: Sequence[str]) -> None:
    if not FLAGS.model or len(argv) < 2:
        raise app.UsageError("usage: fbp-jax predict --model=W FILE_OR_DIR [...]")
    try:
        model = resolve_model(FLAGS.model, FLAGS.step)
        if FLAGS.classes:  # Refused before any file is read.
            timeline.class_groups(FLAGS.classes, model.class_names)
        files, notes = find_media(argv[1:])
    except (PredictError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    single = len(files) == 1 and len(argv) == 2 and os.path.isfile(argv[1])
    rows = predict_files(
        model,
        files,
        FLAGS.span_seconds,
        FLAGS.speaker_groups,
        FLAGS.min_speaker_clips,
        FLAGS.hop_seconds,
        progress=True,
        openface=FLAGS.openface,
        classes=FLAGS.classes,
        crops=FLAGS.crops,
        balance=FLAGS.balance,
    )
    failed = [(p, r) for p, r in rows if isinstance(r, str)]
    done = [t for _, t in rows if not isinstance(t, str)]
    for path, r in failed:  # The message names the file, or is given it here.
        print(f"failed: {r if r.startswith(path) else f'{path}: {r}'}", file=sys.stderr)
    rerun = "Free space (or give other output paths) and run the same command again."
    outputs = [p for p in (FLAGS.output, FLAGS.timeline, FLAGS.plot) if p]
    folder = os.path.dirname(os.path.abspath(outputs[0])) if outputs else "."
    with io.exit_on_full_disk(), io.full_disk_as_one_line(folder, "the predictions", rerun):
        if FLAGS.timeline:
            timeline.write_rows(done, FLAGS.timeline)
        if FLAGS.plot:
            for t in done:
                timeline.plot(t, _plot_path(t.path, len(files) > 1))
        if FLAGS.json:
            for path, r in rows:
                if isinstance(r, str):
                    print(json.dumps({"file": path, "error": r}))
                else:
                    answer = {**r.summary(), **r.details}
                    print(json.dumps({"file": path, **answer, "timeline": r.rows()}))
        elif single and not FLAGS.output:
            if not failed:
                print(format_result(files[0], model, rows[0][1]))
        elif FLAGS.output:
            io.atomic_write(FLAGS.output, lambda f: rows_to_csv(model, rows, f), newline="")
            print(
                f"{len(rows) - len(failed)} files predicted, {len(failed)} failed: {FLAGS.output}"
            )
        else:
            rows_to_csv(model, rows, sys.stdout)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
