"""The voice floor as served: a logistic regression on a clip's voice functionals (and face row).

A linear model on the 51 voice functionals of `data_prep.features.voice` (pitch, voice quality,
level, spectral balance and timing of a clip), each speaker standardised with the statistics
of its own clips (as the project's speaker floors), adds to the networks what their 0-4 kHz
spectrogram resolves least, and keeps its accuracy when the silence around the speech is
trimmed (docs/recipe.md). `fbp-jax voice-floor` (`fbp_jax.evaluation.voice_floor_fit`) fits
it on a corpus and writes `voice_floor.npz` into an export directory, whose classes it must
share. `fbp-jax predict` then answers a file that it reads as one clip with
(1 - weight) * the network's posteriors + weight * the floor's (weight 1 / (n + 1) makes it an
equal member beside an ensemble of n networks); a longer recording, read as a timeline of
windows, is left to the network alone.

A floor of a model with a face stream of clip statistics (OpenFace action units) may read the
clip's face row too (`face_features` > 0: its last inputs are the mean of the model's face
features over the frames where a face was found): a linear model of both streams, which the
paper's fusion has to beat (docs/recipe.md).

The file holds plain arrays, so serving needs numpy only: the regression (coefficients and
intercepts over the scaler's standardised inputs) and the training speakers' pooled statistics
(the mean of all clips, the root mean within-speaker variance), which standardise a speaker
group too small for its own statistics, as the network's pooled statistics do.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from fbp_jax import io

FILE = "voice_floor.npz"
FACE_KIND = "openface_au"  # The face features whose clip row a floor may read.
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
      face_features: how many of the F inputs, the last ones, are the clip's face row (0: it
        hears the voice only).
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
    face_features: int = 0

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

    def group_posteriors(self, functionals: np.ndarray, groups, own: bool = True) -> np.ndarray:
        """[N, C] posteriors of clips, each speaker group (`groups`: [N] keys) standardised as
        `speaker_posteriors` does."""
        groups = np.asarray(groups)
        out = np.empty((len(functionals), len(self.class_names)))
        for g in np.unique(groups):
            rows = groups == g
            out[rows] = self.speaker_posteriors(functionals[rows], own)
        return out


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
        face_features=int(values.pop("face_features", 0)),  # Files before faces: none.
        **{k: np.asarray(v, np.float64) for k, v in values.items()},
    )
