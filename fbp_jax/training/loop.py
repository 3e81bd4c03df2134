"""The training loop: `train_and_evaluate(config, workdir)`, resumable and safe to kill.

* One process per workdir: `workdir.WorkdirLock` makes a second training process on the same
  workdir stop with a message naming the one that holds it.
* Resumes from the newest checkpoint that reads back whole; a damaged one is moved aside
  (`workdir.restore_latest_good`). The data stream is a function of (seed, step), and dropout
  keys are folded from the step, so a killed and resumed run ends with the same parameters
  and metrics as one that was never interrupted.
* Everything outside the checkpoints is written atomically (`fbp_jax.io`) by process 0.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from fbp_jax import io, parallel
from fbp_jax import workdir as workdir_lib
from fbp_jax.model import frontend, network
from fbp_jax.training import steps


def init_from_single_modality(
    config: ml_collections.ConfigDict, state: steps.TrainState
) -> steps.TrainState:
    """Copies encoder and attention parameters from single-modality runs (config.init)."""
    params = flax.core.unfreeze(state.params)
    for stream, workdir in (
        ("audio", config.init.audio_workdir),
        ("video", config.init.video_workdir),
    ):
        if not workdir:
            continue
        if stream == "audio":
            _check_audio_view(config, workdir)
        src, step = workdir_lib.load_params(workdir, "best")
        copied = [
            n
            for n in (f"{stream}_encoder", f"{stream}_attention", f"{stream}_statistics")
            if n in src
        ]
        for name in copied:
            if name in params:
                params[name] = jax.tree.map(
                    lambda new, old: old.astype(new.dtype).reshape(new.shape),
                    params[name],
                    src[name],
                )
        aux = f"{stream}_aux"  # Its own classifier beside the fusion: the run's classifier.
        if aux in params and "classifier" in src.get("fusion", {}):
            params[aux] = jax.tree.map(
                lambda new, old: old.astype(new.dtype).reshape(new.shape),
                params[aux],
                src["fusion"]["classifier"],
            )
            copied.append(aux)
        logging.info("Initialised %s from %s (step %d).", ", ".join(copied), workdir, step)
    ema = None if state.ema_params is None else params
    return state.replace(params=params, ema_params=ema)


def _check_audio_view(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Raises if `workdir`'s audio encoder was trained on another view of the audio than
    `config` shows it (`frontend.view_settings`): it would be fine-tuned on inputs it never
    saw, silently."""
    there = frontend.view_settings(workdir_lib.load_config(workdir).data)
    here = frontend.view_settings(config.data)

    def shown(view, key):
        return repr(view[key]) if key in view else "without effect"

    differ = [
        f"{k} {shown(there, k)} there, {shown(here, k)} here"
        for k in frontend.AUDIO_VIEW_DEFAULTS
        if there.get(k) != here.get(k)
    ]
    if differ:
        raise workdir_lib.WorkdirError(
            f"{workdir}: its audio encoder was trained on another view of the audio "
            f"({'; '.join(differ)}); give this run the same --config.data settings"
        )


def train_step_fn(config: ml_collections.ConfigDict):
    """`steps.train_step` with a config's recipe, as `DataParallel.compile` takes it:
    (state, batch, rng)."""
    options = steps.step_options(config)
    return lambda state, batch, rng: steps.train_step(state, batch, rng=rng, **options)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains a model, evaluating and checkpointing periodically; resumes from `workdir`.

    Args:
      config: a full config (see configs/common.py).
      workdir: where checkpoints, the config, normalisation statistics and logs go.

    Returns:
      dict with `step`, `best_step` and the validation metrics of the last and best checkpoints
      (`eval_*`, `best_eval_*`).

    Raises:
      workdir.WorkdirInUseError: another process is training in `workdir`.
      io.DiskFullError: the workdir's file system is full (before starting, when a checkpoint
        would not fit, or during the run); one line, and a rerun resumes.
    """
    need: dict[str, int] = {}
    with io.full_disk_as_one_line(workdir, "training", RERUN, needed=lambda: need.get("bytes")):
        os.makedirs(workdir, exist_ok=True)
        if jax.process_index() > 0:  # The processes of one multi-host job share the workdir.
            return _train_and_evaluate(config, workdir, need)
        with workdir_lib.WorkdirLock(workdir):
            return _train_and_evaluate(config, workdir, need)


RERUN = (
    "Free space and run the same command again: training resumes from its last complete checkpoint."
)


def space_needed(state: steps.TrainState) -> int:
    """Bytes a run needs free: one more checkpoint of `state` beside those kept, and room for
    event files and records (a checkpoint is written whole before the oldest is removed)."""
    state_bytes = sum(
        x.nbytes for x in jax.tree.leaves(jax.device_get(state)) if hasattr(x, "nbytes")
    )
    return 2 * state_bytes + 8 * 2**20


def _train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, need: dict[str, int]
) -> dict[str, Any]:
    # TensorFlow-dependent pieces are imported here only.
    from clu import metric_writers, periodic_actions

    from fbp_jax import input_pipeline

    lead = jax.process_index() == 0  # Files outside the checkpoints: process 0 only.
    if lead:
        workdir_lib.save_config(config, workdir)
    writer = metric_writers.create_default_writer(
        workdir, just_logging=not lead, asynchronous=False
    )
    data = input_pipeline.create_datasets(config, workdir)
    if lead:
        workdir_lib.save_dataset_info(workdir, config.data.name, data.class_names, data.split_sizes)
    steps_per_epoch = data.steps_per_epoch
    num_steps = config.num_train_steps
    if num_steps <= 0:
        num_steps = int(config.num_epochs * steps_per_epoch)
    eval_every = config.eval_every_steps if config.eval_every_steps > 0 else steps_per_epoch
    logging.info(
        "%d train examples, %d steps per epoch, %d steps; fusion %s.",
        data.train_examples,
        steps_per_epoch,
        num_steps,
        config.model.fusion,
    )

    model = network.get_model(config)
    lr_fn = steps.create_learning_rate_fn(config, steps_per_epoch)
    rng, init_rng = jax.random.split(jax.random.key(config.seed))
    state = steps.create_train_state(config, model, init_rng, lr_fn)
    need["bytes"] = space_needed(state)
    if lead:
        io.require_space(workdir, need["bytes"], "training", RERUN)
    manager = workdir_lib.create_checkpoint_manager(workdir)
    dp = parallel.DataParallel(config.get("parallel", "pmap"))

    def save(step, state, metrics=None):
        """A checkpoint, refused before it starts when it would not fit; the checkpointer's
        threads' own reports of a full disk are dropped for the one-line error."""
        if lead:
            io.require_space(workdir, need["bytes"] // 2, "training", RERUN)
        with io.quiet_stderr_on_full_disk():
            args = ocp.args.StandardSave(dp.host_copy(state))
            manager.save(step, args=args, metrics=metrics)
            manager.wait_until_finished()

    try:
        restored = workdir_lib.restore_latest_good(manager, jax.device_get(state))
        if restored is not None:
            state, step = restored
            logging.info("Resumed from step %d.", step)
        elif config.init.audio_workdir or config.init.video_workdir:
            state = init_from_single_modality(config, state)
        start_step = int(state.step)
        n_params = sum(x.size for x in jax.tree.leaves(state.params))
        writer.write_hparams({"num_params": n_params, "fusion": config.model.fusion})

        fusion = config.model.fusion
        p_train_step = dp.compile(train_step_fn(config), donate_state=True, num_replicated=1)
        p_eval_step = dp.compile(functools.partial(steps.eval_step, fusion=fusion))
        state = dp.replicate(state)
        step_rng = dp.replicate(rng)

        train_iter = dp.prefetch(data.train_iter(config.seed, start_step))
        report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
        train_metrics = []
        last_eval: dict[str, float] = {}
        logging.info("Starting training at step %d.", start_step)
        # Throughput of the train steps alone: from the end of the first (compiling) step, with
        # the evaluation time taken out.
        timer_start, eval_seconds = None, 0.0
        for step in range(start_step + 1, num_steps + 1):
            if step == start_step + 2:
                jax.block_until_ready(state)
                timer_start = time.perf_counter()
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, m = p_train_step(state, next(train_iter), step_rng)
                train_metrics.append(m)
            report(step)
            if step % config.log_every_steps == 0 or step == num_steps:
                merged = functools.reduce(
                    lambda a, b: a.merge(b), map(dp.unreplicate, train_metrics)
                )
                scalars = steps.to_scalars(merged, "train_")
                scalars["learning_rate"] = float(lr_fn(step - 1))
                writer.write_scalars(step, scalars)
                train_metrics = []
            if step % eval_every == 0 or step == num_steps:
                eval_start = time.perf_counter()
                with report.timed("eval"):
                    em = steps.evaluate_batches(
                        p_eval_step, state, dp.prefetch(data.eval_batches()), dp.unreplicate
                    )
                last_eval = steps.to_scalars(em, "eval_")
                writer.write_scalars(step, last_eval)
                save(step, state, last_eval)
                if timer_start is not None:
                    eval_seconds += time.perf_counter() - eval_start
            elif step % config.checkpoint_every_steps == 0:
                save(step, state)
        manager.wait_until_finished()
        if not last_eval:
            # Resumed at (or past) the last step: no step ran, so no evaluation did. The final
            # checkpoint stores its metrics; a checkpoint without them is evaluated once.
            stored = manager.metrics(start_step) if start_step in manager.all_steps() else None
            if stored:
                last_eval = {k: float(v) for k, v in stored.items()}
            else:
                em = steps.evaluate_batches(
                    p_eval_step, state, dp.prefetch(data.eval_batches()), dp.unreplicate
                )
                last_eval = steps.to_scalars(em, "eval_")
                writer.write_scalars(start_step, last_eval)
        writer.flush()

        result: dict[str, Any] = {
            "step": int(dp.unreplicate(state.step)),
            **last_eval,
            "num_params": n_params,
        }
        if timer_start is not None and num_steps - start_step > 1:
            jax.block_until_ready(state)
            seconds = time.perf_counter() - timer_start - eval_seconds
            result["train_steps_per_sec"] = (num_steps - start_step - 1) / seconds
        best = workdir_lib.best_step(manager)
        if best is not None:
            result["best_step"] = best
            result.update({f"best_{k}": v for k, v in manager.metrics(best).items()})
        if lead:
            io.write_json(result, os.path.join(workdir, workdir_lib.RESULT_FILE), indent=2)
    except BaseException:
        # Close the checkpointer's threads before the error leaves (a full disk, a kill of
        # the data pipeline): nothing of theirs may print after the one-line message.
        with contextlib.suppress(Exception):
            manager.close()
        raise
    manager.close()
    return result
