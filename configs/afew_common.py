"""AFEW (data_prep/afew.py): the paper's settings on the records the AFEW builder writes.

The config argument picks the face features:

* none (default): `afew/fer`, the project's face pipeline (MTCNN, aligned faces, FER2013
  mini-Xception): D1 = 128 per frame. The paper's reduction (kernel 4, stride 4) runs with 4
  filters, so D = 128: an already compact vector is regrouped, not reduced further (with one
  filter it would shrink to 32; the paper reduces its 1024-d FR-Net-B features to 256).
* an integer D1, e.g. `--config=configs/afew_amfbp.py:1024`: `afew/features`, the user's
  own per-frame features of that size (built with `--face_features_dir`), with the paper's
  reduction (one filter: D = D1 / 4, 256 for the paper's 1024-d FR-Net-B features).

Splits: `train`, model selection on `validation` (the test labels are not public).
"""

from configs import common


def get_config(fusion: str, features: str | None = None):
    config = common.get_config("afew", fusion)
    with config.unlocked():
        if features in (None, "", "fer"):
            config.data.name = "afew/fer"
            config.data.video_shape = (128,)
            config.model.video.filters = 4
        else:
            if not str(features).isdigit() or int(features) % config.model.video.stride:
                raise ValueError(
                    f"AFEW config argument must be empty, 'fer' or the D1 of your features "
                    f"(divisible by {config.model.video.stride}), got {features!r}."
                )
            config.data.name = "afew/features"
            config.data.video_shape = (int(features),)
            config.model.video.filters = 1
    return config
