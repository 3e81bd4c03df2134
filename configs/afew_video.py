"""AFEW 8.0 (EmotiW 2019), fusion 'video', with the paper's hyperparameters.

python train.py --config=configs/afew_video.py            # afew/fer (D1 = 128)
python train.py --config=configs/afew_video.py:1024       # afew/features, your 1024-d features
"""

from configs import afew_common


def get_config(features=None):
    return afew_common.get_config("video", features)
