"""Cross-validation on the synthetic corpus (data_prep/synthetic.py, config 'folds'): 5 speaker
folds of 6 speakers and 150 clips each, AFEW-like features (200 bins, 1024-d faces).

The config argument picks the fold, e.g. `--config=configs/synthetic_cv_amfbp.py:3`: fold k
tests on fold k's speakers, chooses its checkpoint on the next fold (k mod 5 + 1), and trains on
the other three, so the test speakers never take part in model selection. All folds at once:

    python -m data_prep.build synthetic_av/folds --data_dir=data
    python -m fbp_jax.evaluation.cross_validation --config=configs/synthetic_cv_amfbp.py \
        --workdir=workdirs/cv/am_fbp

Settings otherwise those of the demo (configs/demo.py: 'tiny' FCN, 3.2 s crops, learning rate
1e-3), but every fusion variant is trained from scratch, 10 epochs of the 450 training clips (the
learning rate halved after 7).
"""

from configs import demo

NUM_FOLDS = 5
FOLDS = tuple(str(k) for k in range(1, NUM_FOLDS + 1))


def fold_splits(fold: str, num_folds: int = NUM_FOLDS) -> tuple[str, str, str]:
    """(train, validation, test) TFDS splits of fold '1'..'K' of the synthetic folds corpus."""
    folds = tuple(str(k) for k in range(1, num_folds + 1))
    if fold not in folds:
        raise ValueError(f"synthetic fold must be one of {folds}, got {fold!r}.")
    test = int(fold)
    val = test % num_folds + 1
    train = "+".join(f"fold{k}" for k in range(1, num_folds + 1) if k not in (test, val))
    return train, f"fold{val}", f"fold{test}"


def get_config(fusion: str, fold: str | None = None):
    fold = fold or FOLDS[0]
    config = demo.get_config(fusion)
    train, val, test = fold_splits(fold)
    with config.unlocked():
        config.fold = fold  # This run's fold; `folds`: every fold of the protocol.
        config.folds = FOLDS
        config.data.name = "synthetic_av/folds"
        config.data.train_split = train
        config.data.eval_split = val
        config.data.test_split = test
        config.num_epochs = 10
        config.optim.lr_decay_epochs = (7,)
        config.eval_every_steps = 28  # Every 2 epochs of the 450 training clips (batch 32).
    return config
