"""What a training run keeps on disk, and how every other part of the project reads it back.

A workdir holds

    config.json        the full config of the run
    dataset.json       the dataset it was trained on: name, class names, split sizes
    norm_stats.npz     normalisation statistics of the training split (or of its speakers)
    checkpoints/<step> orbax checkpoints: the latest two and the best on validation accuracy
    result.json        written last by training: the final step and metrics
    .lock              held by the training process while it runs

Evaluation, prediction and export read parameters through `load_params`, which restores a
checkpoint as a plain tree of arrays: they need neither the training code nor its optimiser.
Only the training loop writes here; `lock` keeps a second training process off a workdir
that one is using.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import json
import logging as pylogging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from fbp_jax import io
from fbp_jax.model import frontend, network
from fbp_jax.model import fusion as fusion_lib

CONFIG_FILE = "config.json"
DATASET_FILE = "dataset.json"
STATS_FILE = "norm_stats.npz"
RESULT_FILE = "result.json"
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
UNREADABLE = "unreadable_checkpoints"
KEEP_LATEST = 2  # The previous checkpoint survives a damaged latest one.


class WorkdirError(ValueError):
    """A workdir problem; the message names the folder or file and what is wrong."""


class WorkdirInUseError(WorkdirError):
    """Another process is training in this workdir."""


class _QuietLibraries(pylogging.Filter):
    """Drops the INFO chatter of orbax (dozens of lines per save) from the absl log."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        noisy = f"{os.sep}orbax{os.sep}" in record.pathname or "replica_slices" in record.pathname
        return record.levelno >= pylogging.WARNING or not noisy


logging.get_absl_logger().addFilter(_QuietLibraries())


def is_workdir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


# ---------------------------------------------------------------------------------------------
# Config, dataset metadata, statistics


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    io.atomic_write(
        os.path.join(workdir, CONFIG_FILE), lambda f: f.write(config.to_json_best_effort(indent=2))
    )


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise WorkdirError(f"{workdir}: not a training workdir (no {CONFIG_FILE})")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def save_dataset_info(workdir: str, name: str, class_names, splits: dict[str, int]) -> None:
    """The dataset's own metadata, so that later readers need neither TFDS nor configs."""
    info = {"name": name, "class_names": list(class_names), "splits": splits}
    io.write_json(info, os.path.join(workdir, DATASET_FILE))


def class_names(workdir: str, config: ml_collections.ConfigDict | None = None) -> tuple[str, ...]:
    """Class names of a run: from its dataset.json, else class0..class<N-1>."""
    path = os.path.join(workdir, DATASET_FILE)
    if os.path.isfile(path):
        return tuple(io.read_json(path)["class_names"])
    config = config or load_config(workdir)
    return tuple(f"class{i}" for i in range(config.model.num_classes))


def load_stats(workdir: str, config: ml_collections.ConfigDict) -> dict[str, np.ndarray] | None:
    """Normalisation statistics of the run (None when its config does not normalise)."""
    if not config.data.normalize:
        return None
    path = os.path.join(workdir, STATS_FILE)
    if not os.path.isfile(path):
        raise WorkdirError(
            f"{path}: missing; the normalisation statistics of the training split are written "
            "there by training"
        )
    with np.load(path) as f:
        return dict(f)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def create_checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
    """Keeps the latest `KEEP_LATEST` checkpoints and the best one on validation accuracy."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [
            ocp.checkpoint_managers.LatestN(KEEP_LATEST),
            ocp.checkpoint_managers.BestN(
                get_metric_fn=lambda m: m["eval_accuracy"],
                reverse=False,
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy,
        best_fn=lambda m: m["eval_accuracy"],  # Also makes orbax store the metrics.
        best_mode="max",
        create=True,
        cleanup_tmp_directories=True,  # A save cut short by a kill is removed at restart.
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), CHECKPOINTS), options=options
    )


def best_step(manager: ocp.CheckpointManager) -> int | None:
    """The saved step with the highest validation accuracy (None if none has metrics)."""
    if not any(manager.metrics(step) for step in manager.all_steps()):
        return None
    return manager.best_step()


def resolve_step(workdir: str, step: str | int = "best") -> int:
    """The checkpoint step named by `step`: 'best' (on validation; the latest when no
    checkpoint has validation metrics), 'latest' or a number."""
    ckpt_dir = os.path.join(workdir, CHECKPOINTS)
    if not os.path.isdir(ckpt_dir):
        raise WorkdirError(f"{workdir}: no {CHECKPOINTS}/ folder (not a trained workdir?)")
    manager = create_checkpoint_manager(workdir)
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise WorkdirError(f"{ckpt_dir}: no checkpoint")
        if str(step) == "best":
            best = best_step(manager)
            if best is None:
                logging.info("%s: no checkpoint has validation metrics; using the latest.", workdir)
                return steps[-1]
            return best
        if str(step) == "latest":
            return steps[-1]
        if not re.fullmatch(r"\d+", str(step)) or int(step) not in steps:
            raise WorkdirError(
                f"{workdir}: no checkpoint {step!r}; use 'best', 'latest' or one of {steps}"
            )
        return int(step)
    finally:
        manager.close()


def checkpoint_metrics(workdir: str, step: int) -> dict[str, float]:
    """Validation metrics saved with a checkpoint ({} when it has none)."""
    manager = create_checkpoint_manager(workdir)
    try:
        return dict(manager.metrics(step) or {})
    finally:
        manager.close()


def load_params(workdir: str, step: str | int = "best") -> tuple[Any, int]:
    """The evaluated parameters of a checkpoint, as a tree of numpy arrays, and its step.

    The parameter average (`ema_params`) when the run kept one, else `params`. The checkpoint
    is restored without a target structure, so no model, optimiser or training code is needed.
    """
    step = resolve_step(workdir, step)
    manager = create_checkpoint_manager(workdir)
    try:
        raw = manager.restore(step, args=ocp.args.StandardRestore())
    except Exception as e:
        raise WorkdirError(f"{workdir}: checkpoint {step} cannot be read ({e})") from e
    finally:
        manager.close()
    params = raw.get("ema_params") or raw["params"]
    return params, step


def restore_latest_good(manager: ocp.CheckpointManager, target: Any) -> tuple[Any, int] | None:
    """Restores the newest checkpoint that reads back whole into `target`'s structure.

    A checkpoint that fails to restore (truncated or corrupted on disk) is moved to
    `<workdir>/unreadable_checkpoints/<step>` with a warning, so that it is neither used nor
    overwritten, and the previous one is tried. Returns (state, step), or None when there is
    no checkpoint.
    """
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(target))
            return state, step
        except Exception as e:
            path = os.path.join(str(manager.directory), str(step))
            aside_dir = os.path.join(os.path.dirname(str(manager.directory)), UNREADABLE)
            os.makedirs(aside_dir, exist_ok=True)
            aside = os.path.join(aside_dir, f"{step}.{int(time.time())}")
            logging.warning(
                "Checkpoint %s cannot be restored (%s: %s); moved to %s, trying the previous one.",
                path,
                type(e).__name__,
                str(e)[:300],
                aside,
            )
            if os.path.exists(path):
                os.replace(path, aside)
            manager.reload()
    return None


# ---------------------------------------------------------------------------------------------
# A trained model, for evaluation, prediction and export


@dataclasses.dataclass
class TrainedModel:
    """A checkpoint of a workdir, ready to run.

    Attributes:
      workdir: the training workdir.
      config: its config.
      model: the Linen module.
      params: evaluated parameters of checkpoint `step` (the average when there is one).
      step: the checkpoint step.
      stats: normalisation statistics of the training split (None if the config does not
        normalise; per speaker with `data.speaker_norm`).
      class_names: the classes of the dataset it was trained on.
    """

    workdir: str
    config: ml_collections.ConfigDict
    model: Any
    params: Any
    step: int
    stats: dict[str, np.ndarray] | None
    class_names: tuple[str, ...]

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
        return jax.device_get(apply(params, frontend.model_inputs(batch, fusion)))

    return fn


_LOADED: dict[tuple[str, int, float], TrainedModel] = {}


def load_trained(workdir: str, step: str | int = "best") -> TrainedModel:
    """The config, parameters, statistics and class names of a checkpoint of a workdir.

    A few models stay cached in the process, so that evaluating one checkpoint several times
    (ensembles, reports) compiles it once.

    Args:
      workdir: a workdir written by `fbp_jax.training.loop.train_and_evaluate`.
      step: 'best' (the checkpoint chosen on validation accuracy), 'latest' or a step number.

    Raises:
      WorkdirError: not a workdir, no such checkpoint, unreadable, or statistics missing.
    """
    config = load_config(workdir)
    step = resolve_step(workdir, step)
    step_dir = os.path.join(workdir, CHECKPOINTS, str(step))
    key = (os.path.abspath(workdir), step, os.path.getmtime(step_dir))
    if key in _LOADED:
        return _LOADED[key]
    params, _ = load_params(workdir, step)
    loaded = TrainedModel(
        workdir,
        config,
        network.get_model(config),
        params,
        step,
        load_stats(workdir, config),
        class_names(workdir, config),
    )
    if len(_LOADED) >= 4:
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = loaded
    return loaded


# ---------------------------------------------------------------------------------------------
# One training process per workdir


class WorkdirLock:
    """An exclusive lock on a workdir for the duration of a training run.

    `fcntl.flock` on `<workdir>/.lock`: released by the kernel when the process ends, however it
    ends, so a killed run never leaves a stale lock. A second process refuses to start, with a
    message naming the holder, or with `wait_seconds` > 0 waits for it that long.
    """

    def __init__(self, workdir: str, wait_seconds: float = 0.0):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.wait_seconds = wait_seconds
        self._file = None

    def __enter__(self) -> WorkdirLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    f.close()
                    raise WorkdirInUseError(
                        f"{os.path.dirname(self.path)} is in use by {holder}; wait for it to end "
                        "or pass another --workdir (two runs in one workdir would overwrite "
                        "each other's checkpoints)"
                    ) from None
                time.sleep(1.0)
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
