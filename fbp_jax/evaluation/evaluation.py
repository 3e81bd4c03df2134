r"""Evaluation a reviewer can check: metrics, per-clip predictions, ensembles, significance.

    # A workdir's best-on-validation checkpoint (or --step=latest / a step) on a split:
    python -m fbp_jax.evaluation.evaluation evaluate --workdir=W [--split=fold3] [--step=best]
    # Average the posteriors of several systems (workdirs, prediction files, CV workdirs):
    python -m fbp_jax.evaluation.evaluation ensemble --members=W1,W2,preds.csv --split=S --output_dir=D
    # Exact McNemar test between two systems on the same clips:
    python -m fbp_jax.evaluation.evaluation mcnemar A B [--split=S]

`evaluate` runs the training's evaluation pipeline (centre crop, padding with mask-0 examples,
every clip once) and writes `metrics.json` (weighted accuracy WA = overall accuracy, unweighted
accuracy UA = mean recall over the classes present, per-class accuracy, confusion matrix) and
`predictions.csv` (clip id, label, predicted class, posteriors, mu / eta) into
`W/eval/<split>-step<step>/`, or `--output_dir`. `--split` defaults to the config's test split
(`data.test_split`, set by the fold configs), else its validation split (`data.eval_split`).

Everything but `evaluate` (and the members of an ensemble given as workdirs) works without
TensorFlow.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import functools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from scipy import stats as scipy_stats

from fbp_jax.model import fusion as fusion_lib
from fbp_jax.model import network
from fbp_jax.training import train_lib

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


# ---------------------------------------------------------------------------------------------
# Metrics


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class] as an int64 [num_classes, num_classes] matrix."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


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
    per_class = []
    for i, name in enumerate(names):
        per_class.append(
            {
                "class": name,
                "support": int(support[i]),
                "correct": int(correct[i]),
                "predicted": int(predicted[i]),
                "accuracy": float(correct[i] / support[i]) if support[i] else None,
                "precision": float(correct[i] / predicted[i]) if predicted[i] else None,
            }
        )
    recalls = [c["accuracy"] for c in per_class if c["accuracy"] is not None]
    return {
        "num_examples": total,
        "weighted_accuracy": float(correct.sum() / total) if total else None,
        "unweighted_accuracy": float(np.mean(recalls)) if recalls else None,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "class_names": names,
    }


# ---------------------------------------------------------------------------------------------
# Per-clip predictions


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
        return confusion_matrix(self.labels, self.predictions, len(self.class_names))

    def metrics(self) -> dict[str, Any]:
        """`compute_metrics` of the confusion matrix, plus the mean cross-entropy `loss`."""
        m = compute_metrics(self.confusion(), self.class_names)
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
    _atomic_write(path, lambda f: _write_csv(f, columns), newline="")


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


# ---------------------------------------------------------------------------------------------
# Ensembles and significance


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


@dataclasses.dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of systems A and B on the same clips.

    Attributes:
      num_examples: clips compared.
      both_correct, only_a, only_b, both_wrong: the 2x2 table of correct / wrong.
      p_two_sided: H1: A and B differ.
      p_a_better: one-sided, H1: A is right more often than B.
      p_b_better: one-sided, H1: B is right more often than A.
      accuracy_a, accuracy_b: weighted accuracies.
    """

    num_examples: int
    both_correct: int
    only_a: int
    only_b: int
    both_wrong: int
    p_two_sided: float
    p_a_better: float
    p_b_better: float
    accuracy_a: float
    accuracy_b: float


def mcnemar_exact(only_a: int, only_b: int) -> tuple[float, float, float]:
    """Exact (binomial) McNemar p-values from the discordant pairs.

    Under H0 a discordant clip is equally likely to favour either system, so only_a ~
    Binomial(only_a + only_b, 1/2).

    Args:
      only_a: clips A gets right and B wrong.
      only_b: clips B gets right and A wrong.

    Returns:
      (two-sided, one-sided A better, one-sided B better); 1.0 when there is no discordant clip.
    """
    n = only_a + only_b
    if n == 0:
        return 1.0, 1.0, 1.0
    a_better = float(scipy_stats.binom.sf(only_a - 1, n, 0.5))  # P(X >= only_a)
    b_better = float(scipy_stats.binom.cdf(only_a, n, 0.5))  # P(X <= only_a)
    return min(1.0, 2.0 * min(a_better, b_better)), a_better, b_better


def mcnemar(a: Predictions, b: Predictions) -> McNemarResult:
    """Exact McNemar test between two prediction sets on the same clips (matched pairs)."""
    b = b.aligned_to(a)
    ca, cb = a.correct, b.correct
    only_a, only_b = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    two, a_better, b_better = mcnemar_exact(only_a, only_b)
    n = len(ca)
    return McNemarResult(
        num_examples=n,
        both_correct=int(np.sum(ca & cb)),
        only_a=only_a,
        only_b=only_b,
        both_wrong=int(np.sum(~ca & ~cb)),
        p_two_sided=two,
        p_a_better=a_better,
        p_b_better=b_better,
        accuracy_a=float(ca.mean()) if n else math.nan,
        accuracy_b=float(cb.mean()) if n else math.nan,
    )


def format_mcnemar(result: McNemarResult, name_a: str = "A", name_b: str = "B") -> str:
    r = result
    return (
        f"{r.num_examples} clips: {name_a} {100 * r.accuracy_a:.2f}% WA, "
        f"{name_b} {100 * r.accuracy_b:.2f}% WA\n"
        f"both right {r.both_correct}, only {name_a} right {r.only_a}, "
        f"only {name_b} right {r.only_b}, both wrong {r.both_wrong}\n"
        f"exact McNemar p-values: two-sided {r.p_two_sided:.4g}; "
        f"one-sided ({name_a} better) {r.p_a_better:.4g}; "
        f"one-sided ({name_b} better) {r.p_b_better:.4g}"
    )


# ---------------------------------------------------------------------------------------------
# Models of a workdir


@dataclasses.dataclass
class LoadedModel:
    """A trained model of a workdir.

    Attributes:
      workdir: the training workdir.
      config: its config.
      model: the Linen module.
      params: parameters of checkpoint `step`.
      step: the checkpoint step.
      stats: normalisation statistics of the training split (None if the config does not
        normalise).
    """

    workdir: str
    config: ml_collections.ConfigDict
    model: Any
    params: Any
    step: int
    stats: dict[str, np.ndarray] | None

    @property
    def fusion(self) -> str:
        return self.config.model.fusion

    @property
    def streams(self) -> tuple[str, ...]:
        return fusion_lib.streams_for(self.fusion)

    @functools.cached_property
    def apply_fn(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        """Jitted batch -> outputs (with `probabilities`), as numpy arrays."""
        return make_apply_fn(self.model, self.params, self.fusion)


def make_apply_fn(model, params, fusion: str) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """batch (audio, audio_mask, video, video_mask, ...) -> model outputs plus `probabilities`."""

    @jax.jit
    def apply(params, inputs):
        out = model.apply({"params": params}, inputs, train=False)
        out["probabilities"] = jax.nn.softmax(out["logits"].astype(np.float32), axis=-1)
        return out

    def fn(batch):
        inputs = train_lib.model_inputs(batch, fusion)
        return jax.device_get(apply(params, inputs))

    return fn


def is_workdir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def resolve_step(workdir: str, step: str | int = "best") -> int:
    """The checkpoint step named by `step`: 'best' (on validation), 'latest' or a number."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        raise EvaluationError(f"{workdir}: no checkpoints/ folder (not a trained workdir?)")
    manager = train_lib.create_checkpoint_manager(workdir)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise EvaluationError(f"{ckpt_dir}: no checkpoint")
        if str(step) == "best":
            best = train_lib.best_step(manager)
            if best is None:
                logging.warning(
                    "%s: no checkpoint has validation metrics; using the latest.", workdir
                )
                return steps[-1]
            return best
        if str(step) == "latest":
            return steps[-1]
        if not re.fullmatch(r"\d+", str(step)) or int(step) not in steps:
            raise EvaluationError(
                f"{workdir}: no checkpoint {step!r}; use 'best', 'latest' or one of {steps}"
            )
        return int(step)
    finally:
        manager.close()


_LOADED: dict[tuple[str, int, float], LoadedModel] = {}


def load_model(workdir: str, step: str | int = "best") -> LoadedModel:
    """Loads the config, parameters and normalisation statistics of a training workdir.

    Models stay cached in the process (a few), so that evaluating one checkpoint several times
    (ensembles, reports) compiles it once.

    Args:
      workdir: a workdir written by `train_lib.train_and_evaluate`.
      step: 'best' (the checkpoint chosen on validation accuracy), 'latest' or a step number.

    Raises:
      EvaluationError: not a workdir, no such checkpoint, or statistics missing.
    """
    if not is_workdir(workdir):
        raise EvaluationError(f"{workdir}: not a training workdir (no config.json)")
    step = resolve_step(workdir, step)
    step_dir = os.path.join(workdir, "checkpoints", str(step))
    key = (os.path.abspath(workdir), step, os.path.getmtime(step_dir))
    if key in _LOADED:
        return _LOADED[key]
    config = train_lib.load_config(workdir)
    model = network.get_model(config)
    # Shapes only: the restore needs the structure, not initialised values.
    target = jax.eval_shape(
        lambda: train_lib.create_train_state(config, model, jax.random.key(0), lambda _: 0.0)
    )
    manager = train_lib.create_checkpoint_manager(workdir)
    try:
        params = train_lib.restore_state(manager, step, target).eval_params
    finally:
        manager.close()
    stats = None
    if config.data.normalize:
        path = os.path.join(workdir, "norm_stats.npz")
        if not os.path.isfile(path):
            raise EvaluationError(
                f"{path}: missing; the normalisation statistics of the training split are "
                "written there by training"
            )
        with np.load(path) as f:
            stats = dict(f)
    loaded = LoadedModel(workdir, config, model, params, step, stats)
    if len(_LOADED) >= 4:
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = loaded
    return loaded


def get_class_names(config: ml_collections.ConfigDict, builder: Any = None) -> tuple[str, ...]:
    """Class names of a config's corpus: from the prepared TFDS dataset if given, else the
    table of configs/common.py, else class0..class<N-1>."""
    if builder is not None:
        return tuple(builder.info.features["label"].names)
    from configs import common

    corpus = config.data.name.split("/")[0]
    names = common.CLASSES.get(corpus)
    n = config.model.num_classes
    if names is not None and len(names) == n:
        return tuple(names)
    return tuple(f"class{i}" for i in range(n))


def default_split(config: ml_collections.ConfigDict) -> str:
    """The config's test split if it has one (fold configs), else its validation split."""
    return config.data.get("test_split") or config.data.eval_split


def evaluate(
    workdir: str | LoadedModel,
    split: str | None = None,
    *,
    step: str | int = "best",
    batch_size: int | None = None,
    data_dir: str | None = None,
    data_name: str | None = None,
    keep_outputs: bool = True,
    keep_inputs: Callable[[int, str], bool] | None = None,
) -> Predictions:
    """Runs a checkpoint over every clip of a split through the evaluation pipeline.

    Args:
      workdir: a training workdir, or a model loaded with `load_model`.
      split: TFDS split (arithmetic allowed); default `default_split(config)`.
      step: checkpoint, see `load_model` (ignored for a LoadedModel).
      batch_size: evaluation batch (default: the config's); the last batch is padded with
        mask-0 examples, which are dropped.
      data_dir: TFDS data dir (default: the config's).
      data_name: TFDS dataset (default: the config's `data.name`); same schema needed.
      keep_outputs: keep the per-clip model outputs of `OUTPUT_KEYS` in `outputs`.
      keep_inputs: (index in split, clip id) -> whether to keep that clip's model inputs in
        `outputs['inputs']` (for figures).

    Returns:
      Predictions of every clip of the split, in the split's order.
    """
    from fbp_jax import input_pipeline  # TensorFlow from here on.

    if jax.process_count() > 1:
        raise EvaluationError("evaluation runs in one process; start it on one host")
    loaded = workdir if isinstance(workdir, LoadedModel) else load_model(workdir, step)
    config = loaded.config
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    if data_dir is not None:
        data_config.data_dir = data_dir
    if data_name is not None:
        data_config.name = data_name
    split = split or default_split(config)
    builder = input_pipeline.get_builder(data_config)
    unknown = [p for p in split.split("+") if p.split("[")[0].strip() not in builder.info.splits]
    if unknown:
        raise EvaluationError(
            f"{builder.data_dir}: no split {unknown[0]!r}; splits: {sorted(builder.info.splits)}"
        )
    class_names = get_class_names(config, builder)
    if len(class_names) != config.model.num_classes:
        raise EvaluationError(
            f"{builder.data_dir}: {len(class_names)} classes, but the model of {loaded.workdir} "
            f"has {config.model.num_classes}"
        )
    batch_size = batch_size or config.batch_size
    ds = input_pipeline.create_eval_dataset(
        builder, data_config, split, batch_size, loaded.stats, keep_ids=True
    )
    ids, labels, probs = [], [], []
    kept: dict[str, list[np.ndarray]] = {}
    inputs: dict[str, dict[str, np.ndarray]] = {}
    index = 0
    for batch in _as_numpy(ds):
        mask = batch.pop("mask").astype(bool)
        clip_ids = batch.pop("clip_id")
        out = loaded.apply_fn(batch)
        for i in np.flatnonzero(mask):
            clip_id = clip_ids[i].decode() if isinstance(clip_ids[i], bytes) else str(clip_ids[i])
            ids.append(clip_id)
            if keep_inputs is not None and keep_inputs(index, clip_id):
                inputs[clip_id] = {k: v[i] for k, v in batch.items() if k != "label"}
            index += 1
        labels.append(batch["label"][mask])
        probs.append(out["probabilities"][mask])
        if keep_outputs:
            for key in OUTPUT_KEYS:
                if key in out:
                    kept.setdefault(key, []).append(np.asarray(out[key])[mask])
    outputs: dict[str, Any] = {k: np.concatenate(v) for k, v in kept.items()}
    if inputs:
        outputs["inputs"] = inputs
    source = f"{loaded.workdir} (step {loaded.step}, {split})"
    return Predictions(
        ids, np.concatenate(labels), np.concatenate(probs), class_names, outputs, source
    )


def _as_numpy(ds) -> Iterable[dict[str, np.ndarray]]:
    import tensorflow_datasets as tfds

    return tfds.as_numpy(ds)


def split_dirname(split: str) -> str:
    """A file-name-safe form of a TFDS split expression."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", split).replace("+", "-")


def save_evaluation(
    predictions: Predictions, output_dir: str, info: dict[str, Any], save_outputs: bool = False
) -> dict[str, Any]:
    """Writes predictions.csv, (outputs.npz,) then metrics.json, each atomically.

    metrics.json is written last: its presence means the evaluation is complete.

    Returns:
      The metrics dict written (`info` merged with the metrics).
    """
    os.makedirs(output_dir, exist_ok=True)
    write_predictions(predictions, os.path.join(output_dir, PREDICTIONS_FILE))
    if save_outputs:
        arrays = {k: v for k, v in predictions.outputs.items() if isinstance(v, np.ndarray)}
        path = os.path.join(output_dir, OUTPUTS_FILE)
        _atomic_write(
            path,
            lambda f: np.savez(f, clip_ids=predictions.clip_ids.astype(str), **arrays),
            mode="wb",
        )
    metrics = {**info, **predictions.metrics()}
    write_json(metrics, os.path.join(output_dir, METRICS_FILE))
    return metrics


def evaluate_workdir(
    workdir: str,
    split: str | None = None,
    *,
    step: str | int = "best",
    output_dir: str | None = None,
    batch_size: int | None = None,
    data_dir: str | None = None,
    data_name: str | None = None,
    save_outputs: bool = False,
) -> tuple[Predictions, dict[str, Any], str]:
    """`evaluate` then `save_evaluation`; returns (predictions, metrics, output dir)."""
    loaded = load_model(workdir, step)
    split = split or default_split(loaded.config)
    predictions = evaluate(
        loaded,
        split,
        batch_size=batch_size,
        data_dir=data_dir,
        data_name=data_name,
        keep_outputs=True,  # mu and eta go into predictions.csv
    )
    output_dir = output_dir or os.path.join(
        workdir, "eval", f"{split_dirname(split)}-step{loaded.step}"
    )
    info = {
        "workdir": os.path.abspath(workdir),
        "step": loaded.step,
        "split": split,
        "data": data_name or loaded.config.data.name,
        "fusion": loaded.fusion,
    }
    metrics = save_evaluation(predictions, output_dir, info, save_outputs)
    return predictions, metrics, output_dir


def load_predictions(source: str, split: str | None = None, step: str = "best") -> Predictions:
    """Predictions from a CSV file, a cross-validation workdir (its pooled test predictions)
    or a training workdir (evaluated on `split`)."""
    if os.path.isfile(source):
        return read_predictions(source)
    pooled = os.path.join(source, "test_predictions.csv")
    if os.path.isfile(pooled):
        return read_predictions(pooled)
    if is_workdir(source):
        return evaluate(source, split, step=step, keep_outputs=False)
    raise EvaluationError(
        f"{source}: neither a predictions CSV, a cross-validation workdir (test_predictions.csv) "
        "nor a training workdir (config.json)"
    )


def format_metrics(metrics: dict[str, Any]) -> str:
    """Plain-text summary: WA, UA, per-class accuracy and the confusion matrix."""
    names = metrics["class_names"]
    width = max(8, *(len(n) for n in names))
    summary = (
        f"{metrics['num_examples']} clips: WA {_pct(metrics['weighted_accuracy'])}, "
        f"UA {_pct(metrics['unweighted_accuracy'])}"
    )
    lines = [
        summary,
        "",
        f"{'class':<{width}} {'support':>7} {'accuracy':>8} {'precision':>9}",
    ]
    for c in metrics["per_class"]:
        lines.append(
            f"{c['class']:<{width}} {c['support']:>7} {_pct(c['accuracy']):>8} "
            f"{_pct(c['precision']):>9}"
        )
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * width + " " + " ".join(f"{n[:6]:>6}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}} " + " ".join(f"{x:>6}" for x in row))
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


# ---------------------------------------------------------------------------------------------
# Files


def _atomic_write(path: str, write: Callable[[Any], None], mode: str = "w", **kwargs) -> None:
    """Writes through `write(file)` into a temporary file, then renames it to `path`."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode, **kwargs) as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_csv(f, columns: dict[str, list]) -> None:
    writer = csv.writer(f)
    writer.writerow(list(columns))
    writer.writerows(zip(*columns.values(), strict=True))


def write_json(obj: Any, path: str) -> None:
    """Writes JSON atomically."""
    _atomic_write(path, lambda f: json.dump(obj, f, indent=1))


def write_csv(columns: dict[str, list], path: str) -> None:
    """Writes a CSV of equal-length columns atomically."""
    _atomic_write(path, lambda f: _write_csv(f, columns), newline="")


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS
COMMANDS = ("evaluate", "ensemble", "mcnemar")


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "evaluate: the training workdir.")
    flags.DEFINE_string(
        "split", None, "TFDS split (default: the config's test split, else its validation split)."
    )
    flags.DEFINE_string("step", "best", "Checkpoint: 'best' (on validation), 'latest' or a step.")
    flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: the config's).")
    flags.DEFINE_string("data_dir", None, "TFDS data dir (default: the config's).")
    flags.DEFINE_string(
        "data_name", None, "evaluate: another prepared dataset of the same schema (cross-corpus)."
    )
    flags.DEFINE_string(
        "output_dir", None, "Where to write (default: <workdir>/eval/<split>-step<step>)."
    )
    flags.DEFINE_bool("save_outputs", False, "Also write outputs.npz (embeddings, attention, mu).")
    flags.DEFINE_list(
        "members", [], "ensemble: workdirs, predictions CSVs or cross-validation workdirs."
    )
    flags.DEFINE_list("weights", [], "ensemble: one weight per member (default: equal).")


def main(argv: Sequence[str]) -> None:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"first argument: one of {COMMANDS}")
    import tensorflow as tf

    tf.config.experimental.set_visible_devices([], "GPU")  # TensorFlow only reads data.
    try:
        _run(argv[1], argv[2:])
    except EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _run(command: str, args: Sequence[str]) -> None:
    if command == "evaluate":
        if not FLAGS.workdir or args:
            raise app.UsageError("evaluate takes --workdir (and no positional argument)")
        _, metrics, out = evaluate_workdir(
            FLAGS.workdir,
            FLAGS.split,
            step=FLAGS.step,
            output_dir=FLAGS.output_dir,
            batch_size=FLAGS.batch_size,
            data_dir=FLAGS.data_dir,
            data_name=FLAGS.data_name,
            save_outputs=FLAGS.save_outputs,
        )
        print(f"{FLAGS.workdir}, step {metrics['step']}, split {metrics['split']}")
        print(format_metrics(metrics))
        print(f"\nwritten: {out}/{METRICS_FILE}, {out}/{PREDICTIONS_FILE}")
    elif command == "ensemble":
        if len(FLAGS.members) < 1 or not FLAGS.output_dir:
            raise app.UsageError("ensemble takes --members=a,b,... and --output_dir")
        members = [load_predictions(m, FLAGS.split, FLAGS.step) for m in FLAGS.members]
        weights = [float(w) for w in FLAGS.weights] if FLAGS.weights else None
        combined = ensemble(members, weights)
        info = {"members": list(FLAGS.members), "weights": weights, "split": FLAGS.split}
        metrics = save_evaluation(combined, FLAGS.output_dir, info)
        for m in members:
            mm = m.metrics()
            print(
                f"member {m.source}: WA {_pct(mm['weighted_accuracy'])}, "
                f"UA {_pct(mm['unweighted_accuracy'])}"
            )
        print("ensemble: " + format_metrics(metrics))
        print(
            f"\nwritten: {FLAGS.output_dir}/{METRICS_FILE}, {FLAGS.output_dir}/{PREDICTIONS_FILE}"
        )
    else:
        if len(args) != 2:
            raise app.UsageError("mcnemar takes two arguments: predictions of systems A and B")
        a, b = (load_predictions(x, FLAGS.split, FLAGS.step) for x in args)
        print(f"A: {a.source}\nB: {b.source}")
        print(format_mcnemar(mcnemar(a, b)))


if __name__ == "__main__":
    define_flags()
    app.run(main)
