r"""Run a trained model on media files: class probabilities, mu and the most attended span.

    python -m fbp_jax.serving.predict --model=W clip.wav            # a workdir (best checkpoint)
    python -m fbp_jax.serving.predict --model=E clips/ --output=predictions.csv   # an export dir
    python -m fbp_jax.serving.predict --model=W a.flac b.wav --span_seconds=0.5

`--model` is a training workdir (its checkpoint chosen on validation, or `--step`) or a
directory written by `python -m fbp_jax.serving.export`. Each file goes through the feature extraction
of data_prep (16 kHz mono, the paper's 200-bin log spectrogram: `data_prep.features.audio`), the
normalisation statistics of the training split, and the centre crop / zero padding to
`data.clip_seconds` of evaluation, then the model. For every file it reports the posterior of
each class, the predicted class, the audio adaptive factor mu (two-stream models), and per
stream the window of `--span_seconds` that holds the most attention weight, in seconds from the
start of the file. A directory (searched recursively) or several files give a CSV (`--output`,
else stdout); a file that cannot be used gets its error in the `error` column.

Audio files: .wav, .flac, .ogg. Video files (.mp4, .avi, .flv, .mkv): an audio-only model reads
their audio track (`data_prep.features.video.read_video`); a model that needs the face stream needs the
face pipeline of the AFEW / CREMA-D builders, `data_prep.features.faces.clip_features(path)` (MTCNN,
alignment, FER2013 encoder; it needs TensorFlow for MTCNN). A model that needs video refuses
an audio-only file, and a video model trained on other face features than the pipeline's.

Audio files need no TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from absl import app, flags

from fbp_jax.model import fusion as fusion_lib

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".flv", ".mkv")
# The face pipeline's entry point for video files, when it exists (see the module docstring).
VIDEO_FEATURES_HOOK = ("data_prep.features.faces", "clip_features")
SERVING_FILE = "serving.json"
DATA_FIELDS = (
    "clip_seconds",
    "audio_fps",
    "video_fps",
    "num_bins",
    "video_shape",
    "use_video_valid",
    "normalize",
)


class PredictError(ValueError):
    """A file or model that cannot be used; the message names it and the problem."""


@dataclasses.dataclass
class ServingModel:
    """Everything prediction needs, from a workdir or an export directory.

    Attributes:
      source: the workdir or export directory.
      fusion: the fusion variant (decides the streams read).
      class_names: names of the classes, in output order.
      data: preprocessing settings (`DATA_FIELDS` of the training config's `data`).
      stats: normalisation statistics of the training split, or None.
      apply: batch {audio, audio_mask, video, video_mask} -> outputs (numpy), with
        `probabilities`, `{stream}_attention`, `{stream}_mask` and `mu` / `eta` for two streams.
      step: the checkpoint step.
    """

    source: str
    fusion: str
    class_names: tuple[str, ...]
    data: dict[str, Any]
    stats: dict[str, np.ndarray] | None
    apply: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
    step: int | None = None

    @property
    def streams(self) -> tuple[str, ...]:
        return fusion_lib.streams_for(self.fusion)


def serving_info(config, class_names: Sequence[str], step: int | None) -> dict[str, Any]:
    """The JSON-serialisable description of a model for serving (written by export)."""
    data = {k: config.data[k] for k in DATA_FIELDS}
    data["video_shape"] = list(data["video_shape"])
    return {
        "fusion": config.model.fusion,
        "class_names": list(class_names),
        "data": data,
        "step": step,
        "corpus": config.data.name,
    }


def load_model(path: str, step: str = "best") -> ServingModel:
    """A training workdir (checkpoint `step`) or an export directory, ready to predict."""
    if os.path.isfile(os.path.join(path, SERVING_FILE)):
        from fbp_jax.serving import export

        return export.load_exported(path)
    from fbp_jax.evaluation import evaluation

    if not evaluation.is_workdir(path):
        raise PredictError(
            f"{path}: neither a training workdir (config.json) nor an export ({SERVING_FILE})"
        )
    loaded = evaluation.load_model(path, step)
    info = serving_info(loaded.config, evaluation.get_class_names(loaded.config), loaded.step)
    return ServingModel(
        path,
        loaded.fusion,
        tuple(info["class_names"]),
        info["data"],
        loaded.stats,
        loaded.apply_fn,
        loaded.step,
    )


# ---------------------------------------------------------------------------------------------
# Features


def _video_hook() -> Callable[[str], dict[str, np.ndarray]] | None:
    module, name = VIDEO_FEATURES_HOOK
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def read_features(path: str, model: ServingModel) -> dict[str, Any]:
    """The schema features of a media file that the model needs.

    Returns:
      dict with `audio` [Ta, 200] (log spectrogram), and for models with a face stream `video`
      [Tv, ...] and `video_valid` [Tv]; `duration_s`.

    Raises:
      PredictError: unsupported file type, a video model given an audio-only file, a face
        model given a video before the face pipeline exists, or an unusable file.
    """
    from data_prep.features import audio as audio_lib
    from data_prep.builders.corpus import BadClip

    ext = os.path.splitext(path)[1].lower()
    needs_video = "video" in model.streams
    if ext not in AUDIO_EXTENSIONS + VIDEO_EXTENSIONS:
        raise PredictError(
            f"{path}: unsupported file type {ext or '(none)'}; audio: "
            f"{', '.join(AUDIO_EXTENSIONS)}; video: {', '.join(VIDEO_EXTENSIONS)}"
        )
    try:
        if ext in AUDIO_EXTENSIONS:
            if needs_video:
                raise PredictError(
                    f"{path}: audio-only file, but the model ({model.fusion}, {model.source}) "
                    "needs the face stream too; give it a video file, or use an audio-only "
                    "model (fusion 'audio')"
                )
            decoded = audio_lib.load_audio(path)
            samples = getattr(decoded, "samples", decoded)
            features = {}
        elif needs_video:
            hook = _video_hook()
            if hook is None:
                raise PredictError(
                    f"{path}: video files are not supported yet for models with a face stream "
                    f"({model.fusion}): the face pipeline ({'.'.join(VIDEO_FEATURES_HOOK)}) "
                    "is not available"
                )
            features = dict(hook(path))
            samples = None
        else:  # An audio-only model reads the file's audio track.
            from data_prep.features import video as video_lib

            decoded = video_lib.read_video(path, keep_frames=False).audio
            samples = decoded.samples
            features = {}
    except BadClip as e:
        raise PredictError(str(e)) from e
    if samples is not None:
        features["audio"] = audio_lib.log_spectrogram(samples)
        features["duration_s"] = len(samples) / audio_lib.SAMPLE_RATE
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
    return features


def preprocess(
    features: dict[str, np.ndarray],
    data: dict[str, Any],
    stats: dict[str, np.ndarray] | None,
    streams: Sequence[str],
) -> tuple[dict[str, np.ndarray], float]:
    """Standardises, centre-crops and pads one clip like the evaluation pipeline
    (`input_pipeline.preprocess` with train=False), in numpy.

    Args:
      features: `audio` [Ta, bins], and `video` [Tv, ...] / `video_valid` [Tv] if present.
      data: `DATA_FIELDS`.
      stats: normalisation statistics or None.
      streams: the model's streams.

    Returns:
      (batch of one clip: audio [1, ta, bins], audio_mask [1, ta], and for a face stream video
      [1, tv, ...], video_mask [1, tv]; the crop's start in seconds).
    """
    ratio = data["audio_fps"] // data["video_fps"]
    ta = round(data["clip_seconds"] * data["audio_fps"])
    tv = round(data["clip_seconds"] * data["video_fps"])
    audio = np.asarray(features["audio"], np.float32)
    has_video = "video" in features
    if stats is not None:
        audio = (audio - stats["audio_mean"]) / stats["audio_std"]
    audio_units = -(-len(audio) // ratio)
    n_units = min(len(features["video"]), audio_units) if has_video else audio_units
    start = max(n_units - tv, 0) // 2
    batch = {}
    batch["audio"], batch["audio_mask"] = _crop_or_pad(audio, start * ratio, ta)
    if "video" in streams:
        video = np.asarray(features["video"], np.float32)
        if stats is not None:
            video = (video - stats["video_mean"]) / stats["video_std"]
        batch["video"], mask = _crop_or_pad(video, start, tv)
        if data["use_video_valid"]:
            valid, _ = _crop_or_pad(np.asarray(features["video_valid"], bool), start, tv)
            mask &= valid
        batch["video_mask"] = mask
    batch = {k: v[None] for k, v in batch.items()}
    return batch, start * ratio / data["audio_fps"]


def _crop_or_pad(x: np.ndarray, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    x = x[start : start + length]
    n = len(x)
    out = np.zeros((length, *x.shape[1:]), x.dtype)
    out[:n] = x
    return out, np.arange(length) < n


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
    model: ServingModel, features: dict[str, np.ndarray], span_seconds: float = 1.0
) -> dict[str, Any]:
    """Prediction for one clip's features (see `predict_file`)."""
    batch, offset = preprocess(features, model.data, model.stats, model.streams)
    out = model.apply(batch)
    probs = np.asarray(out["probabilities"][0], np.float64)
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
    """Prediction for one media file.

    Returns:
      dict with `prediction`, `confidence`, `probabilities` {class: p}, `duration_s`,
      `crop_start_s`, `mu` / `eta` (two streams), and `{stream}_span` = (start s, end s,
      attention weight inside) for each attended stream, times from the start of the file.

    Raises:
      PredictError: see `read_features`.
    """
    return predict_features(model, read_features(path, model), span_seconds)


def find_media(paths: Sequence[str]) -> list[str]:
    """Files named, and media files under directories named (recursively, sorted)."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for root, _, names in os.walk(p):
                found += [
                    os.path.join(root, n)
                    for n in names
                    if os.path.splitext(n)[1].lower() in AUDIO_EXTENSIONS + VIDEO_EXTENSIONS
                ]
            if not found:
                raise PredictError(f"{p}: no media files ({AUDIO_EXTENSIONS + VIDEO_EXTENSIONS})")
            files += sorted(found)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise PredictError(f"{p}: no such file or directory")
    return files


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


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", None, "A training workdir or an export directory.")
    flags.DEFINE_string("step", "best", "Workdir checkpoint: 'best', 'latest' or a step.")
    flags.DEFINE_string("output", None, "CSV path for several files (default: stdout).")
    flags.DEFINE_float("span_seconds", 1.0, "Length of the most attended span reported.")
    flags.DEFINE_bool("json", False, "Print one JSON object per file instead of text / CSV.")


def main(argv: Sequence[str]) -> None:
    if not FLAGS.model or len(argv) < 2:
        raise app.UsageError("usage: python -m fbp_jax.serving.predict --model=W FILE_OR_DIR [...]")
    try:
        model = load_model(FLAGS.model, FLAGS.step)
        files = find_media(argv[1:])
    except (PredictError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    single = len(files) == 1 and os.path.isfile(argv[1]) and len(argv) == 2
    rows = []
    for path in files:
        try:
            rows.append((path, predict_file(model, path, FLAGS.span_seconds)))
        except PredictError as e:
            if single:
                print(f"error: {e}", file=sys.stderr)
                sys.exit(2)
            print(f"skipped: {e}", file=sys.stderr)
            rows.append((path, str(e)))
    if FLAGS.json:
        for path, r in rows:
            print(json.dumps({"file": path, **(r if isinstance(r, dict) else {"error": r})}))
    elif single:
        print(format_result(files[0], model, rows[0][1]))
    elif FLAGS.output:
        tmp = f"{FLAGS.output}.tmp{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            rows_to_csv(model, rows, f)
        os.replace(tmp, FLAGS.output)
        failed = sum(isinstance(r, str) for _, r in rows)
        print(f"{len(rows) - failed} files predicted, {failed} skipped: {FLAGS.output}")
    else:
        rows_to_csv(model, rows, sys.stdout)
    if rows and all(isinstance(r, str) for _, r in rows):
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    app.run(main)
