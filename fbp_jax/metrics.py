"""Classification metrics on confusion matrices, shared by training and evaluation.

WA (weighted accuracy) is the overall accuracy; UA (unweighted accuracy) is the mean recall over
the classes that have examples, the two figures of the emotion-recognition literature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] as an int64 [num_classes, num_classes] matrix."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def unweighted_accuracy(confusion):
    """Mean per-class recall over classes with at least one example: [N, N] -> scalar.

    Works on numpy and JAX arrays (jit-compatible), so training metrics and evaluation share it.
    """
    xp = jnp if isinstance(confusion, jax.Array) else np
    support = confusion.sum(axis=1)
    recall = xp.diag(confusion) / xp.maximum(support, 1)
    present = support > 0
    return xp.sum(xp.where(present, recall, 0.0)) / xp.maximum(present.sum(), 1)


def compute_metrics(
    confusion: np.ndarray, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Metrics of a confusion matrix [true, predicted].

    Args:
      confusion: [N, N] counts.
      class_names: N names (default: class0..).

    Returns:
      dict with `num_examples`, `weighted_accuracy` (overall accuracy, WA),
      `unweighted_accuracy` (mean recall over the classes with examples, UA), `per_class` (a
      list of {class, support, correct, predicted, accuracy (= recall), precision}; None where
      undefined), `confusion_matrix` (nested lists) and `class_names`.
    """
    confusion = np.asarray(confusion, np.int64)
    n = confusion.shape[0]
    if confusion.shape != (n, n):
        raise ValueError(f"confusion matrix must be square, got {confusion.shape}")
    names = list(class_names) if class_names is not None else [f"class{i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    total = int(confusion.sum())
    correct = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    per_class = [
        {
            "class": name,
            "support": int(support[i]),
            "correct": int(correct[i]),
            "predicted": int(predicted[i]),
            "accuracy": float(correct[i] / support[i]) if support[i] else None,
            "precision": float(correct[i] / predicted[i]) if predicted[i] else None,
        }
        for i, name in enumerate(names)
    ]
    return {
        "num_examples": total,
        "weighted_accuracy": float(correct.sum() / total) if total else None,
        "unweighted_accuracy": float(unweighted_accuracy(confusion)) if total else None,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": names,
    }


def pct(x: float | None, digits: int = 2, sign: str = "") -> str:
    """A fraction as a percentage for tables: 0.8125 -> '81.25' (+ `sign`); '-' if missing."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "-"
    return f"{100 * x:.{digits}f}{sign}"


def percent(x: float | None, digits: int = 2) -> str:
    """`pct` with a percent sign: 0.8125 -> '81.25%'."""
    return pct(x, digits, "%")
