"""AFEW 8.0 (EmotiW 2019), fusion 'ag_fbp', with the paper's hyperparameters.

python train.py --config=configs/afew_agfbp.py
"""

from configs import common


def get_config():
    return common.get_config("afew", "ag_fbp")
