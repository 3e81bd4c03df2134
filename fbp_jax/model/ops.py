"""Pure-function kernels of AM-FBP: no parameters, no state, no TensorFlow.

Every function takes arrays (and, where the math needs them, weight arrays) and returns arrays, so
it can be used under `jax.jit`, `jax.vmap` and `jax.grad` inside any JAX model. Equation numbers
refer to Zhou et al., "Information Fusion in Attention Networks Using Adaptive and Multi-level
Factorized Bilinear Pooling for Audio-visual Emotion Recognition", TASLP 2021.

Shape legend: `B` batch, `T` time steps, `C`/`D` feature sizes, `O` FBP output size, `K` FBP
factor (latent) size, `H` number of trunks.

Example, fusing two pooled embeddings in your own model::

    from fbp_jax.model import ops
    i_g = ops.factorized_bilinear_pooling(
        e_a, e_v, p_kernel, p_bias, q_kernel, q_bias, factor=4)   # [B, O]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def local_response_normalization(
    x: Array,
    depth_radius: int = 2,
    bias: float = 2.0,
    alpha: float = 1e-4,
    beta: float = 0.75,
) -> Array:
    """Local response normalisation across the last (channel) axis (paper Eq. 1).

    Same definition and constants as `tf.nn.local_response_normalization`::

        sqr_sum[..., d] = sum(x[..., d - depth_radius : d + depth_radius + 1] ** 2)
        out = x / (bias + alpha * sqr_sum) ** beta

    The AlexNet constants of the paper are n = 5 (depth_radius = 2), k = 2, alpha = 1e-4,
    beta = 0.75, with alpha NOT divided by n (PyTorch's `LocalResponseNorm` divides by n, so its
    equivalent alpha is 5e-4).

    Args:
      x: [..., channels] activations (channels last).
      depth_radius: half-width of the channel window (n = 2 * depth_radius + 1).
      bias: the additive constant k.
      alpha: scale of the squared sum.
      beta: exponent.

    Returns:
      Array of the shape and dtype of `x`.
    """
    sq = jnp.square(x.astype(jnp.float32))
    window = (1,) * (x.ndim - 1) + (2 * depth_radius + 1,)
    padding = ((0, 0),) * (x.ndim - 1) + ((depth_radius, depth_radius),)
    sqr_sum = lax.reduce_window(sq, 0.0, lax.add, window, (1,) * x.ndim, padding)
    base = bias + alpha * sqr_sum
    if beta == 0.75:  # AlexNet's exponent as r * sqrt(r), r = base^-1/2: no pow (exp + log)
        root = lax.rsqrt(base)
        scale = root * jnp.sqrt(root)
    elif beta == 0.5:
        scale = lax.rsqrt(base)
    else:
        scale = jnp.power(base, -beta)
    return (x * scale).astype(x.dtype)


def masked_softmax(
    logits: Array, mask: Array | None = None, temperature: float | Array = 1.0, axis: int = -1
) -> Array:
    """Softmax of `temperature * logits` over the valid (mask = True) entries (Eq. 4, 9).

    Masked entries get exactly zero weight; a row with no valid entry gets all zeros (not NaN).
    `temperature = 0` gives uniform weights over the valid entries.

    Args:
      logits: [..., T] scores.
      mask: boolean [..., T] (broadcastable), True for valid entries; None means all valid.
      temperature: lambda of the paper; scalar or broadcastable array.
      axis: axis to normalise over.

    Returns:
      [..., T] weights summing to 1 over valid entries (0 for an all-masked row).
    """
    z = temperature * logits
    if mask is None:
        return jax.nn.softmax(z, axis=axis)
    mask = jnp.broadcast_to(mask, z.shape)
    z = jnp.where(mask, z, jnp.finfo(z.dtype).min)
    z = z - lax.stop_gradient(jnp.max(z, axis=axis, keepdims=True))
    e = jnp.where(mask, jnp.exp(z), 0.0)
    denom = jnp.sum(e, axis=axis, keepdims=True)
    return e / jnp.where(denom > 0, denom, 1.0)


class AttentionOutput(NamedTuple):
    """Result of `attention_pooling`.

    Attributes:
      pooled: [B, C] global vector e^g (Eq. 6, 11).
      weighted: [B, T, C] weighted elements e^i = weight_i * x_i (Eq. 5, 10).
      weights: [B, T] attention weights (Eq. 4, 9); zero on masked steps.
    """

    pooled: Array
    weighted: Array
    weights: Array


def attention_pooling(
    values: Array,
    keys: Array,
    query: Array,
    mask: Array | None = None,
    temperature: float | Array = 1.0,
) -> AttentionOutput:
    """Self-attention pooling over time (Eq. 3-6 for audio, Eq. 8-11 for video).

    gamma_i = query^T tanh(keys_i); weights = masked_softmax(gamma, mask, temperature);
    e_i = weights_i * values_i; e_g = sum_i e_i. For the audio stream `keys = W a_i + b`
    (Eq. 3); for the video stream `keys = values = Conv(v_i)` (Eq. 8).

    Args:
      values: [B, T, C] elements to pool.
      keys: [B, T, C'] pre-tanh representation used for scoring.
      query: [C'] the learnable vector u.
      mask: boolean [B, T]; True for valid (unpadded) steps.
      temperature: lambda; 0 gives uniform weights over valid steps.

    Returns:
      AttentionOutput(pooled [B, C], weighted [B, T, C], weights [B, T]).
    """
    gamma = jnp.tanh(keys) @ query
    weights = masked_softmax(gamma, mask, temperature, axis=-1)
    weighted = weights[..., None].astype(values.dtype) * values
    return AttentionOutput(jnp.sum(weighted, axis=-2), weighted, weights)


def masked_mean_pooling(values: Array, mask: Array | None = None) -> AttentionOutput:
    """Mean over the valid steps, as an `AttentionOutput` with uniform weights.

    weights_i = 1 / (number of valid steps) on valid steps, 0 on masked ones; a row with no valid
    step pools to zeros (not NaN).

    Args:
      values: [B, T, C] elements to pool.
      mask: boolean [B, T]; True for valid steps; None means all valid.

    Returns:
      AttentionOutput(pooled [B, C], weighted [B, T, C], weights [B, T]).
    """
    # Softmax of equal scores is uniform over the valid steps and handles empty rows.
    weights = masked_softmax(jnp.zeros(values.shape[:-1], jnp.float32), mask)
    weighted = weights[..., None].astype(values.dtype) * values
    return AttentionOutput(jnp.sum(weighted, axis=-2), weighted, weights)


def cross_modal_attention(
    video: Array,
    video_proj: Array,
    audio_proj: Array,
    query: Array,
    mask: Array | None = None,
    *,
    rescale: bool = False,
) -> tuple[Array, Array]:
    """Audio-guided attention over video frames with a residual re-weighting (CFN-SR).

    s_j = query^T tanh(video_proj_j + audio_proj), with video_proj_j = W_v v_j + b and
    audio_proj = W_a a (a the audio summary); w = masked_softmax(s, mask); v'_j = v_j + w_j v_j.
    The residual keeps every frame's original features, the attention only amplifies some.

    Because w sums to 1, the attention term of the mean of v' over n valid frames is
    (1 / n) sum_j w_j v_j: it shrinks as clips get longer. `rescale=True` multiplies w by n (its
    mean over valid frames becomes 1), so that mean(v') = mean(v) + sum_j w_j v_j whatever n.

    Args:
      video: [B, T, D] video sequence v.
      video_proj: [B, T, A] W_v v_j + b.
      audio_proj: [B, A] W_a a.
      query: [A] the scoring vector u.
      mask: boolean [B, T]; True for valid frames; None means all valid.
      rescale: scale the weights by the number of valid frames in the residual.

    Returns:
      (fused [B, T, D], zero on masked frames; weights [B, T], summing to 1 over valid frames
      and zero on masked ones).
    """
    scores = jnp.tanh(video_proj + audio_proj[..., None, :]) @ query
    weights = masked_softmax(scores, mask)
    valid = jnp.ones(weights.shape, bool) if mask is None else jnp.broadcast_to(mask, weights.shape)
    gain = weights * jnp.sum(valid, axis=-1, keepdims=True) if rescale else weights
    # Masked frames are zeroed so that padding never reaches what pools the result.
    scale = jnp.where(valid, 1.0 + gain, 0.0).astype(video.dtype)
    return scale[..., None] * video, weights


def sum_pooling(x: Array, factor: int) -> Array:
    """Sum over non-overlapping windows of `factor` consecutive features (Eq. 14).

    Args:
      x: [..., O * factor].
      factor: K, the window size.

    Returns:
      [..., O] with out[..., j] = sum_{d < K} x[..., j * K + d].
    """
    if x.shape[-1] % factor:
        raise ValueError(f"last axis {x.shape[-1]} is not divisible by the factor {factor}")
    return jnp.sum(x.reshape(*x.shape[:-1], x.shape[-1] // factor, factor), axis=-1)


def signed_sqrt(x: Array, eps: float = 1e-12) -> Array:
    """Signed square root sign(x) * sqrt(|x|) (the power normalisation of MFB code)."""
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x) + eps)


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
    """x / max(||x||_2, eps) along `axis`; gradient-safe at x = 0."""
    sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * lax.rsqrt(jnp.maximum(sq, eps * eps))


def dropout(x: Array, rate: float, rng: Array | None) -> Array:
    """Inverted dropout; identity when `rng` is None or `rate` is 0."""
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def bilinear_interaction(
    x_proj: Array,
    y_proj: Array,
    factor: int,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    use_signed_sqrt: bool = False,
) -> Array:
    """The FBP core after the projections: SumPool_K(x_proj o y_proj) (Eq. 13-14).

    Args:
      x_proj: [..., O * K] projected first input (P^T x + b_p).
      y_proj: [..., O * K] projected second input (Q^T y + b_q).
      factor: K.
      dropout_rate: dropout on the product before pooling (MFB reference code; 0 = paper).
      dropout_rng: PRNG key for dropout; None disables it (evaluation).
      use_signed_sqrt: apply the signed square root after pooling (MFB code; off = paper).

    Returns:
      [..., O] pooled interaction, not normalised.
    """
    z = dropout(x_proj * y_proj, dropout_rate, dropout_rng)
    z = sum_pooling(z, factor)
    return signed_sqrt(z) if use_signed_sqrt else z


def factorized_bilinear_pooling(
    x: Array,
    y: Array,
    p_kernel: Array,
    p_bias: Array | None,
    q_kernel: Array,
    q_bias: Array | None,
    factor: int,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    use_signed_sqrt: bool = False,
    normalize: bool = True,
) -> Array:
    """Factorized bilinear pooling (Eq. 12-14): the G-FBP / AG-FBP fusion kernel.

    I_j = sum_{d<K} (P~^T x + b_p)_{jK+d} (Q~^T y + b_q)_{jK+d}, then L2 normalisation.
    With zero biases, I_j = x^T (P_j Q_j^T) y, the low-rank bilinear form of Eq. 13.

    Args:
      x: [B, C] first modality (audio e_a^g, or mu * e_a^g for AG-FBP).
      y: [B, D] second modality (video e_v^g, or eta * e_v^g).
      p_kernel: [C, O * K] audio projection P~.
      p_bias: [O * K] or None.
      q_kernel: [D, O * K] video projection Q~.
      q_bias: [O * K] or None.
      factor: K (K_G = 4 in the paper).
      dropout_rate, dropout_rng, use_signed_sqrt: see `bilinear_interaction`.
      normalize: L2-normalise the output (the paper does).

    Returns:
      [B, O] fused vector I.
    """
    xp = x @ p_kernel
    yp = y @ q_kernel
    if p_bias is not None:
        xp = xp + p_bias
    if q_bias is not None:
        yp = yp + q_bias
    out = bilinear_interaction(
        xp,
        yp,
        factor,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        use_signed_sqrt=use_signed_sqrt,
    )
    return l2_normalize(out) if normalize else out


def multi_level_fbp(
    x_trunks: Array,
    y_trunks: Array,
    p_kernels: Array,
    p_biases: Array | None,
    q_kernels: Array,
    q_biases: Array | None,
    factor: int,
    *,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    use_signed_sqrt: bool = False,
    normalize: bool = True,
) -> Array:
    """Intra-trunk FBP (Eq. 19): I^M = sum_h SumPool_K(P_h^T x_h o Q_h^T y_h), then L2 norm.

    Each trunk h has its own projections P_h, Q_h.

    Args:
      x_trunks: [B, H, C] audio trunk vectors e_a^h (see `trunk_pooling`).
      y_trunks: [B, H, D] video trunk vectors e_v^h.
      p_kernels: [H, C, O * K]; p_biases: [H, O * K] or None.
      q_kernels: [H, D, O * K]; q_biases: [H, O * K] or None.
      factor: K (K_M = 2 in the paper).
      dropout_rate, dropout_rng, use_signed_sqrt, normalize: as in
        `factorized_bilinear_pooling`.

    Returns:
      [B, O] fused vector I^M.
    """
    xp = jnp.einsum("bhc,hcn->bhn", x_trunks, p_kernels)
    yp = jnp.einsum("bhd,hdn->bhn", y_trunks, q_kernels)
    if p_biases is not None:
        xp = xp + p_biases
    if q_biases is not None:
        yp = yp + q_biases
    # Dropout and the signed root act per trunk, before the sum over trunks.
    per_trunk = bilinear_interaction(
        xp,
        yp,
        factor,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        use_signed_sqrt=use_signed_sqrt,
    )
    out = jnp.sum(per_trunk, axis=-2)
    return l2_normalize(out) if normalize else out


def adaptive_weights(e_a: Array, e_v: Array, eps: float = 1e-8) -> tuple[Array, Array]:
    """Per-example modality factors of AG-FBP (Eq. 15-16).

    mu = |e_a| / (|e_a| + |e_v|), eta = |e_v| / (|e_a| + |e_v|), so mu + eta = 1.

    Args:
      e_a: [B, C] audio global vector.
      e_v: [B, D] video global vector.
      eps: keeps the ratio finite when both vectors are zero (then mu = eta = 0.5).

    Returns:
      (mu [B], eta [B]).
    """
    na = jnp.sqrt(jnp.sum(jnp.square(e_a), axis=-1) + eps * eps)
    nv = jnp.sqrt(jnp.sum(jnp.square(e_v), axis=-1) + eps * eps)
    total = na + nv
    return na / total, nv / total


def trunk_assignment(num_steps: int, num_trunks: int) -> Array:
    """One-hot [T, H] matrix: step i of T (padded) steps goes to trunk floor(i * H / T).

    Both streams are padded to the same clip duration, so trunk h covers the same time span in
    each stream whatever its frame rate.
    """
    trunk = (jnp.arange(num_steps) * num_trunks) // num_steps
    return jax.nn.one_hot(trunk, num_trunks, dtype=jnp.float32)


def trunk_pooling(weighted: Array, num_trunks: int) -> Array:
    """Sums attention-weighted elements per time trunk for M-FBP (Eq. 19).

    Because the inputs are the weighted elements e_i of `attention_pooling`, the trunk vectors
    sum to the global vector: sum_h out[:, h] = e^g.

    Args:
      weighted: [B, T, C] weighted elements.
      num_trunks: H.

    Returns:
      [B, H, C] trunk vectors e^h.
    """
    assign = trunk_assignment(weighted.shape[-2], num_trunks).astype(weighted.dtype)
    return jnp.einsum("btc,th->bhc", weighted, assign)


def downsample_mask(mask: Array, window: int, stride: int, padding: tuple[int, int]) -> Array:
    """Validity of each output step of a strided window op (conv or pool) along time.

    An output step is valid when the centre of its window is a valid input step. Unlike "any
    input of the window is valid", this does not let the valid region grow layer after layer,
    so a clip gives the same valid steps whatever padding follows it (T valid inputs give
    ceil(T / stride) valid outputs with the symmetric k // 2 padding of the encoders).

    Args:
      mask: boolean [B, T].
      window: window (kernel) size along time.
      stride: stride along time.
      padding: (before, after) padding along time.

    Returns:
      boolean [B, T'] with T' = (T + before + after - window) // stride + 1.
    """
    t = mask.shape[-1]
    t_out = (t + padding[0] + padding[1] - window) // stride + 1
    centre = jnp.arange(t_out) * stride - padding[0] + (window - 1) // 2
    inside = (centre >= 0) & (centre < t)
    return jnp.take(mask, jnp.clip(centre, 0, t - 1), axis=-1) & inside
