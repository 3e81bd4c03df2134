"""Clip functionals as a floor: eGeMAPS or the project's voice functionals, alone and averaged.

    pip install opensmile       # --features=egemaps only; not a dependency of fbp_jax
    python scripts/functionals_floor.py --manual_dir=<ravdess-dev> --cv=cv/a35 --cache=egemaps \
        --conditions=original,telephone,pink10 --with=cv/a35,cv/floors/audio_speaker \
        --scored=cond/a35_validation,cond/a35_test

`--features`: `egemaps`, openSMILE's eGeMAPS v02 (Eyben et al., 2016): 88 functionals of a clip
(pitch, jitter, shimmer, loudness, formants, spectral slopes, ...), openSMILE's licence is for
research use; `voice`, the project's own numpy functionals after the same choice of descriptors
(`data_prep.features.voice`). On the folds of the cross-validation workdir `--cv` (its
protocol.json), a logistic regression on the functionals, each speaker standardised with its own
clips, C chosen on the fold's validation actors as recorded (`fbp_jax.evaluation.floors.
fit_classifier`, the project's floors), fitted once per fold. A condition
(`data_prep.features.conditions`) changes the clips scored, not the training or the choice.

Prints the floor's pooled validation and test WA / UA per condition of `--conditions`; with
`--with` (finished CV workdirs, networks or floors), the floor averaged with each subset of
them as recorded, validation and test side by side, and exact McNemar on the test actors of
the best by validation against the first of `--with`; with `--scored` (output folders of
`fbp-jax conditions`, which keep every system's posteriors per condition), the same averages
per condition on that folder's actors. The functionals are cached per feature set and
condition under `--cache` (written whole or not at all); a clip that cannot be read is reported
and left out.
"""

import argparse
import dataclasses
import itertools
import json
import os
import sys

import numpy as np
import tqdm

from data_prep.builders import ravdess
from data_prep.features import audio as audio_lib
from data_prep.features import conditions as conditions_lib
from fbp_jax.evaluation import conditions as conditions_cmd
from fbp_jax.evaluation import cross_validation as cv_lib
from fbp_jax.evaluation import floors, selection, significance
from fbp_jax.evaluation import predictions as predictions_lib

PARTS = ("validation", "test")
FEATURES = ("egemaps", "voice")


def extractor(features: str):
    """A function from 16 kHz samples to the clip's functionals."""
    if features == "voice":
        from data_prep.features import voice

        return voice.functionals
    import opensmile

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    return lambda samples: smile.process_signal(samples, audio_lib.SAMPLE_RATE).to_numpy()[0]


def functionals(clips, features: str, condition: str, cache: str) -> dict[str, np.ndarray]:
    """{'x': [N, F], 'clip_id': [N]} of the clips under `condition`, from the cache if there."""
    path = os.path.join(cache, f"{features}_{condition}.npz")
    if os.path.isfile(path):
        with np.load(path) as f:
            return {"x": f["x"], "clip_id": f["clip_id"]}
    extract = extractor(features)
    rows, ids = [], []
    for clip in tqdm.tqdm(clips, desc=f"{features} {condition}", unit="clip"):
        try:
            samples = audio_lib.load_audio(clip.files["audio"]).samples
            rows.append(extract(conditions_lib.apply(condition, samples)))
        except Exception as e:  # One file never stops the run.
            print(f"{clip.files['audio']}: skipped: {e}", file=sys.stderr)
            continue
        ids.append(clip.clip_id)
    out = {"x": np.asarray(rows, np.float64), "clip_id": np.asarray(ids)}
    os.makedirs(cache, exist_ok=True)
    np.savez(path + ".tmp.npz", **out)
    os.replace(path + ".tmp.npz", path)
    return out


def split_data(feats: dict[str, np.ndarray], clips, actors: str) -> dict[str, np.ndarray]:
    """The floor's input rows of the clips of `actors` ('actor05+actor06')."""
    by_id = {c.clip_id: c for c in clips}
    found = [by_id[i] for i in feats["clip_id"]]
    rows = np.isin([c.split for c in found], sorted(cv_lib.split_parts(actors)))
    return {
        "audio": feats["x"][rows],
        "label": np.asarray([ravdess.EMOTIONS.index(c.label) for c in found])[rows],
        "speaker": np.asarray([c.speaker for c in found])[rows],
        "clip_id": feats["clip_id"][rows],
    }


def fit(recorded, clips, protocol) -> dict:
    """Per fold: the floor trained on the training actors' clips as recorded, C chosen on the
    validation actors' as recorded."""
    return {
        fold: floors.fit_classifier(
            split_data(recorded, clips, splits["train"]),
            split_data(recorded, clips, splits["validation"]),
            ("audio",),
            "speaker",
        )[0]
        for fold, splits in protocol.items()
    }


def floor_predictions(models, scored, clips, protocol, part) -> predictions_lib.Predictions:
    """The fitted floors' posteriors on each fold's `part` actors, pooled over the folds,
    scoring the clips of `scored`."""
    ids, labels, probs = [], [], []
    for fold, splits in protocol.items():
        d = split_data(scored, clips, splits[part])
        p = np.zeros((len(d["label"]), len(ravdess.EMOTIONS)))
        p[:, models[fold].classes_] = models[fold].predict_proba(
            floors.design_matrix(d, ("audio",), "speaker")
        )
        ids.append(d["clip_id"])
        labels.append(d["label"])
        probs.append(p)
    return predictions_lib.Predictions(
        np.concatenate(ids), np.concatenate(labels), np.concatenate(probs), ravdess.EMOTIONS
    )


def averages(
    floor, others: dict, name: str, weight: float = 0.0
) -> dict[str, predictions_lib.Predictions]:
    """Each system alone, the floor (`name`), and the floor averaged with each subset of the
    others: an equal member, or with `weight` beside the subset's mean (`predict`'s way)."""
    others = {n: p.aligned_to(floor) for n, p in others.items()}
    out = {**others, name: floor}
    for k in range(1, len(others) + 1):
        for names in itertools.combinations(others, k):
            members = [others[n] for n in names]
            if weight:
                mean = predictions_lib.ensemble(members)
                probs = (1 - weight) * mean.probabilities + weight * floor.probabilities
                average = dataclasses.replace(floor, probabilities=probs)
            else:
                average = predictions_lib.ensemble([floor, *members])
            out[" + ".join([name, *names])] = average
    return out


def wa_ua(p: predictions_lib.Predictions) -> str:
    m = p.metrics()
    return f"{100 * m['weighted_accuracy']:.1f} / {100 * m['unweighted_accuracy']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual_dir", required=True, help="RAVDESS: Actor_*/*.flac or .wav")
    parser.add_argument("--cv", required=True, help="a CV workdir whose protocol.json to use")
    parser.add_argument("--cache", required=True, help="folder for the functionals")
    parser.add_argument("--features", default="egemaps", choices=FEATURES)
    parser.add_argument(
        "--parts", default=",".join(PARTS), help="whose actors to score: validation, test or both"
    )
    parser.add_argument("--conditions", default="original")
    parser.add_argument(
        "--floor_weight",
        type=float,
        default=0.0,
        help="the floor's share of an average (0: an equal member)",
    )
    parser.add_argument("--with", dest="others", default="", help="CV workdirs to average with")
    parser.add_argument(
        "--scored",
        default="",
        help="`fbp-jax conditions` output folders: average with their systems per condition",
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    with open(os.path.join(args.cv, cv_lib.PROTOCOL_FILE)) as f:
        protocol = json.load(f)["folds"]
    clips = conditions_cmd.load_clips(args.manual_dir)
    name = f"{args.features} floor"
    features = {}  # condition -> functionals

    def scored(condition):
        if condition not in features:
            features[condition] = functionals(clips, args.features, condition, args.cache)
        return features[condition]

    models = fit(scored("original"), clips, protocol)
    header = "".join(f" {p} WA / UA |" for p in parts)
    print(f"| {name}, condition |{header}\n|---" + "|---" * len(parts) + "|")
    for condition in args.conditions.split(","):
        cells = [
            wa_ua(floor_predictions(models, scored(condition), clips, protocol, p)) for p in parts
        ]
        print(f"| {condition} | " + " | ".join(cells) + " |")
    if args.others:
        workdirs = args.others.split(",")
        candidates = [selection.load_candidate(w) for w in workdirs]
        by_part = {}
        for part in parts:
            others = {
                c.name: selection._pool([c.folds[f][part] for f in c.folds]) for c in candidates
            }
            floor = floor_predictions(models, scored("original"), clips, protocol, part)
            by_part[part] = averages(floor, others, name, args.floor_weight)
        print(f"\n| as recorded |{header}\n|---" + "|---" * len(parts) + "|")
        for system in by_part[parts[0]]:
            print(f"| {system} | " + " | ".join(wa_ua(by_part[p][system]) for p in parts) + " |")
        if "validation" in parts and "test" in parts:
            best = max(
                by_part["validation"],
                key=lambda n: by_part["validation"][n].metrics()["weighted_accuracy"],
            )
            first = candidates[0].name
            r = significance.mcnemar(by_part["test"][best], by_part["test"][first])
            print(f"\nbest by validation: {best}; test actors, exact McNemar:")
            print(significance.format_mcnemar(r, best, first))
    for folder in filter(None, args.scored.split(",")):
        with open(os.path.join(folder, conditions_cmd.RESULTS_JSON)) as f:
            scored_run = json.load(f)
        part = scored_run["part"]
        table = {}
        for condition in scored_run["conditions"]:
            others = {
                system: predictions_lib.read_predictions(
                    os.path.join(folder, conditions_cmd.PREDICTIONS_DIR, system, f"{condition}.csv")
                )
                for system in sorted(
                    os.listdir(os.path.join(folder, conditions_cmd.PREDICTIONS_DIR))
                )
            }
            floor = floor_predictions(models, scored(condition), clips, protocol, part)
            table[condition] = averages(floor, others, name, args.floor_weight)
        conditions = list(table)
        print(f"\n| {part} actors, pooled WA | " + " | ".join(conditions) + " |")
        print("|---" * (len(conditions) + 1) + "|")
        for name in table[conditions[0]]:
            base = 100 * table[conditions[0]][name].metrics()["weighted_accuracy"]
            cells = []
            for c in conditions:
                wa = 100 * table[c][name].metrics()["weighted_accuracy"]
                cells.append(f"{wa:.1f}" if c == conditions[0] else f"{wa:.1f} ({wa - base:+.1f})")
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
