"""Evaluating a trained run on a split: per-clip posteriors, metrics, files.

    fbp-jax evaluate --workdir=W [--split=actor13+actor14] [--step=best|latest|N]

`evaluate` runs the training's evaluation pipeline (centre crop, padding with mask-0 examples,
every clip once; with `data.speaker_norm` each speaker of the split standardised with its own
statistics) and `save_evaluation` writes `metrics.json` (WA, UA, per-class accuracy, confusion
matrix) and `predictions.csv` into `W/eval/<split>-step<step>/`.

    fbp-jax evaluate --workdir=W --balance

does the same with each speaker's answers balanced (`timeline.balanced`, as `predict
--balance`: every class answered equally often on average over a speaker's clips; speakers of
fewer than three clips per class as they are), into `W/eval/<split>-step<step>-balanced/`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np

from fbp_jax import io
from fbp_jax import workdir as workdir_lib
from fbp_jax.evaluation.predictions import (
    METRICS_FILE,
    OUTPUT_KEYS,
    OUTPUTS_FILE,
    PREDICTIONS_FILE,
    EvaluationError,
    Predictions,
    read_predictions,
    write_predictions,
)
from fbp_jax.metrics import percent


def _load(workdir: str, step: str | int) -> workdir_lib.TrainedModel:
    try:
        return workdir_lib.load_trained(workdir, step)
    except workdir_lib.WorkdirError as e:
        raise EvaluationError(str(e)) from e


def default_split(config: ml_collections.ConfigDict) -> str:
    """The config's test split if it has one (fold configs), else its validation split."""
    return config.data.get("test_split") or config.data.eval_split


def evaluate(
    workdir: str | workdir_lib.TrainedModel,
    split: str | None = None,
    *,
    step: str | int = "best",
    batch_size: int | None = None,
    data_dir: str | None = None,
    data_name: str | None = None,
    keep_outputs: bool = True,
    keep_inputs: Callable[[int, str], bool] | None = None,
    speaker_stats: str | None = None,
    balance: bool = False,
) -> Predictions:
    """Runs a checkpoint over every clip of a split through the evaluation pipeline.

    Args:
      workdir: a training workdir, or a model loaded with `workdir.load_trained`.
      split: TFDS split (arithmetic allowed); default `default_split(config)`.
      step: checkpoint, see `workdir.load_trained` (ignored for a TrainedModel).
      batch_size: evaluation batch (default: the config's); the last batch is padded with
        mask-0 examples, which are dropped.
      data_dir: TFDS data dir (default: the config's).
      data_name: TFDS dataset (default: the config's `data.name`); same schema needed.
      keep_outputs: keep the per-clip model outputs of `OUTPUT_KEYS` in `outputs`.
      keep_inputs: (index in split, clip id) -> whether to keep that clip's model inputs in
        `outputs['inputs']` (for figures).
      speaker_stats: for speaker-normalised models, 'own' (default: each evaluated speaker's
        statistics) or 'training' (the training speakers' pooled statistics).
      balance: each speaker's answers balanced (`timeline.balanced`), as `predict --balance`
        does for a speaker folder.

    Returns:
      Predictions of every clip of the split, in the split's order.
    """
    from fbp_jax import input_pipeline  # TensorFlow from here on.

    if jax.process_count() > 1:
        raise EvaluationError("evaluation runs in one process; start it on one host")
    loaded = workdir if isinstance(workdir, workdir_lib.TrainedModel) else _load(workdir, step)
    config = loaded.config
    data_config = ml_collections.ConfigDict(config.data.to_dict())
    if data_dir is not None:
        data_config.data_dir = data_dir
    if data_name is not None:
        data_config.name = data_name
    if speaker_stats is not None:
        data_config.speaker_stats = speaker_stats
    split = split or default_split(config)
    builder = input_pipeline.prepared_builder(data_config)
    unknown = [p for p in split.split("+") if p.split("[")[0].strip() not in builder.info.splits]
    if unknown:
        raise EvaluationError(
            f"{builder.data_dir}: no split {unknown[0]!r}; splits: {sorted(builder.info.splits)}"
        )
    class_names = tuple(builder.info.features["label"].names)
    if len(class_names) != config.model.num_classes:
        raise EvaluationError(
            f"{builder.data_dir}: {len(class_names)} classes, but the model of {loaded.workdir} "
            f"has {config.model.num_classes}"
        )
    batch_size = batch_size or config.batch_size
    ds = input_pipeline.create_eval_dataset(
        builder, data_config, split, batch_size, loaded.stats, keep_ids=True
    )
    ids, speakers, labels, probs = [], [], [], []
    kept: dict[str, list[np.ndarray]] = {}
    inputs: dict[str, dict[str, np.ndarray]] = {}
    index = 0
    for batch in _as_numpy(ds):
        mask = batch.pop("mask").astype(bool)
        clip_ids, clip_speakers = batch.pop("clip_id"), batch.pop("speaker")
        out = loaded.apply_fn(batch)
        for i in np.flatnonzero(mask):
            clip_id = clip_ids[i].decode() if isinstance(clip_ids[i], bytes) else str(clip_ids[i])
            ids.append(clip_id)
            speakers.append(clip_speakers[i])
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
    probs = np.concatenate(probs)
    if balance:
        from fbp_jax.serving import timeline

        probs = timeline.balanced(probs, speakers)
        source += ", each speaker's answers balanced"
    return Predictions(ids, np.concatenate(labels), probs, class_names, outputs, source)


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
        io.atomic_write(
            path,
            lambda f: np.savez(f, clip_ids=predictions.clip_ids.astype(str), **arrays),
            mode="wb",
        )
    metrics = {**info, **predictions.metrics()}
    io.write_json(metrics, os.path.join(output_dir, METRICS_FILE))
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
    speaker_stats: str | None = None,
    balance: bool = False,
) -> tuple[Predictions, dict[str, Any], str]:
    """`evaluate` then `save_evaluation`; returns (predictions, metrics, output dir)."""
    loaded = _load(workdir, step)
    split = split or default_split(loaded.config)
    predictions = evaluate(
        loaded,
        split,
        batch_size=batch_size,
        data_dir=data_dir,
        data_name=data_name,
        keep_outputs=True,  # mu and eta go into predictions.csv
        speaker_stats=speaker_stats,
        balance=balance,
    )
    suffix = (f"-{speaker_stats}-stats" if speaker_stats else "") + ("-balanced" if balance else "")
    output_dir = output_dir or os.path.join(
        workdir, "eval", f"{split_dirname(split)}-step{loaded.step}{suffix}"
    )
    info = {
        "workdir": os.path.abspath(workdir),
        "step": loaded.step,
        "split": split,
        "data": data_name or loaded.config.data.name,
        "fusion": loaded.fusion,
        "speaker_stats": speaker_stats or loaded.config.data.get("speaker_stats", "own"),
        "balanced": balance,
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
    if workdir_lib.is_workdir(source):
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
        f"{metrics['num_examples']} clips: WA {percent(metrics['weighted_accuracy'])}, "
        f"UA {percent(metrics['unweighted_accuracy'])}"
    )
    lines = [
        summary,
        "",
        f"{'class':<{width}} {'support':>7} {'accuracy':>8} {'precision':>9}",
    ]
    for c in metrics["per_class"]:
        lines.append(
            f"{c['class']:<{width}} {c['support']:>7} {percent(c['accuracy']):>8} "
            f"{percent(c['precision']):>9}"
        )
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * width + " " + " ".join(f"{n[:6]:>6}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}} " + " ".join(f"{x:>6}" for x in row))
    return "\n".join(lines)
