"""Synthetic audio-visual emotion corpus (``synthetic_av``), a stand-in for AFEW.

The corpus lets the whole pipeline (data, model, training, evaluation) run end to end without a
licensed corpus, on a problem with the structure that makes AM-FBP pay:

* Emotion classes sit on the arousal / valence plane (``EMOTION_PROFILES``). The AUDIO mostly
  carries AROUSAL, the VIDEO mostly carries VALENCE, so several classes are confusable from one
  modality and separable from both; small class-specific secondary cues in each modality (e.g.
  angry: flat spectral tilt and lowered brows; fear: pitch jitter, breathiness and widened eyes)
  separate the classes that share arousal and valence.
* Audio is a log-power spectrogram (16 kHz, 40 ms Hamming window, 10 ms hop, 800-point DFT, so
  20 Hz per bin; the ``afew`` config keeps the 200 bins of 0-4 kHz, coarser configs pool
  the same band into fewer bins) drawn from a source-filter model: harmonics of a time-varying
  f0 contour (level and range grow with arousal; speaker-specific baseline), vowel formants,
  syllable-rate energy modulation (faster with arousal), spectral tilt (flatter with arousal),
  aspiration and fricative noise, a per-speaker channel colouring and a noise floor. Values are
  natural-log powers, mostly within -10..+10.
* Video is a sequence of per-frame "face encoder" features at 25 frames/s:
  ``relu(bias + identity(speaker) + W_expr @ expression(t) + W_nuis @ nuisance(t) + noise)``
  with a fixed random encoder (from the seed). The expression latent has ten action-unit-like
  components (``FACE_UNITS``) driven mostly by valence (smile / frown), weakly by arousal, plus
  the class cues; the nuisance latent holds talking (synchronous with the audio syllables),
  head pose and illumination. Identity lives in a low-rank subspace, as in real face features.
* Emotion is expressed in one salient span of each clip (onset, apex, offset; 40-80 % of the
  clip); the rest is near neutral, so attention over time pays. Durations vary per clip.
* In a per-speaker fraction of the clips (drawn in ``noisy_audio_prob`` / ``bad_face_prob``,
  15-30 % each by default, never both in one clip) one modality is uninformative: the speech is
  buried in babble or broadband noise (SNR -20..-8 dB against the speaker's neutral speech
  level), or the face is absent (``video_valid`` False, features of the whole frame), occluded,
  or a bystander's. Short face-detection
  dropouts also occur in clean clips. This is what per-clip modality weighting (AG-FBP) is for.

Expected property (checked in ``tests/test_synthetic.py``): each single modality is clearly
below the fusion of both. A multinomial logistic-regression probe on clip-level statistics
(mean and standard deviation over time of 8-bin audio bands and of 16-dimension face-feature
groups over valid frames) trained on the 1000 ``afew`` train clips and evaluated on the 400
validation clips (unseen speakers) scores: audio only 53 %, video only 60 %, both 77 % (chance
14 %, majority class 20 %); with seeds 1-3: audio 50-55 %, video 53-55 %, both 64-71 %. On the
noisy-audio clips the audio probe falls from 58 % (clean clips) to 34 %, on the bad-face clips
the video probe falls from 69 % to 17 %, and there the linear fusion (48 %) is below audio alone
(64 %): weighting the modalities per clip is left for the model to learn.

Every example is a pure function of ``(config.seed, split, index)``
(``np.random.default_rng([seed, split_id, index])``), so the corpus is identical whatever the
generation order. ``generate_example`` needs only numpy; the TFDS builder ``SyntheticAV`` is
defined when ``tensorflow_datasets`` is installed (the JAX-only GPU machines can still generate
examples in memory).

Configs: ``afew`` (the demo) and ``tiny`` (tests) have ``train`` / ``validation`` splits of
disjoint speakers; ``folds`` and ``tiny_folds`` have speaker folds ``fold1`` .. ``foldK``
instead, for cross-validation (``configs/synthetic_cv_common.py``).

Usage::

    python -m data_prep.build synthetic_av/afew --data_dir=/tmp/synth_data
    ds = tfds.load('synthetic_av/afew', split='train', data_dir='/tmp/synth_data')
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

try:
    import tensorflow_datasets as tfds
except ImportError:  # JAX-only machines: the generator works without TFDS.
    tfds = None

AUDIO_FPS = 100
VIDEO_FPS = 25
SAMPLE_RATE_HZ = 16000
DFT_BIN_HZ = 20.0  # 16 kHz / 800-point DFT
SPLITS = ("train", "validation")

AFEW_CLASSES = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
# AFEW 8.0 train-set class frequencies (773 clips), used as the label prior of the demo.
AFEW_CLASS_PRIOR = (133, 74, 81, 150, 144, 117, 74)

FACE_UNITS = (
    "smile",  # AU12 lip corner puller
    "cheek_raise",  # AU6
    "lip_depress",  # AU15 lip corner depressor
    "brow_lower",  # AU4
    "inner_brow_raise",  # AU1
    "brow_raise",  # AU2 outer brow raiser
    "eye_widen",  # AU5 upper lid raiser
    "lid_tighten",  # AU7
    "nose_wrinkle",  # AU9
    "jaw_drop",  # AU26
)
AUDIO_CUES = (
    "tilt_db",  # dB/octave added to the spectral tilt (positive: flatter, harsher)
    "loudness",  # nats added to the log power
    "jitter",  # relative f0 jitter (pitch perturbation, blurs upper harmonics)
    "breath",  # nats added to the aspiration noise
    "pitch_st",  # semitones added to the f0 level
    "glide_st",  # semitones of pitch glide across the salient span (+ rising, - falling)
    "range_st",  # semitones added to the intonation range
    "rate_hz",  # syllables per second added to the speaking rate
    "nasal",  # strength of a nasal resonance / anti-resonance pair
)


@dataclasses.dataclass(frozen=True)
class EmotionProfile:
    """Where a class sits on the arousal / valence plane, and its secondary cues.

    Attributes:
      arousal: in [-1, 1]; drives mostly the audio.
      valence: in [-1, 1]; drives mostly the face.
      audio_cues: class-specific audio cues, keys from ``AUDIO_CUES``.
      face_cues: class-specific facial action units, keys from ``FACE_UNITS``.
    """

    arousal: float
    valence: float
    audio_cues: Mapping[str, float] = dataclasses.field(default_factory=dict)
    face_cues: Mapping[str, float] = dataclasses.field(default_factory=dict)


EMOTION_PROFILES = {
    # As on AFEW (paper, Table III), angry and fear show more in the voice, the other classes
    # more in the face.
    "angry": EmotionProfile(
        0.8, -0.6, {"tilt_db": 6.0, "loudness": 1.0}, {"brow_lower": 0.25, "lid_tighten": 0.25}
    ),
    "disgust": EmotionProfile(0.2, -0.7, {"nasal": 1.2, "rate_hz": -0.8}, {"nose_wrinkle": 0.45}),
    "fear": EmotionProfile(
        0.7,
        -0.5,
        {"pitch_st": 4.0, "jitter": 1.0, "breath": 2.5},
        {"eye_widen": 0.25, "inner_brow_raise": 0.2},
    ),
    "happy": EmotionProfile(0.6, 0.8, {"range_st": 2.5}, {"cheek_raise": 0.3}),
    "neutral": EmotionProfile(0.0, 0.0),
    "sad": EmotionProfile(
        -0.7,
        -0.6,
        {"breath": 1.0, "glide_st": -2.5, "rate_hz": -0.6},
        {"inner_brow_raise": 0.4, "lip_depress": 0.3},
    ),
    "surprise": EmotionProfile(0.8, 0.3, {"glide_st": 5.0}, {"jaw_drop": 0.4, "brow_raise": 0.4}),
    # Not in AFEW; for RAVDESS-like class sets.
    "calm": EmotionProfile(-0.5, 0.3, {"rate_hz": -0.5}, {"smile": 0.1}),
}

# Vowel formants F1..F3 (Hz) of an adult male voice (Peterson & Barney): a, i, u, e, o.
_VOWELS_HZ = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=np.float64,
)
_FORMANT_AMPS = np.array([2.6, 2.0, 1.3])  # nats
_FORMANT_WIDTHS_HZ = np.array([110.0, 150.0, 200.0])  # half widths at half maximum
_HARMONIC_SIGMA_HZ = 14.0  # power main lobe of a 40 ms Hamming window, as a Gaussian
_DB = math.log(10.0) / 10.0  # nats of power per dB
_ID_DIM = 24  # rank of the identity subspace of the face features
_NUISANCE_DIM = 5  # talking, yaw, pitch, roll, illumination
_SCENE_DIM = 8
_ID_GAIN = 0.7
_EXPRESSION_GAIN = 0.8
_NUISANCE_GAIN = 0.25
_FRAME_NOISE = 0.6
_NEUTRAL_SPEECH_POWER = 0.012  # mean power of neutral speech / exp(recording level)


if tfds is not None:
    _ConfigBase = tfds.core.BuilderConfig
else:

    @dataclasses.dataclass(eq=False)
    class _ConfigBase:
        """Fields of ``tfds.core.BuilderConfig``, for machines without TFDS."""

        name: str
        version: Any = None
        release_notes: dict[str, str] | None = None
        supported_versions: list[Any] = dataclasses.field(default_factory=list)
        description: str | None = None
        tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(eq=False)
class SyntheticAVConfig(_ConfigBase):
    """Configuration of one synthetic corpus.

    Attributes:
      class_names: label names, each a key of ``EMOTION_PROFILES``.
      class_prior: relative label frequencies (``None``: uniform).
      num_bins: spectrogram bins covering 0..``max_freq_hz``.
      max_freq_hz: upper edge of the spectrogram band.
      face_dim: size of the per-frame face features.
      num_train: clips in the train split.
      num_validation: clips in the validation split.
      num_train_speakers: speakers ``spk00``.. of the train split.
      num_validation_speakers: the next speakers, for the validation split only.
      min_duration_s: shortest clip (a multiple of 0.04 s is used).
      max_duration_s: longest clip.
      noisy_audio_prob: range of the per-speaker probability that the speech is buried in noise.
      bad_face_prob: range of the per-speaker probability that the face is absent, occluded or
        a bystander's.
      seed: everything (speakers, encoder, clips) derives from it.
      num_folds: 0 gives the splits ``train`` and ``validation``; K > 0 gives instead the
        speaker folds ``fold1`` .. ``foldK`` for cross-validation: the ``num_train_speakers``
        (a multiple of K) are cut into K consecutive groups, and each fold holds
        ``num_train // K`` clips of its group (``num_validation`` is unused).
    """

    class_names: tuple[str, ...] = AFEW_CLASSES
    class_prior: tuple[float, ...] | None = None
    num_bins: int = 200
    max_freq_hz: float = 4000.0
    face_dim: int = 1024
    num_train: int = 1000
    num_validation: int = 400
    num_train_speakers: int = 40
    num_validation_speakers: int = 10
    min_duration_s: float = 1.0
    max_duration_s: float = 4.0
    noisy_audio_prob: tuple[float, float] = (0.15, 0.30)
    bad_face_prob: tuple[float, float] = (0.15, 0.30)
    seed: int = 0
    num_folds: int = 0


AFEW_CONFIG = SyntheticAVConfig(
    name="afew",
    description="AFEW-shaped demo: 7 classes, 200 bins x 1024-d faces, 1000 / 400 clips, 1-4 s.",
    class_prior=AFEW_CLASS_PRIOR,
)
TINY_CONFIG = SyntheticAVConfig(
    name="tiny",
    description="Tests: 7 classes, 40 bins x 32-d faces, 112 / 56 clips, 0.4-1.2 s.",
    num_bins=40,
    face_dim=32,
    num_train=112,
    num_validation=56,
    num_train_speakers=6,
    num_validation_speakers=3,
    min_duration_s=0.4,
    max_duration_s=1.2,
)
FOLDS_CONFIG = SyntheticAVConfig(
    name="folds",
    description="Cross-validation: 7 classes, 200 bins x 1024-d faces, 5 speaker folds of 6 "
    "speakers and 150 clips each, 1-3 s.",
    class_prior=AFEW_CLASS_PRIOR,
    num_train=750,
    num_validation=0,
    num_train_speakers=30,
    num_validation_speakers=0,
    max_duration_s=3.0,
    num_folds=5,
)
TINY_FOLDS_CONFIG = SyntheticAVConfig(
    name="tiny_folds",
    description="Tests: 7 classes, 200 bins x 32-d faces, 3 speaker folds of 2 speakers and 16 "
    "clips each, 0.4-1.2 s.",
    face_dim=32,
    num_train=48,
    num_validation=0,
    num_train_speakers=6,
    num_validation_speakers=0,
    min_duration_s=0.4,
    max_duration_s=1.2,
    num_folds=3,
)
CONFIGS = {c.name: c for c in (AFEW_CONFIG, TINY_CONFIG, FOLDS_CONFIG, TINY_FOLDS_CONFIG)}


def split_names(config: SyntheticAVConfig) -> tuple[str, ...]:
    """The splits of a corpus: ``('train', 'validation')``, or ``fold1`` .. ``foldK``.

    Args:
      config: corpus configuration.

    Returns:
      The split names, in order.
    """
    if config.num_folds <= 0:
        return SPLITS
    if config.num_train_speakers % config.num_folds:
        raise ValueError(
            f"num_train_speakers ({config.num_train_speakers}) must be a multiple of "
            f"num_folds ({config.num_folds})."
        )
    return tuple(f"fold{k}" for k in range(1, config.num_folds + 1))


def speakers_for_split(config: SyntheticAVConfig, split: str) -> list[str]:
    """Speaker ids of a split (fixed, disjoint between splits).

    Args:
      config: corpus configuration.
      split: ``'train'``, ``'validation'`` or a fold (``split_names``).

    Returns:
      The list of speaker ids, e.g. ``['spk00', 'spk01', ...]``.
    """
    start, count = _speaker_range(config, split)
    return [f"spk{i:02d}" for i in range(start, start + count)]


def num_examples(config: SyntheticAVConfig, split: str) -> int:
    """Number of clips of a split.

    Args:
      config: corpus configuration.
      split: ``'train'``, ``'validation'`` or a fold (``split_names``).

    Returns:
      The number of clips.
    """
    _check_split(split, config)
    if config.num_folds > 0:
        return config.num_train // config.num_folds
    return config.num_train if split == "train" else config.num_validation


def class_prototypes(class_names: tuple[str, ...] = AFEW_CLASSES) -> dict[str, np.ndarray]:
    """Per-class generative parameters at full intensity.

    Args:
      class_names: classes, each a key of ``EMOTION_PROFILES``.

    Returns:
      A dict with ``arousal`` [C], ``valence`` [C], ``face_units`` [C, len(FACE_UNITS)] (the
      expression latent at the apex) and ``audio_cues`` [C, len(AUDIO_CUES)] (secondary audio
      cues; arousal itself acts on top of them).
    """
    profiles = [_profile(n) for n in class_names]
    return {
        "arousal": np.array([p.arousal for p in profiles], np.float32),
        "valence": np.array([p.valence for p in profiles], np.float32),
        "face_units": np.stack([_face_vector(p.arousal, p.valence, p) for p in profiles]),
        "audio_cues": np.stack([_cue_vector(p.audio_cues, AUDIO_CUES) for p in profiles]),
    }


def generate_example(
    config: SyntheticAVConfig, split: str, index: int, with_metadata: bool = False
) -> dict[str, Any]:
    """Generates one clip, a pure function of ``(config.seed, split, index)``.

    Args:
      config: corpus configuration.
      split: ``'train'``, ``'validation'`` or a fold (``split_names``).
      index: clip number within the split.
      with_metadata: also return a ``metadata`` dict (true arousal / valence, intensity,
        condition, noise type and SNR, face problem, salient span), for analyses; it is not
        part of the TFDS records.

    Returns:
      A dict in the corpus schema: ``clip_id`` str, ``speaker`` str, ``label`` int,
      ``audio`` float32 [Ta, num_bins], ``video`` float32 [Tv, face_dim], ``video_valid`` bool
      [Tv], ``duration_s`` float32, with Ta == 4 * Tv.
    """
    # Folds get their own stream ids after train (0) and validation (1).
    split_id = split_names(config).index(_check_split(split, config))
    split_id += len(SPLITS) if config.num_folds > 0 else 0
    rng = np.random.default_rng([config.seed, split_id, index])
    class_names = tuple(config.class_names)
    prior = np.ones(len(class_names)) if config.class_prior is None else config.class_prior
    prior = np.asarray(prior, np.float64) / np.sum(prior)
    label = int(rng.choice(len(class_names), p=prior))
    profile = _profile(class_names[label])
    start, count = _speaker_range(config, split)
    speaker_num = start + int(rng.integers(count))
    spk = _speaker(
        config.seed, speaker_num, config.face_dim, config.noisy_audio_prob, config.bad_face_prob
    )

    lo = max(1, round(config.min_duration_s * VIDEO_FPS))
    hi = max(lo, round(config.max_duration_s * VIDEO_FPS))
    num_video = int(rng.integers(lo, hi + 1))
    duration = num_video / VIDEO_FPS

    # Per-clip expression: ambiguity around the prototype, intensity, salient span.
    arousal = profile.arousal + 0.12 * rng.standard_normal()
    valence = profile.valence + 0.12 * rng.standard_normal()
    intensity = rng.uniform(0.7, 1.0) * spk["expressivity"]
    span = min(duration, max(0.3, rng.uniform(0.4, 0.8) * duration))
    onset = rng.uniform(0.0, duration - span)
    video_shift = rng.uniform(-0.1, 0.1)  # faces lead or lag the voice a little

    u = rng.random()
    if u < spk["noisy_audio_prob"]:
        condition = "noisy_audio"
    elif u < spk["noisy_audio_prob"] + spk["bad_face_prob"]:
        condition = "bad_face"
    else:
        condition = "clean"

    t_audio = (np.arange(4 * num_video) + 0.5) / AUDIO_FPS
    sal_audio = intensity * _saliency(t_audio, onset, span)
    audio, energy, audio_meta = _synth_audio(
        rng,
        config,
        spk,
        profile,
        arousal,
        valence,
        t_audio,
        sal_audio,
        onset,
        span,
        noisy=condition == "noisy_audio",
    )
    t_video = (np.arange(num_video) + 0.5) / VIDEO_FPS
    sal_video = intensity * _saliency(t_video, onset + video_shift, span)
    talking = energy.reshape(num_video, 4).mean(axis=1)
    video, valid, face_issue = _synth_video(
        rng,
        config,
        spk,
        profile,
        arousal,
        valence,
        sal_video,
        talking,
        bad_face=condition == "bad_face",
    )

    example = {
        "clip_id": f"{split}_{index:05d}",
        "speaker": f"spk{speaker_num:02d}",
        "label": label,
        "audio": audio,
        "video": video,
        "video_valid": valid,
        "duration_s": np.float32(duration),
    }
    if with_metadata:
        example["metadata"] = {
            "arousal": float(arousal),
            "valence": float(valence),
            "intensity": float(intensity),
            "condition": condition,
            "face_issue": face_issue,
            "salient_span_s": (float(onset), float(onset + span)),
            **audio_meta,
        }
    return example


# ----------------------------------------------------------------------------------------------
# Internals.


def _check_split(split: str, config: SyntheticAVConfig | None = None) -> str:
    valid = SPLITS if config is None else split_names(config)
    if split not in valid:
        raise ValueError(f"Unknown split {split!r}; valid splits: {valid}.")
    return split


def _speaker_range(config: SyntheticAVConfig, split: str) -> tuple[int, int]:
    _check_split(split, config)
    if config.num_folds > 0:
        per_fold = config.num_train_speakers // config.num_folds
        return split_names(config).index(split) * per_fold, per_fold
    if split == "train":
        return 0, config.num_train_speakers
    return config.num_train_speakers, config.num_validation_speakers


def _profile(name: str) -> EmotionProfile:
    if name not in EMOTION_PROFILES:
        raise ValueError(f"No emotion profile for {name!r}; known: {sorted(EMOTION_PROFILES)}.")
    return EMOTION_PROFILES[name]


def _cue_vector(cues: Mapping[str, float], names: tuple[str, ...]) -> np.ndarray:
    unknown = set(cues) - set(names)
    if unknown:
        raise ValueError(f"Unknown cues {sorted(unknown)}; valid: {names}.")
    return np.array([cues.get(n, 0.0) for n in names], np.float32)


def _face_vector(arousal: float, valence: float, profile: EmotionProfile) -> np.ndarray:
    """Expression latent at the apex: mostly valence, weakly arousal, plus class cues."""
    pos, neg = max(valence, 0.0), max(-valence, 0.0)
    base = {
        "smile": 1.0 * pos,
        "cheek_raise": 0.6 * pos,
        "lip_depress": 0.7 * neg,
        "brow_lower": 0.6 * neg,
        "eye_widen": 0.1 * arousal,
        "brow_raise": 0.05 * max(arousal, 0.0),
        "jaw_drop": 0.05 * max(arousal, 0.0),
    }
    return _cue_vector(base, FACE_UNITS) + _cue_vector(profile.face_cues, FACE_UNITS)


def _saliency(t: np.ndarray, onset: float, span: float, baseline: float = 0.15) -> np.ndarray:
    """Onset-apex-offset envelope: raised-cosine rise and fall of a quarter span each."""
    ramp = 0.25 * span
    rise = np.clip((t - onset) / ramp, 0.0, 1.0)
    fall = np.clip((onset + span - t) / ramp, 0.0, 1.0)
    shape = 0.5 - 0.5 * np.cos(np.pi * np.minimum(rise, fall))
    return baseline + (1.0 - baseline) * shape


def _smooth_noise(
    rng: np.random.Generator, t: np.ndarray, num: int, max_hz: float, num_sines: int = 4
) -> np.ndarray:
    """Smooth random processes [len(t), num] of unit variance (random low-frequency sines)."""
    freqs = rng.uniform(0.1, max_hz, (num_sines, num))
    phases = rng.uniform(0.0, 2 * np.pi, (num_sines, num))
    waves = np.sin(2 * np.pi * freqs[None] * t[:, None, None] + phases[None])
    return waves.sum(axis=1) / np.sqrt(num_sines / 2)


@functools.lru_cache(maxsize=512)
def _speaker(
    seed: int,
    speaker_num: int,
    face_dim: int,
    noisy_audio_prob: tuple[float, float],
    bad_face_prob: tuple[float, float],
) -> dict[str, Any]:
    """Speaker traits (voice, face identity, recording conditions), fixed by seed and number."""
    rng = np.random.default_rng([seed, 1000, speaker_num])  # voice and recording conditions
    female = rng.random() < 0.5
    traits = {
        "f0_hz": rng.normal(205.0, 22.0) if female else rng.normal(115.0, 14.0),
        "formant_scale": (1.16 if female else 1.0) * rng.normal(1.0, 0.04),
        "loudness": rng.normal(0.0, 0.35),
        "tilt_db": rng.normal(0.0, 0.8),
        "rate_hz": rng.normal(0.0, 0.4),
        "breath": rng.normal(0.0, 0.4),
        "range_st": rng.normal(0.0, 0.4),
        # Smooth channel colouring (nats) as a function of octaves above 100 Hz.
        "eq": (rng.uniform(0.2, 1.5, 3), rng.uniform(0, 2 * np.pi, 3), rng.normal(0.0, 0.5, 3)),
        "expressivity": rng.uniform(0.8, 1.2),
        "noisy_audio_prob": rng.uniform(*noisy_audio_prob),
        "bad_face_prob": rng.uniform(*bad_face_prob),
    }
    rng = np.random.default_rng([seed, 1001, speaker_num])  # face, apart: depends on face_dim
    traits["rest_face"] = rng.normal(0.0, 0.08, len(FACE_UNITS))
    identity = (
        rng.standard_normal(_ID_DIM).astype(np.float32) @ _encoder(seed, face_dim)["identity"]
    )
    identity += 0.3 * rng.standard_normal(face_dim, dtype=np.float32)
    traits["identity"] = identity
    return traits


@functools.lru_cache(maxsize=8)
def _encoder(seed: int, face_dim: int) -> dict[str, np.ndarray]:
    """The fixed random "face encoder" (float32) that maps latents to features."""
    rng = np.random.default_rng([seed, 2000, face_dim])
    enc = {
        "bias": rng.normal(0.0, 0.5, face_dim),
        "expression": rng.standard_normal((len(FACE_UNITS), face_dim)),
        "nuisance": rng.standard_normal((_NUISANCE_DIM, face_dim)),
        "identity": rng.standard_normal((_ID_DIM, face_dim)) / np.sqrt(_ID_DIM),
        "scene": rng.standard_normal((_SCENE_DIM, face_dim)) / np.sqrt(_SCENE_DIM),
        "occluder": rng.standard_normal((_SCENE_DIM, face_dim)) / np.sqrt(_SCENE_DIM),
    }
    return {k: v.astype(np.float32) for k, v in enc.items()}


def _frequencies(config: SyntheticAVConfig) -> tuple[np.ndarray, int]:
    """Synthesis frequencies (Hz) at <= 20 Hz resolution, and sub-bins per output bin."""
    bin_hz = config.max_freq_hz / config.num_bins
    sub = max(1, math.ceil(bin_hz / DFT_BIN_HZ - 1e-9))
    k = np.arange(config.num_bins)[:, None]
    j = np.arange(sub)[None, :]
    return (k * bin_hz + bin_hz * ((j + 0.5) / sub - 0.5)).reshape(-1), sub


def _syllables(rng: np.random.Generator, t: np.ndarray, rate_hz: np.ndarray):
    """Syllable energy in [0, 1], syllable index and speech-activity mask, per frame."""
    phase = rng.uniform(0, 2 * np.pi) + np.cumsum(2 * np.pi * rate_hz / AUDIO_FPS)
    syllable = np.floor(phase / (2 * np.pi)).astype(np.int64)
    syllable -= syllable[0]
    amps = rng.uniform(0.45, 1.0, syllable[-1] + 1)
    shape = 0.5 - 0.5 * np.cos(phase)
    active = np.ones_like(t)
    duration = t[-1] + 0.5 / AUDIO_FPS
    for _ in range(rng.poisson(0.35 * duration)):  # pauses between phrases
        centre, half = rng.uniform(0, duration), rng.uniform(0.05, 0.18)
        active *= np.clip(np.abs(t - centre) / half - 0.5, 0.0, 1.0)
    return shape**1.5 * amps[syllable] * active, syllable, active


def _log_envelope(
    freqs: np.ndarray, formants: np.ndarray, tilt_db: np.ndarray, nasal: np.ndarray
) -> np.ndarray:
    """Vocal-tract envelope in nats, float32 [T, F]: formant resonances, spectral tilt, nasality."""
    f = freqs.astype(np.float32)[None, :]
    octaves = np.log2(np.maximum(freqs, 100.0) / 100.0).astype(np.float32)
    env = (tilt_db * _DB).astype(np.float32)[:, None] * octaves[None]
    if np.any(nasal):
        nasal_shape = 0.9 * np.exp(-0.5 * ((freqs - 250.0) / 80.0) ** 2) - 1.2 * np.exp(
            -0.5 * ((freqs - 1000.0) / 150.0) ** 2
        )
        env += nasal.astype(np.float32)[:, None] * nasal_shape.astype(np.float32)[None]
    for amp, width, centre in zip(_FORMANT_AMPS, _FORMANT_WIDTHS_HZ, formants.T, strict=True):
        x = (f - centre.astype(np.float32)[:, None]) * np.float32(1.0 / width)
        env += np.float32(amp) / (1.0 + x * x)  # resonance-shaped peak
    return env


def _harmonics(freqs: np.ndarray, f0: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """Harmonic comb, float32 [T, F], of a 40 ms window; jitter blurs the upper harmonics."""
    f = freqs.astype(np.float32)[None, :]
    f0 = f0.astype(np.float32)[:, None]
    ratio = f / f0
    dist = (ratio - np.rint(ratio)) * f0
    inv_var = 1.0 / (_HARMONIC_SIGMA_HZ**2 + (f * jitter.astype(np.float32)[:, None]) ** 2)
    comb = np.exp(-0.5 * dist * dist * inv_var) * np.sqrt(_HARMONIC_SIGMA_HZ**2 * inv_var)
    comb[ratio < 0.5] = 0.0
    return comb


def _babble(rng: np.random.Generator, freqs: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Power, float32 [T, F], of several overlapping background talkers; mean power 1."""
    total = np.zeros((len(t), len(freqs)), np.float32)
    for _ in range(int(rng.integers(4, 9))):
        arousal = rng.normal(0.0, 0.4)
        rate = np.full_like(t, rng.uniform(3.0, 6.0))
        energy, syllable, _ = _syllables(rng, t, rate)
        f0 = rng.uniform(95.0, 250.0) * 2 ** (
            (3.0 * arousal + 2.0 * _smooth_noise(rng, t, 1, 1.5)[:, 0]) / 12
        )
        vowels = _VOWELS_HZ[rng.integers(len(_VOWELS_HZ), size=syllable[-1] + 1)]
        formants = vowels[syllable] * rng.uniform(0.95, 1.2)
        env = _log_envelope(freqs, formants, np.full_like(t, -9.0 + 3.0 * arousal), 0 * t)
        level = np.log(rng.uniform(0.3, 1.0) * energy + 1e-12).astype(np.float32)
        total += np.exp(env + level[:, None]) * _harmonics(freqs, f0, np.full_like(t, 0.003))
    return total / max(float(total.mean()), 1e-12)


def _synth_audio(rng, config, spk, profile, arousal, valence, t, sal, onset, span, noisy):
    """Log-power spectrogram [T, num_bins] float32, syllable energy [T], metadata."""
    freqs, sub = _frequencies(config)
    num = len(t)
    cues = dict(zip(AUDIO_CUES, _cue_vector(profile.audio_cues, AUDIO_CUES), strict=True))
    a_t = arousal * sal  # expressed arousal per frame
    v_t = valence * sal

    rate = np.clip(4.2 + spk["rate_hz"] + 2.0 * a_t + cues["rate_hz"] * sal, 2.0, 8.0)
    energy, syllable, active = _syllables(rng, t, rate)

    # f0 (semitones around the speaker's baseline): level, intonation, glide, jitter.
    contour = _smooth_noise(rng, t, 1, 1.5)[:, 0] - 0.8 * (t - t.mean())
    pitch_range = np.maximum(0.4, 1.5 + spk["range_st"] + 3.0 * a_t + cues["range_st"] * sal)
    ramp = np.clip((t - onset) / span, 0.0, 1.0) - 0.5
    jitter = 0.002 + 0.03 * cues["jitter"] * sal
    semitones = (
        6.0 * a_t
        + cues["pitch_st"] * sal
        + pitch_range * contour
        + cues["glide_st"] * sal * ramp
        + 0.6 * cues["jitter"] * sal * rng.standard_normal(num)
    )
    f0 = spk["f0_hz"] * 2 ** (semitones / 12)

    # Vocal tract: a vowel per syllable, smoothed; smiling (valence) raises the formants a bit.
    vowels = _VOWELS_HZ[rng.integers(len(_VOWELS_HZ), size=syllable[-1] + 1)][syllable]
    kernel = np.ones(7) / 7
    vowels = np.stack(
        [np.convolve(np.pad(v, 3, mode="edge"), kernel, "valid") for v in vowels.T], axis=1
    )
    scale = spk["formant_scale"] * (1 + 0.04 * v_t + 0.06 * np.maximum(a_t, 0))
    formants = vowels * scale[:, None]
    tilt = -9.0 + spk["tilt_db"] + 6.0 * a_t + cues["tilt_db"] * sal
    env = _log_envelope(freqs, formants, tilt, cues["nasal"] * sal)
    gain = 6.0 + spk["loudness"] + rng.normal(0.0, 0.3)  # recording level, emotion-free
    loud = gain + 2.6 * a_t + cues["loudness"] * sal

    # Source-filter: every speech component is (level per frame) x (shape per frequency), so
    # only the envelope and the comb need a [T, F] exponential.
    octaves = np.log2(np.maximum(freqs, 100.0) / 100.0)
    vocal = np.exp(env + (loud + np.log(energy + 1e-12)).astype(np.float32)[:, None])
    voiced = vocal * _harmonics(freqs, f0, jitter)
    # Aspiration noise is flatter than the voiced source (+3 dB/octave).
    breath = -5.0 + spk["breath"] + cues["breath"] * sal - 0.5 * a_t
    aspiration = vocal * _outer(np.exp(breath), np.exp(3.0 * _DB * octaves))
    # Fricatives between syllables, during speech: high-frequency noise bursts.
    fric_amp = rng.uniform(0.0, 1.0, syllable[-1] + 1)[syllable] * (1 - energy) ** 4 * active
    fricative = _outer(
        np.exp(loud - 3.0) * fric_amp, np.exp(-0.5 * ((freqs - 3200.0) / 900.0) ** 2)
    )
    floor = np.exp(rng.normal(-6.0, 0.6) - 0.4 * octaves).astype(np.float32)[None]
    noise_like = aspiration + fricative + floor

    meta = {"noise_type": None, "snr_db": None}
    if noisy:
        # SNR relative to the speaker's neutral speech level, so that the noise level does not
        # tell the emotion.
        snr_db = rng.uniform(-25.0, -10.0)
        level = np.float32(np.exp(gain) * _NEUTRAL_SPEECH_POWER * 10 ** (-snr_db / 10))
        if rng.random() < 0.5:
            meta["noise_type"] = "babble"
            # Babble masks mostly the low band (steep tilt): 6 dB more to bury the speech alike.
            snr_db -= 6.0
            voiced += 4 * level * _babble(rng, freqs, t)
        else:
            meta["noise_type"] = "broadband"
            colour = np.exp(-rng.uniform(0.0, 1.5) * octaves * np.log(2))
            mod = np.maximum(1 + 0.4 * _smooth_noise(rng, t, 1, 2.0)[:, 0], 0.1)
            noise_like += level * _outer(mod, colour) / np.float32(mod.mean() * colour.mean())
        meta["snr_db"] = float(snr_db)

    eq_freqs, eq_phases, eq_amps = spk["eq"]
    eq = (eq_amps * np.sin(2 * np.pi * eq_freqs * octaves[:, None] / 5 + eq_phases)).sum(-1)
    noise_like *= rng.standard_exponential(noise_like.shape, dtype=np.float32)  # periodogram
    power = (voiced + noise_like) * np.exp(eq).astype(np.float32)[None]
    power = power.reshape(num, config.num_bins, sub).mean(-1)
    # The epsilon (log -16) only matters where a speckle draw is ~0 below the first harmonic.
    return np.log(power + np.float32(1e-7)), energy, meta


def _outer(per_frame: np.ndarray, per_freq: np.ndarray) -> np.ndarray:
    return np.outer(per_frame.astype(np.float32), per_freq.astype(np.float32))


def _synth_video(rng, config, spk, profile, arousal, valence, sal, talking, bad_face):
    """Face features [T, face_dim] float32, validity [T] bool, kind of face problem."""
    enc = _encoder(config.seed, config.face_dim)
    num = len(sal)
    t = (np.arange(num) + 0.5) / VIDEO_FPS
    expression = (
        sal[:, None] * _face_vector(arousal, valence, profile)[None]
        + spk["rest_face"][None]
        + 0.15 * _smooth_noise(rng, t, len(FACE_UNITS), 1.0)
    )
    nuisance = np.concatenate(
        [
            2.0 * talking[:, None],
            0.5 * _smooth_noise(rng, t, 3, 0.8) + rng.normal(0.0, 0.4, 3),
            rng.normal(0.0, 0.7) + 0.2 * _smooth_noise(rng, t, 1, 0.3),
        ],
        axis=1,
    )
    face = enc["bias"] + _ID_GAIN * spk["identity"]  # what the frame shows besides expression
    other_face, other_span = None, slice(0, 0)
    valid = np.ones(num, bool)

    issue = None
    if bad_face:
        issue = ("absent", "occluded", "bystander")[rng.choice(3, p=(0.45, 0.35, 0.2))]
        # Half of the time the problem lasts the whole clip, otherwise most of it.
        start, stop = _segment(rng, num, 1.0 if rng.random() < 0.5 else rng.uniform(0.6, 0.95))
        if issue == "absent":
            valid[start:stop] = False
        elif issue == "occluded":  # a hand, a glass, a microphone: expression mostly hidden
            occluder = rng.standard_normal(_SCENE_DIM).astype(np.float32) @ enc["occluder"]
            expression[start:stop] *= 0.15
            other_face = enc["bias"] + _ID_GAIN * (0.7 * spk["identity"] + 0.8 * occluder)
        else:  # a bystander's neutral face was detected instead
            other = rng.standard_normal(_ID_DIM).astype(np.float32) @ enc["identity"]
            expression[start:stop] = rng.normal(0.0, 0.2, len(FACE_UNITS))
            other_face = enc["bias"] + _ID_GAIN * other
        other_span = slice(start, stop)
    elif rng.random() < 0.25:  # short face-detection dropout
        start, stop = _segment(rng, num, rng.uniform(0.05, 0.2))
        valid[start:stop] = False

    latents = np.concatenate([_EXPRESSION_GAIN * expression, _NUISANCE_GAIN * nuisance], axis=1)
    weights = np.concatenate([enc["expression"], enc["nuisance"]])
    features = latents.astype(np.float32) @ weights + face
    if other_face is not None:
        features[other_span] += other_face - face
    if not valid.all():
        # No face detected: the encoder sees the whole frame (as in the paper's AFEW pipeline).
        scene = rng.standard_normal(_SCENE_DIM).astype(np.float32) @ enc["scene"]
        features[~valid] = enc["bias"] + 1.5 * scene
    features += np.float32(_FRAME_NOISE) * rng.standard_normal(features.shape, dtype=np.float32)
    return np.maximum(features, 0.0), valid, issue


def _segment(rng: np.random.Generator, num: int, fraction: float) -> tuple[int, int]:
    length = max(1, min(num, round(fraction * num)))
    start = int(rng.integers(0, num - length + 1))
    return start, start + length


# ----------------------------------------------------------------------------------------------
# TFDS builder.

if tfds is not None:
    from data_prep.builders import base

    class SyntheticAV(tfds.core.GeneratorBasedBuilder):
        """Synthetic audio-visual emotion corpus in the project schema (see module docstring)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
        BUILDER_CONFIGS: ClassVar[list[SyntheticAVConfig]] = list(CONFIGS.values())

        # Nothing to download, so no checksums file to look up. Looking for one next to the
        # code fails on TFDS 4.9.10 without the undeclared `importlib_resources` package
        # (tensorflow/datasets#11212).
        @tfds.core.utils.classproperty
        @classmethod
        def url_infos(cls) -> None:
            return None

        def _info(self) -> tfds.core.DatasetInfo:
            config = self.builder_config
            return self.dataset_info_from_configs(
                description=__doc__.split("\n\n")[0],
                features=base.schema_features(
                    config.class_names,
                    (config.face_dim,),
                    "Per-frame face features, 25 frames/s.",
                    num_bins=config.num_bins,
                ),
                supervised_keys=None,
            )

        def _split_generators(self, dl_manager: tfds.download.DownloadManager):
            del dl_manager  # nothing to download
            return {
                split: self._generate_examples(split) for split in split_names(self.builder_config)
            }

        def _generate_examples(self, split: str):
            for index in range(num_examples(self.builder_config, split)):
                example = generate_example(self.builder_config, split, index)
                yield example["clip_id"], example
