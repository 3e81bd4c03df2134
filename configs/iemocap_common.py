"""IEMOCAP improvised (data_prep/iemocap.py): leave-one-session-out folds.

The config argument picks the fold, e.g. `--config=configs/iemocap_amfbp.py:5`: fold k tests on
session k, chooses its checkpoint on the next session (k mod 5 + 1), and trains on the other
three, so the test speakers never take part in model selection. The paper's settings otherwise.
"""

from configs import common

NUM_SESSIONS = 5
FOLDS = tuple(str(k) for k in range(1, NUM_SESSIONS + 1))


def fold_sessions(fold: str) -> tuple[tuple[int, ...], int, int]:
    """(train sessions, validation session, test session) of fold '1'..'5'."""
    if fold not in FOLDS:
        raise ValueError(f"IEMOCAP fold must be one of {FOLDS}, got {fold!r}.")
    test = int(fold)
    val = test % NUM_SESSIONS + 1
    return tuple(s for s in range(1, NUM_SESSIONS + 1) if s not in (test, val)), val, test


def get_config(fusion: str, fold: str | None = None):
    fold = fold or FOLDS[-1]
    train, val, test = fold_sessions(fold)
    config = common.get_config("iemocap", fusion)
    with config.unlocked():
        config.fold = fold
        config.folds = FOLDS
        config.data.train_split = "+".join(f"session{s}" for s in train)
        config.data.eval_split = f"session{val}"
        config.data.test_split = f"session{test}"
    return config
