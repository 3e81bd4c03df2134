"""RAVDESS speech, fusion 'g_fbp'; the argument is FOLD[,RECIPE] (ravdess_common.py).

python train.py --config=configs/ravdess_gfbp.py:dev --config.data.data_dir=data
"""

from configs import ravdess_common


def get_config(fold=None):
    return ravdess_common.get_config("g_fbp", fold)
