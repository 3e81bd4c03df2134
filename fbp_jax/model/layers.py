"""Linen modules that own the parameters of AM-FBP (and of the CFN-SR comparison) and call the
pure kernels of `ops`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbp_jax.model import ops

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


class TransformerEncoderBlock(nn.Module):
    """Pre-LN Transformer encoder layer: x + MHSA(LN(x)), then x + MLP(LN(x)) (CFN-SR audio).

    Attributes:
      num_heads: attention heads (8 in CFN-SR).
      mlp_dim: hidden size of the MLP.
      dropout_rate: dropout on both residual branches and after the MLP activation.
      attention_dropout_rate: dropout on the attention weights.
      dtype: computation dtype.
    """

    num_heads: int = 8
    mlp_dim: int = 256
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, train: bool = False) -> Array:
        """x: [B, T, C]; mask: boolean [B, T] -> [B, T, C]."""
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        y = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(x)
        # Padded steps are never attended to; their own (query) rows are ignored downstream.
        y = nn.MultiHeadDotProductAttention(
            self.num_heads,
            dtype=self.dtype,
            dropout_rate=self.attention_dropout_rate,
            deterministic=not train,
            name="attention",
        )(y, y, mask=nn.make_attention_mask(mask, mask))
        x = x + drop(y)
        y = nn.LayerNorm(dtype=self.dtype, name="mlp_norm")(x)
        y = drop(nn.relu(nn.Dense(self.mlp_dim, dtype=self.dtype, name="mlp_in")(y)))
        y = nn.Dense(x.shape[-1], dtype=self.dtype, name="mlp_out")(y)
        return x + drop(y)


class TransformerEncoder(nn.Module):
    """A stack of pre-LN encoder layers and a final LayerNorm (the intra-modal block of CFN-SR).

    Attributes:
      num_layers: encoder layers.
      num_heads: attention heads.
      model_dim: width of the stack; the input is projected to it when it differs.
      mlp_dim: MLP hidden size.
      dropout_rate, attention_dropout_rate, dtype: as in TransformerEncoderBlock.
    """

    num_layers: int = 5
    num_heads: int = 8
    model_dim: int = 256
    mlp_dim: int = 1024
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, mask: Array, *, train: bool = False) -> Array:
        """x: [B, T, C]; mask: boolean [B, T] -> [B, T, model_dim], zero on masked steps."""
        x = x.astype(self.dtype)
        if x.shape[-1] != self.model_dim:
            x = nn.Dense(self.model_dim, dtype=self.dtype, name="input_proj")(x)
        for i in range(self.num_layers):
            x = TransformerEncoderBlock(
                self.num_heads,
                self.mlp_dim,
                self.dropout_rate,
                self.attention_dropout_rate,
                dtype=self.dtype,
                name=f"layer{i + 1}",
            )(x, mask, train=train)
        # Pre-LN leaves the residual stream unnormalised; the final norm is the usual fix.
        x = nn.LayerNorm(dtype=self.dtype, name="output_norm")(x)
        return x * mask[..., None].astype(x.dtype)


class CrossModalAttention(nn.Module):
    """Audio-guided attention over video frames with residual re-weighting (CFN-SR).

    Owns W_v, b ('video_proj'), W_a ('audio_proj', no bias: b is already in W_v v_j + b) and
    the scoring vector u ('query'); the math is `ops.cross_modal_attention`.

    Attributes:
      features: A, the size of the scoring space.
      rescale: see `ops.cross_modal_attention`.
      dtype: computation dtype.
    """

    features: int = 256
    rescale: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: Array, audio: Array, mask: Array | None) -> tuple[Array, Array]:
        """video: [B, T, D]; audio: [B, C]; mask: boolean [B, T] -> (fused [B, T, D], w [B, T])."""
        video_proj = nn.Dense(self.features, dtype=self.dtype, name="video_proj")(video)
        audio_proj = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="audio_proj")(
            audio
        )
        query = self.param("query", nn.initializers.normal(stddev=0.05), (self.features,))
        return ops.cross_modal_attention(
            video.astype(self.dtype),
            video_proj,
            audio_proj,
            query.astype(self.dtype),
            mask,
            rescale=self.rescale,
        )
