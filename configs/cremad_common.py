"""CREMA-D (data_prep/cremad.py): five actor groups, speaker-independent folds.

The config argument picks the fold, e.g. `--config=configs/cremad_amfbp.py:3`: fold k tests on
actor group k, chooses its checkpoint on the next group (k mod 5 + 1), and trains on the other
three (55 actors), so the test actors never take part in model selection. Default fold: 1.

Records: `cremad/fer` (the face pipeline: 128-d FER2013 features per frame; the reduction keeps
D = 128 with 4 filters, see afew_common.py). The paper's AFEW hyperparameters otherwise, with
3.2 s crops: CREMA-D sentences last 1.3-5 s (2.5 s on average).
"""

from configs import common

NUM_GROUPS = 5
FOLDS = tuple(str(k) for k in range(1, NUM_GROUPS + 1))


def fold_groups(fold: str) -> tuple[tuple[int, ...], int, int]:
    """(train groups, validation group, test group) of fold '1'..'5'."""
    if fold not in FOLDS:
        raise ValueError(f"CREMA-D fold must be one of {FOLDS}, got {fold!r}.")
    test = int(fold)
    val = test % NUM_GROUPS + 1
    return tuple(g for g in range(1, NUM_GROUPS + 1) if g not in (test, val)), val, test


def get_config(fusion: str, fold: str | None = None):
    fold = fold or FOLDS[0]
    train, val, test = fold_groups(fold)
    config = common.get_config("cremad", fusion)
    with config.unlocked():
        config.fold = fold
        config.folds = FOLDS
        data = config.data
        data.name = "cremad/fer"
        data.train_split = "+".join(f"group{g}" for g in train)
        data.eval_split = f"group{val}"
        data.test_split = f"group{test}"
        data.clip_seconds = 3.2
        data.video_shape = (128,)
        config.model.video.filters = 4
    return config
