"""What AM-FBP's adaptive weight mu (the audio share) does, by which single stream is right.

    python scripts/mu_by_stream.py --fusion=cv/amfbp --audio=cv/audio --video=cv/video

Reads the `test_predictions.csv` of three finished cross-validations of the same folds (the
fusion run, and the audio and video runs it started from), matches the clips, and prints the
table of docs/model.md: per group of clips (audio alone right and video alone wrong, both
right, ...) the count, the mean mu and its 10th-90th percentile, and how often the fusion
model is right; then mu's mean per class and its range over speakers (RAVDESS names: the
actor is the file name's last field).
"""

import argparse
import csv
import os

import numpy as np

GROUPS = (
    ("audio alone right, video alone wrong", True, False),
    ("both right", True, True),
    ("video alone right, audio alone wrong", False, True),
    ("both wrong", False, False),
)


def read(workdir: str) -> dict[str, dict[str, str]]:
    path = os.path.join(workdir, "test_predictions.csv")
    with open(path, newline="") as f:
        return {row["clip_id"]: row for row in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("fusion", "audio", "video"):
        parser.add_argument(f"--{name}", required=True, help=f"the {name} CV workdir")
    args = parser.parse_args()
    fusion, audio, video = read(args.fusion), read(args.audio), read(args.video)
    clips = sorted(set(fusion) & set(audio) & set(video))
    if not clips or "mu" not in fusion[clips[0]]:
        raise SystemExit(f"{args.fusion}: no clips shared with the other two, or no mu column")
    mu = np.array([float(fusion[c]["mu"]) for c in clips])
    right = {k: np.array([d[c]["correct"] == "1" for c in clips]) for k, d in
             (("fusion", fusion), ("audio", audio), ("video", video))}  # fmt: skip
    print(f"{len(clips)} clips; mean mu {mu.mean():.3f}")
    print("| test clips where ... | clips | mean mu | 10th-90th percentile | fusion right |")
    print("|---|---|---|---|---|")
    for name, a, v in GROUPS:
        m = (right["audio"] == a) & (right["video"] == v)
        if m.any():
            lo, hi = np.percentile(mu[m], [10, 90])
            print(f"| {name} | {m.sum()} | {mu[m].mean():.3f} | {lo:.2f}-{hi:.2f} | "
                  f"{100 * right['fusion'][m].mean():.0f} % |")  # fmt: skip
    labels = np.array([fusion[c]["label_name"] for c in clips])
    actors = np.array([c.split("-")[-1] for c in clips])
    by_class = {k: mu[labels == k].mean() for k in sorted(set(labels))}
    by_actor = [mu[actors == a].mean() for a in sorted(set(actors))]
    print("mean mu by class: " + ", ".join(f"{k} {v:.2f}" for k, v in by_class.items()))
    print(f"mean mu by actor: {min(by_actor):.2f} to {max(by_actor):.2f}")


if __name__ == "__main__":
    main()
