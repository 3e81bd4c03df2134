"""AFEW 8.0 (EmotiW 2019), fusion 'audio', with the paper's hyperparameters.

python train.py --config=configs/afew_audio.py
"""

from configs import common


def get_config():
    return common.get_config("afew", "audio")
