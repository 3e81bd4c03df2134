"""IEMOCAP improvised, 4 classes, fusion 'g_fbp'; the argument picks the leave-one-session-out fold
(test session 1-5, default 5; see iemocap_common.py).

python train.py --config=configs/iemocap_gfbp.py:5 --config.data.data_dir=data
"""

from configs import iemocap_common


def get_config(fold=None):
    return iemocap_common.get_config("g_fbp", fold)
