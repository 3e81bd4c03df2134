"""Which frames the voiced-span rules take in, per recording condition (audio only: no labels,
no model).

    python scripts/voiced_span.py --manual_dir=<ravdess-dev>

Every 12th clip of actors 01-09 of the development copy (45 clips), in each condition of
`--conditions` (`data_prep.features.conditions`), under three rules of
`frontend.voiced_levels` (all with `data.voiced_db=35`):

* `35 dB`: the span from the first to the last frame within 35 dB of the loudest (the recipe);
* `loud`: also bounded by the frames within `--span_db` of the loudest, `--margin_s` either
  side (`data.voiced_span_db`, `data.voiced_floor_margin_s`);
* `reach`: that bound reaching out `--reach_s` to frames `--reach_floor_db` above the noise
  floor (`data.voiced_reach_s`, `data.voiced_reach_floor_db`).

For each: the span's mean length in frames (10 ms), the frames of it outside the clean
recording's 35 dB span (masker alone) and the frames of that span it misses (both only for
conditions that keep the clip's timing: not for `trimmed`, `padded`, `resampled`), and the
share of clips whose span is the condition's own 35 dB span (a rule that changes nothing there
leaves a model trained without it as it was).
"""

import argparse
import glob
import os

import ml_collections
import numpy as np

from data_prep.features import audio, conditions
from fbp_jax.model import frontend

CONDITIONS = "original,trimmed,telephone,noise20,noise10,pink10,babble10"
UNTIMED = ("trimmed", "padded", "resampled")  # conditions that move the speech in the file


def span(samples: np.ndarray, data: ml_collections.ConfigDict) -> tuple[int, int]:
    """[first, end) of the voiced frames `clip_view` would keep."""
    level = frontend.frame_level(audio.log_spectrogram(samples))
    where = np.flatnonzero(frontend.voiced_levels(level, *frontend.voiced_settings(data)))
    return int(where[0]), int(where[-1]) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manual_dir", required=True, help="the RAVDESS development copy")
    parser.add_argument("--conditions", default=CONDITIONS)
    parser.add_argument("--span_db", type=float, default=12.0)
    parser.add_argument("--margin_s", type=float, default=0.15)
    parser.add_argument("--reach_s", type=float, default=1.0)
    parser.add_argument("--reach_floor_db", type=float, default=15.0)
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(args.manual_dir, "Actor_0[1-9]", "*.flac")))[::12]
    if not paths:
        raise SystemExit(f"no Actor_0[1-9]/*.flac clips under {args.manual_dir}")
    base = dict(audio_fps=100, voiced_db=35.0)  # each rule adds to the one before
    loud = dict(base, voiced_span_db=args.span_db, voiced_floor_margin_s=args.margin_s)
    reach = dict(loud, voiced_reach_s=args.reach_s, voiced_reach_floor_db=args.reach_floor_db)
    rules = {
        k: ml_collections.ConfigDict(v)
        for k, v in (("35 dB", base), ("loud", loud), ("reach", reach))
    }
    names = args.conditions.split(",")
    rows = {(c, r): [] for c in names for r in rules}
    for path in paths:
        x = audio.load_audio(path).samples
        a0, b0 = span(x, rules["35 dB"])  # the clean recording's span
        for c in names:
            y = conditions.apply(c, x)
            own = span(y, rules["35 dB"])
            for r, data in rules.items():
                a, b = span(y, data)
                inside = max(0, min(b, b0) - max(a, a0))
                timed = c not in UNTIMED
                rows[c, r].append(
                    (
                        b - a,
                        b - a - inside if timed else np.nan,
                        b0 - a0 - inside if timed else np.nan,
                        (a, b) == own,
                    )
                )
    print(
        f"{len(paths)} clips; loud: {args.span_db:g} dB, {args.margin_s:g} s; reach: "
        f"{args.reach_s:g} s, {args.reach_floor_db:g} dB above the noise floor"
    )
    print(
        "| condition | rule | span, frames | outside the clean span | clean span missed "
        "| clips unchanged |"
    )
    print("|---|---|---|---|---|---|")
    for (c, r), values in rows.items():
        n, outside, missed, same = np.array(values, np.float64).mean(axis=0)
        cells = [f"{v:.1f}" if np.isfinite(v) else "-" for v in (n, outside, missed)]
        print(f"| {c} | {r} | {' | '.join(cells)} | {100 * same:.0f} % |")


if __name__ == "__main__":
    main()
