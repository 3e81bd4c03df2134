"""IEMOCAP improvised, 4 classes, fusion 'video'; fold: train sessions 1-4, test session 5.

python train.py --config=configs/iemocap_video.py
"""

from configs import common


def get_config():
    return common.get_config("iemocap", "video")
