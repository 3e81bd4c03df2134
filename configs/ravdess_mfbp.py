"""RAVDESS speech, fusion 'm_fbp'; the argument picks the fold ('dev' or 1-6, ravdess_common.py).

python train.py --config=configs/ravdess_mfbp.py:dev --config.data.data_dir=data
"""

from configs import ravdess_common


def get_config(fold=None):
    return ravdess_common.get_config("m_fbp", fold)
