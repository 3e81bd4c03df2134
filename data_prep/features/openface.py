"""Facial action units from OpenFace, as the video stream of models trained on RAVDESS's AUs.

The RAVDESS development copy describes each clip's face by 35 OpenFace features: the mean
intensity of 17 action units (`AU.._r`, 0-5) and the fraction of frames where each of 18 is
present (`AU.._c`, 0/1). A model trained on them (`data.video_features = 'openface_au'`) reads
per-frame rows of the same 35 columns and averages them over its window, which gives exactly
those clip statistics. Two inputs are accepted:

* the CSV that OpenFace's `FeatureExtraction` writes for a video (one row per frame, columns
  `frame, face_id, timestamp, confidence, success, ..., AU01_r, ..., AU45_c`, names possibly
  with a leading space): its rows are put on the 25 frames/s grid by timestamp, frames
  without a tracked face (`success` 0) marked invalid;
* a table of clip-level rows (a `clip_id` column and the 35 feature columns, like the
  development copy's `openface_au_clip_features.csv`): the clip's row on every frame.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from data_prep.errors import BadClip

AU_R = ("01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23",
        "25", "26", "45")  # fmt: skip
AU_C = (*AU_R[:-1], "28", "45")
AU_COLUMNS = tuple(f"AU{a}_r" for a in AU_R) + tuple(f"AU{a}_c" for a in AU_C)
FPS = 25


def is_frame_csv(path: str) -> bool:
    """Whether a CSV file is OpenFace's per-frame output (a `timestamp` column, no `clip_id`)
    rather than a table of clip rows."""
    with open(path, newline="") as f:
        names = [n.strip() for n in next(csv.reader(f), [])]
    return "timestamp" in names and "clip_id" not in names


def read_frames(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An OpenFace FeatureExtraction CSV: (timestamps [N] s, rows [N, 35], valid [N]).

    Raises:
      BadClip: missing or unreadable file, or one without the 35 AU columns or timestamps.
    """
    if not os.path.isfile(path):
        raise BadClip(path, "OpenFace CSV not found")
    with open(path, newline="", errors="replace") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("timestamp", *AU_COLUMNS) if c not in header]
        if missing:
            raise BadClip(
                path,
                f"not an OpenFace FeatureExtraction CSV: no column {', '.join(missing[:4])}"
                + (f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""),
            )
        index = [header.index(c) for c in AU_COLUMNS]
        t_col = header.index("timestamp")
        ok_col = header.index("success") if "success" in header else None
        times, rows, valid = [], [], []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                values = [float(row[i]) for i in index]
                t = float(row[t_col])
                ok = ok_col is None or float(row[ok_col]) > 0.5
            except (ValueError, IndexError) as e:
                raise BadClip(path, f"line {line}: bad value ({e})") from e
            ok = ok and bool(np.all(np.isfinite(values)))
            times.append(t)
            rows.append(values if ok else [0.0] * len(values))
            valid.append(ok)
    if not times:
        raise BadClip(path, "OpenFace CSV without any frame")
    return np.asarray(times), np.asarray(rows, np.float32), np.asarray(valid, bool)


def on_grid(
    times: np.ndarray, rows: np.ndarray, valid: np.ndarray, steps: int, fps: int = FPS
) -> tuple[np.ndarray, np.ndarray]:
    """Rows on the grid of `steps` frames at `fps` (time k / fps shows the last row whose
    timestamp is not later; steps past the last row are invalid): ([steps, 35], [steps])."""
    order = np.argsort(times, kind="stable")
    times, rows, valid = times[order], rows[order], valid[order]
    grid = np.arange(steps) / fps
    index = np.searchsorted(times, grid + 1e-6, side="right") - 1
    inside = (index >= 0) & (grid <= times[-1] + 1.5 / fps)
    index = np.clip(index, 0, len(times) - 1)
    ok = inside & valid[index]
    return np.where(ok[:, None], rows[index], 0.0).astype(np.float32), ok


def read_table(path: str) -> dict[str, np.ndarray]:
    """A table of clip-level rows: {clip id: [35]} (the development copy's layout: a first
    column of clip ids, then the 35 feature columns in `AU_COLUMNS` order).

    Raises:
      BadClip: missing file, another header, or a row with bad values.
    """
    if not os.path.isfile(path):
        raise BadClip(path, "AU table not found")
    table = {}
    with open(path, newline="", errors="replace") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if tuple(header[1:]) != AU_COLUMNS:
            raise BadClip(path, f"expected a clip id column, then {', '.join(AU_COLUMNS[:3])}, ...")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                values = np.asarray([float(v) for v in row[1:]], np.float32)
            except ValueError as e:
                raise BadClip(path, f"line {line}: bad value ({e})") from e
            if len(values) != len(AU_COLUMNS) or not np.all(np.isfinite(values)):
                raise BadClip(path, f"line {line}: not {len(AU_COLUMNS)} finite values")
            table[row[0].strip()] = values
    return table


def table_row(table: dict[str, np.ndarray], stem: str) -> np.ndarray | None:
    """The row of a media file's stem; for a RAVDESS audio file (modality 03) also the row of
    its audio-video clip (01), as the development copy's table is keyed."""
    if stem in table:
        return table[stem]
    if len(stem) == 20 and stem[:3] in ("03-", "02-"):
        return table.get("01" + stem[2:])
    return None
