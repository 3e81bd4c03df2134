"""Base config shared by every experiment, the paper's settings per corpus and variant, and the
demo's settings.

Experiment files (the `configs/` folder) call `get_config(corpus, fusion)` and change a few
fields. Any field can be overridden on the command line, e.g.
`--config.optim.learning_rate=3e-4`.
"""

import ml_collections

from fbp_jax.model import frontend

# 1D-ABFCN presets: the five AlexNet conv layers (paper Fig. 3) and smaller ones for CPUs.
FCN_PRESETS = {
    "alexnet": (96, 256, 384, 384, 256),
    "small": (32, 64, 128, 128, 128),
    "tiny": (16, 32, 64, 64, 64),
}

# Classes of each corpus (order = label ids written by data_prep).
CLASSES = {
    "afew": ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
    "cremad": ("angry", "disgust", "fear", "happy", "neutral", "sad"),
    "iemocap": ("neutral", "happy", "sad", "angry"),
    "ravdess": ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"),
    "synthetic_av": ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
}

SINGLE_MODALITY = ("audio", "video")


def fcn_config(preset: str = "alexnet", *, first_stride: int = 4) -> ml_collections.ConfigDict:
    """The convolutional stack of the 1D-ABFCN (conv -> ReLU -> LRN [-> max-pool])."""
    return ml_collections.ConfigDict(
        {
            "preset": preset,
            "features": FCN_PRESETS[preset],  # Output channels per conv layer.
            "kernel_sizes": (11, 5, 3, 3, 3),  # Square kernels, AlexNet.
            "strides": (first_stride, 1, 1, 1, 1),
            "pool_after": (True, True, False, False, True),  # 3x3/2 max-pool after conv1, 2, 5.
            "pool_window": 3,
            "pool_stride": 2,
            "use_lrn": True,  # Paper Eq. 1; False gives the "No LRN" ablation of Table I.
            "lrn_depth_radius": 2,  # n = 5 (AlexNet); TF convention, alpha not divided by n.
            "lrn_bias": 2.0,
            "lrn_alpha": 1e-4,
            "lrn_beta": 0.75,
            "lrn_after": (),  # Per layer; empty: after every conv (paper). AlexNet: conv1, 2.
            "freq_pooling": "mean",  # Pools the frequency (or marker) axis to 1 (Eq. 2).
            "conv_impl": "auto",  # 'xla', 'patches', 'matmul_grads'; 'auto': matmul_grads on CPU.
            "temperature": 0.3,  # lambda_a of the attention softmax (Eq. 4).
            # 'attention' (Eq. 3-5) or 'attention_stats': the attention vector, the masked mean
            # and the standard deviation of the sequence, projected back to its channels.
            "pooling": "attention",
        }
    )


def get_config(corpus: str = "afew", fusion: str = "am_fbp") -> ml_collections.ConfigDict:
    """Full config of one experiment with the paper's hyperparameters (Section IV).

    Args:
      corpus: 'afew', 'iemocap' or 'synthetic_av'.
      fusion: a fusion variant name (see fbp_jax.model.fusion.FUSION_STREAMS).

    Returns:
      A locked ConfigDict.
    """
    config = ml_collections.ConfigDict()
    config.seed = 0

    # ---- data
    config.data = data = ml_collections.ConfigDict()
    data.name = corpus  # TFDS dataset name, optionally with a builder config ('name/config').
    data.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default.
    data.train_split = "train"  # TFDS split arithmetic allowed: 'session1+session2'.
    data.eval_split = "validation"  # Chooses the checkpoint (a validation part, never test).
    data.test_split = ""  # Held-out speakers of a fold, reported with the chosen checkpoint.
    data.clip_seconds = 6.4  # Both streams cropped / zero-padded to this duration.
    data.audio_fps = 100  # Spectrogram frames per second (hop 10 ms).
    data.video_fps = 25  # Video frames per second.
    data.num_bins = 200  # Spectrogram bins kept (0-4 kHz).
    data.video_shape = (1024,)  # Per-frame video feature shape: (D1,) or (markers, 3).
    data.num_classes = len(CLASSES.get(corpus, CLASSES["afew"]))
    data.normalize = True  # Standardise with statistics of the training split.
    data.speaker_norm = False  # Standardise with each speaker's own statistics instead.
    # With speaker_norm, at evaluation: 'own' (each evaluated speaker's statistics, from its
    # unlabelled clips) or 'training' (the training speakers' pooled: none of the evaluated).
    data.speaker_stats = "own"
    # Audio view: 'linear' (the stored bins, paper), 'mel' (log-mel) or 'pcen' (mel channels,
    # per-channel energy normalisation instead of the log; fbp_jax.model.frontend).
    data.frontend = "linear"
    data.num_mel = 64  # Mel channels of the 'mel' and 'pcen' views,
    data.mel_low_hz = 0.0  # spaced in mel over this band of the stored 0-4 kHz
    data.mel_high_hz = 0.0  # (0: the top bin); e.g. 300-3400 Hz, what a telephone passes.
    data.update(frontend.PCEN_DEFAULTS)  # The 'pcen' view's settings.
    # 1: each mel channel's time derivative beside it (regression over +-2 frames); 2: and the
    # second derivative (the 'mel' and 'pcen' views: 2 or 3 times num_mel features).
    data.mel_deltas = 0
    # > 0: trim each clip to its voiced span (frames within this many dB of its loudest) and
    # take the statistics over voiced frames only (frontend.clip_view); 0: the whole clip.
    data.voiced_db = 0.0
    data.voiced_floor_db = 0.0  # ... and this many dB above the clip's noise floor (noisy files).
    data.voiced_floor_span = False  # The floor only bounds the voiced span (frontend.clip_view).
    data.voiced_floor_margin_s = 0.0  # ... widened by this many seconds on each side.
    data.voiced_span_db = 0.0  # The span also bounded by frames this close to the loudest.
    data.voiced_reach_s = 0.0  # ... reaching this far to frames well above the noise floor:
    data.voiced_reach_floor_db = 0.0  # ... this many dB above it.
    data.level_norm = False  # Subtract each clip's mean log frame power (voiced frames).
    # The band a frame's level is measured on, for the voiced frames and the clip's level
    # (frontend.level_bins); 0, 0: all stored bins. E.g. 300-3400 Hz: what a telephone passes.
    data.level_low_hz = 0.0
    data.level_high_hz = 0.0
    data.spectral_floor_db = 0.0  # > 0: add white power this many dB below the clip's level.
    data.use_video_valid = False  # Also mask frames without a detected face (paper: no).
    # What the video stream holds, for prediction from media files: '' (the face pipeline's
    # per-frame features) or 'openface_au' (the 35 OpenFace AU columns, data_prep.features.openface).
    data.video_features = ""
    data.cache = True  # Cache decoded examples in memory.
    data.shuffle_buffer = 2048
    data.prefetch = 2  # Batches prefetched to the devices.

    # ---- model
    config.model = model = ml_collections.ConfigDict()
    model.fusion = fusion
    model.num_classes = data.get_ref("num_classes")
    model.dtype = "float32"  # 'bfloat16' computes in bf16 with float32 parameters.
    model.dropout_rate = 0.3  # Before the classifier.
    model.encoder_dropout = 0.0  # On the encoder sequences, before attention (paper: none).
    model.modality_dropout = 0.0  # Training: share of examples with one stream zeroed.
    model.aux_loss_weight = 0.0  # Two streams: weight of each stream's own classifier loss.
    model.audio = fcn_config("alexnet")
    model.video = video = ml_collections.ConfigDict()
    video.encoder = "face"  # 'face': per-frame features [T, D1]; 'fcn': markers [T, M, 3];
    # 'clip': one clip-level vector repeated over the frames, encoded once (no attention).
    video.clip_hidden = ()  # Hidden layer sizes of the 'clip' encoder (MLP).
    video.clip_dropout = 0.0  # Dropout after its hidden layers.
    video.reduction = "conv"  # Eq. 8: kernel 4, stride 4 over the D1 features.
    video.kernel_size = 4
    video.stride = 4
    video.filters = 1  # 1024 / 4 * 1 = 256 = D.
    video.dense_features = 128  # Output size of the 'dense' reduction and 'clip' encoder.
    video.temperature = 1.0  # lambda_v (Eq. 9).
    video.fcn = fcn_config("alexnet", first_stride=1)  # Used when encoder = 'fcn'.
    model.fbp = fbp = ml_collections.ConfigDict()
    fbp.global_dim = 128  # O of G-FBP / AG-FBP.
    fbp.global_factor = 4  # K_G.
    fbp.multi_dim = 192  # O of the intra-trunk FBP.
    fbp.multi_factor = 2  # K_M.
    fbp.num_trunks = 6  # H (6 on AFEW, 19 on IEMOCAP).
    fbp.use_bias = True  # Projections with bias (else AG-FBP == G-FBP after the L2 norm).
    fbp.dropout_rate = 0.0  # Dropout on the bilinear product (MFB code); paper: none.
    fbp.signed_sqrt = False  # Power normalisation (MFB code); paper: none.
    # CFN-SR comparison (fusion 'cfn_sr', Fu et al. 2021); sizes of the authors' code.
    model.cfn = cfn = ml_collections.ConfigDict()
    cfn.num_layers = 5  # Pre-LN Transformer encoder layers over the audio sequence.
    cfn.num_heads = 8
    cfn.model_dim = 0  # Width of the encoder; 0: the audio channel count (no input projection).
    cfn.mlp_dim = 0  # 0: 4 x model_dim.
    cfn.dropout_rate = 0.1  # On the residual branches and the MLP hidden layer.
    cfn.attention_dropout_rate = 0.1  # On the self-attention weights.
    cfn.cross_dim = 0  # Size of the cross-modal scoring space (W_v, W_a, u); 0: model_dim.
    cfn.rescale_weights = False  # Cross-modal weights x valid frames in the residual (not paper).
    cfn.audio_output = "summary"  # Concatenated: 'summary' (mean after self-attention) or
    # 'encoder' (mean of the encoder sequence before it, as the authors' code concatenates).

    # ---- optimisation
    config.optim = optim = ml_collections.ConfigDict()
    optim.learning_rate = 1e-4
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.lr_decay_epochs = ()  # Epochs after which the rate is multiplied by the factor.
    optim.lr_decay_factor = 0.5
    optim.warmup_epochs = 0.0
    optim.weight_decay = 0.0  # > 0 switches Adam to AdamW.
    optim.grad_clip_norm = 0.0  # 0: no clipping.
    optim.label_smoothing = 0.0  # Of the training targets (paper: none).
    optim.ema_decay = 0.0  # > 0: evaluate an exponential moving average of the weights.
    optim.frozen = ()  # Top-level parameter groups not trained (e.g. 'audio_encoder').

    # ---- input augmentation, training only (paper: none)
    config.augment = augment = ml_collections.ConfigDict()
    augment.gain_db = 0.0  # Random gain in [-g, g] dB on the stored log power.
    augment.noise_prob = 0.0  # Share of clips with additive noise (white, or tilted) ...
    augment.noise_snr_db = (10.0, 30.0)  # ... at an SNR drawn in this range ...
    augment.noise_tilt = (0.0, 0.0)  # ... power falling as 1/f^a, a drawn here ((0, 0): white).
    augment.talker_prob = 0.0  # Share of clips with other talkers' speech added ...
    augment.talker_snr_db = (5.0, 20.0)  # ... at an SNR drawn in this range ...
    augment.talkers = 3  # ... 1 to this many other training clips' voiced frames, looped.
    augment.freq_warp = 0.0  # Vocal tract length perturbation: bins warped by U[1-w, 1+w].
    augment.reverb_prob = 0.0  # Share of clips put in a room (power-domain reverberation) ...
    augment.reverb_rt60 = (0.2, 0.8)  # ... with a reverberation time (s) in this range.
    augment.band_limit_prob = 0.0  # Share of clips low-passed ...
    augment.band_limit_hz = (2000.0, 4000.0)  # ... at a cutoff drawn in this range ...
    augment.high_pass_hz = (0.0, 0.0)  # ... and high-passed at one drawn here ((0, 0): not).
    # True: the condition changes act on the whole stored clip before its voiced span and level
    # are found (as a changed recording reaches serving); False: on the training crop.
    augment.whole_clip = False
    # Speaker sessions: N > 0 also records every training speaker through N fixed channels
    # (drawn once: a low-pass in band_limit_hz, a high-pass in high_pass_hz, noise at an SNR
    # in noise_snr_db, its power falling as 1/f^a with a drawn in session_noise_tilt; (0, 0):
    # white). A share session_prob of training clips comes from a random session
    # (on the whole clip) and is standardised with its speaker's statistics in that session,
    # as serving standardises a speaker recorded through one channel with its own statistics
    # (needs data.speaker_norm).
    augment.sessions = 0
    augment.session_prob = 0.5
    augment.session_noise_tilt = (0.0, 0.0)
    augment.time_masks = 0  # SpecAugment: masks along time ...
    augment.time_mask_frames = 0  # ... of up to this many frames;
    augment.freq_masks = 0  # masks along the audio features ...
    augment.freq_mask_bins = 0  # ... of up to this many bins / mel channels.
    augment.mixup_alpha = 0.0  # > 0: mixup of both streams, lam ~ Beta(alpha, alpha).
    # > 0: every training clip is read twice (the same crop, its augmentation drawn twice) and
    # this weight times the Jensen-Shannon divergence of the two posteriors joins the loss.
    augment.consistency_weight = 0.0

    # ---- loop
    config.parallel = "pmap"  # Data parallelism: 'pmap', or 'jit' (shard_map over a mesh).
    config.batch_size = 64  # Global batch over all devices and hosts.
    config.num_epochs = 200
    config.num_train_steps = -1  # > 0 overrides num_epochs.
    config.log_every_steps = 50
    config.eval_every_steps = -1  # -1: once per epoch.
    config.checkpoint_every_steps = 500

    # ---- initialisation from single-modality runs (workdirs), for fusion variants
    config.init = ml_collections.ConfigDict()
    config.init.audio_workdir = ""
    config.init.video_workdir = ""

    if fusion in SINGLE_MODALITY:  # Paper IV: single-modality systems.
        config.batch_size = 32
        config.num_epochs = 100
    if fusion == "audio":
        optim.lr_decay_epochs = (50,)  # "After 50 epochs, the learning rate was halved."

    if corpus == "iemocap":
        data.name = "iemocap/improvised"  # 'iemocap/improvised_exc': excited counted as happy.
        data.clip_seconds = 6.0  # 600 frames -> 19 encoder steps, one per trunk (H = 19).
        data.video_shape = (55, 3)  # Face markers x (x, y, z).
        video.encoder = "fcn"
        # lambda_v = 0.5 is the paper's IEMOCAP video-only system; its fusion systems use
        # lambda_a = 0.3 and lambda_v = 1 on both corpora (Section IV).
        video.temperature = 0.5 if fusion == "video" else 1.0
        fbp.num_trunks = 19
        if fusion == "video":
            optim.learning_rate = 2e-4

    return config.lock()


DEMO_SIZES = ("afew", "tiny")


def demo_config(fusion: str = "am_fbp", size: str = "afew") -> ml_collections.ConfigDict:
    """The demo on the embedded synthetic corpus, sized for 2 CPU cores.

    Args:
      fusion: the variant.
      size: 'afew' (`synthetic_av/afew`: AFEW-like sizes, 7 classes, 200-bin spectrograms,
        1024-d face features; the demo of the README) or 'tiny' (`synthetic_av/tiny`: 40 bins,
        32-d faces, 1.2 s clips; trains in seconds, for smoke tests).

    Differences from the paper's AFEW settings, all for speed on a CPU: the 'tiny' FCN preset,
    3.2 s crops, 12 epochs at learning rate 1e-3 (halved after 8) instead of 100-200 at 1e-4;
    the demo trains the fusion variants 6 epochs from the single-modality encoders.
    """
    if size not in DEMO_SIZES:
        raise ValueError(f"demo size must be one of {DEMO_SIZES}, got {size!r}")
    config = get_config("synthetic_av", fusion)
    with config.unlocked():
        config.data.name = f"synthetic_av/{size}"
        config.data.data_dir = "data"
        config.data.clip_seconds = 3.2  # Synthetic clips last 1-4 s; longer ones are cropped.
        config.model.audio = fcn_config("tiny")
        config.batch_size = 32
        config.num_epochs = 12
        config.optim.learning_rate = 1e-3
        config.optim.lr_decay_epochs = (8,)
        config.log_every_steps = 20
        config.eval_every_steps = 62  # Every 2 epochs of the 1000 training clips.
        config.checkpoint_every_steps = 1000
        if size == "tiny":  # 112 training, 56 validation clips.
            config.data.num_bins = 40
            config.data.video_shape = (32,)
            config.data.clip_seconds = 1.2
            config.model.fbp.global_dim = 16
            config.model.fbp.multi_dim = 16
            config.model.fbp.num_trunks = 3
            config.batch_size = 16
            config.optim.learning_rate = 3e-3
            config.optim.lr_decay_epochs = ()
            config.log_every_steps = 5
            config.eval_every_steps = 7
            config.checkpoint_every_steps = 10
    return config
