"""CREMA-D, 6 classes, fusion 'am_fbp'; the argument picks the fold (test actor group 1-5,
default 1; see cremad_common.py).

python -m data_prep.build cremad --manual_dir=/data/CREMA-D --data_dir=data
python train.py --config=configs/cremad_amfbp.py:1 --config.data.data_dir=data
"""

from configs import cremad_common


def get_config(fold=None):
    return cremad_common.get_config("am_fbp", fold)
