r"""`fbp-jax voice-floor`: fit the voice floor on a corpus and add it to an export.

    fbp-jax voice-floor --corpus=ravdess/speech --manual_dir=<corpus> --model=<export dir> \
        --C=0.03 --weight=0.25 [--face]

Fits `fbp_jax.serving.voice_floor.VoiceFloor` (a logistic regression on the voice functionals
of `data_prep.features.voice`, each speaker standardised with its own clips) on every clip of
a corpus, as its builder's `list_clips` finds them (the clips its records would hold; a clip
that cannot be read is reported and left out; a progress bar), and writes it into an export
directory whose classes it must share. `--weight` is its share of a served posterior (1 / (n +
1) beside an ensemble of n networks makes it an equal member); `--C` the regression's inverse
regularisation (a cross-validation chooses it on each fold's validation speakers; a floor
fitted on every speaker has none left, so take what the folds chose). `--face`: the floor reads
each clip's face row too (the corpus's clip statistics of OpenFace action units, as the
RAVDESS builder reads them), for a model whose face stream is those statistics.

`--sessions=N` and `--babble_sessions=B`: the floor also hears every clip recorded through N
fixed channels (the audio recipe's speaker sessions: a low-pass drawn in 2-4 kHz, white noise
drawn 5-30 dB below the speech; `input_pipeline.session_channels`) and among B babbles of other
speakers (four of their clips, 5-20 dB below the speech), each (speaker, channel) standardised
on its own, as serving standardises a speaker recorded through one channel; the clean clips
are counted N + B times, so that all channels together weigh as much as the clean recording.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging

from fbp_jax.evaluation import floors
from fbp_jax.serving import voice_floor

SESSION_BAND_LIMIT_HZ = (2000.0, 4000.0)  # The audio recipe's channels (configs/ravdess_common).
SESSION_SNR_DB = (5.0, 30.0)
BABBLE_TALKERS = 4  # Other speakers' clips in one babble ...
BABBLE_SNR_DB = (5.0, 20.0)  # ... at an SNR drawn here (the recipe's augment.talker_snr_db).


def fit(
    functionals: np.ndarray,
    labels: np.ndarray,
    speakers: np.ndarray,
    class_names: Sequence[str],
    C: float,
    weight: float,
    face_features: int = 0,
    sessions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
) -> voice_floor.VoiceFloor:
    """The floor fitted on clips' functionals [N, F] (the last `face_features` of them the
    clip's face row), labels (indices into `class_names`) and speakers. `sessions`: (functionals,
    labels, speakers) of the clips through each fixed channel, each speaker standardised on its
    own there; the clean clips then count once per channel. The pooled statistics (serving's
    fallback for a small speaker group) are the clean clips'."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    clean = floors.standardise_per_speaker(functionals, speakers)
    x = np.concatenate(
        [clean] * max(1, len(sessions))
        + [floors.standardise_per_speaker(sx, ss) for sx, _, ss in sessions]
    )
    y = np.concatenate([labels] * max(1, len(sessions)) + [sy for _, sy, _ in sessions])
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=C, max_iter=5000, random_state=0)
    model.fit(scaler.transform(x), y)
    coef = np.zeros((len(class_names), x.shape[1]))
    intercept = np.full(len(class_names), -1e9)  # A class absent from training: never answered.
    coef[model.classes_] = model.coef_
    intercept[model.classes_] = model.intercept_
    pooled_mean, pooled_std = pooled_statistics(functionals, speakers)
    return voice_floor.VoiceFloor(
        tuple(class_names),
        float(weight),
        scaler.mean_,
        scaler.scale_,
        coef,
        intercept,
        pooled_mean,
        pooled_std,
        float(C),
        int(face_features),
    )


def pooled_statistics(functionals: np.ndarray, speakers: np.ndarray):
    """(mean, std) with which serving standardises a speaker group too small for its own: the
    training clips' mean and the root mean of their speakers' variances."""
    within = np.mean([functionals[speakers == s].var(0) for s in np.unique(speakers)], axis=0)
    return functionals.mean(0), np.sqrt(within)


def fit_chosen(
    train: dict,
    val: dict,
    class_names: Sequence[str],
    weight: float,
    face_features: int = 0,
    sessions: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]] = (),
):
    """The floor fitted on `train` with C chosen on `val` as the project's floors choose it
    (`floors.fit_classifier`; each {'x': [N, F] functionals, 'label', 'speaker'}, each speaker
    standardised with its own clips); `sessions` as `fit`'s, in the training rows C is chosen
    with too."""
    rows = [train] * max(1, len(sessions)) + [
        {"x": x, "label": y, "speaker": s} for x, y, s in sessions
    ]
    heard = {k: np.concatenate([r[k] for r in rows]) for k in ("x", "label", "speaker")}
    c = floors.fit_classifier(heard, val, ("x",), "speaker")[1]
    return fit(
        train["x"],
        train["label"],
        train["speaker"],
        class_names,
        c,
        weight,
        face_features,
        sessions,
    )


def face_row(source) -> np.ndarray:
    """A corpus clip's face row: the clip statistics its builder found (`extra['features']`)."""
    row = source.extra.get("features") if source.extra else None
    if row is None or not len(row):
        raise ValueError("no face row (clip statistics of action units) in the corpus")
    return np.asarray(row, np.float64)


def clip_functionals(
    sources, progress: bool = True, face: bool = False, changes=(), recorded: bool = True
):
    """(functionals [N, F], kept sources) of corpus clips (`corpus.ClipSource`), with `face`
    each clip's face row after them; a clip that cannot be read is reported on stderr and left
    out. `changes`: functions (source, samples) -> samples, the clip heard otherwise; then the
    first item is a list, [N, F] as recorded (unless not `recorded`) and one per change, each
    clip decoded once and left out of all where any change fails."""
    import tqdm

    from data_prep.features import audio as audio_lib
    from data_prep.features import voice

    rows, kept = [], []
    if not changes and not recorded:
        raise ValueError("clip_functionals: nothing to hear (no changes, not as recorded)")
    hearings = int(recorded) + len(changes)
    desc = "voice functionals" + (f", {hearings} hearings each" if changes else "")
    for source in tqdm.tqdm(sources, desc=desc, unit="clip", disable=not progress):
        try:
            samples = audio_lib.load_audio(source.files["audio"]).samples
            heard = [samples] * recorded + [change(source, samples) for change in changes]
            x = [voice.functionals(h) for h in heard]
            if face:
                x = [np.concatenate([v, face_row(source)]) for v in x]
        except Exception as e:  # One file never stops the run.
            print(f"{source.files['audio']}: skipped: {e}", file=sys.stderr)
            continue
        rows.append(x)
        kept.append(source)
    width = len(rows[0][0]) if rows else 0
    x = np.asarray(rows, np.float64).reshape(len(kept), hearings, width)
    return (list(x.transpose(1, 0, 2)) if changes else x[:, 0]), kept


def session_changes(sources, sessions: int, babbles: int) -> list:
    """`clip_functionals` changes: the first `sessions` of the audio recipe's fixed channels
    (noise seeded per clip), then `babbles` babbles of four other speakers' clips of `sources`
    (seeded per clip and babble)."""
    if not sessions and not babbles:
        return []
    import zlib

    import ml_collections

    from data_prep.features import audio as audio_lib
    from data_prep.features import conditions
    from fbp_jax import input_pipeline

    channels = input_pipeline.session_channels(
        ml_collections.ConfigDict(
            {
                "sessions": sessions,
                "band_limit_hz": SESSION_BAND_LIMIT_HZ,
                "noise_snr_db": SESSION_SNR_DB,
            }
        )
    )
    speakers = np.asarray([s.speaker for s in sources])

    def channel(k, source, samples):
        seed = zlib.crc32(f"{source.clip_id}/{k}".encode())
        return conditions.session_channel(samples, *channels[k], seed=seed)

    def babble(k, source, samples):
        seed = zlib.crc32(f"{source.clip_id}/{sessions + k}".encode())
        rng = np.random.default_rng(seed)
        others = np.flatnonzero(speakers != source.speaker)
        picked = rng.choice(others, min(BABBLE_TALKERS, len(others)), replace=False)
        maskers = []
        for i in picked:  # A clip that cannot be read is no talker (it is reported itself).
            try:
                maskers.append(audio_lib.load_audio(sources[i].files["audio"]).samples)
            except Exception:
                continue
        return conditions.other_talkers(samples, maskers, rng.uniform(*BABBLE_SNR_DB), seed)

    return [functools.partial(channel, k) for k in range(sessions)] + [
        functools.partial(babble, k) for k in range(babbles)
    ]


def corpus_clips(corpus: str, manual_dir: str):
    """The clips of `corpus` ('name' or 'name/config') under `manual_dir`, as its builder
    lists them."""
    from data_prep.builders import builder_class

    name, _, config = corpus.partition("/")
    with tempfile.TemporaryDirectory() as data_dir:
        cls = builder_class(name)
        builder = cls(config=config, data_dir=data_dir) if config else cls(data_dir=data_dir)
        sources, skipped = builder.list_clips(manual_dir)
    for s in skipped:
        print(f"{s.file}: skipped: {s.reason}", file=sys.stderr)
    return sources


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("corpus", "ravdess/speech", "Builder name[/config] whose clips to fit on.")
    flags.DEFINE_string("manual_dir", None, "The corpus as distributed.", required=True)
    flags.DEFINE_string("model", None, "Export directory to add the floor to.", required=True)
    flags.DEFINE_float("C", 0.03, "Inverse regularisation of the logistic regression.")
    flags.DEFINE_float("weight", 0.25, "The floor's share of a served posterior, in (0, 1).")
    flags.DEFINE_bool("face", False, "Read each clip's face row (action-unit statistics) too.")
    flags.DEFINE_integer("sessions", 0, "Hear each clip through this many fixed channels too.")
    flags.DEFINE_integer("babble_sessions", 0, "... and among this many babbles of others.")


def main(argv: Sequence[str]) -> None:
    del argv
    from fbp_jax.serving import bundle

    if not 0.0 < FLAGS.weight < 1.0:
        raise app.UsageError(f"--weight must be in (0, 1), got {FLAGS.weight}")
    if FLAGS.sessions < 0 or FLAGS.babble_sessions < 0:
        raise app.UsageError("--sessions and --babble_sessions count channels: 0 or more")
    info_path = os.path.join(FLAGS.model, bundle.SERVING_FILE)
    if not os.path.isfile(info_path):
        raise app.UsageError(f"{FLAGS.model}: not an export directory (no {bundle.SERVING_FILE})")
    with open(info_path) as f:
        info = json.load(f)
    class_names = tuple(info["class_names"])  # A floor there now is replaced.
    sources = corpus_clips(FLAGS.corpus, FLAGS.manual_dir)
    unknown = sorted({s.label for s in sources} - set(class_names))
    if unknown:
        raise app.UsageError(f"{FLAGS.manual_dir}: classes {unknown} are not the model's")
    if len(sources) < 2:
        raise app.UsageError(f"{FLAGS.manual_dir}: {len(sources)} clips; too few to fit")
    face_features = 0
    if FLAGS.face:
        try:
            face_features = len(face_row(sources[0]))
        except ValueError as e:
            raise app.UsageError(f"{FLAGS.manual_dir}: --face: {e}") from e
    problem = bundle.voice_floor_problem(  # Before the functionals: a minute on RAVDESS.
        class_names,
        face_features,
        info["fusion"],
        class_names,
        {**bundle.DATA_FIELDS, **info["data"]},
    )
    if problem:  # A face row only where the model reads one, as wide.
        raise app.UsageError(f"{FLAGS.model}: the floor {problem}")
    if FLAGS.babble_sessions and len({s.speaker for s in sources}) < 2:
        raise app.UsageError(f"{FLAGS.manual_dir}: a babble needs another speaker's clips")
    changes = session_changes(sources, FLAGS.sessions, FLAGS.babble_sessions)
    x, kept = clip_functionals(sources, face=FLAGS.face, changes=changes)
    if len(kept) < 2:
        raise app.UsageError(f"{FLAGS.manual_dir}: {len(kept)} readable clips; too few to fit")
    labels = np.asarray([class_names.index(s.label) for s in kept])
    speakers = np.asarray([s.speaker for s in kept])
    sessions = []
    if changes:  # As recorded first, then each channel: '<speaker>@<k>' its own speaker.
        x, heard = x[0], x[1:]
        sessions = [(h, labels, np.char.add(speakers, f"@{k}")) for k, h in enumerate(heard)]
    floor = fit(x, labels, speakers, class_names, FLAGS.C, FLAGS.weight, face_features, sessions)
    path = voice_floor.save(floor, FLAGS.model)
    logging.info("%s: fitted on %d clips of %d speakers.", path, len(kept), len(set(speakers)))
    also = f", and through {len(sessions)} channels" if sessions else ""
    print(f"{path}: {len(kept)} clips, {len(set(speakers))} speakers{also}, weight {floor.weight}")
