"""The report command writes every figure of the paper for a trained workdir (Fig. 6-10)."""

import os

import numpy as np
import pytest
from matplotlib import image

from fbp_jax.evaluation import report

# One worker trains the shared runs of conftest (amfbp_workdir, audio_workdir) for all.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("trained_runs")]


def test_report_writes_every_figure(amfbp_workdir, audio_workdir, tmp_path):
    out = str(tmp_path / "report")
    result = report.make_report(
        amfbp_workdir,
        split="validation",
        output_dir=out,
        compare=[audio_workdir],
        attention_from=[amfbp_workdir],
        num_clips=2,
        batch_size=16,
    )
    assert result.skipped == {}
    assert sorted(os.listdir(out)) == sorted(
        [*report.FIGURES.values(), report.REPORT_FILE, "metrics.json", "predictions.csv"]
    )
    for name in report.FIGURES.values():
        pixels = image.imread(os.path.join(out, name))  # a readable PNG
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 200, name
        assert np.std(pixels[..., :3]) > 0.05, f"{name} is blank"
    text = (tmp_path / "report" / report.REPORT_FILE).read_text()
    for name in report.FIGURES.values():
        assert f"]({name})" in text
    assert f"{100 * result.metrics['weighted_accuracy']:.2f}%" in text
    assert "| angry |" in text and "mean mu" in text


def test_learning_curves_read_the_event_files(amfbp_workdir):
    scalars = report.read_scalars(amfbp_workdir)
    steps, acc = scalars["eval_accuracy"]
    assert steps.tolist() == [4, 8] and np.all((0 <= acc) & (acc <= 1))
    assert "train_loss" in scalars


def test_relative_attention_is_one_for_uniform_weights():
    mask = np.array([1, 1, 1, 1, 0, 0], bool)
    w = np.where(mask, 0.25, 0.0)
    rel = report.relative_attention(w, mask)
    np.testing.assert_allclose(rel[:4], 1.0)
    assert np.all(np.isnan(rel[4:]))
