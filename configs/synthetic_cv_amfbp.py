"""Synthetic speaker folds, fusion 'am_fbp'; the argument picks the fold (synthetic_cv_common.py).

python -m fbp_jax.evaluation.cross_validation --config=configs/synthetic_cv_amfbp.py --workdir=workdirs/cv/am_fbp
python train.py --config=configs/synthetic_cv_amfbp.py:1 --config.data.data_dir=data
"""

from configs import synthetic_cv_common


def get_config(fold=None):
    return synthetic_cv_common.get_config("am_fbp", fold)
