"""Convolution and max-pooling for the FCN with fast gradients on CPUs (XLA:CPU workarounds).

XLA:CPU computes the gradients of `lax.conv_general_dilated` and of max-pooling
(select-and-scatter) several times slower than their forward passes, and they dominate an FCN
training step there. The drop-ins here (two convolutions, one max-pool) have the same
parameters and results, with gradients made of matmuls and slices; `FCNEncoder(conv_impl='auto')`
uses `conv2d_matmul_grads` and `max_pool_2d` on CPU and the native ops (cuDNN) elsewhere. They are not part of the paper's method: see `ops` for that.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _check_supported(name, padding, lhs_dilation, rhs_dilation, feature_group_count) -> None:
    if any(d != 1 for d in (lhs_dilation or ())) or any(d != 1 for d in (rhs_dilation or ())):
        raise ValueError(f"{name} does not support dilation")
    if feature_group_count != 1 or isinstance(padding, str):
        raise ValueError(f"{name} needs explicit padding and feature_group_count = 1")


def conv2d_patches(
    lhs: Array,
    rhs: Array,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
) -> Array:
    """2D convolution as im2col + one matmul; a drop-in for `lax.conv_general_dilated`.

    Channels-last layout as Flax uses it (lhs [B, H, W, C], rhs [kh, kw, C, O]); no dilation,
    no feature groups. On XLA:CPU its gradient is several times faster than that of the
    native convolution (whose backward passes dominate an FCN training step there); on GPUs
    the native one (cuDNN) is the better choice. Pass it as `nn.Conv(conv_general_dilated=...)`.

    Args:
      lhs: input [B, H, W, C].
      rhs: kernel [kh, kw, C, O].
      window_strides: (sh, sw).
      padding: ((top, bottom), (left, right)).
      lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, precision: as in
        `lax.conv_general_dilated`; only the defaults Flax passes for an undilated conv.

    Returns:
      [B, H', W', O].
    """
    del dimension_numbers  # Flax's channels-last numbers; the shapes below assume them.
    _check_supported("conv2d_patches", padding, lhs_dilation, rhs_dilation, feature_group_count)
    kh, kw, c, o = rhs.shape
    sh, sw = window_strides
    x = jnp.pad(lhs, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    patches = jnp.concatenate(
        [
            x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw, :]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )  # [B, H', W', kh * kw * C], (i, j, c) order as the kernel's reshape.
    return jnp.dot(patches, rhs.reshape(kh * kw * c, o), precision=precision)


def max_pool_2d(x: Array, window: int, stride: int, padding: tuple[int, int]) -> Array:
    """Max-pool over axes 1 and 2 of [B, H, W, C], as two separable passes of strided slices.

    Equals `flax.linen.max_pool(x, (window, window), (stride, stride), (padding, padding))`;
    its gradient avoids XLA's select-and-scatter, which is slow on CPUs.
    """
    x = jnp.pad(x, ((0, 0), padding, padding, (0, 0)), constant_values=-jnp.inf)
    for axis in (2, 1):
        n = (x.shape[axis] - window) // stride + 1
        parts = [
            lax.slice_in_dim(x, i, i + stride * (n - 1) + 1, stride, axis) for i in range(window)
        ]
        x = functools.reduce(jnp.maximum, parts)
    return x


_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def _native(x: Array, w: Array, padding) -> Array:
    return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=_DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_matmul_grads(x: Array, w: Array, padding) -> Array:
    return _native(x, w, padding)


def _conv_matmul_grads_fwd(x, w, padding):
    return _native(x, w, padding), (x, w)


def _conv_matmul_grads_bwd(padding, residuals, g):
    x, w = residuals
    kh, kw, c, o = w.shape
    ho, wo = g.shape[1:3]
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    g2 = g.reshape(-1, o)
    # dW: one matmul per kernel tap, the input view that tap reads against the output gradient.
    dw = jnp.stack(
        [
            jnp.stack([xp[:, i : i + ho, j : j + wo].reshape(-1, c).T @ g2 for j in range(kw)])
            for i in range(kh)
        ]
    )
    # dx: the transposed convolution, itself a forward convolution of g.
    flipped = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    pads = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip((kh, kw), padding))
    return _native(g, flipped, pads), dw


_conv_matmul_grads.defvjp(_conv_matmul_grads_fwd, _conv_matmul_grads_bwd)


def conv2d_matmul_grads(lhs: Array, rhs: Array, window_strides, padding, **options) -> Array:
    """The native convolution forward with gradients as matmuls; a drop-in for
    `lax.conv_general_dilated` with the arguments (and limits) of `conv2d_patches`.

    XLA:CPU's forward convolution is fast, its gradients are not, and `conv2d_patches`
    materialises every patch. Here, for stride 1, the forward pass is the native convolution,
    the kernel gradient one matmul per kernel tap and the input gradient the transposed
    convolution (a forward convolution of the output gradient); strided convolutions (the
    FCN's first layer, one input channel) go to `conv2d_patches`, faster there.
    """
    if tuple(window_strides) != (1, 1):
        return conv2d_patches(lhs, rhs, window_strides, padding, **options)
    _check_supported(
        "conv2d_matmul_grads",
        padding,
        options.get("lhs_dilation"),
        options.get("rhs_dilation"),
        options.get("feature_group_count", 1),
    )
    return _conv_matmul_grads(lhs, rhs, tuple(tuple(int(p) for p in pair) for pair in padding))
