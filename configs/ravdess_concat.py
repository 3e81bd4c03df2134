"""RAVDESS speech, fusion 'concat'; the argument is FOLD[,RECIPE] (ravdess_common.py).

python train.py --config=configs/ravdess_concat.py:dev --config.data.data_dir=data
"""

from configs import ravdess_common


def get_config(fold=None):
    return ravdess_common.get_config("concat", fold)
