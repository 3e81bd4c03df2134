"""Per-clip posteriors of one system on a split (`Predictions`), their CSV file, ensembles.

A predictions CSV has one row per clip: clip_id, label, label_name, prediction,
prediction_name, correct, prob_<class> for every class, and mu / eta where the model has them.
Every evaluation command writes one, and every comparison (ensembles, McNemar tests,
cross-validation tables) reads them, so systems can be compared without rerunning them.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fbp_jax import io
from fbp_jax import metrics as metrics_lib

PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
OUTPUTS_FILE = "outputs.npz"
# Per-clip model outputs kept besides the posteriors (for figures and analyses).
OUTPUT_KEYS = (
    "mu",
    "eta",
    "embedding",
    "audio_attention",
    "audio_mask",
    "video_attention",
    "video_mask",
)


class EvaluationError(ValueError):
    """Bad input to an evaluation: the message names the file or workdir and the problem."""


@dataclasses.dataclass
class Predictions:
    """Posteriors of one system on the clips of a split.

    Attributes:
      clip_ids: [N] clip ids (unique).
      labels: [N] int true classes.
      probabilities: [N, C] posteriors (rows sum to 1).
      class_names: C names.
      outputs: optional per-clip model outputs, each with leading axis N (`OUTPUT_KEYS`), and
        `inputs`: {clip id: {audio, audio_mask, video_mask, ...}} for clips kept for figures.
      source: where the predictions come from (for messages).
    """

    clip_ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    class_names: tuple[str, ...]
    outputs: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        self.clip_ids = np.asarray(self.clip_ids, dtype=object)
        self.labels = np.asarray(self.labels, np.int64)
        self.probabilities = np.asarray(self.probabilities, np.float64)
        self.class_names = tuple(self.class_names)
        n, c = len(self.clip_ids), len(self.class_names)
        if self.labels.shape != (n,) or self.probabilities.shape != (n, c):
            raise EvaluationError(
                f"{self.source}: {n} clip ids, labels {self.labels.shape}, probabilities "
                f"{self.probabilities.shape} for {c} classes"
            )
        if len(set(self.clip_ids)) != n:
            counts = collections.Counter(self.clip_ids)
            dup = sorted(c for c, k in counts.items() if k > 1)[:5]
            raise EvaluationError(f"{self.source}: duplicated clip ids, e.g. {dup}")

    @property
    def predictions(self) -> np.ndarray:
        return np.argmax(self.probabilities, axis=-1)

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels

    def confusion(self) -> np.ndarray:
        return metrics_lib.confusion_matrix(self.labels, self.predictions, len(self.class_names))

    def metrics(self) -> dict[str, Any]:
        """`compute_metrics` of the confusion matrix, plus the mean cross-entropy `loss`."""
        m = metrics_lib.compute_metrics(self.confusion(), self.class_names)
        p = self.probabilities[np.arange(len(self.labels)), self.labels]
        m["loss"] = float(-np.mean(np.log(np.maximum(p, 1e-12)))) if len(p) else None
        return m

    def aligned_to(self, other: Predictions) -> Predictions:
        """These predictions reordered to the clips of `other`; an error if the clips differ."""
        mine, theirs = set(self.clip_ids), set(other.clip_ids)
        if mine != theirs:
            only_mine, only_theirs = sorted(mine - theirs), sorted(theirs - mine)
            raise EvaluationError(
                f"{self.source} and {other.source} are not on the same clips: "
                f"{len(only_mine)} only in the first (e.g. {only_mine[:3]}), "
                f"{len(only_theirs)} only in the second (e.g. {only_theirs[:3]})"
            )
        if self.class_names != other.class_names:
            raise EvaluationError(
                f"{self.source} and {other.source} have different classes: "
                f"{self.class_names} vs {other.class_names}"
            )
        index = {c: i for i, c in enumerate(self.clip_ids)}
        order = np.array([index[c] for c in other.clip_ids], np.int64)
        labels = self.labels[order]
        if not np.array_equal(labels, other.labels):
            bad = other.clip_ids[labels != other.labels][:3]
            raise EvaluationError(
                f"{self.source} and {other.source} disagree on the labels of {list(bad)}"
            )
        outputs = {k: v[order] for k, v in self.outputs.items() if isinstance(v, np.ndarray)}
        probabilities = self.probabilities[order]
        return Predictions(
            other.clip_ids, labels, probabilities, self.class_names, outputs, self.source
        )


def write_predictions(predictions: Predictions, path: str, extra_columns: dict | None = None):
    """Writes a predictions CSV (atomically: a partial file never has the final name).

    Columns: clip_id, label, label_name, prediction, prediction_name, correct, prob_<class>
    for every class, then mu and eta when the model has them, then `extra_columns`
    ({name: [N] values}).
    """
    p = predictions
    names = list(p.class_names)
    columns = {
        "clip_id": list(p.clip_ids),
        "label": p.labels.tolist(),
        "label_name": [names[i] for i in p.labels],
        "prediction": p.predictions.tolist(),
        "prediction_name": [names[i] for i in p.predictions],
        "correct": p.correct.astype(int).tolist(),
    }
    for i, name in enumerate(names):
        columns[f"prob_{name}"] = [f"{x:.9g}" for x in p.probabilities[:, i]]
    for key in ("mu", "eta"):
        if key in p.outputs:
            columns[key] = [f"{x:.7g}" for x in np.asarray(p.outputs[key])]
    for key, values in (extra_columns or {}).items():
        columns[key] = list(values)
    io.write_csv(columns, path)


def read_predictions(path: str) -> Predictions:
    """Reads a predictions CSV written by `write_predictions`.

    Raises:
      EvaluationError: missing file or columns, bad values, duplicated clips; the message
        names the file and the problem.
    """
    if not os.path.isfile(path):
        raise EvaluationError(f"{path}: no such predictions file")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        prob_cols = [c for c in header if c.startswith("prob_")]
        missing = [c for c in ("clip_id", "label") if c not in header]
        if missing or not prob_cols:
            raise EvaluationError(
                f"{path}: not a predictions file: needs columns clip_id, label and prob_<class>; "
                f"found {header[:8]}"
            )
        ids, labels, probs, mu, eta = [], [], [], [], []
        for line, row in enumerate(reader, start=2):
            try:
                ids.append(row["clip_id"])
                labels.append(int(row["label"]))
                probs.append([float(row[c]) for c in prob_cols])
                if "mu" in header and row["mu"] not in ("", None):
                    mu.append(float(row["mu"]))
                if "eta" in header and row["eta"] not in ("", None):
                    eta.append(float(row["eta"]))
            except (TypeError, ValueError) as e:
                raise EvaluationError(f"{path}, line {line}: bad value ({e})") from e
    probs = np.asarray(probs, np.float64).reshape(len(ids), len(prob_cols))
    class_names = tuple(c[len("prob_") :] for c in prob_cols)
    if len(ids) and (np.any(probs < 0) or not np.allclose(probs.sum(1), 1.0, atol=1e-4)):
        raise EvaluationError(f"{path}: the prob_ columns are not posteriors (rows must sum to 1)")
    if any(not 0 <= x < len(class_names) for x in labels):
        raise EvaluationError(f"{path}: labels outside 0..{len(class_names) - 1}")
    outputs = {}
    if len(mu) == len(ids) and ids:
        outputs["mu"] = np.asarray(mu)
    if len(eta) == len(ids) and ids:
        outputs["eta"] = np.asarray(eta)
    return Predictions(ids, labels, probs, class_names, outputs, source=path)


def ensemble(members: Sequence[Predictions], weights: Sequence[float] | None = None) -> Predictions:
    """Averages the posteriors of several systems on the same clips (the paper's 2AM-FBP +
    4G-FBP): sum_m w_m p_m / sum_m w_m, clips in the order of the first member.

    Raises:
      EvaluationError: the members are not on the same clips, labels or classes.
    """
    if not members:
        raise EvaluationError("an ensemble needs at least one member")
    weights = np.ones(len(members)) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (len(members),) or np.any(weights < 0) or weights.sum() <= 0:
        raise EvaluationError(f"need {len(members)} non-negative weights, got {list(weights)}")
    first = members[0]
    total = np.zeros_like(first.probabilities)
    for w, m in zip(weights, members, strict=True):
        total += w * m.aligned_to(first).probabilities
    return Predictions(
        first.clip_ids,
        first.labels,
        total / weights.sum(),
        first.class_names,
        source="ensemble(" + ", ".join(m.source for m in members) + ")",
    )
