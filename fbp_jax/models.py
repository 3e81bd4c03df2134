"""AVEmotionNet = encoders + temporal attention + fusion head + classifier."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from fbp_jax import encoders, fusion, layers, ops

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
        freq_pooling=cfg.freq_pooling,
        conv_impl=cfg.get("conv_impl", "auto"),
        dtype=dtype,
        name=name,
    )


class AVEmotionNet(nn.Module):
    """The audio-visual emotion network of the paper (Fig. 1) and its baselines.

    Attributes:
      config: the `model` ConfigDict of a config file (see configs/common.py).
    """

    config: ml_collections.ConfigDict

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

        if "audio" in streams:
            x = batch["audio"][..., None]  # [B, T, F] -> [B, T, F, 1]
            seq, mask = _fcn(cfg.audio, dtype, "audio_encoder")(x, batch["audio_mask"])
            att = pool(seq, mask, cfg.audio.temperature, True, "audio_attention")
            a = fusion.Stream(*att, mask, seq)
        if "video" in streams:
            vcfg = cfg.video
            video, mask = batch["video"], batch["video_mask"]
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
                raise ValueError(f"video encoder must be 'face' or 'fcn', got {vcfg.encoder!r}")
            att = pool(seq, mask, vcfg.temperature, project, "video_attention")
            v = fusion.Stream(*att, mask, seq)
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
        for key, s in (("audio", a), ("video", v)):
            if s is not None:
                # A head's own weights (cfn_sr: the cross-modal ones) take precedence.
                outputs.setdefault(f"{key}_attention", s.weights)
                outputs[f"{key}_mask"] = s.mask
        return outputs


def clip_frames(data_config: ml_collections.ConfigDict) -> tuple[int, int]:
    """(audio frames, video frames) of a clip of `data_config.clip_seconds`."""
    d = data_config
    return round(d.clip_seconds * d.audio_fps), round(d.clip_seconds * d.video_fps)


def get_model(config: ml_collections.ConfigDict) -> AVEmotionNet:
    """Builds the model of a full config (reads `config.model`)."""
    fusion.streams_for(config.model.fusion)  # Fails early, listing valid names.
    return AVEmotionNet(config.model)
