r"""The condition-shift test: cross-validated systems on test speakers recorded otherwise.

    fbp-jax conditions --systems=cv/audio,cv/amfbp --floors=audio_speaker,both_speaker \
        --manual_dir=<RAVDESS folder> --output_dir=cv/conditions [--conditions=original,trimmed]

For every fold of the cross-validation workdirs given (`--systems`; `A+B` is the ensemble of
two runs, e.g. seeds of one recipe, the mean of their probabilities), the fold's chosen
checkpoint predicts the clips of the fold's test speakers (`--part=validation`: its validation
speakers, on which a recipe may be chosen), read from the corpus files as
distributed (`--manual_dir`, the RAVDESS layout) and changed by each recording condition of
`data_prep.features.conditions` (trimmed, padded with silence, 20 dB quieter, telephone band,
white noise at 20 and 10 dB SNR, pink noise and babble at 10 dB SNR, through 8 kHz, a
reverberant room, Opus and MP3 round trips).
Features, speaker statistics and inputs are those of `fbp-jax predict`: each test speaker is
standardised with its own clips of that condition (`--speaker_stats=own`, as the clips would
come from one recording session), or with the training speakers' pooled statistics
(`--speaker_stats=training`); a clip longer than a network's window is read as `predict --crops`
says (`--crops`). The linear floors named in `--floors` are fitted per fold as
`fbp-jax floors` fits them (training speakers' records, C chosen on validation speakers) and
score the same changed clips. Conditions change the audio only; the facial features of a
two-stream system stay as recorded.

The table (pooled test WA per system and condition, with the change from `original`) is
printed and written to `conditions.json` and `conditions.csv` in `--output_dir`; each system's
and floor's posteriors of every clip, pooled over the folds, to
`predictions/<system>/<condition>.csv` there (a predictions file, as `fbp-jax evaluate` writes:
for systems scored elsewhere to be averaged with these under the same conditions).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

from fbp_jax import io
from fbp_jax.evaluation import cross_validation as cv_lib
from fbp_jax.evaluation import floors as floors_lib
from fbp_jax.evaluation import predictions as predictions_lib
from fbp_jax.evaluation import voice_floor_fit
from fbp_jax.serving import clip, timeline

RESULTS_JSON = "conditions.json"
BATCH = 32  # Clips per model call.
RESULTS_CSV = "conditions.csv"
PREDICTIONS_DIR = "predictions"


PARTS = ("test", "validation")
BALANCED = " balanced"  # The row of a system with each speaker's answers balanced.
VOICE_FLOOR = "voice floor"  # The row of the voice floor (`--voice_floor`) ...
VOICE_FACE_FLOOR = "voice+face floor"  # ... reading the clip's face row too (`--voice_floor_face`).


def _actors(splits: dict[str, str], part: str) -> set[str]:
    return cv_lib.split_parts(splits[part])


def load_clips(manual_dir: str) -> list[Any]:
    """The RAVDESS clips of `manual_dir` (ClipSource: speaker, label, files, facial features)."""
    from data_prep.builders import ravdess

    sources, _ = ravdess.list_clips(manual_dir, ravdess.RavdessConfig(name="speech"))
    if not sources:
        raise cv_lib.CrossValidationError(f"{manual_dir}: no RAVDESS speech clips")
    return sources


def clip_features(source, condition: str, voice: bool = False) -> dict[str, np.ndarray]:
    """The schema features of one clip recorded under `condition` (video: its facial row);
    with `voice`, its voice functionals too (`data_prep.features.voice`)."""
    from data_prep.builders import ravdess
    from data_prep.features import audio as audio_lib
    from data_prep.features import conditions
    from data_prep.features import voice as voice_lib

    samples = conditions.apply(condition, audio_lib.load_audio(source.files["audio"]).samples)
    spec = audio_lib.log_spectrogram(samples, source.files["audio"])
    frames = max(1, -(-len(spec) // (audio_lib.FRAMES_PER_SECOND // ravdess.VIDEO_FPS)))
    out = {
        "audio": spec,
        "video": np.tile(np.asarray(source.extra["features"], np.float32), (frames, 1)),
        "video_valid": np.ones(frames, bool),
        "duration_s": len(samples) / audio_lib.SAMPLE_RATE,
    }
    if voice:
        out["voice"] = voice_lib.functionals(samples)
    return out


def _system_posteriors(model, clips, features, speaker_stats: str, crops: str) -> np.ndarray:
    """[N, C] posteriors of a serving model on clips (features per clip), speakers grouped;
    a clip read as several crops (`clip.crop_starts`) gets their mean posterior."""
    from fbp_jax.model import frontend

    by_speaker = model.stats is not None and "speakers" in model.stats
    stats = {}
    if by_speaker:
        for speaker in {c.speaker for c in clips}:
            group = [f for c, f in zip(clips, features) if c.speaker == speaker]
            stats[speaker] = (
                frontend.pooled_statistics(model.stats)
                if speaker_stats == "training"
                else clip.speaker_statistics(group, model.data)
            )
    batches, owner = [], []
    for i, (c, f) in enumerate(zip(clips, features)):
        s = stats[c.speaker] if by_speaker else model.stats
        batch, _ = clip.prepare_inputs(f, model.data, s, model.streams, crops)
        batches.append(batch)
        owner += [i] * len(batch["audio"])
    inputs = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    probs = []
    for i in range(0, len(owner), BATCH):
        part = {k: v[i : i + BATCH] for k, v in inputs.items()}
        n = len(part["audio"])
        batch = {  # Padded to one compiled shape.
            k: np.concatenate([v, np.zeros((BATCH - n, *v.shape[1:]), v.dtype)])
            for k, v in part.items()
        }
        probs.append(np.asarray(model.apply(batch)["probabilities"])[:n])
    probs = np.concatenate(probs)
    mean = np.zeros((len(clips), probs.shape[1]))
    np.add.at(mean, np.asarray(owner), probs)
    return mean / mean.sum(axis=1, keepdims=True)


def _balanced(posteriors: np.ndarray, clips) -> np.ndarray:
    """Each speaker's answers balanced (`predict --balance`, a speaker's clips one group)."""
    return timeline.balanced(posteriors, [c.speaker for c in clips])


def _floor_posteriors(model, streams, norm, clips, features) -> np.ndarray:
    """[N, C] posteriors of a fitted floor, in the order of its `classes_`."""
    rows = {"speaker": [], "audio": [], "video": []}
    for c, f in zip(clips, features):
        stats = floors_lib.clip_statistics(f["audio"], f["video"], f["video_valid"])
        rows["speaker"].append(c.speaker)
        rows["audio"].append(stats["audio"])
        rows["video"].append(stats["video"])
    data = {k: np.asarray(v) for k, v in rows.items()}
    return model.predict_proba(floors_lib.design_matrix(data, streams, norm))


def run(
    systems: Sequence[str],
    floors: Sequence[str],
    manual_dir: str,
    output_dir: str,
    condition_names: Sequence[str] | None = None,
    speaker_stats: str = "own",
    part: str = "test",
    crops: str = clip.DEFAULT_CROPS,
    balance: bool = False,
    voice_floor: bool = False,
    voice_floor_weight: float = 0.0,
    voice_floor_face: bool = False,
    voice_floor_sessions: int = 0,
    voice_floor_babble: int = 0,
) -> dict[str, Any]:
    """Evaluates every system and floor under every condition on each fold's `part` speakers
    ('test', or 'validation': what may choose a recipe); writes and returns the table.
    `crops`: how the networks read a clip longer than their window (`clip.crop_starts`).
    `balance`: each network and floor also with each speaker's answers balanced (`predict
    --balance`), a row '<system> balanced'. `voice_floor`: the voice floor of `fbp-jax
    voice-floor` too, fitted per fold on the training speakers' clips as recorded with C
    chosen on the validation speakers', a row 'voice floor', and each system averaged with it
    as `predict` serves them, '<system> + voice floor': the floor at `voice_floor_weight`
    (0: an equal member, 1 / (the system's runs + 1)); with `voice_floor_face` it reads each
    clip's face row too (its rows 'voice+face floor', '<system> + voice+face floor').
    `voice_floor_sessions`, `voice_floor_babble`: the fold's floor also hears its training
    clips through that many of the recipe's channels and among that many babbles of other
    training speakers, as `fbp-jax voice-floor --sessions --babble_sessions` fits one."""
    if part not in PARTS:
        raise cv_lib.CrossValidationError(f"part must be one of {PARTS}, got {part!r}")
    voice_floor = voice_floor or voice_floor_face
    from data_prep.features import conditions
    from fbp_jax.serving import bundle

    names = list(condition_names or conditions.CONDITIONS)
    unknown = [n for n in names if not conditions.known(n)]
    if unknown:
        raise cv_lib.CrossValidationError(
            f"unknown conditions {unknown}; known: {list(conditions.CONDITIONS)}, or chained "
            "with '+'"
        )
    members = {w: w.split("+") for w in systems}
    unique_runs = list(dict.fromkeys(m for w in systems for m in members[w]))
    summaries = [cv_lib.summarize(m) for m in unique_runs]
    for s in summaries:
        if not s["complete"]:
            raise cv_lib.CrossValidationError(
                f"{s['workdir']}: folds {s['missing']} are not done yet"
            )
    if not summaries:
        raise cv_lib.CrossValidationError("--systems: at least one cross-validation workdir")
    folds = {r["fold"]: r["splits"] for r in summaries[0]["folds"]}
    for s in summaries[1:]:
        if {r["fold"]: r["splits"] for r in s["folds"]} != folds:
            raise cv_lib.CrossValidationError(f"{s['workdir']}: other folds than {systems[0]}")
    clips = load_clips(manual_dir)
    fitted = _fit_floors(members[systems[0]][0], floors, folds) if floors else {}
    scored = [*systems, *floors]
    floor_name = VOICE_FACE_FLOOR if voice_floor_face else VOICE_FLOOR
    with_floor = " + " + floor_name  # The row of a system averaged with it.
    if voice_floor:
        scored += [floor_name, *(w + with_floor for w in systems)]
        recorded: dict[str, np.ndarray] = {}  # clip id -> functionals as recorded
        channels: dict[str, list] = {}  # clip id -> its functionals through each channel
    # pooled[name][condition]: per fold, (clip ids, true classes, [N, C] posteriors).
    pooled = {name: {c: [] for c in names} for name in scored}
    # balanced[name][condition]: per fold, whether each clip was answered right once each
    # speaker's answers are balanced.
    balanced = {name + BALANCED: {c: [] for c in names} for name in scored if balance}
    for fold, splits in folds.items():
        # One fold's runs in memory at a time. Each run is loaded and scored once, whatever
        # the systems it belongs to: a system's posterior is the mean of its members' (what
        # `bundle.ensemble` serves, each member's posteriors summing to one), and
        # `bundle.ensemble` checks that they can be averaged.
        runs = {m: bundle.load_serving_model(cv_lib.fold_dir(m, fold)) for m in unique_runs}
        models = {w: bundle.ensemble([runs[m] for m in members[w]]) for w in systems}
        class_names = models[systems[0]].class_names
        actors = _actors(splits, part)
        test = [c for c in clips if c.split in actors]
        truth = np.asarray([class_names.index(c.label) for c in test])
        columns = {
            w: np.asarray([class_names.index(n) for n in models[w].class_names]) for w in systems
        }
        if voice_floor:
            vfloor = _fit_voice_floor(
                clips,
                splits,
                class_names,
                recorded,
                voice_floor_face,
                (channels, voice_floor_sessions, voice_floor_babble),
            )
        for condition in names:
            logging.info("Fold %s, condition %s: computing features.", fold, condition)
            # As recorded, the floor's inputs are those its fits computed (`recorded`).
            as_recorded = condition == "original"
            feats = [clip_features(c, condition, voice_floor and not as_recorded) for c in test]
            scored_runs = {
                m: _system_posteriors(runs[m], test, feats, speaker_stats, crops)
                for m in unique_runs
            }
            answers = [  # (name, [N, C] posteriors, the class index of each column)
                (w, np.mean([scored_runs[m] for m in members[w]], axis=0), columns[w])
                for w in systems
            ]
            for floor in floors:
                f = fitted[floor]
                posteriors = _floor_posteriors(f[fold], f["streams"], f["norm"], test, feats)
                answers.append((floor, posteriors, f[fold].classes_))
            if voice_floor:
                own = speaker_stats != "training"
                if as_recorded:
                    x = _floor_inputs(test, recorded, voice_floor_face)
                    missing = [c.files["audio"] for c in test if c.clip_id not in recorded]
                    if missing:  # Its spectrogram was read: the same as before, an error.
                        raise cv_lib.CrossValidationError(f"{missing}: no voice functionals")
                else:
                    x = np.stack([f["voice"] for f in feats])
                    if voice_floor_face:  # The face row stays as recorded.
                        x = np.concatenate([x, [voice_floor_fit.face_row(c) for c in test]], 1)
                voice = vfloor.group_posteriors(x, [c.speaker for c in test], own)
                every = np.arange(len(class_names))
                answers.append((floor_name, voice, every))
                for w, posteriors, classes in answers[: len(systems)]:
                    weight = voice_floor_weight or 1 / (len(members[w]) + 1)
                    full = np.zeros_like(voice)
                    full[:, classes] = posteriors
                    answers.append((w + with_floor, (1 - weight) * full + weight * voice, every))
            for name, posteriors, classes in answers:
                full = np.zeros((len(test), len(class_names)))
                full[:, classes] = posteriors
                pooled[name][condition].append(([c.clip_id for c in test], truth, full))
                if balance:
                    answer = classes[_balanced(posteriors, test).argmax(1)]
                    balanced[name + BALANCED][condition].append(answer == truth)
        del runs, models

    def label(name: str) -> str:  # 'a35+a35_s1', 'audio_speaker', 'a35 + voice floor balanced'
        system = name.removesuffix(BALANCED).removesuffix(with_floor)
        shown = (
            system
            if system in floors or system == floor_name
            else "+".join(os.path.basename(os.path.normpath(m)) for m in members[system])
        )
        return shown + name[len(system) :]

    rows: dict[str, dict[str, float]] = {}
    for name, by_condition in pooled.items():
        rows[label(name)] = {
            c: float(np.mean(np.concatenate([p.argmax(1) == t for _, t, p in parts])))
            for c, parts in by_condition.items()
        }
    for name, by_condition in balanced.items():
        rows[label(name)] = {
            c: float(np.concatenate(parts).mean()) for c, parts in by_condition.items()
        }
    logging.info("Pooled WA: %s", rows)
    result = {
        "conditions": names,
        "speaker_stats": speaker_stats,
        "part": part,
        "crops": crops,
        "balance": balance,
        "systems": list(systems),
        "floors": list(floors),
        "voice_floor": voice_floor,
        "voice_floor_face": voice_floor_face,
        "voice_floor_sessions": voice_floor_sessions,
        "voice_floor_babble": voice_floor_babble,
        "pooled_wa": rows,  # Of the actors of `part`: validation or test.
    }
    os.makedirs(output_dir, exist_ok=True)
    columns = {"system": list(rows)}
    for n in names:
        columns[n] = [f"{rows[r][n]:.4f}" for r in rows]
    io.write_csv(columns, os.path.join(output_dir, RESULTS_CSV))
    for name, by_condition in pooled.items():
        folder = os.path.join(output_dir, PREDICTIONS_DIR, label(name))
        os.makedirs(folder, exist_ok=True)
        for condition, parts in by_condition.items():
            ids, truth, probs = (np.concatenate(x) for x in zip(*parts))
            predictions_lib.write_predictions(
                predictions_lib.Predictions(ids, truth, probs, class_names, source=name),
                os.path.join(folder, f"{condition}.csv"),
            )
    io.write_json(result, os.path.join(output_dir, RESULTS_JSON))
    return result


def _floor_inputs(clips, recorded: dict, face: bool) -> np.ndarray:
    """[N, F] the voice floor's inputs of the readable ones of `clips` as recorded: their voice
    functionals (with `face`, and face rows), from `recorded` (clip id -> inputs, the cache
    across folds and conditions) or computed into it; an unreadable clip is named, left out."""
    new = [c for c in clips if c.clip_id not in recorded]
    x, kept = voice_floor_fit.clip_functionals(new, False, face)
    recorded.update(zip((c.clip_id for c in kept), x))
    return np.stack([recorded[c.clip_id] for c in clips if c.clip_id in recorded])


def _fit_voice_floor(
    clips, splits: dict[str, str], class_names, recorded: dict, face: bool, heard=None
):
    """The voice floor of a fold: fitted on its training speakers' clips as recorded, C chosen
    on its validation speakers' (`voice_floor_fit.fit_chosen`); with `face` on their voice
    functionals and face rows. `recorded`: as `_floor_inputs`. `heard`: (clip id -> functionals
    through each channel, the cache across folds; channels; babbles): the training clips heard
    so too, as `fbp-jax voice-floor --sessions --babble_sessions` hears a corpus."""

    def part(name):
        chosen = [c for c in clips if c.split in _actors(splits, name)]
        x = _floor_inputs(chosen, recorded, face)
        chosen = [c for c in chosen if c.clip_id in recorded]
        return chosen, {
            "x": x.astype(np.float64),
            "label": np.asarray([class_names.index(c.label) for c in chosen]),
            "speaker": np.asarray([c.speaker for c in chosen]),
        }

    (chosen, train), (_, val) = part("train"), part("validation")
    width = len(voice_floor_fit.face_row(clips[0])) if face else 0
    sessions = _heard_inputs(chosen, class_names, face, *(heard or ({}, 0, 0)))
    return voice_floor_fit.fit_chosen(train, val, class_names, 0.0, width, sessions)


def _heard_inputs(train, class_names, face: bool, cache: dict, channels: int, babbles: int):
    """`voice_floor_fit.fit`'s sessions of a fold's training clips: their functionals through
    the recipe's first `channels` channels (from `cache`, clip id -> rows, or computed into it)
    and among `babbles` babbles of the fold's other training speakers (drawn per fold), each
    '<speaker>@<k>' its own speaker."""
    changes = voice_floor_fit.session_changes(train, channels, babbles)
    new = [c for c in train if c.clip_id not in cache]
    if channels and new:  # As recorded they are in `recorded` already.
        rows, kept = voice_floor_fit.clip_functionals(
            new, False, face, changes[:channels], recorded=False
        )
        cache.update((c.clip_id, [h[i] for h in rows]) for i, c in enumerate(kept))
    have = [c for c in train if c.clip_id in cache]
    heard = [  # (clips, [N, F]) per channel, then per babble
        (have, np.asarray([cache[c.clip_id][k] for c in have])) for k in range(channels)
    ]
    if babbles:
        rows, kept = voice_floor_fit.clip_functionals(
            train, False, face, changes[channels:], recorded=False
        )
        heard += [(kept, h) for h in rows]
    return [
        (
            x,
            np.asarray([class_names.index(c.label) for c in kept]),
            np.asarray([f"{c.speaker}@{k}" for c in kept]),
        )
        for k, (kept, x) in enumerate(heard)
    ]


def _fit_floors(workdir: str, floors: Sequence[str], folds: dict[str, dict[str, str]]):
    """Per floor name (`<streams>_<normalisation>`) and fold: the classifier fitted on the
    records of the fold's training speakers (those `workdir`'s runs read), C chosen on its
    validation speakers."""
    from fbp_jax import input_pipeline
    from fbp_jax import workdir as workdir_lib

    data_config = workdir_lib.load_config(cv_lib.fold_dir(workdir, next(iter(folds)))).data
    features = floors_lib.SplitFeatures(input_pipeline.prepared_builder(data_config))
    out = {}
    for name in floors:
        streams_name, _, norm = name.partition("_")
        if streams_name not in floors_lib.STREAMS or norm not in floors_lib.NORMALISATIONS:
            raise cv_lib.CrossValidationError(
                f"unknown floor {name!r}: <{'|'.join(floors_lib.STREAMS)}>_"
                f"<{'|'.join(floors_lib.NORMALISATIONS)}>"
            )
        streams = floors_lib.STREAMS[streams_name]
        out[name] = {"streams": streams, "norm": norm}
        for fold, splits in folds.items():
            train, val = features.get(splits["train"]), features.get(splits["validation"])
            out[name][fold] = floors_lib.fit_classifier(train, val, streams, norm)[0]
    return out


def format_table(result: dict[str, Any]) -> str:
    names = result["conditions"]
    rows = result["pooled_wa"]
    width = max(14, *(len(r) for r in rows)) + 1
    cell_width = max(14, *(len(n) for n in names)) + 1  # Headers never run together.
    lines = [
        f"pooled {result.get('part', 'test')} WA (%) by recording condition; speaker "
        f"statistics: {result['speaker_stats']} (in brackets: change from original, points)",
        f"{'system':<{width}}" + "".join(f"{n:>{cell_width}}" for n in names),
    ]
    for r, acc in rows.items():
        base = acc.get("original")
        cells = []
        for n in names:
            cell = f"{100 * acc[n]:.1f}"
            if base is not None and n != "original":
                cell += f" ({100 * (acc[n] - base):+.1f})"
            cells.append(f"{cell:>{cell_width}}")
        lines.append(f"{r:<{width}}" + "".join(cells))
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_list("systems", [], "Finished cross-validation workdirs (networks).")
    flags.DEFINE_list(
        "floors", [], "Linear floors to fit on the same folds, e.g. audio_speaker,both_speaker."
    )
    flags.DEFINE_string("manual_dir", None, "The corpus as distributed (RAVDESS layout).")
    flags.DEFINE_string("output_dir", None, "Where conditions.json / .csv go.")
    flags.DEFINE_list(
        "conditions",
        [],
        "Conditions to run (default: all); '+' chains them (microphone+noise20+mp3_32).",
    )
    flags.DEFINE_enum(
        "speaker_stats",
        "own",
        ["own", "training"],
        "Speaker statistics of speaker-normalised models.",
    )
    flags.DEFINE_enum(
        "part",
        "test",
        list(PARTS),
        "Whose clips: each fold's test speakers, or its validation speakers (to choose on).",
    )
    flags.DEFINE_enum(
        "crops",
        clip.DEFAULT_CROPS,
        list(clip.CROPS),
        "Networks, a clip longer than the window: its centre window, or the mean over windows "
        "every quarter window covering it (as `fbp-jax predict --crops`).",
    )
    flags.DEFINE_bool(
        "voice_floor",
        False,
        "The voice floor too (fitted per fold), alone and averaged with each system as "
        "`predict` serves an export that holds one.",
    )
    flags.DEFINE_bool(
        "voice_floor_face",
        False,
        "The voice floor reads each clip's face row (action-unit statistics) too, as the floor "
        "of an audio-visual export (`fbp-jax voice-floor --face`).",
    )
    flags.DEFINE_integer(
        "voice_floor_sessions",
        0,
        "The voice floor also hears its training clips through this many of the audio "
        "recipe's channels (as `fbp-jax voice-floor --sessions`).",
    )
    flags.DEFINE_integer(
        "voice_floor_babble",
        0,
        "... and among this many babbles of other training speakers (`--babble_sessions`).",
    )
    flags.DEFINE_float(
        "voice_floor_weight",
        0.0,
        "The voice floor's share of a system's average (0: an equal member beside its runs).",
    )
    flags.DEFINE_bool(
        "balance",
        False,
        "Networks and floors also with each speaker's answers balanced (as `fbp-jax predict "
        "--balance`).",
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.systems or not FLAGS.manual_dir or not FLAGS.output_dir:
        raise app.UsageError("--systems, --manual_dir and --output_dir are needed")
    heard = FLAGS.voice_floor_sessions, FLAGS.voice_floor_babble
    if min(heard) < 0:
        raise app.UsageError("--voice_floor_sessions and --voice_floor_babble: 0 or more")
    if any(heard) and not (FLAGS.voice_floor or FLAGS.voice_floor_face):
        raise app.UsageError("--voice_floor_sessions and --voice_floor_babble need a voice floor")
    try:
        result = run(
            FLAGS.systems,
            FLAGS.floors,
            FLAGS.manual_dir,
            FLAGS.output_dir,
            FLAGS.conditions,
            FLAGS.speaker_stats,
            FLAGS.part,
            FLAGS.crops,
            FLAGS.balance,
            FLAGS.voice_floor,
            FLAGS.voice_floor_weight,
            FLAGS.voice_floor_face,
            FLAGS.voice_floor_sessions,
            FLAGS.voice_floor_babble,
        )
    except (cv_lib.CrossValidationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_table(result))
    print(f"\nwritten: {os.path.join(FLAGS.output_dir, RESULTS_JSON)}, {RESULTS_CSV}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
