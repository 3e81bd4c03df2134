"""The field's standard acoustic features as a floor: eGeMAPS, alone and averaged with networks.

    pip install opensmile       # not a dependency of fbp_jax; openSMILE's licence: research use
    python scripts/functionals_floor.py --manual_dir=<ravdess-dev> --cv=cv/a35 --cache=egemaps \
        --conditions=original,telephone,pink10 --with=cv/a35,cv/floors/audio_speaker \
        --scored=cond/a35_validation,cond/a35_test

eGeMAPS v02 (Eyben et al., 2016): 88 functionals of a clip (pitch, jitter, shimmer, loudness,
formants, spectral slopes, ...), computed by openSMILE. On the folds of the cross-validation
workdir `--cv` (its protocol.json), a logistic regression on the functionals, each speaker
standardised with its own clips, C chosen on the fold's validation actors as recorded
(`fbp_jax.evaluation.floors.fit_classifier`, the project's floors). A condition
(`data_prep.features.conditions`) changes the clips scored, not the training or the choice.

Prints the floor's pooled validation and test WA / UA per condition of `--conditions`; with
`--with` (finished CV workdirs, networks or floors), the floor averaged with each subset of
them as recorded, validation and test side by side, and exact McNemar on the test actors of
the best by validation against the first of `--with`; with `--scored` (output folders of
`fbp-jax conditions`, which keep every system's posteriors per condition), the same averages
per condition on that folder's actors. The functionals are cached per condition under
`--cache` (written whole or not at all); a clip that cannot be read is reported and left out.
"""

import argparse
import itertools
import json
import os
import sys

import numpy as np
import tqdm

from data_prep.features import audio as audio_lib
from data_prep.features import conditions as conditions_lib
from fbp_jax.evaluation import conditions as conditions_cmd
from fbp_jax.evaluation import cross_validation as cv_lib
from fbp_jax.evaluation import floors, selection, significance
from fbp_jax.evaluation import predictions as predictions_lib

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
PARTS = ("validation", "test")


def clip_files(manual_dir: str) -> list[str]:
    """RAVDESS speech clips under `manual_dir` (the official layout or the development copy)."""
    out = []
    for root, _, names in os.walk(manual_dir):
        for name in names:
            stem, ext = os.path.splitext(name)
            if ext.lower() in (".wav", ".flac") and stem.count("-") == 6:
                out.append(os.path.join(root, name))
    if not out:
        raise SystemExit(f"{manual_dir}: no RAVDESS clips (MM-VV-EE-II-SS-RR-AA.wav / .flac)")
    return sorted(out)


def functionals(files: list[str], condition: str, cache: str) -> dict[str, np.ndarray]:
    """{'x': [N, 88], 'clip_id': [N]} of the clips under `condition`, from the cache if there."""
    path = os.path.join(cache, f"egemaps_{condition}.npz")
    if os.path.isfile(path):
        with np.load(path) as f:
            return {"x": f["x"], "clip_id": f["clip_id"]}
    import opensmile

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    rows, ids = [], []
    for file in tqdm.tqdm(files, desc=f"eGeMAPS {condition}", unit="clip"):
        try:
            samples = audio_lib.load_audio(file).samples
            samples = conditions_lib.apply(condition, samples)
            rows.append(smile.process_signal(samples, audio_lib.SAMPLE_RATE).to_numpy()[0])
        except Exception as e:  # One file never stops the run.
            print(f"{file}: skipped: {e}", file=sys.stderr)
            continue
        ids.append(os.path.splitext(os.path.basename(file))[0])
    out = {"x": np.asarray(rows, np.float64), "clip_id": np.asarray(ids)}
    os.makedirs(cache, exist_ok=True)
    np.savez(path + ".tmp.npz", **out)
    os.replace(path + ".tmp.npz", path)
    return out


def split_data(feats: dict[str, np.ndarray], actors: str) -> dict[str, np.ndarray]:
    """The floor's input rows of the clips of `actors` ('actor05+actor06')."""
    fields = np.array([c.split("-") for c in feats["clip_id"]])
    speaker = np.char.add("actor", fields[:, 6])
    rows = np.isin(speaker, actors.split("+"))
    return {
        "audio": feats["x"][rows],
        "label": fields[rows, 2].astype(int) - 1,
        "speaker": speaker[rows],
        "clip_id": feats["clip_id"][rows],
    }


def floor_predictions(recorded, scored, protocol, part) -> predictions_lib.Predictions:
    """The floor's posteriors on each fold's `part` actors, pooled over the folds: trained on
    the training actors' clips as recorded, C chosen on the validation actors' as recorded,
    scoring the clips of `scored`."""
    ids, labels, probs = [], [], []
    for splits in protocol.values():
        train, val = (split_data(recorded, splits[p]) for p in ("train", "validation"))
        model = floors.fit_classifier(train, val, ("audio",), "speaker")[0]
        d = split_data(scored, splits[part])
        p = np.zeros((len(d["label"]), len(EMOTIONS)))
        p[:, model.classes_] = model.predict_proba(floors.design_matrix(d, ("audio",), "speaker"))
        ids.append(d["clip_id"])
        labels.append(d["label"])
        probs.append(p)
    return predictions_lib.Predictions(
        np.concatenate(ids), np.concatenate(labels), np.concatenate(probs), EMOTIONS
    )


def averages(floor, others: dict) -> dict[str, predictions_lib.Predictions]:
    """Each system alone, the floor, and the floor averaged with each subset of the others."""
    others = {name: p.aligned_to(floor) for name, p in others.items()}
    out = {**others, "eGeMAPS floor": floor}
    for k in range(1, len(others) + 1):
        for names in itertools.combinations(others, k):
            out[" + ".join(["eGeMAPS floor", *names])] = predictions_lib.ensemble(
                [floor, *(others[n] for n in names)]
            )
    return out


def wa_ua(p: predictions_lib.Predictions) -> str:
    m = p.metrics()
    return f"{100 * m['weighted_accuracy']:.1f} / {100 * m['unweighted_accuracy']:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manual_dir", required=True, help="RAVDESS: Actor_*/*.flac or .wav")
    parser.add_argument("--cv", required=True, help="a CV workdir whose protocol.json to use")
    parser.add_argument("--cache", required=True, help="folder for the functionals")
    parser.add_argument("--conditions", default="original")
    parser.add_argument("--with", dest="others", default="", help="CV workdirs to average with")
    parser.add_argument(
        "--scored",
        default="",
        help="`fbp-jax conditions` output folders: average with their systems per condition",
    )
    args = parser.parse_args()
    with open(os.path.join(args.cv, cv_lib.PROTOCOL_FILE)) as f:
        protocol = json.load(f)["folds"]
    files = clip_files(args.manual_dir)
    recorded = functionals(files, "original", args.cache)
    print("| eGeMAPS floor, condition | validation WA / UA | test WA / UA |\n|---|---|---|")
    for condition in args.conditions.split(","):
        scored = functionals(files, condition, args.cache)
        cells = [wa_ua(floor_predictions(recorded, scored, protocol, p)) for p in PARTS]
        print(f"| {condition} | {cells[0]} | {cells[1]} |")
    if args.others:
        workdirs = args.others.split(",")
        candidates = [selection.load_candidate(w) for w in workdirs]
        by_part = {}
        for part in PARTS:
            others = {
                c.name: selection._pool([c.folds[f][part] for f in c.folds]) for c in candidates
            }
            by_part[part] = averages(floor_predictions(recorded, recorded, protocol, part), others)
        print("\n| as recorded | validation WA / UA | test WA / UA |\n|---|---|---|")
        for name in by_part["validation"]:
            print(
                f"| {name} | {wa_ua(by_part['validation'][name])} | {wa_ua(by_part['test'][name])} |"
            )
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
            floor = floor_predictions(
                recorded, functionals(files, condition, args.cache), protocol, part
            )
            table[condition] = averages(floor, others)
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
