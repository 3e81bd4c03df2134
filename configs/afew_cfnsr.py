"""AFEW 8.0 (EmotiW 2019), fusion 'cfn_sr' (the CFN-SR comparison) on the paper's encoders.

python train.py --config=configs/afew_cfnsr.py            # afew/fer (D1 = 128)
python train.py --config=configs/afew_cfnsr.py:1024       # afew/features, your 1024-d features
"""

from configs import afew_common


def get_config(features=None):
    return afew_common.get_config("cfn_sr", features)
