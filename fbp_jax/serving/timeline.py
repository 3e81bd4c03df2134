"""Emotion over time: a model's window slid over a recording of any length.

A model is trained on crops of `data.clip_seconds` (the window). A clip (what the model reads
of the file, its voiced span or all of it, at most `SINGLE_MAX_WINDOWS` windows long) is one
window, prepared exactly as evaluation prepares a clip (the centre crop). A longer file is read twice, in chunks (memory does not grow with its length:
what is kept is a few MB per hour of frame levels and block statistics):

1. a scan: the frame levels, from which a voice activity decision for the whole file is made
   (a frame is voiced when it is `VAD_MARGIN_DB` above the file's noise floor, the 10th
   percentile of its frame levels, or within `SPEECH_RANGE_DB` of its loud frames, the 99.9th
   percentile, when that is lower, as in a file without pauses; never more than
   `VAD_RANGE_DB` below the loud frames, nor digital silence), and the statistics of its voiced blocks (non-overlapping
   windows, each seen as a clip) for speaker standardisation;
2. the windows: every `hop` seconds (default a quarter of the window) a window of the model's
   length; one with less than `VOICED_FRACTION` of voiced frames is marked unvoiced and not
   scored; the others go through the model, as clips (trimmed to their voiced span,
   level-normalised if the model is, standardised, padded), in batches.

The result (`Timeline`) holds, per window, its start and end in seconds, whether it was voiced,
the class posteriors, and mu where the model has two streams; `Timeline.summary()` is the
whole-file answer: the posterior mean over the voiced windows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import ml_collections
import numpy as np

from fbp_jax.model import frontend
from fbp_jax.serving import clip
from fbp_jax.serving.bundle import PredictError

VOICED_FRACTION = 0.2  # Of a window's frames, for the window to be scored.
VAD_MARGIN_DB = 10.0  # Above the file's noise floor.
VAD_RANGE_DB = 45.0  # Below the file's loud frames.
SPEECH_RANGE_DB = 20.0  # Of the loud frames, in a file without pauses.
SILENCE_DB = -60.0  # Frame level (dB of summed 0-4 kHz power) of digital silence and below.
BATCH = 16  # Windows per model call.


@dataclasses.dataclass
class Timeline:
    """One file's windows and their posteriors.

    Attributes:
      path: the file.
      class_names: the model's classes.
      starts, ends: [W] window start and end, seconds from the start of the file.
      voiced: [W] whether the window had enough voice to be scored.
      probabilities: [W, C] posteriors (NaN rows for unvoiced windows).
      mu: [W] the audio adaptive factor of two-stream models (NaN where unvoiced), or None.
      duration_s: the file's duration.
      statistics: how its speaker was standardised ('own', 'group', 'training speakers', or
        '' for models that standardise with fixed statistics).
      notes: what was noticed reading it (a video stream ignored, ...).
      details: for a file read as one clip, what `predict.predict_features` adds: the crop's
        start (`crop_start_s`), the most attended span per stream, eta.
      regions: [R, 2] start and end (s) of the stretches of voice the file's voice activity
        found (pauses under `MIN_PAUSE_S` bridged).
    """

    path: str
    class_names: tuple[str, ...]
    starts: np.ndarray
    ends: np.ndarray
    voiced: np.ndarray
    probabilities: np.ndarray
    mu: np.ndarray | None
    duration_s: float
    statistics: str = ""
    notes: tuple[str, ...] = ()
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    regions: np.ndarray | None = None

    @property
    def num_windows(self) -> int:
        return len(self.starts)

    def summary(self) -> dict[str, Any]:
        """The whole-file answer: the posterior mean over voiced windows."""
        p = self.probabilities[self.voiced]
        mean = p.mean(axis=0) if len(p) else np.full(len(self.class_names), np.nan)
        k = int(np.nanargmax(mean)) if len(p) else -1
        out = {
            "prediction": self.class_names[k] if k >= 0 else "",
            "confidence": float(mean[k]) if k >= 0 else math.nan,
            "probabilities": dict(zip(self.class_names, map(float, mean), strict=True)),
            "duration_s": float(self.duration_s),
            "windows": self.num_windows,
            "voiced_windows": int(self.voiced.sum()),
            "statistics": self.statistics,
        }
        if self.mu is not None:
            out["mu"] = float(np.nanmean(self.mu)) if len(p) else math.nan
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One dict per window: file, start_s, end_s, voiced, prediction, prob_<class>, mu."""
        out = []
        for i in range(self.num_windows):
            row = {
                "file": self.path,
                "start_s": round(float(self.starts[i]), 3),
                "end_s": round(float(self.ends[i]), 3),
                "voiced": bool(self.voiced[i]),
            }
            p = self.probabilities[i]
            row["prediction"] = self.class_names[int(np.argmax(p))] if self.voiced[i] else ""
            for name, value in zip(self.class_names, p, strict=True):
                row[f"prob_{name}"] = None if np.isnan(value) else round(float(value), 6)
            if self.mu is not None:
                row["mu"] = None if np.isnan(self.mu[i]) else round(float(self.mu[i]), 6)
            out.append(row)
        return out


# ---------------------------------------------------------------------------------------------
# Voice activity over a whole file


def frame_levels_db(log_power: np.ndarray, config: ml_collections.ConfigDict) -> np.ndarray:
    """[T] level of each frame in dB (power summed over the config's `frontend.level_bins`)."""
    level = frontend.frame_level(log_power, frontend.level_bins(config))
    return (level * frontend.DB_PER_NEPER).astype(np.float32)


MIN_PAUSE_S = 0.3


def voiced_regions(levels: np.ndarray, threshold: float, fps: int) -> np.ndarray:
    """[R, 2] start and end in seconds of the runs of frames above `threshold`, pauses shorter
    than `MIN_PAUSE_S` bridged."""
    voiced = np.concatenate([[False], levels > threshold, [False]])
    edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    runs = edges.reshape(-1, 2)
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < MIN_PAUSE_S * fps:
            merged[-1][1] = b
        else:
            merged.append([int(a), int(b)])
    return np.asarray(merged, np.float64).reshape(-1, 2) / fps


def voiced_threshold(levels: np.ndarray) -> float:
    """The level (dB) above which a frame of this file is voiced (see the module docstring)."""
    if not len(levels):
        return math.inf
    floor, loud = np.percentile(levels, [10.0, 99.9])
    # A file without pauses has no noise floor to find: then frames within SPEECH_RANGE_DB of
    # the loud ones are its voice.
    above_floor = min(floor + VAD_MARGIN_DB, loud - SPEECH_RANGE_DB)
    return float(max(above_floor, loud - VAD_RANGE_DB, SILENCE_DB))


# ---------------------------------------------------------------------------------------------
# Reading a file once for its frames


@dataclasses.dataclass
class Source:
    """A file's frames as a model reads them.

    Attributes:
      path: the file.
      audio_blocks: () -> iterator of consecutive log-power spectrogram blocks [n, bins]
        (streaming for audio models; one block when the features are in memory).
      video: [Tv, ...] video features of the whole file (face models), or None.
      video_valid: [Tv] or None.
      duration_s: from the header (updated by the scan).
      notes: what was noticed opening it.
    """

    path: str
    audio_blocks: Callable[[], Iterator[np.ndarray]]
    video: np.ndarray | None = None
    video_valid: np.ndarray | None = None
    duration_s: float | None = None
    notes: tuple[str, ...] = ()


@dataclasses.dataclass
class Scan:
    """What the first pass over a file found (see the module docstring).

    Attributes:
      frames: spectrogram frames of the file.
      levels: [frames] frame levels in dB.
      threshold: the file's voice activity threshold (dB).
      voiced_frames: frames above it.
      single: the file is one window (its speech, as the model trims it, fits in a window).
      blocks: statistics of the file's voiced blocks (the whole file when `single`).
    """

    frames: int
    levels: np.ndarray
    threshold: float
    voiced_frames: int
    single: bool
    blocks: list[dict[str, Any]]


# A file is read as one clip when what the model reads of it (its voiced span, or all of it)
# is at most this many windows long, and the file at most SINGLE_MAX_SECONDS.
SINGLE_MAX_WINDOWS = 2.0
SINGLE_MAX_SECONDS = 60.0


def window_frames(data: dict[str, Any]) -> tuple[int, int]:
    """(audio frames of a model's window, audio frames per video frame)."""
    ta, _ = frontend.clip_frames(_config(data))
    return ta, data["audio_fps"] // data["video_fps"]


def _config(data: dict[str, Any]) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(data))


def scan(source: Source, data: dict[str, Any]) -> Scan:
    """Pass 1: frame levels, the file's voice activity, and per-block statistics."""
    ta, ratio = window_frames(data)
    config = _config(data)
    levels: list[np.ndarray] = []
    pending = np.zeros((0, data["num_bins"]), np.float32)
    starts: list[int] = []
    raw_blocks: list[dict[str, Any]] = []
    offset = 0
    for block in source.audio_blocks():
        levels.append(frame_levels_db(block, config))
        pending = np.concatenate([pending, block]) if len(pending) else block
        while len(pending) >= ta:
            raw_blocks.append(_block_statistics(pending[:ta], offset, source, config, ratio))
            starts.append(offset)
            pending, offset = pending[ta:], offset + ta
    if len(pending):
        raw_blocks.append(_block_statistics(pending, offset, source, config, ratio))
        starts.append(offset)
    all_levels = np.concatenate(levels) if levels else np.zeros(0, np.float32)
    threshold = voiced_threshold(all_levels)
    n = len(all_levels)
    # The part of the file the model reads of a clip: its voiced span, or all of it.
    span = n
    settings = frontend.voiced_settings(config)
    if settings.threshold_db > 0 and n:
        voiced = frontend.voiced_levels(all_levels / frontend.DB_PER_NEPER, *settings)
        where = np.flatnonzero(voiced)
        span = int(where[-1] - where[0] + 1)
    single = span <= SINGLE_MAX_WINDOWS * ta and n <= SINGLE_MAX_SECONDS * data["audio_fps"]
    if single:
        whole = np.concatenate(list(source.audio_blocks()))
        blocks = [_block_statistics(whole, 0, source, config, ratio)]
    else:
        blocks = [
            b
            for start, b in zip(starts, raw_blocks, strict=True)
            if np.mean(all_levels[start : start + b["frames"]] > threshold) >= VOICED_FRACTION
        ]
    return Scan(
        frames=n,
        levels=all_levels,
        threshold=threshold,
        voiced_frames=int(np.sum(all_levels > threshold)),
        single=single,
        blocks=blocks,
    )


def _block_statistics(log_power, offset, source, config, ratio) -> dict[str, Any]:
    """Sums of one block seen as a clip: its voiced frames in the model's view, and its video
    rows."""
    features = {"audio": log_power}
    if source.video is not None:
        v0 = offset // ratio
        n_video = -(-len(log_power) // ratio)
        features["video"] = source.video[v0 : v0 + n_video]
        if source.video_valid is not None:
            features["video_valid"] = source.video_valid[v0 : v0 + n_video]
    view = frontend.clip_view(features, config)
    x = view["audio"][view["voiced"]].astype(np.float64)
    out = {"frames": len(log_power), "n": len(x), "s1": x.sum(0), "s2": np.square(x).sum(0)}
    if "video" in view and len(view["video"]):
        v = view["video"].reshape(len(view["video"]), -1).astype(np.float64)
        ok = view.get("video_valid", np.ones(len(v), bool))
        if config.get("video_features", "") == "openface_au":
            # Clip-level features: the model saw each clip's mean row on all its frames.
            v = (
                np.repeat(v[ok].mean(0, keepdims=True), int(ok.sum()), axis=0)
                if ok.any()
                else v[ok]
            )
        else:
            v = v[ok] if config.get("use_video_valid", False) else v
        out["video_rows"] = v
    return out


def statistics_of(blocks: Sequence[dict[str, Any]], video_shape) -> dict[str, np.ndarray]:
    """Standardisation statistics of a speaker from the blocks of its files."""
    n = sum(b["n"] for b in blocks)
    s1 = sum(b["s1"] for b in blocks)
    s2 = sum(b["s2"] for b in blocks)
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 0.0))
    out = {
        "audio_mean": mean.astype(np.float32),
        "audio_std": np.maximum(std, frontend.STD_FLOOR).astype(np.float32),
    }
    rows = [b["video_rows"] for b in blocks if "video_rows" in b]
    if rows:
        v = np.concatenate(rows)
        out["video_mean"] = v.mean(0).reshape(video_shape).astype(np.float32)
        out["video_std"] = (
            np.maximum(v.std(0), frontend.STD_FLOOR).reshape(video_shape).astype(np.float32)
        )
    return out


# ---------------------------------------------------------------------------------------------
# Pass 2: the windows


def window_starts(scan_: Scan, ta: int, hop: int, ratio: int) -> np.ndarray:
    """Start frames of the windows: one at 0 for a file read as a clip (`Scan.single`); else
    every `hop` frames, the last one ending with the file. Starts fall on video frames
    (multiples of `ratio`)."""
    n = scan_.frames
    if scan_.single or n <= ta:
        return np.zeros(1, np.int64)
    hop = max(ratio, hop // ratio * ratio)
    starts = list(range(0, n - ta + 1, hop))
    last = (n - ta) // ratio * ratio
    if starts[-1] < last:
        starts.append(last)
    return np.asarray(starts, np.int64)


def _windows(source: Source, starts: np.ndarray, ta: int) -> Iterator[tuple[int, np.ndarray]]:
    """(index, [ta or fewer, bins] frames) of each window, from the streamed blocks; the
    frames of windows not yet complete are all that is kept."""
    buffer = np.zeros((0, 0), np.float32)
    base = 0  # Frame index of buffer[0].
    i = 0
    for block in source.audio_blocks():
        buffer = np.concatenate([buffer, block]) if buffer.size else block
        while i < len(starts) and starts[i] + ta <= base + len(buffer):
            s = starts[i] - base
            yield i, buffer[s : s + ta]
            i += 1
        if i < len(starts):
            drop = starts[i] - base
            if drop > 0:
                buffer, base = buffer[drop:], base + drop
        else:
            buffer, base = buffer[:0], base + len(buffer)
    while i < len(starts):  # Windows reaching past the last frame.
        s = starts[i] - base
        yield i, buffer[max(s, 0) :]
        i += 1


def run_windows(
    model,
    source: Source,
    scan_: Scan,
    stats: dict[str, np.ndarray] | None,
    hop_seconds: float | None = None,
    progress: bool = False,
    batch: int = BATCH,
) -> Timeline:
    """Pass 2: the model on every voiced window of `source` (see the module docstring)."""
    data = model.data
    ta, ratio = window_frames(data)
    fps = data["audio_fps"]
    hop = round((hop_seconds if hop_seconds else data["clip_seconds"] / 4) * fps)
    starts = window_starts(scan_, ta, hop, ratio)
    single = scan_.single or scan_.frames <= ta
    n_windows = len(starts)
    probs = np.full((n_windows, len(model.class_names)), np.nan, np.float32)
    mu = np.full(n_windows, np.nan, np.float32) if len(model.streams) == 2 else None
    voiced = np.zeros(n_windows, bool)
    ends = np.minimum(starts + ta, scan_.frames) / fps
    if single:
        ends[0] = scan_.frames / fps
    bar = _progress(n_windows, source.path) if progress and n_windows > 1 else None
    queue: list[tuple[int, dict[str, np.ndarray]]] = []

    def flush():
        if not queue:
            return
        # Always `batch` windows (zeros after the last): one compiled shape per model.
        pad = batch - len(queue)
        inputs = {
            k: np.concatenate([q[1][k] for q in queue] + [np.zeros_like(queue[0][1][k])] * pad)
            for k in queue[0][1]
        }
        out = model.apply(inputs)
        p = np.asarray(out["probabilities"], np.float64)[: len(queue)]
        if not np.all(np.isfinite(p)):
            raise PredictError(f"{source.path}: the model's outputs are not finite")
        for j, (i, _) in enumerate(queue):
            probs[i] = p[j]
            if mu is not None and "mu" in out:
                mu[i] = float(np.asarray(out["mu"])[j])
        if bar is not None:
            bar.update(len(queue))
        queue.clear()

    windows = _whole(source) if single else _windows(source, starts, ta)
    for i, frames in windows:
        s = int(starts[i])
        frame_voiced = scan_.levels[s : s + len(frames)] > scan_.threshold
        if single:
            voiced[i] = scan_.voiced_frames > 0
        else:
            voiced[i] = len(frames) and np.mean(frame_voiced) >= VOICED_FRACTION
        if not voiced[i]:
            if bar is not None:
                bar.update(1)
            continue
        features = {"audio": frames}
        if source.video is not None:
            v0 = s // ratio
            n_video = -(-len(frames) // ratio)
            features["video"] = source.video[v0 : v0 + n_video]
            features["video_valid"] = source.video_valid[v0 : v0 + n_video]
        inputs, _ = clip.prepare_inputs(features, data, stats, model.streams)
        queue.append((i, inputs))
        if len(queue) >= batch:
            flush()
    flush()
    if bar is not None:
        bar.close()
    return Timeline(
        path=source.path,
        class_names=tuple(model.class_names),
        starts=starts / fps,
        ends=ends,
        voiced=voiced,
        probabilities=probs,
        mu=mu,
        duration_s=float(source.duration_s or scan_.frames / fps),
        notes=tuple(source.notes),
        regions=voiced_regions(scan_.levels, scan_.threshold, fps),
    )


def _whole(source: Source) -> Iterator[tuple[int, np.ndarray]]:
    blocks = list(source.audio_blocks())
    yield 0, np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)


def _progress(total: int, path: str):
    import tqdm

    return tqdm.tqdm(total=total, desc=f"windows of {path}", unit="window", leave=False)


# ---------------------------------------------------------------------------------------------
# Output files


def class_groups(spec: str, class_names: Sequence[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Parses a class restriction: comma-separated groups, each `[NAME=]member[+member...]`
    of the model's classes, e.g. 'neutral,happy,sad,angry,fear=fearful,disgust' (a corpus
    with six of RAVDESS's eight classes; 'neutral=neutral+calm' would count calm as neutral).

    Returns:
      ((name, indices of its members in `class_names`), ...) in the order given.

    Raises:
      ValueError: an empty group, a class the model does not have (naming those it has), a
        class in two groups, or two groups of one name.
    """
    groups, used = [], {}
    for part in (p.strip() for p in spec.split(",")):
        name, _, members = part.rpartition("=")
        names = [m.strip() for m in members.split("+")]
        if not part or not all(names):
            raise ValueError(f"--classes {spec!r}: an empty group (groups: [NAME=]a[+b...])")
        for m in names:
            if m not in class_names:
                raise ValueError(
                    f"--classes: {m!r} is not a class of the model ({', '.join(class_names)})"
                )
            if m in used:
                raise ValueError(f"--classes: {m!r} is in the groups {used[m]!r} and {part!r}")
            used[m] = part
        groups.append((name.strip() or names[0], tuple(class_names.index(m) for m in names)))
    labels = [g[0] for g in groups]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--classes {spec!r}: two groups of one name")
    return tuple(groups)


def merge_classes(t: Timeline, groups: Sequence[tuple[str, Sequence[int]]]) -> Timeline:
    """The timeline over fewer classes (`class_groups`): each group's posterior is the sum of
    its members', renormalised over the groups (the classes left out are ruled out, not
    counted). A file answers with one of the groups whatever the model's other classes say."""
    p = np.stack([t.probabilities[:, list(idx)].sum(axis=1) for _, idx in groups], axis=1)
    p = p / p.sum(axis=1, keepdims=True)
    return dataclasses.replace(t, class_names=tuple(g[0] for g in groups), probabilities=p)


BALANCE_ITERATIONS = 20


def balance_weights(probabilities: np.ndarray, iterations: int = BALANCE_ITERATIONS) -> np.ndarray:
    """[C] class weights w for [N, C] posteriors: the rows of p * w, renormalised, answer
    every class equally often on average over the N rows (Sinkhorn's iterations). Undoes a
    shift that pushes every answer of a group of files toward the same classes."""
    p = np.asarray(probabilities, np.float64)
    w = np.ones(p.shape[1])
    for _ in range(iterations):
        q = p * w
        q /= q.sum(axis=1, keepdims=True)
        w /= np.maximum(q.mean(axis=0) * p.shape[1], 1e-12)
    return w / w.sum()


BALANCE_FILES_PER_CLASS = 3  # A group of fewer files per class is not balanced.


def group_weights(probabilities: np.ndarray, groups: Sequence[str]) -> dict[str, np.ndarray]:
    """{group: [C] class weights (`balance_weights`)} for every group of the [N, C] rows
    holding at least `BALANCE_FILES_PER_CLASS` rows per class; smaller groups get none (a few
    files say too little about how often a group answers each class)."""
    p = np.asarray(probabilities, np.float64)
    groups = np.asarray(groups, dtype=object)
    if groups.shape != p.shape[:1]:
        raise ValueError(f"{len(groups)} group keys for {len(p)} rows of posteriors")
    weights = {}
    for key in dict.fromkeys(groups):
        rows = groups == key
        if rows.sum() >= BALANCE_FILES_PER_CLASS * p.shape[1]:
            weights[key] = balance_weights(p[rows])
    return weights


def balanced(probabilities: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """The [N, C] rows with each group's answers balanced (`group_weights`), renormalised;
    the rows of groups too small to balance as they are."""
    p = np.array(probabilities, np.float64)
    groups = np.asarray(groups, dtype=object)
    for key, w in group_weights(p, groups).items():
        rows = groups == key
        p[rows] = p[rows] * w / (p[rows] * w).sum(axis=1, keepdims=True)
    return p


def reweighted(t: Timeline, weights: np.ndarray, note: str) -> Timeline:
    """The timeline with every window's posteriors times `weights`, renormalised."""
    p = t.probabilities * weights
    p = p / p.sum(axis=1, keepdims=True)
    return dataclasses.replace(t, probabilities=p, notes=(*t.notes, note))


def write_rows(timelines: Iterable[Timeline], path: str) -> None:
    """One row per window of every file: CSV, or JSON lines when `path` ends in .jsonl."""
    import csv
    import json

    from fbp_jax import io

    rows = [r for t in timelines for r in t.rows()]
    if path.endswith((".jsonl", ".json")):
        io.atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in rows))
        return
    header = list(rows[0]) if rows else ["file", "start_s", "end_s", "voiced", "prediction"]

    def write(f):
        writer = csv.DictWriter(f, header)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None else v for k, v in r.items()})

    io.atomic_write(path, write, newline="")


def plot(timeline: Timeline, path: str, title: str | None = None) -> None:
    """The posteriors over time (one line per class), voiced windows shaded, mu below for
    two-stream models; a PNG written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fbp_jax import io

    t = timeline
    centres = (t.starts + t.ends) / 2
    two = t.mu is not None
    fig, axes = plt.subplots(
        2 if two else 1,
        1,
        figsize=(11, 5.5 if two else 4),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 1]} if two else None,
        squeeze=False,
    )
    ax = axes[0, 0]
    for i, name in enumerate(t.class_names):
        ax.plot(centres, t.probabilities[:, i], marker=".", lw=1.4, label=name)
    for s, e in t.regions if t.regions is not None else zip(t.starts, t.ends):
        ax.axvspan(s, e, color="0.8", alpha=0.35, lw=0)
    ax.set_ylim(0, 1)
    ax.set_ylabel("posterior")
    ax.legend(loc="upper right", fontsize=8, ncol=min(4, len(t.class_names)))
    summary = t.summary()
    ax.set_title(
        title
        or f"{t.path}: {summary['prediction']} ({100 * summary['confidence']:.0f} %) over "
        f"{summary['voiced_windows']} voiced windows (voice shaded)",
        fontsize=9,
    )
    if two:
        axes[1, 0].plot(centres, t.mu, color="k", marker=".")
        axes[1, 0].set_ylim(0, 1)
        axes[1, 0].set_ylabel("mu (audio)")
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
