"""What `predict --balance` does to a speaker folder that holds some emotions only.

    python scripts/balance_scenarios.py --systems=cv/a3,cv/a3_s1,cv/a3_s2 --part=validation

Reads RAVDESS cross-validation workdirs' recorded predictions (`<fold>/<part>/predictions.csv`;
several systems are averaged, as `fbp-jax cv --select` averages them), takes each speaker's
clips of the part (the speaker is the clip id's last field, RAVDESS's actor) as one folder,
and prints the accuracy of the plain and the balanced answers (`timeline.balance_weights`, as
`predict --balance`) for the whole folder and for folders that hold some of the classes only:
`--draws` random subsets per speaker of k of the classes, and one class at about a third of
the folder (all its clips, two of each other class); smaller folders, n random clips of the
speaker's; and the clips of CREMA-D's six classes answered with those six only (`--classes`).
"""

import argparse

import numpy as np

from fbp_jax.evaluation import selection
from fbp_jax.serving import timeline


def speaker_folders(systems: list[str], part: str):
    """[(labels [n], posteriors [n, C])] of every speaker of every fold's `part`, and the
    class names."""
    candidate = selection.ensemble_of([selection.load_candidate(w) for w in systems])
    folders = []
    for fold in candidate.folds.values():
        p = fold[part]
        speakers = np.asarray([str(c).split("-")[-1] for c in p.clip_ids])
        for s in np.unique(speakers):
            rows = speakers == s
            folders.append((p.labels[rows], p.probabilities[rows]))
    return folders, list(p.class_names)


def accuracy(folders, pick, draws: int, rng) -> tuple[float, float]:
    """(plain, balanced) accuracy over `draws` subsets `pick(labels, rng)` of every folder."""
    right = np.zeros(2)
    n = 0
    for _ in range(draws):
        for labels, p in folders:
            rows = pick(labels, rng)
            y, q = labels[rows], p[rows]
            balanced = q * timeline.balance_weights(q)
            right += [np.sum(q.argmax(1) == y), np.sum(balanced.argmax(1) == y)]
            n += len(rows)
    return tuple(100 * right / n)


def some_classes(k: int):
    def pick(labels, rng):
        kept = rng.choice(np.unique(labels), k, replace=False)
        return np.flatnonzero(np.isin(labels, kept))

    return pick


def random_clips(n: int):
    def pick(labels, rng):
        return rng.choice(len(labels), min(n, len(labels)), replace=False)

    return pick


def one_class_a_third(labels, rng):
    classes = np.unique(labels)
    main = rng.choice(classes)
    rows = list(np.flatnonzero(labels == main))
    for c in classes[classes != main]:
        rows += list(rng.choice(np.flatnonzero(labels == c), 2, replace=False))
    return np.asarray(rows)


def six_classes(folders, class_names):
    """The folders as a corpus with CREMA-D's six classes would be read (`predict
    --classes=neutral,happy,sad,angry,fear=fearful,disgust`): the clips of those classes,
    posteriors restricted to them and renormalised."""
    kept = [
        class_names.index(c) for c in ("neutral", "happy", "sad", "angry", "fearful", "disgust")
    ]
    out = []
    for labels, p in folders:
        rows = np.isin(labels, kept)
        q = p[rows][:, kept]
        out.append((np.searchsorted(kept, labels[rows]), q / q.sum(1, keepdims=True)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", required=True, help="comma-separated CV workdirs")
    parser.add_argument("--part", default="validation", choices=selection.PARTS)
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    folders, class_names = speaker_folders(args.systems.split(","), args.part)
    num_classes = folders[0][1].shape[1]
    rng = np.random.default_rng(0)
    scenarios = [("every clip of the speaker", lambda y, r: np.arange(len(y)), 1)]
    scenarios += [
        (f"{k} of the {num_classes} classes", some_classes(k), args.draws) for k in (6, 4, 3)
    ]
    scenarios += [("one class about a third", one_class_a_third, args.draws)]
    scenarios += [
        (f"{n} random clips of the speaker", random_clips(n), args.draws) for n in (10, 20, 30)
    ]
    print(f"{args.part} speakers of {args.systems}: WA % of the plain / balanced answers")
    print("| folder | plain | balanced |\n|---|---|---|")
    for name, pick, draws in scenarios:
        plain, balanced = accuracy(folders, pick, draws, rng)
        print(f"| {name} | {plain:.1f} | {balanced:.1f} |")
    plain, balanced = accuracy(six_classes(folders, class_names), scenarios[0][1], 1, rng)
    print(f"| CREMA-D's six classes (--classes), their clips | {plain:.1f} | {balanced:.1f} |")


if __name__ == "__main__":
    main()
