"""How much a recording condition moves a clip's level, measured over the whole band or a band.

    python scripts/level_shift.py --manual_dir=<ravdess-dev> --conditions=telephone,pink10

A clip's voiced frames and level (`data.voiced_db`, `data.level_norm`) are measured over the
stored bins of `frontend.level_bins`. Each speaker is standardised with its own clips, which
removes a shift common to all of them; what a condition does to each clip's level beyond that
(its spread, and how it differs between emotions) reaches the model. For `--clips` RAVDESS
clips drawn at random (levels only; no model, no accuracy), prints for each band and condition
the clip level as recorded minus the level under the condition, over the clip's voiced frames
(35 dB of its loudest): mean, standard deviation and mean per emotion, in nepers.
"""

import argparse
import collections
import glob
import os

import ml_collections
import numpy as np

from data_prep.features import audio as audio_lib
from data_prep.features import conditions
from fbp_jax.model import frontend

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual_dir", required=True, help="RAVDESS: Actor_*/*.flac or .wav")
    parser.add_argument("--conditions", default="telephone,pink10")
    parser.add_argument("--bands", default="0-0,300-3400,500-3000", help="Hz; 0-0: all bins")
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = sorted(
        f
        for ext in ("flac", "wav")
        for f in glob.glob(os.path.join(args.manual_dir, "**", f"*.{ext}"), recursive=True)
    )
    if not files:
        raise SystemExit(f"no .flac or .wav clips under {args.manual_dir}")
    rng = np.random.default_rng(args.seed)
    files = [files[i] for i in rng.choice(len(files), min(args.clips, len(files)), replace=False)]
    names = args.conditions.split(",")
    bands = {}
    for band in args.bands.split(","):
        low, high = (float(x) for x in band.split("-"))
        config = ml_collections.ConfigDict(
            {"num_bins": audio_lib.NUM_BINS, "level_low_hz": low, "level_high_hz": high}
        )
        bands[band] = frontend.level_bins(config)
    shifts, emotions = collections.defaultdict(list), []
    for path in files:
        x = audio_lib.load_audio(path).samples
        power = {c: audio_lib.log_spectrogram(conditions.apply(c, x)) for c in ["original", *names]}
        emotions.append(EMOTIONS[int(os.path.basename(path).split("-")[2]) - 1])
        for band, bins in bands.items():
            level = {c: frontend.frame_level(p, bins) for c, p in power.items()}
            voiced = frontend.voiced_levels(level["original"], conditions.VOICED_DB)
            for c in names:
                shifts[band, c].append(level["original"][voiced].mean() - level[c][voiced].mean())
    emotions = np.array(emotions)
    print(f"{len(files)} clips; level as recorded minus under the condition, nepers")
    for (band, c), v in shifts.items():
        v = np.array(v)
        by = ", ".join(
            f"{e} {v[emotions == e].mean():.2f}" for e in EMOTIONS if (emotions == e).any()
        )
        print(f"{band:>10s} Hz  {c:10s} {v.mean():6.2f} +- {v.std():.3f}   ({by})")


if __name__ == "__main__":
    main()
