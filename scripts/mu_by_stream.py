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

import numpy as np

from fbp_jax.evaluation import evaluate

GROUPS = (
    ("audio alone right, video alone wrong", True, False),
    ("both right", True, True),
    ("video alone right, audio alone wrong", False, True),
    ("both wrong", False, False),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("fusion", "audio", "video"):
        parser.add_argument(f"--{name}", required=True, help=f"the {name} CV workdir")
    args = parser.parse_args()
    fusion = evaluate.load_predictions(args.fusion)
    if "mu" not in fusion.outputs:
        raise SystemExit(f"{args.fusion}: its predictions have no mu (not an AM-FBP run)")
    audio = evaluate.load_predictions(args.audio).aligned_to(fusion)
    video = evaluate.load_predictions(args.video).aligned_to(fusion)
    mu = fusion.outputs["mu"]
    print(f"{len(mu)} clips; mean mu {mu.mean():.3f}")
    print("| test clips where ... | clips | mean mu | 10th-90th percentile | fusion right |")
    print("|---|---|---|---|---|")
    for name, a, v in GROUPS:
        m = (audio.correct == a) & (video.correct == v)
        if m.any():
            lo, hi = np.percentile(mu[m], [10, 90])
            print(f"| {name} | {m.sum()} | {mu[m].mean():.3f} | {lo:.2f}-{hi:.2f} | "
                  f"{100 * fusion.correct[m].mean():.0f} % |")  # fmt: skip
    names = np.array(fusion.class_names)[fusion.labels]
    actors = np.array([c.split("-")[-1] for c in fusion.clip_ids])
    by_class = {k: mu[names == k].mean() for k in sorted(set(names))}
    by_actor = [mu[actors == a].mean() for a in sorted(set(actors))]
    print("mean mu by class: " + ", ".join(f"{k} {v:.2f}" for k, v in by_class.items()))
    print(f"mean mu by actor: {min(by_actor):.2f} to {max(by_actor):.2f}")


if __name__ == "__main__":
    main()
