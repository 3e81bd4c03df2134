"""Voice functionals: pitch, voicing, level and timing measure what they name."""

import numpy as np
import pytest

from data_prep.features import conditions, voice

RATE = 16000
INDEX = {name: i for i, name in enumerate(voice.NAMES)}


def _harmonics(f0_hz, seconds=1.0, glide=0.0):
    """A vowel-like tone: 14 harmonics of f0 falling 6 dB an octave, f0 gliding by `glide`
    semitones over the clip."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = f0_hz * 2 ** (glide * t / seconds / 12)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 15))).astype(np.float32)


def _hz(values, name):
    return 27.5 * 2 ** (values[INDEX[name]] / 12)


def test_names_match_the_values():
    assert len(set(voice.NAMES)) == len(voice.NAMES)
    out = voice.functionals(_harmonics(200.0))
    assert out.shape == (len(voice.NAMES),) and out.dtype == np.float32
    assert np.isfinite(out).all()


@pytest.mark.parametrize("f0", [90.0, 140.0, 230.0, 400.0])
def test_pitch_of_a_harmonic_tone_even_without_its_fundamental(f0):
    x = _harmonics(f0)
    for clip in (x, conditions.band_pass(x)):  # 300-3400 Hz: a 90-230 Hz fundamental removed
        out = voice.functionals(clip)
        assert _hz(out, "f0_semitones_p50") == pytest.approx(f0, rel=0.02)
        assert out[INDEX["voiced_fraction"]] > 0.9


def test_noise_is_unvoiced_and_a_glide_rises():
    noise = 0.1 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    assert voice.functionals(noise)[INDEX["voiced_fraction"]] < 0.1
    rising = voice.functionals(_harmonics(150.0, glide=6.0))
    flat = voice.functionals(_harmonics(150.0))
    assert rising[INDEX["f0_semitones_range2080"]] == pytest.approx(3.6, abs=0.5)
    assert flat[INDEX["f0_semitones_range2080"]] < 0.1
    assert rising[INDEX["f0_semitones_rise"]] > 10 * rising[INDEX["f0_semitones_fall"]]


def test_gain_moves_the_level_only_and_silence_around_changes_little():
    gap = np.zeros(RATE // 10, np.float32)
    speech = np.concatenate([gap, _harmonics(120.0, 0.4), gap, gap, _harmonics(180.0, 0.6), gap])
    base = voice.functionals(speech)
    louder = voice.functionals(conditions.gain(speech, 10.0))
    padded = voice.functionals(conditions.pad(speech, 1.0))
    moved = [INDEX[f"level_db_{k}"] for k in ("mean", "p20", "p50", "p80")]
    kept = [i for i in range(len(base)) if i not in moved]
    assert louder[moved] == pytest.approx(base[moved] + 10.0, abs=0.01)
    assert louder[kept] == pytest.approx(base[kept], rel=1e-3, abs=1e-3)
    for i, name in enumerate(voice.NAMES):
        assert padded[i] == pytest.approx(base[i], rel=1e-3, abs=1e-3), name
    # Two voiced stretches (120 Hz, then 180 Hz) over one second of speech.
    assert base[INDEX["voiced_stretches_per_s"]] == pytest.approx(2.0, abs=0.3)
    assert _hz(base, "f0_semitones_p20") == pytest.approx(120.0, rel=0.03)
    assert _hz(base, "f0_semitones_p80") == pytest.approx(180.0, rel=0.03)
