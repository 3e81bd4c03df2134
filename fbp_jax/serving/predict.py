r"""Run a trained model on media files: class probabilities, mu and the most attended span.

    fbp-jax predict --model=W clip.wav                     # a workdir (its chosen checkpoint)
    fbp-jax predict --model=E clips/ --output=predictions.csv   # an export dir, a folder
    fbp-jax predict --model=W a.flac b.wav --span_seconds=0.5

`--model` is a training workdir (its checkpoint chosen on validation, or `--step`), a directory
written by `fbp-jax export`, or a model shipped in the package (`fbp_jax.serving.shipped`).
Each file goes through the feature extraction of data_prep (16 kHz mono, the paper's 200-bin
log spectrogram), the model's view of it (linear bins or log-mel), the normalisation of the
training run, and the centre crop / zero padding to `data.clip_seconds` of evaluation, then the
model. For every file it reports the posterior of each class, the predicted class, the audio
adaptive factor mu (two-stream models), and per stream the window of `--span_seconds` that
holds the most attention weight, in seconds from the start of the file.

A model trained with per-speaker standardisation (`data.speaker_norm`) standardises each clip
with statistics of its speaker's clips, taken from the files it is given:
`--speaker_groups=folder` (default: the files of one folder are one speaker), `all` (every file
given is one speaker), `file` (each file alone) or `training` (the training speakers' pooled
statistics, nothing of the speaker). A group of fewer than `--min_speaker_clips` (10) clips
uses the training speakers' pooled statistics, which classify a single clip almost as well.

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
from fbp_jax.serving.bundle import PredictError, ServingModel, load_serving_model

SPEAKER_GROUPS = ("folder", "all", "file", "training")
# Fewer clips than this estimate a speaker's statistics poorly: such a group is standardised
# with the training speakers' pooled statistics instead (see docs/recipe.md for both).
MIN_SPEAKER_CLIPS = 10


def media_extensions() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(audio, video) file extensions, the same lists the corpus builders accept."""
    from data_prep.features import audio as audio_lib
    from data_prep.features import video as video_lib

    return audio_lib.AUDIO_EXTENSIONS, video_lib.VIDEO_EXTENSIONS


def read_features(path: str, model: ServingModel) -> dict[str, Any]:
    """The schema features of a media file that the model needs.

    Returns:
      dict with `audio` [Ta, 200] (log spectrogram), and for models with a face stream `video`
      [Tv, ...] and `video_valid` [Tv]; `duration_s`.

    Raises:
      PredictError: unsupported file type, a video model given an audio-only file, or an
        unusable file (the message names it and the problem).
    """
    from data_prep.errors import BadClip
    from data_prep.features import audio as audio_lib

    audio_ext, video_ext = media_extensions()
    ext = os.path.splitext(path)[1].lower()
    needs_video = "video" in model.streams
    if ext not in audio_ext + video_ext:
        raise PredictError(
            f"{path}: unsupported file type {ext or '(none)'}; audio: {', '.join(audio_ext)}; "
            f"video: {', '.join(video_ext)}"
        )
    try:
        if ext in audio_ext:
            if needs_video:
                raise PredictError(
                    f"{path}: audio-only file, but the model ({model.fusion}, {model.source}) "
                    "needs the face stream too; give it a video file, or use an audio-only "
                    "model (fusion 'audio')"
                )
            samples = audio_lib.load_audio(path).samples
            features = {}
        elif needs_video:
            from data_prep.features import faces

            features = dict(faces.clip_features(path))
            samples = None
        else:  # An audio-only model reads the file's audio track.
            from data_prep.features import video as video_lib

            samples = video_lib.read_video(path, keep_frames=False).audio.samples
            features = {}
        if samples is not None:
            features["audio"] = audio_lib.log_spectrogram(samples, path)
            features["duration_s"] = len(samples) / audio_lib.SAMPLE_RATE
    except BadClip as e:
        raise PredictError(str(e)) from e
    features.setdefault("duration_s", len(features["audio"]) / model.data["audio_fps"])
    if "video" in features and needs_video:
        shape = tuple(features["video"].shape[1:])
        if shape != tuple(model.data["video_shape"]):
            raise PredictError(
                f"{path}: the model ({model.source}) takes video features of shape "
                f"{tuple(model.data['video_shape'])} per frame, the face pipeline gives {shape}"
            )
    bins = features["audio"].shape[-1]
    if bins != model.data["num_bins"]:
        raise PredictError(
            f"{path}: the model ({model.source}) takes {model.data['num_bins']}-bin spectrograms, "
            f"data_prep gives {bins}; it was trained on a corpus whose features cannot be "
            "computed from a media file"
        )
    for key in ("audio", "video"):
        if key in features and not np.all(np.isfinite(features[key])):
            raise PredictError(f"{path}: its {key} features are not finite")
    return features


def speaker_statistics(
    clips: Sequence[dict[str, np.ndarray]], data: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Per-feature mean and std over the frames of one speaker's clips, in the model's view
    (what `input_pipeline.compute_stats(by_speaker=True)` computes for a record split)."""
    config = _data_config(data)
    views = [frontend.clip_view(c, config) for c in clips]
    stats = {}
    for key in ("audio", "video"):
        if not all(key in v for v in views):
            continue
        frames = [v[key][v["voiced"]] if key == "audio" else v[key] for v in views]
        x = np.concatenate(frames).astype(np.float64)
        stats[f"{key}_mean"] = x.mean(0).astype(np.float32)
        stats[f"{key}_std"] = np.maximum(x.std(0), 1e-3).astype(np.float32)
    return stats


def _data_config(data: dict[str, Any]):
    import ml_collections

    return ml_collections.ConfigDict(dict(data))


def prepare_inputs(
    features: dict[str, np.ndarray],
    data: dict[str, Any],
    stats: dict[str, np.ndarray] | None,
    streams: Sequence[str],
) -> tuple[dict[str, np.ndarray], float]:
    """One clip as the evaluation pipeline gives it to the model (`input_pipeline.preprocess`
    with train=False), in numpy: the audio view, standardisation, centre crop and padding.

    Args:
      features: `audio` [Ta, bins], and `video` [Tv, ...] / `video_valid` [Tv] if present.
      data: the model's `data` settings (`bundle.DATA_FIELDS`).
      stats: {audio,video}_{mean,std} of one row (the training split's, or the clip's
        speaker's), or None.
      streams: the model's streams.

    Returns:
      (batch of one clip: audio [1, ta, F], audio_mask [1, ta], and for a face stream video
      [1, tv, ...], video_mask [1, tv]; the crop's start in seconds).
    """
    config = _data_config(data)
    ratio = data["audio_fps"] // data["video_fps"]
    ta, tv = frontend.clip_frames(config)
    view = frontend.clip_view(features, config)
    audio = view["audio"]
    has_video = "video" in features
    if stats is not None:
        audio = (audio - stats["audio_mean"]) / stats["audio_std"]
    audio_units = -(-len(audio) // ratio)
    n_units = min(len(view["video"]), audio_units) if has_video else audio_units
    start = max(n_units - tv, 0) // 2
    batch = {}
    batch["audio"], batch["audio_mask"] = frontend.crop_or_pad(audio, start * ratio, ta)
    if "video" in streams:
        video = np.asarray(view["video"], np.float32)
        if stats is not None:
            video = (video - stats["video_mean"]) / stats["video_std"]
        batch["video"], mask = frontend.crop_or_pad(video, start, tv)
        if data["use_video_valid"]:
            valid, _ = frontend.crop_or_pad(np.asarray(view["video_valid"], bool), start, tv)
            mask &= valid
        batch["video_mask"] = mask
    batch = {k: v[None] for k, v in batch.items()}
    first = 0
    if data.get("voiced_db", 0.0):
        first = frontend.voiced_span(features["audio"], data["voiced_db"], ratio)[0]
    return batch, (first + start) * ratio / data["audio_fps"]


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
) -> dict[str, Any]:
    """Prediction for one clip's features (see `predict_file`).

    `stats` overrides the model's statistics (a speaker's own, for speaker-normalised models).
    """
    if stats is None:
        stats = model.stats
        if stats is not None and "speakers" in stats:
            raise PredictError(
                f"{model.source} standardises each speaker with its own statistics; give "
                "speaker statistics (see `speaker_statistics`)"
            )
    batch, offset = prepare_inputs(features, model.data, stats, model.streams)
    out = model.apply(batch)
    probs = np.asarray(out["probabilities"][0], np.float64)
    if not np.all(np.isfinite(probs)):
        raise PredictError(f"{model.source}: the model's outputs are not finite for this clip")
    k = int(np.argmax(probs))
    result: dict[str, Any] = {
        "prediction": model.class_names[k],
        "confidence": float(probs[k]),
        "probabilities": dict(zip(model.class_names, map(float, probs), strict=True)),
        "duration_s": float(features["duration_s"]),
        "crop_start_s": offset,
    }
    for key in ("mu", "eta"):
        if key in out:
            result[key] = float(out[key][0])
    for stream in model.streams:
        if f"{stream}_attention" not in out:
            continue
        start, end, mass = most_attended_span(
            out[f"{stream}_attention"][0],
            out[f"{stream}_mask"][0],
            model.data["clip_seconds"],
            span_seconds,
        )
        end = min(offset + end, result["duration_s"])
        result[f"{stream}_span"] = (round(offset + start, 3), round(end, 3), mass)
    return result


def predict_file(model: ServingModel, path: str, span_seconds: float = 1.0) -> dict[str, Any]:
    """Prediction for one media file (a speaker-normalised model uses the file alone).

    Returns:
      dict with `prediction`, `confidence`, `probabilities` {class: p}, `duration_s`,
      `crop_start_s`, `mu` / `eta` (two streams), and `{stream}_span` = (start s, end s,
      attention weight inside) for each attended stream, times from the start of the file.

    Raises:
      PredictError: see `read_features`.
    """
    features = read_features(path, model)
    stats = model.stats
    if _speaker_normalised(model):
        stats = speaker_statistics([features], model.data)
    return predict_features(model, features, span_seconds, stats)


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
) -> list[tuple[str, dict[str, Any] | str]]:
    """Predictions for several files, each isolated from the others.

    A speaker-normalised model standardises each group of files (`groups`: one folder, all,
    one file) with the group's own statistics; a group of fewer than `min_speaker_clips`
    clips, or `groups='training'`, takes the training speakers' pooled statistics instead.

    Returns:
      (path, result dict) for each file predicted, (path, 'ExceptionType: message') for each
      file that failed, in the order of `paths`.
    """
    if groups not in SPEAKER_GROUPS:
        raise ValueError(f"speaker groups must be one of {SPEAKER_GROUPS}, got {groups!r}")
    by_speaker = _speaker_normalised(model)
    features: dict[str, dict | str] = {}
    for path in paths:
        try:
            features[path] = read_features(path, model)
        except Exception as e:
            features[path] = _error(e)
    stats: dict[str, dict | None] = {}
    if by_speaker:
        pooled = frontend.pooled_statistics(model.stats)
        members = collections.defaultdict(list)
        for path, f in features.items():
            if isinstance(f, dict):
                members[_speaker_key(path, groups)].append(f)
        for key, clips in members.items():
            if groups == "training" or (groups != "file" and len(clips) < min_speaker_clips):
                stats[key] = pooled
            else:
                stats[key] = speaker_statistics(clips, model.data)
        few = [k for k, c in members.items() if groups == "folder" and len(c) < min_speaker_clips]
        if few:
            logging.info(
                "%d speaker group(s) with fewer than %d clips use the training speakers' pooled "
                "statistics (e.g. %s).",
                len(few),
                min_speaker_clips,
                few[0],
            )
    rows = []
    for path in paths:
        f = features[path]
        if isinstance(f, dict):
            try:
                s = stats.get(_speaker_key(path, groups)) if by_speaker else model.stats
                f = predict_features(model, f, span_seconds, s)
            except Exception as e:
                f = _error(e)
        rows.append((path, f))
    return rows


def _error(e: Exception) -> str:
    return str(e) if isinstance(e, PredictError) else f"{type(e).__name__}: {e}"


def find_media(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """Files named, and media files under directories named (recursively, sorted).

    Returns:
      (files, notes): each file once (by its real path), and a note per duplicate left out.

    Raises:
      PredictError: a path that does not exist, or a folder without media files.
    """
    audio_ext, video_ext = media_extensions()
    files, seen, notes = [], {}, []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, _, names in os.walk(p):
                found += [
                    os.path.join(root, n)
                    for n in names
                    if os.path.splitext(n)[1].lower() in audio_ext + video_ext
                ]
            if not found:
                raise PredictError(f"{p}: no media files ({', '.join(audio_ext + video_ext)})")
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


def rows_to_csv(model: ServingModel, rows: list[tuple[str, dict | str]], out) -> None:
    """Writes (path, result or error message) rows as CSV."""
    span_cols = [f"{s}_span_{x}" for s in model.streams for x in ("start_s", "end_s", "weight")]
    header = ["file", "prediction", "confidence", "duration_s"]
    header += [f"prob_{c}" for c in model.class_names]
    header += (["mu", "eta"] if len(model.streams) == 2 else []) + span_cols + ["error"]
    writer = csv.writer(out)
    writer.writerow(header)
    for path, r in rows:
        if isinstance(r, str):
            writer.writerow([path] + [""] * (len(header) - 2) + [r])
            continue
        row = [path, r["prediction"], f"{r['confidence']:.6f}", f"{r['duration_s']:.3f}"]
        row += [f"{r['probabilities'][c]:.6f}" for c in model.class_names]
        if len(model.streams) == 2:
            row += [f"{r.get('mu', math.nan):.6f}", f"{r.get('eta', math.nan):.6f}"]
        for s in model.streams:
            span = r.get(f"{s}_span")
            row += ["", "", ""] if span is None else [span[0], span[1], f"{span[2]:.4f}"]
        writer.writerow(row + [""])


def format_result(path: str, model: ServingModel, r: dict[str, Any]) -> str:
    lines = [f"{path}: {r['prediction']} ({100 * r['confidence']:.1f}%), {r['duration_s']:.2f} s"]
    for name, p in sorted(r["probabilities"].items(), key=lambda x: -x[1]):
        lines.append(f"  {name:<12} {p:.4f}")
    if "mu" in r:
        lines.append(f"  audio adaptive factor mu {r['mu']:.4f} (video eta {r['eta']:.4f})")
    for s in model.streams:
        if f"{s}_span" in r:
            a, b, w = r[f"{s}_span"]
            lines.append(f"  most attended {s}: {a:.2f}-{b:.2f} s ({100 * w:.0f}% of its weight)")
    return "\n".join(lines)


def resolve_model(name: str, step: str = "best") -> ServingModel:
    """`--model`: a workdir, an export directory or the name of a shipped model."""
    from fbp_jax.serving import shipped

    if not os.path.exists(name) and name in shipped.available():
        return load_serving_model(shipped.path(name))
    return load_serving_model(name, step)


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string(
        "model", None, "A training workdir, an export directory or a shipped model's name."
    )
    flags.DEFINE_string("step", "best", "Workdir checkpoint: 'best', 'latest' or a step.")
    flags.DEFINE_string("output", None, "CSV path for several files (default: stdout).")
    flags.DEFINE_float("span_seconds", 1.0, "Length of the most attended span reported.")
    flags.DEFINE_bool("json", False, "Print one JSON object per file instead of text / CSV.")
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


def main(argv: Sequence[str]) -> None:
    if not FLAGS.model or len(argv) < 2:
        raise app.UsageError("usage: fbp-jax predict --model=W FILE_OR_DIR [...]")
    try:
        model = resolve_model(FLAGS.model, FLAGS.step)
        files, notes = find_media(argv[1:])
    except (PredictError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    single = len(files) == 1 and len(argv) == 2 and os.path.isfile(argv[1])
    rows = predict_files(
        model, files, FLAGS.span_seconds, FLAGS.speaker_groups, FLAGS.min_speaker_clips
    )
    failed = [(p, r) for p, r in rows if isinstance(r, str)]
    for path, r in failed:
        print(f"failed: {path}: {r}", file=sys.stderr)
    if FLAGS.json:
        for path, r in rows:
            print(json.dumps({"file": path, **(r if isinstance(r, dict) else {"error": r})}))
    elif single:
        if not failed:
            print(format_result(files[0], model, rows[0][1]))
    elif FLAGS.output:
        folder = os.path.dirname(os.path.abspath(FLAGS.output))
        rerun = "Free space (or give another --output) and run the same command again."
        with io.exit_on_full_disk(), io.full_disk_as_one_line(folder, "the predictions", rerun):
            io.atomic_write(FLAGS.output, lambda f: rows_to_csv(model, rows, f), newline="")
        print(f"{len(rows) - len(failed)} files predicted, {len(failed)} failed: {FLAGS.output}")
    else:
        rows_to_csv(model, rows, sys.stdout)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
