"""Synthetic speaker folds, fusion 'g_fbp'; the argument picks the fold (synthetic_cv_common.py).

python -m fbp_jax.evaluation.cross_validation --config=configs/synthetic_cv_gfbp.py --workdir=workdirs/cv/g_fbp
python train.py --config=configs/synthetic_cv_gfbp.py:1 --config.data.data_dir=data
"""

from configs import synthetic_cv_common


def get_config(fold=None):
    return synthetic_cv_common.get_config("g_fbp", fold)
