"""Linen modules that own the parameters of AM-FBP and call the pure kernels of `ops`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbp_jax import ops

Array = jax.Array
Dtype = Any

default_kernel_init = nn.initializers.lecun_normal()


class AttentionPooling(nn.Module):
    """Temporal self-attention pooling (Eq. 3-6 / 8-11).

    Attributes:
      temperature: lambda of Eq. 4 / 9.
      project: score `tanh(W x + b)` (audio, Eq. 3) if True, else `tanh(x)` (video, Eq. 8).
      dtype: computation dtype.
    """

    temperature: float = 1.0
    project: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array | None) -> ops.AttentionOutput:
        """x: [B, T, C]; mask: boolean [B, T]. Returns ops.AttentionOutput."""
        keys = nn.Dense(x.shape[-1], dtype=self.dtype, name="proj")(x) if self.project else x
        query = self.param("query", nn.initializers.normal(stddev=0.05), (keys.shape[-1],))
        return ops.attention_pooling(x, keys, query.astype(self.dtype), mask, self.temperature)


class FactorizedBilinearPooling(nn.Module):
    """G-FBP / AG-FBP fusion of two vectors (Eq. 12-14, 18).

    Attributes:
      out_dim: O.
      factor: K.
      use_bias: projections with bias (required for AG-FBP to differ from G-FBP).
      dropout_rate: dropout on the product (MFB code; 0 = paper).
      use_signed_sqrt: signed square root before the L2 norm (MFB code; False = paper).
      dtype: computation dtype.
    """

    out_dim: int = 128
    factor: int = 4
    use_bias: bool = True
    dropout_rate: float = 0.0
    use_signed_sqrt: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, y: Array, *, train: bool = False) -> Array:
        """x: [B, C], y: [B, D] -> [B, O], unit L2 norm."""
        n = self.out_dim * self.factor
        dense = lambda name: nn.Dense(n, use_bias=self.use_bias, dtype=self.dtype, name=name)
        rng = self.make_rng("dropout") if train and self.dropout_rate > 0 else None
        out = ops.bilinear_interaction(
            dense("p")(x),
            dense("q")(y),
            self.factor,
            dropout_rate=self.dropout_rate,
            dropout_rng=rng,
            use_signed_sqrt=self.use_signed_sqrt,
        )
        return ops.l2_normalize(out.astype(jnp.float32))


class MultiLevelFBP(nn.Module):
    """Intra-trunk FBP of M-FBP (Eq. 19): own projections P_h, Q_h per trunk.

    Attributes:
      num_trunks: H.
      out_dim: O (192 in the paper).
      factor: K_M (2 in the paper).
      use_bias, dropout_rate, use_signed_sqrt, dtype: as in FactorizedBilinearPooling.
    """

    num_trunks: int = 6
    out_dim: int = 192
    factor: int = 2
    use_bias: bool = True
    dropout_rate: float = 0.0
    use_signed_sqrt: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x_weighted: Array, y_weighted: Array, *, train: bool = False) -> Array:
        """Weighted elements x: [B, Ta, C], y: [B, Tv, D] -> [B, O], unit L2 norm."""
        h, n = self.num_trunks, self.out_dim * self.factor
        x = ops.trunk_pooling(x_weighted, h)
        y = ops.trunk_pooling(y_weighted, h)

        def kernel(name, d):
            # Each trunk's [d, n] slice is initialised like a Dense kernel.
            init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", 1, 2, 0)
            return self.param(name, init, (h, d, n)).astype(self.dtype)

        def bias(name):
            return self.param(name, nn.initializers.zeros, (h, n)) if self.use_bias else None

        rng = self.make_rng("dropout") if train and self.dropout_rate > 0 else None
        out = ops.multi_level_fbp(
            x.astype(self.dtype),
            y.astype(self.dtype),
            kernel("p_kernel", x.shape[-1]),
            bias("p_bias"),
            kernel("q_kernel", y.shape[-1]),
            bias("q_bias"),
            self.factor,
            dropout_rate=self.dropout_rate,
            dropout_rng=rng,
            use_signed_sqrt=self.use_signed_sqrt,
            normalize=False,
        )
        return ops.l2_normalize(out.astype(jnp.float32))
