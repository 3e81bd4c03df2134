"""Splices RAVDESS clips of one actor into one recording with pauses: a multi-emotion test file
for `fbp-jax predict --timeline` (the README's figure).

    python scripts/splice_ravdess.py --manual_dir=<RAVDESS> --actor=1 \
        --emotions=angry,sad,happy,neutral,fearful --output=docs/actor01_spliced.flac

Writes the recording (16 kHz mono) and, beside it, `<output>.truth.csv`: start_s, end_s and the
emotion of each clip. Each emotion's clips are taken in file order, `--per_emotion` of them.
"""

import argparse
import csv
import glob
import os

import numpy as np
import soundfile

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual_dir", required=True)
    parser.add_argument("--actor", type=int, required=True)
    parser.add_argument("--emotions", default="angry,sad,happy,neutral,fearful")
    parser.add_argument("--per_emotion", type=int, default=2)
    parser.add_argument("--pause_seconds", type=float, default=1.5)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    folder = os.path.join(args.manual_dir, f"Actor_{args.actor:02d}")
    files = sorted(glob.glob(os.path.join(folder, "03-01-*")))
    rng = np.random.default_rng(0)
    parts, rows, t = [], [], 0.0
    for name in args.emotions.split(","):
        code = EMOTIONS.index(name) + 1
        chosen = [f for f in files if os.path.basename(f).split("-")[2] == f"{code:02d}"]
        for path in chosen[: args.per_emotion]:
            x, rate = soundfile.read(path, dtype="float32", always_2d=True)
            if rate != 16000:
                raise SystemExit(f"{path}: {rate} Hz; give the 16 kHz development copy")
            x = x.mean(axis=1)
            rows.append((round(t, 3), round(t + len(x) / rate, 3), name))
            parts.append(x)
            t += len(x) / rate
            pause = int(args.pause_seconds * rate)
            parts.append((1e-4 * rng.standard_normal(pause)).astype(np.float32))
            t += pause / rate
    soundfile.write(args.output, np.concatenate(parts), 16000)
    with open(args.output + ".truth.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start_s", "end_s", "emotion"])
        writer.writerows(rows)
    print(f"{args.output}: {t:.1f} s, {len(rows)} clips")


if __name__ == "__main__":
    main()
