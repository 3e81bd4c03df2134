r"""The voice floor: a logistic regression on a clip's voice functionals, served beside a network.

    fbp-jax voice-floor --corpus=ravdess/speech --manual_dir=<corpus> --model=<export dir> \
        --C=0.03 --weight=0.25

A linear model on the 51 voice functionals of `data_prep.features.voice` (pitch, voice quality,
level, spectral balance and timing of a clip), each speaker standardised with the statistics
of its own clips (as the project's speaker floors), adds to the networks what their 0-4 kHz
spectrogram resolves least, and keeps its accuracy when the silence around the speech is
trimmed (docs/recipe.md). This command fits it on every clip of a corpus (a builder's
`list_clips`: the clips the records would hold; a clip that cannot be read is reported and
left out, with a progress bar) and writes `voice_floor.npz` into an export directory, whose
classes it must share. `fbp-jax predict` then answers a file that it reads as one clip with
(1 - weight) * the network's posteriors + weight * the floor's (weight 1 / (n + 1) makes it an
equal member beside an ensemble of n networks); a longer recording, read as a timeline of
windows, is left to the network alone.

The file holds plain arrays, so serving needs numpy only: the regression (coefficients and
intercepts over the scaler's standardised inputs) and the training speakers' pooled statistics
(the mean of all clips, the root mean within-speaker variance), which standardise a speaker
group too small for its own statistics, as the network's pooled statistics do.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
from absl import app, flags, logging

from fbp_jax import io

FILE = "voice_floor.npz"
STD_FLOOR = 1e-8  # A functional constant over a speaker's clips is left centred, not scaled.


@dataclasses.dataclass(frozen=True)
class VoiceFloor:
    """A fitted voice floor (arrays over the F functionals and the C classes).

    Attributes:
      class_names: the classes, in the order of `coef`'s rows.
      weight: its share of a served posterior.
      scale_mean, scale_std: the scaler of the speaker-standardised inputs.
      coef: [C, F] and intercept: [C], the regression over the scaler's outputs.
      pooled_mean, pooled_std: the training speakers' pooled statistics of the functionals.
      C: the inverse regularisation it was fitted with.
    """

    class_names: tuple[str, ...]
    weight: float
    scale_mean: np.ndarray
    scale_std: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    pooled_mean: np.ndarray
    pooled_std: np.ndarray
    C: float

    def posteriors(self, functionals: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """[N, C] posteriors of clips' functionals [N, F], standardised with a speaker's (or
        the pooled) `mean` and `std`."""
        x = (functionals - mean) / np.where(std > STD_FLOOR, std, 1.0)
        logits = ((x - self.scale_mean) / self.scale_std) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def speaker_posteriors(self, functionals: np.ndarray, own: bool) -> np.ndarray:
        """Posteriors of one speaker group's clips: standardised with their own statistics
        (`own`), else with the training speakers' pooled ones."""
        if own:
            return self.posteriors(functionals, functionals.mean(0), functionals.std(0))
        return self.posteriors(functionals, self.pooled_mean, self.pooled_std)


def fit(
    functionals: np.ndarray,
    labels: np.ndarray,
    speakers: np.ndarray,
    class_names: Sequence[str],
    C: float,
    weight: float,
) -> VoiceFloor:
    """The floor fitted on clips' functionals [N, F], labels (indices into `class_names`) and
    speakers."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from fbp_jax.evaluation import floors

    x = floors.standardise_per_speaker(functionals, speakers)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(C=C, max_iter=5000, random_state=0)
    model.fit(scaler.transform(x), labels)
    coef = np.zeros((len(class_names), x.shape[1]))
    intercept = np.full(len(class_names), -1e9)  # A class absent from training: never answered.
    coef[model.classes_] = model.coef_
    intercept[model.classes_] = model.intercept_
    within = np.mean([functionals[speakers == s].var(0) for s in np.unique(speakers)], axis=0)
    return VoiceFloor(
        tuple(class_names),
        float(weight),
        scaler.mean_,
        scaler.scale_,
        coef,
        intercept,
        functionals.mean(0),
        np.sqrt(within),
        float(C),
    )


def save(floor: VoiceFloor, export_dir: str) -> str:
    """Writes `floor` into `export_dir` (whole or not at all); returns the file."""
    path = os.path.join(export_dir, FILE)
    arrays = {k: np.asarray(v) for k, v in dataclasses.asdict(floor).items()}
    with io.atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def load(export_dir: str) -> VoiceFloor | None:
    """The voice floor of an export directory, or None when it has none."""
    path = os.path.join(export_dir, FILE)
    if not os.path.isfile(path):
        return None
    with np.load(path) as f:
        values = {k: f[k] for k in f.files}
    return VoiceFloor(
        class_names=tuple(str(c) for c in values.pop("class_names")),
        weight=float(values.pop("weight")),
        C=float(values.pop("C")),
        **{k: np.asarray(v, np.float64) for k, v in values.items()},
    )


def clip_functionals(sources, progress: bool = True):
    """(functionals [N, F], kept sources) of corpus clips (`corpus.ClipSource`); a clip that
    cannot be read is reported on stderr and left out."""
    import tqdm

    from data_prep.features import audio as audio_lib
    from data_prep.features import voice

    rows, kept = [], []
    for source in tqdm.tqdm(sources, desc="voice functionals", unit="clip", disable=not progress):
        try:
            rows.append(voice.functionals(audio_lib.load_audio(source.files["audio"]).samples))
        except Exception as e:  # One file never stops the run.
            print(f"{source.files['audio']}: skipped: {e}", file=sys.stderr)
            continue
        kept.append(source)
    return np.asarray(rows, np.float64), kept


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


def main(argv: Sequence[str]) -> None:
    del argv
    from fbp_jax.serving import bundle

    if not 0.0 < FLAGS.weight < 1.0:
        raise app.UsageError(f"--weight must be in (0, 1), got {FLAGS.weight}")
    model = bundle.load_exported(FLAGS.model)
    sources = corpus_clips(FLAGS.corpus, FLAGS.manual_dir)
    unknown = sorted({s.label for s in sources} - set(model.class_names))
    if unknown:
        raise app.UsageError(f"{FLAGS.manual_dir}: classes {unknown} are not the model's")
    x, kept = clip_functionals(sources)
    if len(kept) < 2:
        raise app.UsageError(f"{FLAGS.manual_dir}: {len(kept)} readable clips; too few to fit")
    labels = np.asarray([model.class_names.index(s.label) for s in kept])
    speakers = np.asarray([s.speaker for s in kept])
    floor = fit(x, labels, speakers, model.class_names, FLAGS.C, FLAGS.weight)
    path = save(floor, FLAGS.model)
    logging.info("%s: fitted on %d clips of %d speakers.", path, len(kept), len(set(speakers)))
    print(f"{path}: {len(kept)} clips, {len(set(speakers))} speakers, weight {floor.weight}")
