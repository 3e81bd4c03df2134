"""Fusion heads of the model family, picked by name (`config.model.fusion`).

Each head maps the attention outputs of the streams it uses to (embedding, logits). The
embedding is the fused vector the classifier sees (the paper's t-SNE plots it, Fig. 9).

  audio     e_a^g                                      single modality
  video     e_v^g                                      single modality
  concat    [e_a^g, e_v^g]                             encoder concat baseline
  decision  log(mean of two posteriors)                decision fusion baseline
  g_fbp     FBP(e_a^g, e_v^g)                          Eq. 14
  ag_fbp    FBP(mu e_a^g, eta e_v^g)                   Eq. 18
  m_fbp     [FBP(e_a^g, e_v^g), I^M]                   global + intra-trunk FBP (Eq. 14, 19)
  am_fbp    [FBP(mu e_a^g, eta e_v^g), I^M]            Eq. 18 + Eq. 19
  cfn_sr    [mean_i SA(A)_i, mean_j (1 + w_j) v_j]     CFN-SR (Fu et al., arXiv 2111.02172)

CFN-SR, the comparison: the audio sequence A goes through a Transformer encoder SA (masked
self-attention); its masked mean a, the audio summary, scores every video frame,
s_j = u^T tanh(W_v v_j + W_a a + b), w = softmax over valid frames; the frames are re-weighted
with a residual, v'_j = v_j + w_j v_j, and mean-pooled; the classifier sees [a, pooled video].
`model.cfn.audio_output = 'encoder'` concatenates the mean of A before self-attention instead
(the "original representation" of the authors' code). Variants in SEQUENCE_FUSIONS read the
encoder sequences themselves: models.py gives them uniform masked means instead of attention
pooling, so `audio_attention` is those uniform weights; `video_attention` is w, and `mu`, `eta`
are the norm ratios of the two concatenated parts.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fbp_jax.model import layers, ops

Array = jax.Array


class Stream(NamedTuple):
    """A stream after attention: pooled [B, C], weighted [B, T, C], weights [B, T], mask [B, T],
    and sequence [B, T, C], the encoder output before pooling (read by SEQUENCE_FUSIONS)."""

    pooled: Array
    weighted: Array
    weights: Array
    mask: Array
    sequence: Array | None = None


class Classifier(nn.Module):
    """Dropout then a dense layer to class logits."""

    num_classes: int
    dropout_rate: float = 0.3

    @nn.compact
    def __call__(self, z: Array, *, train: bool) -> Array:
        z = nn.Dropout(self.dropout_rate, deterministic=not train)(z)
        return nn.Dense(self.num_classes, dtype=jnp.float32, name="dense")(z.astype(jnp.float32))


class FusionHead(nn.Module):
    """One head for every variant: the variant is a static attribute, not a subclass.

    Attributes:
      variant: a name of `FUSION_STREAMS`.
      num_classes: number of classes.
      fbp: ml_collections.ConfigDict of FBP sizes (global_dim, global_factor, multi_dim,
        multi_factor, num_trunks, use_bias, dropout_rate, signed_sqrt).
      dropout_rate: classifier dropout (0.3 in the paper).
      dtype: computation dtype of the FBP projections (and of the CFN-SR blocks).
      cfn: ml_collections.ConfigDict of the CFN-SR blocks (see `model.cfn` in configs/common.py);
        only `cfn_sr` reads it.
    """

    variant: str
    num_classes: int
    fbp: Any
    dropout_rate: float = 0.3
    dtype: Any = jnp.float32
    cfn: Any = None

    def _global_fbp(self, x: Array, y: Array, train: bool) -> Array:
        return layers.FactorizedBilinearPooling(
            self.fbp.global_dim,
            self.fbp.global_factor,
            use_bias=self.fbp.use_bias,
            dropout_rate=self.fbp.dropout_rate,
            use_signed_sqrt=self.fbp.signed_sqrt,
            dtype=self.dtype,
            name="global_fbp",
        )(x, y, train=train)

    def _multi_fbp(self, a: Stream, v: Stream, train: bool) -> Array:
        return layers.MultiLevelFBP(
            self.fbp.num_trunks,
            self.fbp.multi_dim,
            self.fbp.multi_factor,
            use_bias=self.fbp.use_bias,
            dropout_rate=self.fbp.dropout_rate,
            use_signed_sqrt=self.fbp.signed_sqrt,
            dtype=self.dtype,
            name="multi_fbp",
        )(a.weighted, v.weighted, train=train)

    def _cfn_sr(self, a: Stream, v: Stream, train: bool) -> tuple[Array, Array, Array]:
        """CFN-SR on the sequences: (audio [B, C'], pooled video [B, D], cross-modal w [B, Tv])."""
        c = self.cfn
        if c.audio_output not in ("summary", "encoder"):
            raise ValueError(f"cfn.audio_output must be summary or encoder, got {c.audio_output!r}")
        model_dim = c.model_dim or a.sequence.shape[-1]
        h = layers.TransformerEncoder(
            c.num_layers,
            c.num_heads,
            model_dim,
            c.mlp_dim or 4 * model_dim,
            c.dropout_rate,
            c.attention_dropout_rate,
            dtype=self.dtype,
            name="audio_self_attention",
        )(a.sequence, a.mask, train=train)
        summary = ops.masked_mean_pooling(h, a.mask).pooled
        fused, weights = layers.CrossModalAttention(
            c.cross_dim or model_dim, c.rescale_weights, dtype=self.dtype, name="cross_modal"
        )(v.sequence, summary, v.mask)
        video = ops.masked_mean_pooling(fused, v.mask).pooled
        # a.pooled is the uniform mean of the encoder sequence here (models.py).
        audio = summary if c.audio_output == "summary" else a.pooled
        return audio.astype(jnp.float32), video.astype(jnp.float32), weights

    @nn.compact
    def __call__(
        self, a: Stream | None, v: Stream | None, *, train: bool
    ) -> tuple[Array, Array, dict[str, Array]]:
        """Returns (embedding [B, E], logits [B, N], extras such as mu / eta).

        For `cfn_sr` the extras also hold `video_attention`, the cross-modal weights, which
        replace the video stream's uniform weights in the model outputs.
        """
        name = self.variant
        classify = lambda z, n="classifier": Classifier(
            self.num_classes, self.dropout_rate, name=n
        )(z, train=train)
        extras = {}
        if a is not None and v is not None:
            mu, eta = ops.adaptive_weights(a.pooled, v.pooled)
            extras = {"mu": mu, "eta": eta}
        if name == "audio":
            z = a.pooled
        elif name == "video":
            z = v.pooled
        elif name == "concat":
            z = jnp.concatenate([a.pooled, v.pooled], axis=-1)
        elif name == "decision":
            z = jnp.concatenate([a.pooled, v.pooled], axis=-1)
            pa = jax.nn.softmax(classify(a.pooled, "audio_classifier"))
            pv = jax.nn.softmax(classify(v.pooled, "video_classifier"))
            return z, jnp.log(0.5 * (pa + pv) + 1e-9), extras
        elif name in ("g_fbp", "ag_fbp", "m_fbp", "am_fbp"):
            x, y = a.pooled, v.pooled
            if name in ("ag_fbp", "am_fbp"):
                x, y = extras["mu"][:, None] * x, extras["eta"][:, None] * y
            parts = [self._global_fbp(x, y, train)]
            if name in ("m_fbp", "am_fbp"):
                parts.append(self._multi_fbp(a, v, train))
            z = jnp.concatenate(parts, axis=-1)
        elif name == "cfn_sr":
            audio, video, weights = self._cfn_sr(a, v, train)
            z = jnp.concatenate([audio, video], axis=-1)
            # The streams' pooled vectors are plain means here; the ratio that says something
            # is that of the two parts the classifier sees.
            mu, eta = ops.adaptive_weights(audio, video)
            extras = {"mu": mu, "eta": eta, "video_attention": weights}
        else:
            raise ValueError(f"unknown fusion {name!r}; valid: {sorted(FUSION_STREAMS)}")
        return z, classify(z), extras


# Which streams each variant needs; the registry of valid names.
FUSION_STREAMS = {
    "audio": ("audio",),
    "video": ("video",),
    "concat": ("audio", "video"),
    "decision": ("audio", "video"),
    "g_fbp": ("audio", "video"),
    "ag_fbp": ("audio", "video"),
    "m_fbp": ("audio", "video"),
    "am_fbp": ("audio", "video"),
    "cfn_sr": ("audio", "video"),
}

# Variants that attend over the encoder sequences themselves (Stream.sequence): models.py gives
# them uniform masked means instead of creating attention pooling parameters they would not use.
SEQUENCE_FUSIONS = frozenset({"cfn_sr"})


def streams_for(fusion: str) -> tuple[str, ...]:
    """The streams a fusion variant uses; raises ValueError listing valid names if unknown."""
    if fusion not in FUSION_STREAMS:
        raise ValueError(f"unknown fusion {fusion!r}; valid: {sorted(FUSION_STREAMS)}")
    return FUSION_STREAMS[fusion]
