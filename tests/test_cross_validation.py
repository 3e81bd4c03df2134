"""Cross-validation: speaker folds of the synthetic corpus, the fold runner (model chosen on each
fold's validation speakers, test fold reported, resumable), the table files and --compare."""

import csv
import json
import os
import textwrap

import numpy as np
import pytest

from data_prep.builders import synthetic
from fbp_jax import workdir as workdir_lib
from fbp_jax.evaluation import cross_validation as cv
from fbp_jax.evaluation import floors, selection
from fbp_jax.evaluation import predictions as predictions_lib
from tests.conftest import REPO

TINY_FOLDS = synthetic.TINY_FOLDS_CONFIG
AMFBP_CV = os.path.join(REPO, "configs", "synthetic_cv_amfbp.py")


def test_synthetic_folds_are_disjoint_speaker_groups():
    names = synthetic.split_names(TINY_FOLDS)
    assert names == ("fold1", "fold2", "fold3")
    speakers = [set(synthetic.speakers_for_split(TINY_FOLDS, f)) for f in names]
    assert all(len(s) == 2 for s in speakers)
    assert len(set.union(*speakers)) == 6  # disjoint
    for fold, spk in zip(names, speakers, strict=True):
        assert synthetic.num_examples(TINY_FOLDS, fold) == 16
        for i in (0, 5, 15):
            ex = synthetic.generate_example(TINY_FOLDS, fold, i)
            assert ex["speaker"] in spk and ex["clip_id"] == f"{fold}_{i:05d}"
            assert ex["audio"].shape[1] == 200
    with pytest.raises(ValueError, match="valid splits"):
        synthetic.generate_example(TINY_FOLDS, "train", 0)
    # The train / validation configs are untouched.
    assert synthetic.split_names(synthetic.TINY_CONFIG) == ("train", "validation")


def test_ravdess_dev_protocol_and_recipe_option():
    """`ravdess_*.py:dev` declares 6 folds of 2 development actors; options after the fold
    (`:dev,paper`) reach every fold's config."""
    path = os.path.join(REPO, "configs", "ravdess_amfbp.py")
    folds = cv.load_folds(path + ":dev")
    assert [f.name for f in folds] == [f"dev{k}" for k in range(1, 7)]
    tested = []
    for f in folds:
        actors = {k: sorted(cv.split_parts(v)) for k, v in f.splits.items()}
        assert len(actors["test"]) == 2 and len(actors["validation"]) == 2
        assert len(actors["train"]) == 8
        assert not set(actors["test"]) & set(actors["train"] + actors["validation"])
        tested += actors["test"]
        assert f.config.recipe == "small" and f.config.data.speaker_norm
    assert sorted(tested) == [f"actor{a:02d}" for a in range(1, 13)]
    paper = cv.load_folds(path + ":dev,paper")
    assert [f.splits for f in paper] == [f.splits for f in folds]
    assert all(f.config.recipe == "paper" and not f.config.data.speaker_norm for f in paper)
    full = cv.load_folds(path + ":1")
    assert [f.name for f in full] == [str(k) for k in range(1, 7)]
    assert all(len(cv.split_parts(f.splits["test"])) == 4 for f in full)


def test_fold_configs_never_select_on_the_test_speakers():
    from configs import synthetic_cv_common

    folds = cv.load_folds(AMFBP_CV)
    assert [f.name for f in folds] == list(synthetic_cv_common.FOLDS)
    tests = [f.splits["test"] for f in folds]
    assert sorted(tests) == [f"fold{k}" for k in range(1, 6)]  # every fold tested once
    for f in folds:
        parts = {k: cv.split_parts(v) for k, v in f.splits.items()}
        assert len(parts["train"]) == 3 and len(parts["validation"]) == 1
        assert not (parts["test"] & (parts["train"] | parts["validation"]))
    with pytest.raises(cv.CrossValidationError, match="define the folds"):
        cv.load_folds(AMFBP_CV, {"data.test_split": "fold1"})
    # The base argument only names the protocol: any fold's config declares all of them.
    assert [f.splits for f in cv.load_folds(AMFBP_CV + ":2")] == [f.splits for f in folds]
    with pytest.raises(cv.CrossValidationError, match="declares no folds"):
        cv.load_folds(os.path.join(REPO, "configs", "demo.py"))
    bad = cv.Fold("x", folds[0].config.copy_and_resolve_references())
    with bad.config.unlocked():
        bad.config.data.eval_split = "fold1+fold2"
        bad.config.data.test_split = "fold2"
    with pytest.raises(cv.CrossValidationError, match="validation and test splits share"):
        cv.check_fold(bad)


PROTOCOL = """
from tests.conftest import tiny_folds_config

FOLDS = ("1", "2", "3")


def get_config(fold=None):
    return tiny_folds_config({data_dir!r}, "video", fold or "1", num_train_steps=2,
                             eval_every_steps=1).lock()
"""


@pytest.mark.slow
def test_runner_runs_every_fold_resumes_and_writes_the_table(tiny_folds_data_dir, tmp_path):
    config_file = tmp_path / "tiny_protocol.py"
    config_file.write_text(textwrap.dedent(PROTOCOL.format(data_dir=tiny_folds_data_dir)))
    workdir = str(tmp_path / "cv")
    folds = cv.load_folds(str(config_file), {"optim.learning_rate": 0.01})
    assert [f.config.optim.learning_rate for f in folds] == [0.01] * 3

    first = cv.run_cross_validation(folds, workdir, only=["2"], config_file=str(config_file))
    assert not first["complete"] and first["missing"] == ["1", "3"]
    assert not os.path.exists(os.path.join(workdir, cv.RESULTS_JSON))  # nothing looks finished
    fold2 = os.path.join(workdir, "fold2", cv.FOLD_RESULT)
    stamp = os.path.getmtime(fold2)

    summary = cv.run_cross_validation(folds, workdir, config_file=str(config_file))
    assert os.path.getmtime(fold2) == stamp  # fold 2 was not run again
    assert summary["complete"] and [r["fold"] for r in summary["folds"]] == ["1", "2", "3"]
    for r in summary["folds"]:
        # The reported checkpoint is the best on the fold's validation speakers.
        manager = workdir_lib.create_checkpoint_manager(os.path.join(workdir, f"fold{r['fold']}"))
        val = {s: manager.metrics(s)["eval_accuracy"] for s in manager.all_steps()}
        manager.close()
        assert r["validation_accuracy"] == max(val.values()) == val[r["best_step"]]
        assert r["splits"]["test"] == f"fold{r['fold']}" and r["test_examples"] == 16
        test = predictions_lib.read_predictions(
            os.path.join(workdir, f"fold{r['fold']}", "test", predictions_lib.PREDICTIONS_FILE)
        )
        assert {c.split("_")[0] for c in test.clip_ids} == {f"fold{r['fold']}"}
        assert test.metrics()["weighted_accuracy"] == pytest.approx(r["test_accuracy"])
        # The chosen checkpoint's predictions on the validation speakers, for selection.
        val = predictions_lib.read_predictions(
            os.path.join(
                workdir, f"fold{r['fold']}", "validation", predictions_lib.PREDICTIONS_FILE
            )
        )
        assert {c.split("_")[0] for c in val.clip_ids} == {r["splits"]["validation"]}
        assert val.metrics()["weighted_accuracy"] == pytest.approx(r["validation_accuracy"])
    accs = [r["test_accuracy"] for r in summary["folds"]]
    assert summary["mean"]["test_accuracy"] == pytest.approx(np.mean(accs))
    assert summary["std"]["test_accuracy"] == pytest.approx(np.std(accs, ddof=1))

    pooled = predictions_lib.read_predictions(os.path.join(workdir, cv.POOLED_PREDICTIONS))
    assert len(pooled.clip_ids) == 48  # every clip of the corpus once
    correct = sum(r["test_accuracy"] * r["test_examples"] for r in summary["folds"])
    assert summary["pooled"]["weighted_accuracy"] == pytest.approx(correct / 48)
    with open(os.path.join(workdir, cv.RESULTS_JSON)) as f:
        assert json.load(f)["complete"]
    with open(os.path.join(workdir, cv.RESULTS_CSV)) as f:
        rows = list(csv.DictReader(f))
    assert [r["fold"] for r in rows] == ["1", "2", "3", "mean", "std", "pooled"]
    table = cv.format_summary(summary)
    assert "mean+-sd" in table and "pooled" in table

    # A run with itself: no discordant clip, p = 1.
    text = cv.compare([workdir, workdir])
    assert "only cv right 0" in text and "two-sided 1" in text
    val_row = next(line for line in text.splitlines() if line.startswith("val WA"))
    assert cv.pct(summary["mean"]["validation_accuracy"]) in val_row

    # Nested selection between the run and a floor of the same folds (and their ensemble).
    floors_dir = str(tmp_path / "floors")
    floors.run_floors(str(config_file), floors_dir)
    floor = os.path.join(floors_dir, "both_speaker")
    assert os.path.isfile(os.path.join(floor, "fold1", "validation", "predictions.csv"))
    text = selection.run([workdir, floor], ensembles=True, output_dir=str(tmp_path / "chosen"))
    assert "cv + both_speaker" in text and "nested" in text
    assert cv.summarize(str(tmp_path / "chosen"))["complete"]

    # Resuming with other settings is refused, naming the differing field.
    changed = cv.load_folds(str(config_file), {"optim.learning_rate": 0.02})
    os.remove(os.path.join(workdir, "fold1", cv.FOLD_RESULT))
    with pytest.raises(cv.CrossValidationError, match=r"optim.learning_rate"):
        cv.run_cross_validation(changed, workdir, config_file=str(config_file))
