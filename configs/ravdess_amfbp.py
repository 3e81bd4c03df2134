"""RAVDESS speech, fusion 'am_fbp'; the argument is FOLD[,RECIPE] (ravdess_common.py).

python train.py --config=configs/ravdess_amfbp.py:dev --config.data.data_dir=data
"""

from configs import ravdess_common


def get_config(fold=None):
    return ravdess_common.get_config("am_fbp", fold)
