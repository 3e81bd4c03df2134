"""AVEmotionNet = encoders + temporal attention + fusion head + classifier."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fbp_jax.model import encoders, fusion, layers, ops

Array = jax.Array

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _fcn(cfg: ml_collections.ConfigDict, dtype: Any, name: str) -> encoders.FCNEncoder:
    return encoders.FCNEncoder(
        features=tuple(cfg.features),
        kernel_sizes=tuple(cfg.kernel_sizes),
        strides=tuple(cfg.strides),
        pool_after=tuple(cfg.pool_after),
        pool_window=cfg.pool_window,
        pool_stride=cfg.pool_stride,
        use_lrn=cfg.use_lrn,
        lrn_depth_radius=cfg.lrn_depth_radius,
        lrn_bias=cfg.lrn_bias,
        lrn_alpha=cfg.lrn_alpha,
        lrn_beta=cfg.lrn_beta,
        lrn_after=tuple(cfg.get("lrn_after", ())),
        freq_pooling=cfg.freq_pooling,
        conv_impl=cfg.get("conv_impl", "auto"),
        dtype=dtype,
        name=name,
    )


class AVEmotionNet(nn.Module):
    """The audio-visual emotion network of the paper (Fig. 1) and its baselines.

    Attributes:
      config: the `model` ConfigDict of a config file (see configs/common.py).
      audio_channels: input channels of the audio encoder: the view and its time derivatives
        (`data.mel_deltas`), side by side along the features of `batch['audio']`.
    """

    config: ml_collections.ConfigDict
    audio_channels: int = 1

    @nn.compact
    def __call__(self, batch: dict[str, Array], *, train: bool = False) -> dict[str, Array]:
        """Runs the model.

        Args:
          batch: dict with `audio` [B, Ta, F] (log spectrogram) and `audio_mask` [B, Ta], and/or
            `video` [B, Tv, D1] (face features) or [B, Tv, M, 3] (markers) and `video_mask`
            [B, Tv]; only the streams the fusion variant uses are read.
          train: enables dropout (needs a 'dropout' rng).

        Returns:
          dict with `logits` [B, N], `embedding` [B, E] (fused vector before the classifier),
          per stream `{audio,video}_attention` [B, T'] and `{audio,video}_mask` [B, T'], and for
          two-stream variants `mu`, `eta` [B] (Eq. 15-16). For `cfn_sr`, `audio_attention` is
          the uniform weights of the audio mean and `video_attention` the cross-modal weights.
        """
        cfg = self.config
        dtype = _DTYPES[cfg.dtype]
        streams = fusion.streams_for(cfg.fusion)
        # Variants that attend over the sequences themselves get uniform masked means instead.
        on_sequence = cfg.fusion in fusion.SEQUENCE_FUSIONS
        outputs: dict[str, Array] = {}
        a = v = None

        def pool(seq, mask, temperature, project, name):
            if on_sequence:
                return ops.masked_mean_pooling(seq, mask)
            return layers.AttentionPooling(temperature, project=project, dtype=dtype, name=name)(
                seq, mask
            )

        encoder_dropout = nn.Dropout(cfg.get("encoder_dropout", 0.0), deterministic=not train)
        if "audio" in streams:
            x, c = batch["audio"], self.audio_channels  # [B, T, C F] -> [B, T, F, C]
            x = x.reshape(*x.shape[:2], c, x.shape[-1] // c).transpose(0, 1, 3, 2)
            seq, mask = _fcn(cfg.audio, dtype, "audio_encoder")(x, batch["audio_mask"])
            seq = encoder_dropout(seq)
            att = pool(seq, mask, cfg.audio.temperature, True, "audio_attention")
            pooling = cfg.audio.get("pooling", "attention")
            if pooling == "attention_stats" and not on_sequence:
                att = att._replace(pooled=_with_statistics(att.pooled, seq, mask, dtype))
            elif pooling not in ("attention", "attention_stats"):
                raise ValueError(
                    f"audio pooling must be 'attention' or 'attention_stats', got {pooling!r}"
                )
            a = fusion.Stream(*att, mask, seq)
        if "video" in streams:
            vcfg = cfg.video
            video, mask = batch["video"], batch["video_mask"]
            if vcfg.encoder == "clip":  # one clip-level vector (RAVDESS AU row): one step
                v = self._clip_stream(video, mask, vcfg, dtype, train)
            else:
                if vcfg.encoder == "fcn":  # marker sequences [B, T, M, 3] (IEMOCAP)
                    seq, mask = _fcn(vcfg.fcn, dtype, "video_encoder")(video, mask)
                    project = True
                elif vcfg.encoder == "face":  # per-frame face features [B, T, D1]
                    seq = encoders.FaceFeatureReduction(
                        vcfg.reduction,
                        vcfg.kernel_size,
                        vcfg.stride,
                        vcfg.filters,
                        vcfg.dense_features,
                        dtype=dtype,
                        name="video_encoder",
                    )(video)
                    project = False  # Eq. 8 scores tanh(Conv(v_i)) directly.
                else:
                    raise ValueError(
                        f"video encoder must be 'face', 'fcn' or 'clip', got {vcfg.encoder!r}"
                    )
                seq = encoder_dropout(seq)
                att = pool(seq, mask, vcfg.temperature, project, "video_attention")
                v = fusion.Stream(*att, mask, seq)
        if a is not None and v is not None and train and cfg.get("modality_dropout", 0.0) > 0:
            a, v = _drop_modality(a, v, cfg.modality_dropout, self.make_rng("dropout"))
        embedding, logits, extras = fusion.FusionHead(
            cfg.fusion,
            cfg.num_classes,
            cfg.fbp,
            cfg.dropout_rate,
            dtype,
            cfn=cfg.get("cfn"),  # Configs saved before CFN-SR have none.
            name="fusion",
        )(a, v, train=train)
        outputs.update(extras, logits=logits, embedding=embedding)
        if a is not None and v is not None and cfg.get("aux_loss_weight", 0.0) > 0:
            # Each stream's own classifier on its pooled vector, trained beside the fusion
            # (model.aux_loss_weight): a stream stays discriminative on its own.
            for key, s in (("audio", a), ("video", v)):
                outputs[f"aux_{key}_logits"] = fusion.Classifier(
                    cfg.num_classes, cfg.dropout_rate, name=f"{key}_aux"
                )(s.pooled.astype(jnp.float32), train=train)
        for key, s in (("audio", a), ("video", v)):
            if s is not None:
                # A head's own weights (cfn_sr: the cross-modal ones) take precedence.
                outputs.setdefault(f"{key}_attention", s.weights)
                outputs[f"{key}_mask"] = s.mask
        return outputs

    def _clip_stream(self, video, mask, vcfg, dtype, train: bool) -> fusion.Stream:
        """A clip-level feature vector (repeated over the clip's frames) as one step.

        The vector is read once (the mean of the valid frames, which are all equal), encoded
        by `encoders.ClipFeatureEncoder`, and is the pooled vector itself: there is nothing to
        attend over. For the trunks of M-FBP it is spread evenly over the clip's valid frames,
        so each trunk gets its share of the clip's time.
        """
        m = mask.astype(dtype)
        n = jnp.maximum(m.sum(axis=1, keepdims=True), 1.0)
        clip = jnp.einsum("bt...,bt->b...", video.astype(dtype), m) / n
        pooled = encoders.ClipFeatureEncoder(
            tuple(vcfg.get("clip_hidden", ())),
            vcfg.dense_features,
            vcfg.get("clip_dropout", 0.0),
            dtype=dtype,
            name="video_encoder",
        )(clip.reshape(clip.shape[0], -1), train=train)
        weights = m / n  # [B, Tv], sums to 1 over valid frames
        weighted = weights[:, :, None] * pooled[:, None, :]
        return fusion.Stream(pooled, weighted, weights, mask, weighted * n[:, :, None])


def _with_statistics(pooled: Array, seq: Array, mask: Array, dtype) -> Array:
    """Statistics pooling beside attention: [attention vector, masked mean, masked standard
    deviation] of the sequence, projected back to its C channels ([B, C])."""
    m = mask.astype(jnp.float32)[..., None]
    n = jnp.maximum(m.sum(axis=1), 1.0)
    x = seq.astype(jnp.float32)
    mean = (x * m).sum(axis=1) / n
    std = jnp.sqrt(jnp.maximum((jnp.square(x - mean[:, None]) * m).sum(axis=1) / n, 0.0) + 1e-6)
    both = jnp.concatenate([pooled.astype(jnp.float32), mean, std], axis=-1)
    return nn.Dense(pooled.shape[-1], dtype=dtype, name="audio_statistics")(both.astype(dtype))


def _drop_modality(a: fusion.Stream, v: fusion.Stream, rate: float, rng) -> tuple:
    """Zeroes one stream of an example with probability `rate` (audio or video, even odds), so
    that fusion (and AG-FBP's mu) learns to lean on the other stream when one is uninformative.
    """
    u = jax.random.uniform(rng, (a.pooled.shape[0],))
    keep_a = (u >= rate / 2).astype(a.pooled.dtype)
    keep_v = ((u < rate / 2) | (u >= rate)).astype(v.pooled.dtype)

    def scale(s: fusion.Stream, keep) -> fusion.Stream:
        seq = None if s.sequence is None else s.sequence * keep[:, None, None]
        return s._replace(
            pooled=s.pooled * keep[:, None], weighted=s.weighted * keep[:, None, None], sequence=seq
        )

    return scale(a, keep_a), scale(v, keep_v)


def get_model(config: ml_collections.ConfigDict) -> AVEmotionNet:
    """Builds the model of a full config (reads `config.model`)."""
    fusion.streams_for(config.model.fusion)  # Fails early, listing valid names.
    return AVEmotionNet(config.model, audio_channels=1 + int(config.data.get("mel_deltas", 0)))
