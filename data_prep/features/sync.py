"""Whether the two streams of a clip cover the same time, within a documented tolerance.

A clip's audio and its video (or motion-capture markers) come from one recording, so their
durations agree up to a frame or two and a short lead-in. They may differ by up to
`TOLERANCE_S` seconds or `TOLERANCE_FRACTION` of the longer one, whichever is larger; beyond
that one of the files is cut short or belongs to another take. Such a clip is reported, and
the builder's `duration_mismatch` setting decides: 'keep' (default: written, with a note in
the build report) or 'skip' (left out, with the reason).
"""

from __future__ import annotations

from data_prep.errors import BadClip

TOLERANCE_S = 0.5
TOLERANCE_FRACTION = 0.1
POLICIES = ("keep", "skip")


def check_durations(
    path: str, audio_s: float, other_s: float, other: str = "video", policy: str = "keep"
) -> list[str]:
    """Notes for the report ([] when the streams agree).

    Raises:
      BadClip: they differ beyond the tolerance and `policy` is 'skip'.
      ValueError: an unknown policy.
    """
    if policy not in POLICIES:
        raise ValueError(f"duration_mismatch must be one of {POLICIES}, got {policy!r}")
    gap = abs(audio_s - other_s)
    if gap <= max(TOLERANCE_S, TOLERANCE_FRACTION * max(audio_s, other_s)):
        return []
    message = f"audio lasts {audio_s:.2f} s but the {other} {other_s:.2f} s ({gap:.2f} s apart)"
    if policy == "skip":
        raise BadClip(path, message)
    return [f"{message}; kept (duration_mismatch='keep')"]
