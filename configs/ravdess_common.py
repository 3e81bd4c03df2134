"""RAVDESS speech (data_prep/ravdess.py): folds by actor, and settings for a small corpus.

The config argument picks the fold, e.g. `--config=configs/ravdess_amfbp.py:3`:

* `dev` (default): the development copy in ../shared/data/ravdess-dev has actors 01-12 only;
  train on 01-10, choose the checkpoint on 11-12 (no test split).
* `1` .. `6`: the public protocol, 6 folds of 4 consecutive actors. Fold k tests on actors
  4k-3 .. 4k, chooses its checkpoint on the next fold's 4 actors, and trains on the other 16,
  so the test actors never take part in model selection.

Differences from the paper's AFEW settings: 1,440 clips (719 in the dev copy) are too few for
the AlexNet FCN, so the audio encoder is the 'tiny' preset with 3.2 s crops (the speech sits
in the middle of 3-5 s clips), and the 35 clip-level facial features are reduced by a dense
layer (they are not 4-divisible face-network features).
"""

from configs import common

NUM_ACTORS = 24
FOLD_SIZE = 4
FOLDS = tuple(str(k) for k in range(1, NUM_ACTORS // FOLD_SIZE + 1))
DEV_TRAIN_ACTORS = tuple(range(1, 11))
DEV_EVAL_ACTORS = (11, 12)


def _splits(actors) -> str:
    return "+".join(f"actor{a:02d}" for a in actors)


def fold_actors(fold: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(train, validation, test) actors of a fold: 'dev' or '1'..'6'."""
    if fold == "dev":
        return DEV_TRAIN_ACTORS, DEV_EVAL_ACTORS, ()
    if fold not in FOLDS:
        raise ValueError(f"RAVDESS fold must be 'dev' or one of {FOLDS}, got {fold!r}.")
    k = int(fold)
    test = tuple(range(FOLD_SIZE * (k - 1) + 1, FOLD_SIZE * k + 1))
    k_val = k % len(FOLDS) + 1
    val = tuple(range(FOLD_SIZE * (k_val - 1) + 1, FOLD_SIZE * k_val + 1))
    train = tuple(a for a in range(1, NUM_ACTORS + 1) if a not in test + val)
    return train, val, test


def get_config(fusion: str, fold: str | None = None):
    fold = fold or "dev"
    config = common.get_config("ravdess", fusion)
    train, val, test = fold_actors(fold)
    with config.unlocked():
        config.fold = fold  # This run's fold; `folds`: every fold of the protocol.
        config.folds = FOLDS
        data = config.data
        data.name = "ravdess/speech"
        data.train_split = _splits(train)
        data.eval_split = _splits(val)
        data.test_split = _splits(test)
        data.clip_seconds = 3.2
        data.video_shape = (35,)
        data.shuffle_buffer = 1024
        config.model.audio = common.fcn_config("tiny")
        config.model.video.reduction = "dense"
        config.model.video.dense_features = 64
        config.batch_size = 32
        config.num_epochs = 60 if fusion in common.SINGLE_MODALITY else 30
        config.optim.learning_rate = 1e-3 if fusion in common.SINGLE_MODALITY else 3e-4
        config.optim.lr_decay_epochs = (config.num_epochs * 2 // 3,)
        config.eval_every_steps = 2 * 20  # Every 2 epochs of ~600 clips.
        config.log_every_steps = 20
        config.checkpoint_every_steps = 1000
    return config
