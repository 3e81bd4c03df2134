"""Evaluation: metrics of a confusion matrix, predictions files, ensembles, the exact McNemar test
(pure, fast), and evaluation of a trained tiny workdir (padded vs unpadded batches, files)."""

import json
import os

import numpy as np
import pytest
from scipy import stats

from fbp_jax import metrics
from fbp_jax import metrics as metrics_lib
from fbp_jax import workdir as workdir_lib
from fbp_jax.evaluation import evaluate as evaluate_lib
from fbp_jax.evaluation import predictions as predictions_lib
from fbp_jax.evaluation import significance
from fbp_jax.evaluation.predictions import EvaluationError, Predictions
from fbp_jax.serving import timeline

# ----------------------------------------------------------------------------------------------
# Metrics against hand-computed values

# Rows: true class, columns: predicted. Class 'c' has no example, so UA averages over a and b;
# one 'b' clip is predicted 'c'.
CONFUSION = np.array(
    [
        [5, 1, 0],  # a: 6 clips, 5 right
        [2, 1, 1],  # b: 4 clips, 1 right
        [0, 0, 0],  # c: no clip
    ]
)


def test_metrics_of_a_fixed_confusion_matrix():
    m = metrics_lib.compute_metrics(CONFUSION, ["a", "b", "c"])
    assert m["num_examples"] == 10
    assert m["weighted_accuracy"] == pytest.approx(6 / 10)  # (5 + 1) / 10
    assert m["unweighted_accuracy"] == pytest.approx((5 / 6 + 1 / 4) / 2)  # c has no clip
    a, b, c = m["per_class"]
    assert (a["support"], a["correct"], a["predicted"]) == (6, 5, 7)
    assert a["accuracy"] == pytest.approx(5 / 6) and a["precision"] == pytest.approx(5 / 7)
    assert b["accuracy"] == pytest.approx(1 / 4) and b["precision"] == pytest.approx(1 / 2)
    assert c["accuracy"] is None and c["precision"] == pytest.approx(0.0)
    assert m["confusion_matrix"] == CONFUSION.tolist()
    # The training loop's UA (clu metric) is the same quantity.
    assert float(metrics.unweighted_accuracy(CONFUSION)) == pytest.approx(m["unweighted_accuracy"])
    json.dumps(m)  # JSON-serialisable (None, not NaN)


def test_confusion_matrix_counts_label_prediction_pairs():
    labels = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    preds = [0, 0, 0, 0, 0, 1, 0, 0, 1, 2]
    np.testing.assert_array_equal(metrics_lib.confusion_matrix(labels, preds, 3), CONFUSION)


def _predictions(labels, probs, ids=None, names=("a", "b", "c"), source="p"):
    ids = ids if ids is not None else [f"clip{i:02d}" for i in range(len(labels))]
    return Predictions(ids, labels, probs, names, source=source)


def _random_predictions(n=30, c=3, seed=0, source="p"):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(c), size=n)
    return _predictions(rng.integers(0, c, n), probs, source=source)


def test_predictions_csv_round_trip(tmp_path):
    p = _random_predictions()
    p.outputs["mu"] = np.linspace(0.2, 0.8, 30)
    path = str(tmp_path / "p.csv")
    predictions_lib.write_predictions(p, path)
    q = predictions_lib.read_predictions(path)
    assert list(q.clip_ids) == list(p.clip_ids) and q.class_names == p.class_names
    np.testing.assert_array_equal(q.labels, p.labels)
    np.testing.assert_allclose(q.probabilities, p.probabilities, rtol=1e-8)
    np.testing.assert_allclose(q.outputs["mu"], p.outputs["mu"], rtol=1e-6)
    assert q.metrics()["weighted_accuracy"] == p.metrics()["weighted_accuracy"]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_bad_predictions_files_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "missing.csv"
    with pytest.raises(EvaluationError, match="missing.csv: no such"):
        predictions_lib.read_predictions(str(missing))
    bad = tmp_path / "bad.csv"
    bad.write_text("clip_id,label,prob_a,prob_b\nx,0,0.5,0.5\ny,1,oops,0.5\n")
    with pytest.raises(EvaluationError, match=r"bad.csv, line 3: bad value"):
        predictions_lib.read_predictions(str(bad))
    header = tmp_path / "header.csv"
    header.write_text("id,label\nx,0\n")
    with pytest.raises(EvaluationError, match="header.csv: not a predictions file"):
        predictions_lib.read_predictions(str(header))
    notprob = tmp_path / "notprob.csv"
    notprob.write_text("clip_id,label,prob_a,prob_b\nx,0,0.9,0.9\n")
    with pytest.raises(EvaluationError, match="rows must sum to 1"):
        predictions_lib.read_predictions(str(notprob))


# ----------------------------------------------------------------------------------------------
# Ensembles


def test_ensemble_of_a_system_with_itself_is_the_system():
    p = _random_predictions()
    e = predictions_lib.ensemble([p, p, p])
    np.testing.assert_allclose(e.probabilities, p.probabilities, rtol=1e-12)
    assert e.metrics() == {**p.metrics(), "loss": pytest.approx(p.metrics()["loss"])}


def test_ensemble_averages_posteriors_aligned_by_clip_id():
    p = _random_predictions(seed=1, source="first")
    q = _random_predictions(seed=2, source="second")
    q = _predictions(p.labels, q.probabilities, p.clip_ids, source="second")
    order = np.random.default_rng(3).permutation(len(p.clip_ids))
    q_shuffled = _predictions(
        q.labels[order], q.probabilities[order], q.clip_ids[order], source="second"
    )
    e = predictions_lib.ensemble([p, q_shuffled], weights=[2.0, 1.0])
    np.testing.assert_allclose(e.probabilities, (2 * p.probabilities + q.probabilities) / 3)
    assert list(e.clip_ids) == list(p.clip_ids)


def test_ensemble_refuses_members_on_other_clips_or_labels():
    p = _random_predictions(source="first.csv")
    other_clips = _predictions(p.labels, p.probabilities, [f"x{i}" for i in range(30)], source="b")
    with pytest.raises(
        EvaluationError, match="b and first.csv are not on the same clips: 30 only in the first"
    ):
        predictions_lib.ensemble([p, other_clips])
    other_labels = _predictions((p.labels + 1) % 3, p.probabilities, p.clip_ids, source="c")
    with pytest.raises(EvaluationError, match="disagree on the labels"):
        predictions_lib.ensemble([p, other_labels])


# ----------------------------------------------------------------------------------------------
# Exact McNemar test


@pytest.mark.parametrize(
    "only_a, only_b",
    [(0, 0), (5, 0), (0, 5), (10, 3), (3, 10), (7, 7), (1, 12), (40, 25), (100, 130)],
)
def test_mcnemar_p_values_match_the_binomial_test(only_a, only_b):
    two, a_better, b_better = significance.mcnemar_exact(only_a, only_b)
    n = only_a + only_b
    if n == 0:
        assert (two, a_better, b_better) == (1.0, 1.0, 1.0)
        return
    assert two == pytest.approx(stats.binomtest(only_a, n, 0.5).pvalue, rel=1e-9)
    assert a_better == pytest.approx(
        stats.binomtest(only_a, n, 0.5, alternative="greater").pvalue, rel=1e-9
    )
    assert b_better == pytest.approx(
        stats.binomtest(only_a, n, 0.5, alternative="less").pvalue, rel=1e-9
    )


def test_mcnemar_hand_computed_and_table_of_two_systems():
    # 5 discordant clips all favouring A: one-sided p = 0.5 ** 5, two-sided twice that.
    two, a_better, b_better = significance.mcnemar_exact(5, 0)
    assert a_better == pytest.approx(1 / 32) and two == pytest.approx(2 / 32)
    assert b_better == pytest.approx(1.0)
    # A right on clips 0-7, B right on clips 4-9 and 11: both 4, only A 4, only B 3, neither 1.
    labels = np.zeros(12, int)
    right, wrong = [0.9, 0.05, 0.05], [0.1, 0.8, 0.1]
    a = _predictions(labels, [right if i < 8 else wrong for i in range(12)], source="A")
    b = _predictions(
        labels, [right if 4 <= i < 10 or i == 11 else wrong for i in range(12)], source="B"
    )
    r = significance.mcnemar(a, b)
    assert (r.both_correct, r.only_a, r.only_b, r.both_wrong) == (4, 4, 3, 1)
    assert r.p_two_sided == pytest.approx(stats.binomtest(4, 7, 0.5).pvalue)
    assert r.accuracy_a == pytest.approx(8 / 12) and r.accuracy_b == pytest.approx(7 / 12)


# ----------------------------------------------------------------------------------------------
# A trained workdir


@pytest.mark.slow
@pytest.mark.xdist_group("trained_runs")
def test_padded_and_unpadded_evaluation_agree(amfbp_workdir):
    loaded = workdir_lib.load_trained(amfbp_workdir)
    # 56 validation clips: batches of 16 end with 8 padding examples, batches of 8 have none.
    padded = evaluate_lib.evaluate(loaded, "validation", batch_size=16)
    unpadded = evaluate_lib.evaluate(loaded, "validation", batch_size=8)
    assert len(padded.clip_ids) == 56 and len(set(padded.clip_ids)) == 56
    assert list(unpadded.clip_ids) == list(padded.clip_ids)
    np.testing.assert_array_equal(unpadded.labels, padded.labels)
    np.testing.assert_allclose(unpadded.probabilities, padded.probabilities, atol=1e-5)
    np.testing.assert_allclose(unpadded.outputs["mu"], padded.outputs["mu"], atol=1e-5)
    assert unpadded.confusion().tolist() == padded.confusion().tolist()
    # The training loop's clu metrics of the same checkpoint on the same split agree.
    manager = workdir_lib.create_checkpoint_manager(amfbp_workdir)
    train_metrics = manager.metrics(loaded.step)
    manager.close()
    m = padded.metrics()
    assert m["weighted_accuracy"] == pytest.approx(train_metrics["eval_accuracy"], abs=1e-6)
    assert m["unweighted_accuracy"] == pytest.approx(
        train_metrics["eval_unweighted_accuracy"], abs=1e-5
    )
    assert m["loss"] == pytest.approx(train_metrics["eval_loss"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.xdist_group("trained_runs")
def test_evaluate_workdir_writes_metrics_and_predictions(amfbp_workdir, tmp_path, monkeypatch):
    out = str(tmp_path / "eval")
    predictions, metrics, out_dir = evaluate_lib.evaluate_workdir(
        amfbp_workdir, "validation", step="latest", output_dir=out, batch_size=16
    )
    assert out_dir == out and metrics["step"] == 8 and metrics["split"] == "validation"
    with open(os.path.join(out, predictions_lib.METRICS_FILE)) as f:
        saved = json.load(f)
    assert saved["weighted_accuracy"] == metrics["weighted_accuracy"]
    assert sum(map(sum, saved["confusion_matrix"])) == 56
    again = predictions_lib.read_predictions(os.path.join(out, predictions_lib.PREDICTIONS_FILE))
    np.testing.assert_allclose(again.probabilities, predictions.probabilities, rtol=1e-7)
    # The ensemble of the workdir with itself (workdir and its predictions file) is the model.
    members = [evaluate_lib.load_predictions(amfbp_workdir, "validation", step="latest"), again]
    combined = predictions_lib.ensemble(members)
    np.testing.assert_allclose(combined.probabilities, predictions.probabilities, atol=1e-6)
    assert combined.metrics()["weighted_accuracy"] == metrics["weighted_accuracy"]
    assert significance.mcnemar(members[0], again).p_two_sided == 1.0
    # --balance: each speaker's answers balanced, written beside the plain evaluation. The
    # tiny corpus's speakers have fewer than three clips per class each: left as they are ...
    balanced, bal_metrics, bal_dir = evaluate_lib.evaluate_workdir(
        amfbp_workdir, "validation", step="latest", batch_size=16, balance=True
    )
    assert bal_dir.endswith("-balanced") and bal_metrics["balanced"] is True
    assert list(balanced.clip_ids) == list(predictions.clip_ids)
    np.testing.assert_allclose(balanced.probabilities, predictions.probabilities)
    # ... and balanced, each on its own, from two clips per class.
    monkeypatch.setattr(timeline, "BALANCE_FILES_PER_CLASS", 2)
    balanced = evaluate_lib.evaluate(amfbp_workdir, "validation", step="latest", balance=True)
    speakers = _speakers(amfbp_workdir, "validation", predictions.clip_ids)
    classes = len(predictions.class_names)
    for speaker in set(speakers):
        rows = speakers == speaker
        assert rows.sum() >= 2 * classes
        np.testing.assert_allclose(balanced.probabilities[rows].mean(0), 1 / classes, atol=0.02)
    assert not np.allclose(balanced.probabilities, predictions.probabilities)


def _speakers(workdir, split, clip_ids):
    """Each clip's speaker, read from the records the workdir was trained on."""
    import tensorflow_datasets as tfds

    from fbp_jax import input_pipeline

    config = workdir_lib.load_trained(workdir).config
    builder = input_pipeline.prepared_builder(config.data)
    by_id = {
        ex["clip_id"].decode(): ex["speaker"].decode()
        for ex in tfds.as_numpy(builder.as_dataset(split=split))
    }
    return np.asarray([by_id[c] for c in clip_ids])


@pytest.mark.slow
@pytest.mark.xdist_group("trained_runs")
def test_named_steps_and_bad_workdirs(amfbp_workdir, tmp_path):
    assert workdir_lib.resolve_step(amfbp_workdir, "latest") == 8
    assert workdir_lib.resolve_step(amfbp_workdir, "best") in (4, 8)
    with pytest.raises(workdir_lib.WorkdirError, match=r"no checkpoint '5'; use 'best', 'latest'"):
        workdir_lib.resolve_step(amfbp_workdir, "5")
    with pytest.raises(workdir_lib.WorkdirError, match="not a training workdir"):
        workdir_lib.load_trained(str(tmp_path))
    with pytest.raises(EvaluationError, match="no split 'nosuch'"):
        evaluate_lib.evaluate(amfbp_workdir, "nosuch")
