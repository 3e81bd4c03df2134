"""Nested selection: validation chooses, test is read for the chosen only."""

import os

import numpy as np
import pytest

from fbp_jax.evaluation import cross_validation as cv
from fbp_jax.evaluation import predictions as predictions_lib
from fbp_jax.evaluation import selection

CLASSES = ("a", "b")


def _predictions(fold, part, correct):
    """Predictions of len(correct) clips: right where `correct` is 1, confident either way."""
    labels = np.arange(len(correct)) % 2
    right = np.asarray(correct, bool)
    predicted = np.where(right, labels, 1 - labels)
    probs = np.full((len(labels), 2), 0.1)
    probs[np.arange(len(labels)), predicted] = 0.9
    ids = [f"{fold}_{part}_{i}" for i in range(len(labels))]
    return predictions_lib.Predictions(ids, labels, probs, CLASSES)


def _candidate(name, per_fold):
    """per_fold: {fold: (validation correct, test correct)}."""
    folds = {
        f: {"validation": _predictions(f, "validation", v), "test": _predictions(f, "test", t)}
        for f, (v, t) in per_fold.items()
    }
    splits = {f: {"train": "x", "validation": f"v{f}", "test": f"t{f}"} for f in per_fold}
    return selection.Candidate(name, folds, splits)


def test_each_fold_chooses_on_its_validation_and_test_is_read_for_the_choice(tmp_path):
    # A: good on fold 1's validation, bad on its test; B: the reverse on fold 2.
    a = _candidate("a", {"1": ([1, 1, 1, 1], [0, 0, 0, 1]), "2": ([0, 0, 1, 1], [1, 1, 1, 1])})
    b = _candidate("b", {"1": ([1, 1, 0, 0], [1, 1, 1, 1]), "2": ([1, 1, 1, 0], [0, 0, 1, 1])})
    result = selection.select([a, b])
    nested = result["nested"]
    assert nested["per_fold"]["1"]["candidate"] == "a"  # 100 % on validation, not b's 50 %
    assert nested["per_fold"]["2"]["candidate"] == "b"  # 75 % vs 50 %
    # The nested test figure is that of the choices (1 + 2 right of 8), not the best test.
    assert nested["pooled_test_wa"] == pytest.approx(3 / 8)
    rows = {r["name"]: r for r in result["rows"]}
    assert rows["a"]["mean_validation_wa"] == pytest.approx(0.75)
    assert rows["b"]["mean_validation_wa"] == pytest.approx(0.625)
    assert result["by_mean_validation"] == "a"
    assert rows["a"]["mean_test_wa"] == pytest.approx((0.25 + 1.0) / 2)
    text = selection.format_selection(result)
    assert "*a" in text and "nested" in text and "37.5" in text

    summary = selection.write_nested(result, str(tmp_path / "chosen"))
    assert summary["complete"] and summary["pooled"]["weighted_accuracy"] == pytest.approx(3 / 8)
    # The written choice is a CV workdir that --compare takes.
    assert "pooled" in cv.format_summary(cv.summarize(str(tmp_path / "chosen")))


def test_ensembles_are_candidates_chosen_on_validation_too():
    a = _candidate("a", {"1": ([1, 0, 1, 0], [1, 0, 1, 0])})
    b = _candidate("b", {"1": ([0, 1, 0, 1], [0, 1, 0, 1])})
    c = _candidate("c", {"1": ([1, 1, 0, 0], [1, 1, 0, 0])})
    every = selection.with_ensembles([a, b, c])
    assert [x.name for x in every] == ["a", "b", "c", "a + b", "a + c", "b + c", "a + b + c"]
    both = every[3].folds["1"]["validation"]
    np.testing.assert_allclose(both.probabilities, 0.5)  # confident disagreements cancel
    with pytest.raises(cv.CrossValidationError, match="other folds"):
        selection.select([a, _candidate("d", {"2": ([1], [1])})])


def test_a_workdir_without_finished_folds_is_refused(tmp_path):
    workdir = tmp_path / "cv"
    os.makedirs(workdir)
    (workdir / cv.PROTOCOL_FILE).write_text('{"folds": {"1": {}}}')
    with pytest.raises(cv.CrossValidationError, match="not done"):
        selection.load_candidate(str(workdir))
