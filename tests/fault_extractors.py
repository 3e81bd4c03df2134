"""Extractors that misbehave, for the fault tests (module level: worker processes import them)."""

import os

import numpy as np


def die_on_c2(source):
    """Kills its own process on clip c2 (as a decoder crash would); a tiny example otherwise."""
    if source.clip_id == "c2":
        os._exit(1)
    example = {
        "clip_id": source.clip_id,
        "audio": np.zeros((4, 2), np.float32),
        "video": np.zeros((1, 2), np.float32),
        "video_valid": np.ones(1, bool),
        "duration_s": np.float32(0.04),
    }
    return example, []
