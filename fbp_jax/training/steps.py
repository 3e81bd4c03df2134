"""Pure training and evaluation steps: TrainState, metrics, optimiser, losses, mixup.

Nothing here needs TensorFlow or touches files: `loop.train_and_evaluate` feeds these step
functions from the input pipeline under `jax.pmap`, and the benchmark feeds them in-memory
arrays.
"""

import functools
from collections.abc import Callable, Iterable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from clu import metrics as clu_metrics
from flax.training import train_state

from fbp_jax import metrics, parallel
from fbp_jax.model import frontend

Array = jax.Array


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
class ConfusionMatrix(clu_metrics.Metric):
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
        return metrics.unweighted_accuracy(self.matrix)


@flax.struct.dataclass
class TrainMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
    loss: clu_metrics.Average.from_output("loss")
    accuracy: clu_metrics.Accuracy
    unweighted_accuracy: ConfusionMatrix


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
    """Adam (the paper's optimiser), with optional global-norm clipping and weight decay;
    the top-level parameter groups named in `optim.frozen` (e.g. 'audio_encoder') are not
    updated."""
    o = config.optim
    parts = []
    if o.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.weight_decay:
        parts.append(optax.adamw(lr_fn, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
    else:
        parts.append(optax.adam(lr_fn, b1=o.b1, b2=o.b2))
    tx = optax.chain(*parts)
    frozen = tuple(o.get("frozen", ()))
    if not frozen:
        return tx

    def labels(params):
        unknown = sorted(set(frozen) - set(params))
        if unknown:
            raise ValueError(f"optim.frozen names {unknown}; the groups are {sorted(params)}")
        return {
            k: jax.tree.map(lambda _, k=k: "frozen" if k in frozen else "train", v)
            for k, v in params.items()
        }

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def create_train_state(
    config: ml_collections.ConfigDict, model: nn.Module, rng: Array, lr_fn
) -> TrainState:
    """Initialises parameters and the optimiser state."""
    inputs = frontend.model_inputs(frontend.input_spec(config), config.model.fusion)
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
        "aux_loss_weight": config.model.get("aux_loss_weight", 0.0),
        "consistency_weight": config.get("augment", {}).get("consistency_weight", 0.0),
    }


def cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0) -> Array:
    """Per-example softmax cross-entropy with integer labels, optionally smoothed: [B]."""
    logits = logits.astype(jnp.float32)
    if not label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def jensen_shannon(logits_a: Array, logits_b: Array) -> Array:
    """Per-example Jensen-Shannon divergence (nats) of two posteriors given as logits: [B]."""
    log_p = jax.nn.log_softmax(logits_a.astype(jnp.float32))
    log_q = jax.nn.log_softmax(logits_b.astype(jnp.float32))
    log_m = jnp.logaddexp(log_p, log_q) - jnp.log(2.0)  # Finite where both underflow.

    def kl_to_m(log_x):
        return jnp.sum(jnp.exp(log_x) * (log_x - log_m), axis=-1)

    return 0.5 * (kl_to_m(log_p) + kl_to_m(log_q))


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
    aux_loss_weight: float = 0.0,
    consistency_weight: float = 0.0,
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
      aux_loss_weight: > 0 adds this weight times the mean loss of each stream's own
        classifier (`aux_*_logits`, two-stream models with `model.aux_loss_weight`).
      consistency_weight: > 0 reads the batch's second view of every clip
        (`frontend.SECOND_VIEW` keys, mixed with the same partners): the loss is the mean of
        the two views' losses plus this weight times the Jensen-Shannon divergence of their
        posteriors (AugMix's consistency).

    Returns:
      (new state, TrainMetrics of this step gathered over devices; accuracy and loss are those
      of the unmixed labels).
    """
    step_rng = jax.random.fold_in(
        jax.random.fold_in(rng, state.step), jax.lax.axis_index(parallel.AXIS)
    )
    dropout_rng, mixup_rng = jax.random.split(step_rng)
    mask = batch["mask"].astype(jnp.float32)
    inputs = frontend.model_inputs(batch, fusion)
    if consistency_weight > 0:  # Both views side by side, mixed alike.
        inputs.update({frontend.SECOND_VIEW + k: batch[frontend.SECOND_VIEW + k] for k in inputs})
    labels = batch["label"]
    if mixup_alpha > 0:
        inputs, partner, lam = mixup(batch, inputs, mixup_alpha, mixup_rng)
    else:
        partner, lam = labels, jnp.ones(labels.shape, jnp.float32)

    def mixed_ce(logits):
        ce = lam * cross_entropy(logits, labels, label_smoothing)
        return ce + (1 - lam) * cross_entropy(logits, partner, label_smoothing)

    def view_loss(out):
        ce = mixed_ce(out["logits"])
        aux = [out[k] for k in ("aux_audio_logits", "aux_video_logits") if k in out]
        if aux_loss_weight > 0 and aux:
            ce += aux_loss_weight * sum(mixed_ce(x) for x in aux) / len(aux)
        return ce

    views = [inputs]  # Each view's model inputs, run as one batch.
    if consistency_weight > 0:
        p = frontend.SECOND_VIEW
        views = [
            {k: v for k, v in inputs.items() if not k.startswith(p)},
            {k.removeprefix(p): v for k, v in inputs.items() if k.startswith(p)},
        ]
    n = labels.shape[0]

    def loss_fn(params):
        both = {k: jnp.concatenate([v[k] for v in views]) for k in views[0]}
        out = state.apply_fn({"params": params}, both, train=True, rngs={"dropout": dropout_rng})
        outs = [
            {k: v[i * n : (i + 1) * n] for k, v in out.items() if k.endswith("logits")}
            for i in range(len(views))
        ]
        ce = sum(view_loss(o) for o in outs) / len(outs)
        if consistency_weight > 0:
            ce += consistency_weight * jensen_shannon(outs[0]["logits"], outs[1]["logits"])
        return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0), outs[0]["logits"]

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
    out = state.apply_fn(
        {"params": state.eval_params}, frontend.model_inputs(batch, fusion), train=False
    )
    return EvalMetrics.gather_from_model_output(
        loss=cross_entropy(out["logits"], batch["label"]),
        logits=out["logits"],
        labels=batch["label"],
        mask=batch["mask"].astype(bool),
    )


def predict_step(state: TrainState, batch: dict[str, Array], *, fusion: str) -> dict[str, Array]:
    """Model outputs (logits, attention weights, mu, eta, embedding) for one device's batch."""
    return state.apply_fn(
        {"params": state.eval_params}, frontend.model_inputs(batch, fusion), train=False
    )


def evaluate_batches(
    p_eval_step: Callable,
    state: TrainState,
    batches: Iterable[Any],
    unreplicate: Callable[[Any], Any] = parallel.unreplicate,
) -> EvalMetrics:
    """Runs a compiled eval step over every batch (already placed) and merges the metrics
    (`unreplicate`: the data-parallel path's, `parallel.DataParallel.unreplicate`)."""
    total = None
    for batch in batches:
        m = unreplicate(p_eval_step(state, batch))
        total = m if total is None else total.merge(m)
    if total is None:
        raise ValueError("the evaluation split gave no batch")
    return total


def to_scalars(m: clu_metrics.Collection, prefix: str) -> dict[str, float]:
    """Host scalars of a metrics collection, keys prefixed (e.g. 'eval_accuracy')."""
    return {f"{prefix}{k}": float(v) for k, v in m.compute().items()}
