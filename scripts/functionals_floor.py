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
`--sessions=N`: the floor trains also on its training actors' clips through the audio recipe's
first N session channels (`fbp_jax.input_pipeline.session_channels`, here in the waveform),
each actor in each channel standardised on its own, as the network's sessions are. `--babble=B`:
also among B babbles of other training actors of the fold (`conditions.other_talkers`: four of
their clips, 5-20 dB below the speech, as `fbp-jax voice-floor --babble_sessions` draws them);
`--overdrive=K`: also through K overdriven channels (each clip's peak raised 3-20 dB above full
scale, drawn per clip, and clipped). `--weighted`: the clean rows counted once per session,
babble or overdriven channel (`voice-floor`'s weighting).
`--speaker_stats=training`: each scored clip standardised with the training speakers' pooled
statistics (serving's fallback for a group of fewer than ten files). `--face`: each clip's
face row (OpenFace action-unit statistics) after its functionals, the floor of `voice-floor
--face`. The C each fold chose, and their median, are printed.

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
import multiprocessing
import os
import sys
import zlib

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
OVERDRIVE_DB = (3.0, 20.0)  # `--overdrive`: the peak raised this far above full scale, clipped.
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


def session_channels() -> np.ndarray:
    """The audio recipe's training session channels (configs/ravdess_audio.py, small recipe)."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs import ravdess_audio
    from fbp_jax import input_pipeline

    return input_pipeline.session_channels(ravdess_audio.get_config("dev1").augment)


def _extract(job):
    """(functionals, None) of a clip under a condition, through a session channel (its noise
    seeded per clip) or among other talkers ((masker paths, SNR, seed)), or (None, the error)."""
    features, condition, row, clip_id, path, talkers = job
    try:
        samples = audio_lib.load_audio(path).samples
        if talkers is not None:
            paths, snr, seed = talkers
            others = [audio_lib.load_audio(p).samples for p in paths]
            samples = conditions_lib.other_talkers(samples, others, snr, seed)
        elif condition.startswith("overdrive"):  # 'overdrive<k>': 3-20 dB into a hard clip
            rng = np.random.default_rng(zlib.crc32(f"{clip_id}/{condition}".encode()))
            samples = conditions_lib.clip_overdriven(samples, rng.uniform(*OVERDRIVE_DB))
        elif row is None:
            samples = conditions_lib.apply(condition, samples)
        else:
            samples = conditions_lib.session_channel(
                samples, *row, seed=zlib.crc32(clip_id.encode())
            )
        return extractor(features)(samples), None
    except Exception as e:  # One file never stops the run.
        return None, f"{path}: skipped: {e}"


def functionals(
    clips, features: str, condition: str, cache: str, talkers=None
) -> dict[str, np.ndarray]:
    """{'x': [N, F], 'clip_id': [N]} of the clips under `condition`, from the cache if there;
    with `talkers`, each clip's (masker paths, SNR, seed) for `conditions.other_talkers`."""
    path = os.path.join(cache, f"{features}_{condition}.npz")
    if os.path.isfile(path):
        with np.load(path) as f:
            return {"x": f["x"], "clip_id": f["clip_id"]}
    rows, ids = [], []
    channel_row = None  # 'session<k>': the k-th session channel of the audio recipe.
    if condition.startswith("session"):
        channel_row = tuple(session_channels()[int(condition[len("session") :])])
    talkers = talkers or [None] * len(clips)
    jobs = [
        (features, condition, channel_row, c.clip_id, c.files["audio"], t)
        for c, t in zip(clips, talkers)
    ]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        results = pool.imap(_extract, jobs, chunksize=8)
        for clip, (row, error) in tqdm.tqdm(
            zip(clips, results), total=len(clips), desc=f"{features} {condition}", unit="clip"
        ):
            if error:
                print(error, file=sys.stderr)
                continue
            rows.append(row)
            ids.append(clip.clip_id)
    if not rows:
        raise SystemExit(f"{condition}: no clip could be read")
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


def with_face(feats: dict[str, np.ndarray], clips) -> dict[str, np.ndarray]:
    """`feats` with each clip's face row (its OpenFace action-unit statistics) after its
    functionals: the floor of `fbp-jax voice-floor --face`."""
    by_id = {c.clip_id: c for c in clips}
    rows = [np.asarray(by_id[i].extra["features"], np.float64) for i in feats["clip_id"]]
    return {**feats, "x": np.concatenate([feats["x"], np.asarray(rows)], axis=1)}


def babble_functionals(clips, protocol, features: str, cache: str, count: int) -> dict:
    """{fold: [functionals of its training clips among each of `count` babbles]}: four clips
    of other training actors of the fold (never its validation or test actors), 5-20 dB below
    the clip's voiced power (`voice_floor_fit`'s babble, drawn per fold)."""
    from fbp_jax.evaluation import voice_floor_fit

    out = {}
    for fold, splits in protocol.items():
        train = [c for c in clips if c.split in cv_lib.split_parts(splits["train"])]
        speakers = np.asarray([c.speaker for c in train])
        out[fold] = []
        for k in range(count):
            talkers = []
            for c in train:
                seed = zlib.crc32(f"{fold}/{c.clip_id}/{k}".encode())
                rng = np.random.default_rng(seed)
                picked = rng.choice(
                    np.flatnonzero(speakers != c.speaker), voice_floor_fit.BABBLE_TALKERS, False
                )
                snr = rng.uniform(*voice_floor_fit.BABBLE_SNR_DB)
                talkers.append(([train[i].files["audio"] for i in picked], snr, seed))
            name = f"talkers{k}_{fold}"
            out[fold].append(functionals(train, features, name, cache, talkers))
    return out


def fit(recorded, clips, protocol, sessions=(), babble=None, weighted=False) -> dict:
    """Per fold: the floor trained on the training actors' clips as recorded (and through each
    of `sessions`, functionals like `recorded`, and each of the fold's `babble`s: speaker
    'actor@k' standardised on its own; `weighted`: the clean rows counted once per such
    channel), C chosen on the validation actors' as recorded."""
    out, chosen = {}, []
    for fold, splits in protocol.items():
        heard = [*sessions, *(babble or {}).get(fold, [])]
        clean = split_data(recorded, clips, splits["train"])
        train = [clean] * (len(heard) if weighted and heard else 1)
        for k, feats in enumerate(heard):
            part = split_data(feats, clips, splits["train"])
            part["speaker"] = np.char.add(part["speaker"].astype(str), f"@{k}")
            train.append(part)
        train = {key: np.concatenate([t[key] for t in train]) for key in train[0]}
        out[fold], c, _ = floors.fit_classifier(
            train,
            split_data(recorded, clips, splits["validation"]),
            ("audio",),
            "speaker",
        )
        chosen.append(c)
    print(f"C chosen per fold: {chosen}; median {np.median(chosen):g}")
    return out


def pooled_rows(d: dict, train: dict) -> np.ndarray:
    """`d`'s rows standardised with the pooled statistics of the training speakers' clips as
    `voice_floor_fit.fit` keeps them (serving's fallback for a small speaker group): their mean,
    and the root mean of the speakers' variances."""
    from fbp_jax.evaluation import voice_floor_fit

    mean, std = voice_floor_fit.pooled_statistics(train["audio"], train["speaker"])
    return (d["audio"] - mean) / np.where(std > 1e-8, std, 1.0)


def floor_predictions(
    models, scored, clips, protocol, part, pooled=None
) -> predictions_lib.Predictions:
    """The fitted floors' posteriors on each fold's `part` actors, pooled over the folds,
    scoring the clips of `scored`; with `pooled` (functionals as recorded), each standardised
    with the fold's training speakers' pooled statistics instead of its speaker's own."""
    ids, labels, probs = [], [], []
    for fold, splits in protocol.items():
        d = split_data(scored, clips, splits[part])
        if pooled is None:
            rows = floors.design_matrix(d, ("audio",), "speaker")
        else:
            rows = pooled_rows(d, split_data(pooled, clips, splits["train"]))
        p = np.zeros((len(d["label"]), len(ravdess.EMOTIONS)))
        p[:, models[fold].classes_] = models[fold].predict_proba(rows)
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
        "--sessions",
        type=int,
        default=0,
        help="train also on the clips through the audio recipe's first N session channels",
    )
    parser.add_argument(
        "--babble",
        type=int,
        default=0,
        help="train also on its training actors' clips among N babbles of other training actors",
    )
    parser.add_argument(
        "--overdrive",
        type=int,
        default=0,
        help="train also on its training actors' clips through N overdriven channels (clipped)",
    )
    parser.add_argument(
        "--weighted",
        action="store_true",
        help="count the clean rows once per session or babble: together they weigh as much",
    )
    parser.add_argument(
        "--face", action="store_true", help="each clip's face row too (`voice-floor --face`)"
    )
    parser.add_argument(
        "--floor_weight",
        type=float,
        default=0.0,
        help="the floor's share of an average (0: an equal member)",
    )
    parser.add_argument(
        "--speaker_stats",
        default="own",
        choices=("own", "training"),
        help="score each clip with its speaker's statistics, or the training speakers' pooled",
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
    name = f"{args.features} floor" + (f" with {args.sessions} sessions" if args.sessions else "")
    name += f" and {args.babble} babbles" if args.babble else ""
    name += f" and {args.overdrive} overdriven" if args.overdrive else ""
    name += ", with the face row" if args.face else ""
    face = (lambda f: with_face(f, clips)) if args.face else (lambda f: f)
    features = {}  # condition -> functionals

    def scored(condition):
        if condition not in features:
            features[condition] = face(functionals(clips, args.features, condition, args.cache))
        return features[condition]

    sessions = [scored(f"session{k}") for k in range(args.sessions)]
    sessions += [scored(f"overdrive{k}") for k in range(args.overdrive)]
    babble = babble_functionals(clips, protocol, args.features, args.cache, args.babble)
    babble = {fold: [face(f) for f in heard] for fold, heard in babble.items()}
    models = fit(scored("original"), clips, protocol, sessions, babble, args.weighted)
    if args.speaker_stats == "training":
        name += ", training speakers' statistics"
    pooled = scored("original") if args.speaker_stats == "training" else None
    header = "".join(f" {p} WA / UA |" for p in parts)
    print(f"| {name}, condition |{header}\n|---" + "|---" * len(parts) + "|")
    for condition in args.conditions.split(","):
        cells = [
            wa_ua(floor_predictions(models, scored(condition), clips, protocol, p, pooled))
            for p in parts
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
            floor = floor_predictions(models, scored("original"), clips, protocol, part, pooled)
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
            floor = floor_predictions(models, scored(condition), clips, protocol, part, pooled)
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
