"""Training and evaluation: TrainState, optimiser, pure step functions and the training loop.

The step functions and the state need no TensorFlow; `train_and_evaluate` imports the input
pipeline (tf.data) and the metric writers only when it runs.
"""

import functools
import json
import logging as pylogging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from clu import metrics
from flax.training import train_state

from fbp_jax.model import fusion as fusion_lib
from fbp_jax.model import frontend, network
from fbp_jax import parallel

Array = jax.Array
STREAM_KEYS = {"audio": ("audio", "audio_mask"), "video": ("video", "video_mask")}


class TrainState(train_state.TrainState):
    """Flax TrainState plus an exponential moving average of the parameters.

    `ema_params` is None unless `optim.ema_decay` > 0; when set, evaluation, checkpoint
    selection, prediction and export use it instead of `params`. The dropout key is derived
    from the step, so nothing else is needed.
    """

    ema_params: Any = None

    @property
    def eval_params(self) -> Any:
        """The parameters a model is evaluated with: the average when there is one."""
        return self.params if self.ema_params is None else self.ema_params


@flax.struct.dataclass
class ConfusionMatrix(metrics.Metric):
    """Counts [true, predicted] over valid examples; `compute()` is the unweighted accuracy."""

    matrix: Array

    @classmethod
    def from_model_output(cls, *, logits: Array, labels: Array, mask: Array | None = None, **_):
        n = logits.shape[-1]
        weight = jnp.ones(labels.shape, jnp.float32) if mask is None else mask.astype(jnp.float32)
        pred = jnp.argmax(logits, axis=-1)
        return cls(jnp.zeros((n, n), jnp.float32).at[labels, pred].add(weight))

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return type(self)(self.matrix + other.matrix)

    @classmethod
    def empty(cls) -> "ConfusionMatrix":
        raise NotImplementedError("the class count is known only from model output")

    def compute(self) -> Array:
        """Mean recall over the classes present (unweighted accuracy, UA)."""
        return compute_unweighted_accuracy(self.matrix)


def compute_unweighted_accuracy(confusion: Array | np.ndarray) -> Array:
    """Mean per-class recall over classes with at least one example: [N, N] -> scalar."""
    support = confusion.sum(axis=1)
    recall = jnp.diag(confusion) / jnp.maximum(support, 1)
    present = support > 0
    return jnp.sum(jnp.where(present, recall, 0.0)) / jnp.maximum(present.sum(), 1)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
    loss: metrics.Average.from_output("loss")
    accuracy: metrics.Accuracy
    unweighted_accuracy: ConfusionMatrix


def model_inputs(batch: dict[str, Array], fusion: str) -> dict[str, Array]:
    """The batch entries a fusion variant reads (so unused streams are not transferred)."""
    return {k: batch[k] for s in fusion_lib.streams_for(fusion) for k in STREAM_KEYS[s]}


def create_learning_rate_fn(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """Piecewise-constant schedule of the paper (e.g. lr halved after epoch 50), optional warmup.

    Reads `config.optim.learning_rate`, `lr_decay_epochs` (epochs after which the rate is
    multiplied by `lr_decay_factor`) and `warmup_epochs`.
    """
    o = config.optim
    boundaries = {int(e * steps_per_epoch): o.lr_decay_factor for e in o.lr_decay_epochs}
    schedule = optax.piecewise_constant_schedule(o.learning_rate, boundaries)
    warmup_steps = int(o.warmup_epochs * steps_per_epoch)
    if warmup_steps:
        warmup = optax.linear_schedule(0.0, o.learning_rate, warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [warmup_steps])
    return schedule


def create_optimizer(config: ml_collections.ConfigDict, lr_fn) -> optax.GradientTransformation:
    """Adam (the paper's optimiser), with optional global-norm clipping and weight decay."""
    o = config.optim
    parts = []
    if o.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.weight_decay:
        parts.append(optax.adamw(lr_fn, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
    else:
        parts.append(optax.adam(lr_fn, b1=o.b1, b2=o.b2))
    return optax.chain(*parts)


def input_spec(config: ml_collections.ConfigDict, batch_size: int = 1) -> dict[str, Any]:
    """Zero arrays shaped like one batch, for initialising parameters."""
    d = config.data
    ta, tv = frontend.clip_frames(d)
    return {
        "audio": jnp.zeros((batch_size, ta, frontend.audio_feature_size(d)), jnp.float32),
        "audio_mask": jnp.ones((batch_size, ta), bool),
        "video": jnp.zeros((batch_size, tv, *d.video_shape), jnp.float32),
        "video_mask": jnp.ones((batch_size, tv), bool),
    }


def create_train_state(
    config: ml_collections.ConfigDict, model: nn.Module, rng: Array, lr_fn
) -> TrainState:
    """Initialises parameters and the optimiser state."""
    inputs = model_inputs(input_spec(config), config.model.fusion)
    params = jax.jit(functools.partial(model.init, train=False))(rng, inputs)["params"]
    ema = params if config.optim.get("ema_decay", 0.0) > 0 else None
    return TrainState.create(
        apply_fn=model.apply, params=params, tx=create_optimizer(config, lr_fn), ema_params=ema
    )


def step_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The keyword arguments of `train_step` a config sets (its training recipe)."""
    return {
        "fusion": config.model.fusion,
        "mixup_alpha": config.get("augment", {}).get("mixup_alpha", 0.0),
        "label_smoothing": config.optim.get("label_smoothing", 0.0),
        "ema_decay": config.optim.get("ema_decay", 0.0),
    }


def cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0) -> Array:
    """Per-example softmax cross-entropy with integer labels, optionally smoothed: [B]."""
    logits = logits.astype(jnp.float32)
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def mixup(batch: dict[str, Array], inputs: dict[str, Array], alpha: float, rng: Array):
    """Mixes every example with another of the device's batch (both streams, same partner).

    Each example i gets lam_i ~ Beta(alpha, alpha), folded to >= 0.5 so that its own label
    stays the main one: x_i <- lam_i x_i + (1 - lam_i) x_p(i) for the audio and video
    features; a step is valid where either clip's is. Returns (mixed inputs, partner labels,
    lam [b]); the loss is lam CE(y_i) + (1 - lam) CE(y_p(i)).
    """
    n = batch["label"].shape[0]
    k_perm, k_lam = jax.random.split(rng)
    perm = jax.random.permutation(k_perm, n)
    lam = jax.random.beta(k_lam, alpha, alpha, (n,))
    lam = jnp.maximum(lam, 1.0 - lam)
    # Padding examples (mask 0) must not leak into real ones.
    lam = jnp.where(batch["mask"][perm] > 0, lam, 1.0)
    mixed = {}
    for key, x in inputs.items():
        if key.endswith("_mask"):
            mixed[key] = x | x[perm]
        else:
            w = lam.reshape((n,) + (1,) * (x.ndim - 1)).astype(x.dtype)
            mixed[key] = w * x + (1 - w) * x[perm]
    return mixed, batch["label"][perm], lam


def train_step(
    state: TrainState,
    batch: dict[str, Array],
    *,
    fusion: str,
    rng: Array,
    mixup_alpha: float = 0.0,
    label_smoothing: float = 0.0,
    ema_decay: float = 0.0,
) -> tuple[TrainState, TrainMetrics]:
    """One optimisation step on one device's share of the batch (call it under `pmap`).

    Args:
      state: replicated TrainState.
      batch: dict with the model inputs, `label` [b] and `mask` [b] (1 = real example).
      fusion: the fusion variant, to select the inputs.
      rng: base PRNG key; dropout and mixup keys are folded with the step and device index.
      mixup_alpha: > 0 mixes the examples of the batch (`mixup`).
      label_smoothing: smoothing of the training targets (0: none, the paper).
      ema_decay: > 0 updates `state.ema_params` (decay warmed up as min(d, (1+t)/(10+t))).

    Returns:
      (new state, TrainMetrics of this step gathered over devices; accuracy and loss are those
      of the unmixed labels).
    """
    step_rng = jax.random.fold_in(
        jax.random.fold_in(rng, state.step), jax.lax.axis_index(parallel.AXIS)
    )
    dropout_rng, mixup_rng = jax.random.split(step_rng)
    mask = batch["mask"].astype(jnp.float32)
    inputs = model_inputs(batch, fusion)
    labels = batch["label"]
    if mixup_alpha > 0:
        inputs, partner, lam = mixup(batch, inputs, mixup_alpha, mixup_rng)
    else:
        partner, lam = labels, jnp.ones(labels.shape, jnp.float32)

    def loss_fn(params):
        out = state.apply_fn({"params": params}, inputs, train=True, rngs={"dropout": dropout_rng})
        ce = lam * cross_entropy(out["logits"], labels, label_smoothing)
        ce += (1 - lam) * cross_entropy(out["logits"], partner, label_smoothing)
        return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0), out["logits"]

    (_, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, parallel.AXIS)
    new_state = state.apply_gradients(grads=grads)
    if ema_decay > 0:
        t = state.step.astype(jnp.float32)
        decay = jnp.minimum(ema_decay, (1.0 + t) / (10.0 + t))
        new_state = new_state.replace(
            ema_params=jax.tree.map(
                lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, new_state.params
            )
        )
    step_metrics = TrainMetrics.gather_from_model_output(
        loss=cross_entropy(logits, labels),
        logits=logits,
        labels=labels,
        mask=batch["mask"].astype(bool),
    )
    return new_state, step_metrics


def eval_step(state: TrainState, batch: dict[str, Array], *, fusion: str) -> EvalMetrics:
    """Metrics of one device's share of an evaluation batch; padding examples have mask 0.

    Uses the parameter average when the state has one (`TrainState.eval_params`)."""
    out = state.apply_fn({"params": state.eval_params}, model_inputs(batch, fusion), train=False)
    return EvalMetrics.gather_from_model_output(
        loss=cross_entropy(out["logits"], batch["label"]),
        logits=out["logits"],
        labels=batch["label"],
        mask=batch["mask"].astype(bool),
    )


def predict_step(state: TrainState, batch: dict[str, Array], *, fusion: str) -> dict[str, Array]:
    """Model outputs (logits, attention weights, mu, eta, embedding) for one device's batch."""
    return state.apply_fn(
        {"params": state.eval_params}, model_inputs(batch, fusion), train=False
    )


def evaluate(p_eval_step: Callable, state: TrainState, batches: Iterable[Any]) -> EvalMetrics:
    """Runs a pmapped eval step over every batch (already sharded) and merges the metrics."""
    total = None
    for batch in batches:
        m = parallel.unreplicate(p_eval_step(state, batch))
        total = m if total is None else total.merge(m)
    if total is None:
        raise ValueError("the evaluation split gave no batch")
    return total


def summarize(m: metrics.Collection, prefix: str) -> dict[str, float]:
    """Host scalars of a metrics collection, keys prefixed (e.g. 'eval_accuracy')."""
    return {f"{prefix}{k}": float(v) for k, v in m.compute().items()}


# ---------------------------------------------------------------------------------------------
# Checkpoints


class _QuietLibraries(pylogging.Filter):
    """Drops the INFO chatter of orbax (dozens of lines per save) from the absl log."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        noisy = f"{os.sep}orbax{os.sep}" in record.pathname or "replica_slices" in record.pathname
        return record.levelno >= pylogging.WARNING or not noisy


logging.get_absl_logger().addFilter(_QuietLibraries())


def create_checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
    """Keeps the latest checkpoint and the best one on validation accuracy."""
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [
            ocp.checkpoint_managers.LatestN(1),
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
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


def best_step(manager: ocp.CheckpointManager) -> int | None:
    """The saved step with the highest validation accuracy (None if none has metrics)."""
    if not any(manager.metrics(step) for step in manager.all_steps()):
        return None
    return manager.best_step()


def restore_state(manager: ocp.CheckpointManager, step: int, target: TrainState) -> TrainState:
    """Restores the unreplicated state saved at `step` into the structure of `target`.

    Leaves come back as numpy arrays, which every process of a multi-process run can read.
    """
    return manager.restore(step, args=ocp.args.StandardRestore(jax.device_get(target)))


def load_params(workdir: str, target: TrainState, which: str = "best") -> tuple[Any, int]:
    """Parameters of a finished run: its best-on-validation ('best') or latest checkpoint."""
    manager = create_checkpoint_manager(workdir)
    step = best_step(manager) if which == "best" else manager.latest_step()
    if step is None:
        step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {os.path.join(workdir, 'checkpoints')}")
    return restore_state(manager, step, target).eval_params, step


def init_from_single_modality(config: ml_collections.ConfigDict, state: TrainState) -> TrainState:
    """Copies encoder and attention parameters from single-modality runs (config.init)."""
    params = flax.core.unfreeze(state.params)
    for stream, workdir in (
        ("audio", config.init.audio_workdir),
        ("video", config.init.video_workdir),
    ):
        if not workdir:
            continue
        src_cfg = load_config(workdir)
        src_model = network.get_model(src_cfg)
        target = create_train_state(src_cfg, src_model, jax.random.key(0), lambda _: 0.0)
        src, step = load_params(workdir, target)
        for name in (f"{stream}_encoder", f"{stream}_attention"):
            if name in src and name in params:
                params[name] = src[name]
        logging.info("Initialised the %s stream from %s (step %d).", stream, workdir, step)
    ema = None if state.ema_params is None else params
    return state.replace(params=params, ema_params=ema)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with."""
    with open(os.path.join(workdir, "config.json")) as f:
        return ml_collections.ConfigDict(json.load(f))


# ---------------------------------------------------------------------------------------------
# The loop


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains a model, evaluating and checkpointing periodically; resumes from `workdir`.

    Args:
      config: a full config (see configs/common.py).
      workdir: where checkpoints, the config, normalisation statistics and logs go.

    Returns:
      dict with `step`, `best_step` and the validation metrics of the last and best checkpoints
      (`eval_*`, `best_eval_*`).
    """
    # TensorFlow-dependent pieces are imported here only.
    from clu import metric_writers, periodic_actions

    from fbp_jax import input_pipeline

    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:  # Files outside the checkpoints: written by process 0 only.
        save_config(config, workdir)
    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=False
    )
    data = input_pipeline.create_datasets(config, workdir)
    steps_per_epoch = data.train_examples // config.batch_size
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
    lr_fn = create_learning_rate_fn(config, steps_per_epoch)
    rng, init_rng = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(config, model, init_rng, lr_fn)
    manager = create_checkpoint_manager(workdir)
    if manager.latest_step() is not None:
        state = restore_state(manager, manager.latest_step(), state)
        logging.info("Resumed from step %d.", int(state.step))
    elif config.init.audio_workdir or config.init.video_workdir:
        state = init_from_single_modality(config, state)
    start_step = int(state.step)
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    writer.write_hparams({"num_params": n_params, "fusion": config.model.fusion})

    fusion = config.model.fusion
    p_train_step = parallel.pmap(
        functools.partial(train_step, **step_options(config)), donate_state=True
    )
    p_eval_step = parallel.pmap(functools.partial(eval_step, fusion=fusion))
    state = parallel.replicate(state)
    step_rng = parallel.replicate(rng)

    train_iter = parallel.prefetch(data.train_iter(seed=config.seed + start_step))
    report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer)
    hooks = [report]
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
            state, m = p_train_step(state, next(train_iter), rng=step_rng)
            train_metrics.append(m)
        for hook in hooks:
            hook(step)
        if step % config.log_every_steps == 0 or step == num_steps:
            merged = functools.reduce(
                lambda a, b: a.merge(b), map(parallel.unreplicate, train_metrics)
            )
            scalars = summarize(merged, "train_")
            scalars["learning_rate"] = float(lr_fn(step - 1))
            writer.write_scalars(step, scalars)
            train_metrics = []
        if step % eval_every == 0 or step == num_steps:
            eval_start = time.perf_counter()
            with report.timed("eval"):
                em = evaluate(p_eval_step, state, parallel.prefetch(data.eval_batches()))
            last_eval = summarize(em, "eval_")
            writer.write_scalars(step, last_eval)
            manager.save(
                step, args=ocp.args.StandardSave(parallel.host_copy(state)), metrics=last_eval
            )
            if timer_start is not None:
                eval_seconds += time.perf_counter() - eval_start
        elif step % config.checkpoint_every_steps == 0:
            manager.save(step, args=ocp.args.StandardSave(parallel.host_copy(state)))
    manager.wait_until_finished()
    writer.flush()

    result: dict[str, Any] = {
        "step": int(parallel.unreplicate(state.step)),
        **last_eval,
        "num_params": n_params,
    }
    if timer_start is not None and num_steps - start_step > 1:
        jax.block_until_ready(state)
        seconds = time.perf_counter() - timer_start - eval_seconds
        result["train_steps_per_sec"] = (num_steps - start_step - 1) / seconds
    best = best_step(manager)
    if best is not None:
        result["best_step"] = best
        result.update({f"best_{k}": v for k, v in manager.metrics(best).items()})
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "result.json"), "w") as f:
            json.dump(result, f, indent=2)
    manager.close()
    return result
