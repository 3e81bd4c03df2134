"""AFEW 8.0 (EmotiW 2019), fusion 'm_fbp', with the paper's hyperparameters.

python train.py --config=configs/afew_mfbp.py
"""

from configs import common


def get_config():
    return common.get_config("afew", "m_fbp")
