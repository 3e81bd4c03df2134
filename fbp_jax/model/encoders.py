"""Encoders: the 1D-ABFCN convolutional stack (audio, markers) and the face-feature reduction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbp_jax.model import conv, ops

Array = jax.Array

# `FCNEncoder.conv_impl` -> the convolution `nn.Conv` runs (None: lax.conv_general_dilated).
CONV_IMPLS = {
    "xla": None,
    "patches": conv.conv2d_patches,
    "matmul_grads": conv.conv2d_matmul_grads,
}

Dtype = Any


class FCNEncoder(nn.Module):
    """Fully convolutional encoder of the 1D-ABFCN (paper Fig. 3, Eq. 1-2).

    Input is an image [B, T, F, C_in] with time first: a spectrogram [B, T, 200, 1] or a marker
    sequence [B, T, M, 3]. Each layer is conv -> ReLU -> LRN (-> 3x3/2 max-pool). Padding is
    explicit and symmetric (k // 2), so output step i always covers the same input window
    whatever the clip length, and steps beyond the clip are zeroed before every op that reads
    neighbouring steps (each conv and each max-pool): a clip gives the same encoding whether
    or not padding follows it. Finally the F axis is pooled to 1, giving the sequence
    A = {a_1..a_T'} of Eq. 2.

    Attributes:
      features: output channels per conv layer (AlexNet: 96, 256, 384, 384, 256).
      kernel_sizes: square kernel size per layer.
      strides: stride per layer (both axes).
      pool_after: whether a max-pool follows each layer.
      pool_window: max-pool window (3 in AlexNet).
      pool_stride: max-pool stride (2 in AlexNet).
      use_lrn: apply local response normalisation (False: none at all, Table I's ablation).
      lrn_after: per layer, whether LRN follows its ReLU; empty: every layer (the paper's
        reading); AlexNet itself has it after conv1 and conv2 only, (True, True, False, ...).
      lrn_depth_radius, lrn_bias, lrn_alpha, lrn_beta: LRN constants (TF convention).
      freq_pooling: 'mean' or 'max' over the F axis.
      conv_impl: 'xla' (lax.conv_general_dilated), 'patches' (im2col + matmul,
        `conv.conv2d_patches`), 'matmul_grads' (`conv.conv2d_matmul_grads`: the native
        forward with gradients as matmuls, patches for the strided first layer) or 'auto'
        (matmul_grads on CPU, where XLA's convolution gradients are slow; xla elsewhere).
        All have the same parameters and results.
      dtype: computation dtype.
    """

    features: Sequence[int] = (96, 256, 384, 384, 256)
    kernel_sizes: Sequence[int] = (11, 5, 3, 3, 3)
    strides: Sequence[int] = (4, 1, 1, 1, 1)
    pool_after: Sequence[bool] = (True, True, False, False, True)
    pool_window: int = 3
    pool_stride: int = 2
    use_lrn: bool = True
    lrn_depth_radius: int = 2
    lrn_bias: float = 2.0
    lrn_alpha: float = 1e-4
    lrn_beta: float = 0.75
    lrn_after: Sequence[bool] = ()
    freq_pooling: str = "mean"
    conv_impl: str = "auto"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> tuple[Array, Array]:
        """Encodes an image.

        Args:
          x: [B, T, F, C_in] input.
          mask: boolean [B, T], True on steps inside the clip.

        Returns:
          (sequence [B, T', C_out], mask [B, T']).
        """
        if (
            not len(self.features)
            == len(self.kernel_sizes)
            == len(self.strides)
            == len(self.pool_after)
        ):
            raise ValueError("features, kernel_sizes, strides and pool_after differ in length")
        lrn_after = tuple(self.lrn_after) or (True,) * len(self.features)
        if len(lrn_after) != len(self.features):
            raise ValueError(
                f"lrn_after has {len(lrn_after)} entries for {len(self.features)} layers"
            )
        impl = self.conv_impl
        if impl == "auto":
            impl = "matmul_grads" if jax.default_backend() == "cpu" else "xla"
        if impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be 'auto' or one of {list(CONV_IMPLS)}, got {impl!r}")
        conv_fn = CONV_IMPLS[impl]
        x = x.astype(self.dtype) * mask[:, :, None, None]
        for i, (feat, k, s, pool) in enumerate(
            zip(self.features, self.kernel_sizes, self.strides, self.pool_after)
        ):
            pad = (k // 2, k // 2)
            x = nn.Conv(
                feat,
                (k, k),
                (s, s),
                padding=(pad, pad),
                dtype=self.dtype,
                conv_general_dilated=conv_fn,
                name=f"conv{i + 1}",
            )(x)
            mask = ops.downsample_mask(mask, k, s, pad)
            x = nn.relu(x)
            if self.use_lrn and lrn_after[i]:
                x = ops.local_response_normalization(
                    x, self.lrn_depth_radius, self.lrn_bias, self.lrn_alpha, self.lrn_beta
                )
            # Zero the steps beyond the clip before the next op reads them (pool or conv).
            x = x * mask[:, :, None, None].astype(x.dtype)
            if pool:
                w, ps = self.pool_window, self.pool_stride
                ppad = (w // 2, w // 2)
                # Inputs are >= 0 after ReLU, so zero-valued masked steps never win the max.
                x = conv.max_pool_2d(x, w, ps, ppad)
                mask = ops.downsample_mask(mask, w, ps, ppad)
                x = x * mask[:, :, None, None].astype(x.dtype)
        if self.freq_pooling == "mean":
            seq = jnp.mean(x, axis=2)
        elif self.freq_pooling == "max":
            seq = jnp.max(x, axis=2)
        else:
            raise ValueError(f"freq_pooling must be 'mean' or 'max', got {self.freq_pooling!r}")
        return seq, mask


class FaceFeatureReduction(nn.Module):
    """Per-frame reduction of face features before attention (Eq. 8-11).

    'conv' is the paper's: v_i in R^{D1} seen as a [D1, 1] signal, convolved with a kernel of
    size 4 and stride 4 (D1 = 1024 -> D = 256 with one filter). 'dense' is a fully connected
    layer to `dense_features` (for low-dimensional clip-level features), 'none' passes through.

    Attributes:
      method: 'conv', 'dense' or 'none'.
      kernel_size, stride, filters: of the 'conv' reduction.
      dense_features: output size of the 'dense' reduction.
      dtype: computation dtype.
    """

    method: str = "conv"
    kernel_size: int = 4
    stride: int = 4
    filters: int = 1
    dense_features: int = 128
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, v: Array) -> Array:
        """v: [B, L, D1] -> [B, L, D]."""
        v = v.astype(self.dtype)
        if self.method == "none":
            return v
        if self.method == "dense":
            return nn.Dense(self.dense_features, dtype=self.dtype, name="dense")(v)
        if self.method != "conv":
            raise ValueError(f"video reduction must be conv, dense or none, got {self.method!r}")
        b, length, d1 = v.shape
        out = nn.Conv(
            self.filters,
            (self.kernel_size,),
            (self.stride,),
            padding="VALID",
            dtype=self.dtype,
            name="conv",
        )(v.reshape(b * length, d1, 1))
        return out.reshape(b, length, -1)


class ClipFeatureEncoder(nn.Module):
    """Encoder of one clip-level feature vector (e.g. RAVDESS's OpenFace AU row): an MLP.

    Hidden layers are Dense -> ReLU -> dropout; the output layer is Dense to `features`.

    Attributes:
      hidden: sizes of the hidden layers (empty: one linear layer).
      features: output size.
      dropout_rate: dropout after each hidden layer (training only).
      dtype: computation dtype.
    """

    hidden: Sequence[int] = ()
    features: int = 64
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        """x: [B, D1] -> [B, features]."""
        x = x.astype(self.dtype)
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(h, dtype=self.dtype, name=f"hidden{i + 1}")(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.features, dtype=self.dtype, name="out")(x)
