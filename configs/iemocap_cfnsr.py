"""IEMOCAP improvised, 4 classes, fusion 'cfn_sr'; fold: train sessions 1-4, test session 5.

python train.py --config=configs/iemocap_cfnsr.py
"""

from configs import common


def get_config():
    return common.get_config("iemocap", "cfn_sr")
