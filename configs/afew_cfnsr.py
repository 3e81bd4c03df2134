"""AFEW 8.0 (EmotiW 2019), fusion 'cfn_sr' (the CFN-SR comparison) on the paper's encoders.

python train.py --config=configs/afew_cfnsr.py
"""

from configs import common


def get_config():
    return common.get_config("afew", "cfn_sr")
