"""RAVDESS speech (data_prep/ravdess.py): folds by actor, and a recipe for a small corpus.

The config argument is `FOLD[,RECIPE]`, e.g. `--config=configs/ravdess_amfbp.py:dev3,paper`:

* `dev` (default): the development copy (actors 01-12 only); train on 01-10, choose the
  checkpoint on 11-12 (no test split). `config.folds` lists `dev1` .. `dev6`, so
  `python -m fbp_jax.evaluation.cross_validation --config=configs/ravdess_amfbp.py:dev` runs them.
* `dev1` .. `dev6`: speaker-independent cross-validation on the development copy, 6 folds of
  2 actors: fold k tests on actors 2k-1 and 2k, chooses its checkpoint on the next pair and
  trains on the other 8. Every recipe decision is taken on the mean over these folds.
* `all`: every development actor (01-12) trains; its "validation" split is the training
  split itself, which only monitors the fit (use the latest checkpoint: nothing is chosen).
  This is how the shipped model (fbp_jax/serving/models/ravdess-audio) was trained.
* `1` .. `6`: the public protocol on all 24 actors, 6 folds of 4 consecutive actors. Fold k
  tests on actors 4k-3 .. 4k, chooses its checkpoint on the next fold's 4 actors, and trains on
  the other 16.

In every fold the test actors never take part in model selection. RECIPE is `small` (default,
`small_data_recipe`) or `paper` (the settings before it: no augmentation, no averaging, the
stored 200 linear bins with statistics of the training split).

Differences from the paper's AFEW settings either way: 1,440 clips (719 in the dev copy) are
too few for the AlexNet FCN, so the audio encoder is the 'tiny' preset with 3.2 s crops (the
speech sits in the middle of 3-5 s clips); the 35 clip-level facial features are not
4-divisible face-network features, so they are reduced by a dense layer.
"""

import ml_collections

from configs import common

NUM_ACTORS = 24
FOLD_SIZE = 4
FOLDS = tuple(str(k) for k in range(1, NUM_ACTORS // FOLD_SIZE + 1))
DEV_ACTORS = tuple(range(1, 13))
DEV_FOLD_SIZE = 2
DEV_FOLDS = tuple(f"dev{k}" for k in range(1, len(DEV_ACTORS) // DEV_FOLD_SIZE + 1))
DEV_TRAIN_ACTORS = tuple(range(1, 11))
DEV_EVAL_ACTORS = (11, 12)
RECIPES = ("small", "paper")


def _splits(actors) -> str:
    return "+".join(f"actor{a:02d}" for a in actors)


def _rotating_folds(actors, fold_size: int, k: int):
    """Fold k (1-based) of consecutive groups: (train, validation = next group, test)."""
    groups = [tuple(actors[i : i + fold_size]) for i in range(0, len(actors), fold_size)]
    test, val = groups[k - 1], groups[k % len(groups)]
    train = tuple(a for a in actors if a not in test + val)
    return train, val, test


def fold_actors(fold: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(train, validation, test) actors of a fold: 'dev', 'dev1'..'dev6' or '1'..'6'."""
    if fold == "dev":
        return DEV_TRAIN_ACTORS, DEV_EVAL_ACTORS, ()
    if fold == "all":
        return DEV_ACTORS, DEV_ACTORS, ()
    if fold in DEV_FOLDS:
        return _rotating_folds(DEV_ACTORS, DEV_FOLD_SIZE, int(fold[3:]))
    if fold in FOLDS:
        return _rotating_folds(tuple(range(1, NUM_ACTORS + 1)), FOLD_SIZE, int(fold))
    raise ValueError(
        f"RAVDESS fold must be 'dev', 'all', one of {DEV_FOLDS} or {FOLDS}, got {fold!r}."
    )


def parse_argument(argument: str | None) -> tuple[str, str]:
    """'FOLD[,RECIPE]' -> (fold, recipe); defaults 'dev' and 'small'."""
    parts = [p.strip() for p in (argument or "").split(",") if p.strip()]
    fold = parts[0] if parts else "dev"
    recipe = parts[1] if len(parts) > 1 else "small"
    if len(parts) > 2 or recipe not in RECIPES:
        raise ValueError(f"RAVDESS config argument is FOLD[,RECIPE] with RECIPE in {RECIPES}")
    return fold, recipe


def small_data_recipe(config: ml_collections.ConfigDict) -> None:
    """The small-data recipe (docs/recipe.md): a log-mel view of each clip's voiced span
    (bounded by its loud frames and the quiet edges near them),
    level-normalised and standardised per speaker over voiced frames, recording-condition
    augmentation (vocal tract length, room, band limit, noise; for the audio model also
    whole recordings through fixed channels, `augment.sessions`), no LRN, SpecAugment, mixup,
    label smoothing, AdamW, a weight average; the clip-level AU row encoded once; modality
    dropout for fusion."""
    fusion = config.model.fusion
    d, aug, model, optim = config.data, config.augment, config.model, config.optim
    d.frontend = "mel"
    d.num_mel = 64
    d.speaker_norm = True
    d.voiced_db = 35.0
    d.level_norm = True
    aug.freq_warp = 0.1
    aug.reverb_prob = 0.3
    aug.band_limit_prob = 0.3
    aug.noise_prob = 0.3
    aug.noise_snr_db = (5.0, 30.0)
    aug.time_masks = 2
    aug.time_mask_frames = 20
    aug.freq_masks = 2
    aug.freq_mask_bins = 6
    aug.mixup_alpha = 0.2
    model.audio.use_lrn = False
    model.video.encoder = "clip"
    model.video.clip_hidden = (128,)
    model.video.clip_dropout = 0.5
    model.modality_dropout = 0.0 if fusion in common.SINGLE_MODALITY else 0.2
    optim.label_smoothing = 0.1
    optim.weight_decay = 1e-3
    optim.ema_decay = 0.99
    # The voiced span bounded by the loud frames, reaching out to the quiet edges that stand
    # well above the noise floor: a masker in the pauses is read far less (a22). The fusion
    # models show their audio encoder the same view (f23).
    d.voiced_span_db = 12.0
    d.voiced_floor_margin_s = 0.15
    d.voiced_reach_s = 1.0
    d.voiced_reach_floor_db = 15.0
    if fusion == "audio":
        # Half as long again as a23's 100 epochs: its checkpoints were chosen late (a27).
        config.num_epochs = 150
        optim.lr_decay_epochs = (105,)
        # Each training speaker also recorded through 8 fixed noisy, band-limited channels and
        # standardised with its statistics there, as serving standardises a recording (a23).
        aug.sessions = 8


def get_config(fusion: str, argument: str | None = None):
    fold, recipe = parse_argument(argument)
    config = common.get_config("ravdess", fusion)
    train, val, test = fold_actors(fold)
    with config.unlocked():
        config.fold = fold  # This run's fold; `folds`: every fold of the protocol.
        config.folds = FOLDS if fold in FOLDS else DEV_FOLDS
        config.recipe = recipe
        data = config.data
        data.name = "ravdess/speech"
        data.train_split = _splits(train)
        data.eval_split = _splits(val)
        data.test_split = _splits(test)
        data.clip_seconds = 3.2
        data.video_shape = (35,)
        # Predicting from media files: the AUs come from OpenFace's CSV (or a clip table), the
        # frames where it tracked no face left out of the clip's mean.
        data.video_features = "openface_au"
        data.use_video_valid = True
        data.shuffle_buffer = 1024
        config.model.audio = common.fcn_config("tiny")
        config.model.video.reduction = "dense"
        config.model.video.dense_features = 64
        config.batch_size = 32
        config.num_epochs = 60 if fusion in common.SINGLE_MODALITY else 30
        config.optim.learning_rate = 1e-3 if fusion in common.SINGLE_MODALITY else 3e-4
        config.optim.lr_decay_epochs = (config.num_epochs * 2 // 3,)
        config.eval_every_steps = 40  # About every 2-3 epochs of 480-600 clips.
        config.log_every_steps = 20
        config.checkpoint_every_steps = 1000
        if recipe == "small":
            small_data_recipe(config)
    return config
