r"""Linear floors: logistic regression on clip statistics, on the folds of a CV protocol.

    python -m fbp_jax.evaluation.floors --config=configs/ravdess_amfbp.py:dev --output_dir=workdirs/floors
    python -m fbp_jax.evaluation.cross_validation --compare=workdirs/floors/both_speaker,workdirs/cv/am_fbp

Every network table should show what a linear model gets from the same records on the same
folds. For each fold of the protocol (`config.folds`, as `fbp_jax.evaluation.cross_validation` runs it),
each clip becomes a vector of statistics:

* audio: the mean and standard deviation of each of the stored spectrogram bins over the
  louder 70 % of the clip's frames (by mean log power), which drops most of the silence;
* video: the mean and standard deviation of each feature over the valid frames.

A scikit-learn logistic regression (features standardised on the training clips) is trained on
the fold's training speakers, its inverse regularisation C is chosen from a small grid on the
fold's validation speakers, and the chosen model is scored once on the test speakers. Each
floor comes twice: `global` (as above) and `speaker` (every clip's vector standardised with
the statistics of its own speaker's clips, from unlabelled features; it needs several clips of
each test speaker, so it is reported separately).

Each floor `<streams>_<normalisation>` gets a folder laid out like a cross-validation workdir
(`fold<k>/fold_result.json`, `fold<k>/test/predictions.csv`, `cv_results.json`,
`test_predictions.csv`), so `cross_validation --compare` and McNemar tests take it beside the
networks. `floors.json` and the printed table hold all of them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

from fbp_jax import io
from fbp_jax.evaluation import cross_validation
from fbp_jax.evaluation import evaluate as evaluate_lib
from fbp_jax.evaluation import predictions as predictions_lib

STREAMS = {"audio": ("audio",), "video": ("video",), "both": ("audio", "video")}
NORMALISATIONS = ("global", "speaker")
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
LOUD_FRACTION = 0.7
FLOORS_FILE = "floors.json"


def clip_statistics(
    audio: np.ndarray, video: np.ndarray, video_valid: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Statistics of one clip: {'audio': [2 * bins], 'video': [2 * D]} (mean, std)."""
    energy = audio.mean(axis=1)
    k = max(1, round(LOUD_FRACTION * len(audio)))
    loud = audio[np.sort(np.argsort(energy)[-k:])]
    frames = video.reshape(len(video), -1)
    if video_valid is not None and video_valid.any():
        frames = frames[video_valid]
    return {
        "audio": np.concatenate([loud.mean(0), loud.std(0)]).astype(np.float64),
        "video": np.concatenate([frames.mean(0), frames.std(0)]).astype(np.float64),
    }


def standardise_per_speaker(x: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Each row standardised with the mean and std of its speaker's rows (no labels)."""
    out = np.empty_like(x)
    for s in np.unique(speakers):
        rows = speakers == s
        mean, std = x[rows].mean(0), x[rows].std(0)
        out[rows] = (x[rows] - mean) / np.where(std > 1e-8, std, 1.0)
    return out


class SplitFeatures:
    """Clip statistics of one TFDS split expression, read once and cached per split."""

    def __init__(self, builder):
        self.builder = builder
        self._cache: dict[str, dict[str, Any]] = {}

    def _read(self, split: str) -> dict[str, Any]:
        if split not in self._cache:
            import tensorflow_datasets as tfds

            rows = {"clip_id": [], "speaker": [], "label": [], "audio": [], "video": []}
            ds = self.builder.as_dataset(split=split, shuffle_files=False)
            for ex in tfds.as_numpy(ds):
                stats = clip_statistics(ex["audio"], ex["video"], ex.get("video_valid"))
                rows["clip_id"].append(ex["clip_id"].decode())
                rows["speaker"].append(ex["speaker"].decode())
                rows["label"].append(int(ex["label"]))
                rows["audio"].append(stats["audio"])
                rows["video"].append(stats["video"])
            self._cache[split] = {k: np.asarray(v) for k, v in rows.items()}
        return self._cache[split]

    def get(self, split: str) -> dict[str, Any]:
        """{'clip_id', 'speaker', 'label', 'audio', 'video'} arrays of the split's clips."""
        parts = [self._read(p) for p in split.split("+") if p]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def design_matrix(data: dict[str, Any], streams: Sequence[str], normalisation: str) -> np.ndarray:
    x = np.concatenate([data[s] for s in streams], axis=1)
    if normalisation == "speaker":
        x = standardise_per_speaker(x, data["speaker"])
    return x


def fit_classifier(train, val, streams, normalisation, seed: int = 0):
    """Logistic regression trained on `train` with C chosen on `val`: (model, C, val accuracy).
    The model takes `design_matrix` rows of the same streams and normalisation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_val = (design_matrix(d, streams, normalisation) for d in (train, val))
    best = None
    for c in C_GRID:
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=c, max_iter=5000, random_state=seed)
        )
        model.fit(x_train, train["label"])
        acc = float(np.mean(model.predict(x_val) == val["label"]))
        if best is None or acc > best[2]:
            best = (model, c, acc)
    return best


def fit_fold(train, val, test, streams, normalisation, seed: int = 0, return_validation=False):
    """Trains on `train`, picks C on `val`, returns (probabilities on test, C, val accuracy),
    and with `return_validation` the probabilities on `val` last."""
    model, c, val_acc = fit_classifier(train, val, streams, normalisation, seed)
    # Classes absent from the training clips get probability 0.
    width = int(max(d["label"].max() for d in (train, val, test))) + 1

    def posteriors(data):
        probs = np.zeros((len(data["label"]), width))
        probs[:, model.classes_] = model.predict_proba(design_matrix(data, streams, normalisation))
        return probs

    if return_validation:
        return posteriors(test), c, val_acc, posteriors(val)
    return posteriors(test), c, val_acc


def run_floors(config_file: str, output_dir: str, data_dir: str | None = None) -> dict[str, Any]:
    """Every floor on every fold of the protocol of `config_file`; writes and returns the
    summary {floor name: cross_validation.summarize(...) of its folder}."""
    from fbp_jax import input_pipeline

    folds = cross_validation.load_folds(
        config_file, {"data.data_dir": data_dir} if data_dir else None
    )
    builder = input_pipeline.prepared_builder(folds[0].config.data)
    class_names = tuple(builder.info.features["label"].names)
    features = SplitFeatures(builder)
    summaries = {}
    for streams_name, streams in STREAMS.items():
        for norm in NORMALISATIONS:
            name = f"{streams_name}_{norm}"
            workdir = os.path.join(output_dir, name)
            protocol = {"config_file": config_file, "folds": {f.name: f.splits for f in folds}}
            os.makedirs(workdir, exist_ok=True)
            io.write_json(protocol, os.path.join(workdir, cross_validation.PROTOCOL_FILE))
            for fold in folds:
                s = fold.splits
                train, val, test = (features.get(s[k]) for k in ("train", "validation", "test"))
                probs, c, val_acc, val_probs = fit_fold(
                    train, val, test, streams, norm, return_validation=True
                )
                directory = cross_validation.fold_dir(workdir, fold.name)
                for part, data, p in (("validation", val, val_probs), ("test", test, probs)):
                    p = np.pad(p, ((0, 0), (0, len(class_names) - p.shape[1])))
                    pred = predictions_lib.Predictions(
                        data["clip_id"], data["label"], p, class_names, source=name
                    )
                    metrics = evaluate_lib.save_evaluation(
                        pred, os.path.join(directory, part), {"floor": name, "C": c}
                    )
                result = {
                    "fold": fold.name,
                    "splits": s,
                    "fusion": f"floor:{name}",
                    "best_step": 0,
                    "C": c,
                    "validation_accuracy": val_acc,
                    "validation_unweighted_accuracy": None,
                    "test_examples": metrics["num_examples"],
                    "test_accuracy": metrics["weighted_accuracy"],
                    "test_unweighted_accuracy": metrics["unweighted_accuracy"],
                }
                io.write_json(result, os.path.join(directory, cross_validation.FOLD_RESULT))
            summaries[name] = cross_validation.summarize(workdir, write=True)
            logging.info("%s: pooled WA %.4f", name, summaries[name]["pooled"]["weighted_accuracy"])
    table = {
        name: {
            "mean_wa": s["mean"]["test_accuracy"],
            "std_wa": s["std"]["test_accuracy"],
            "mean_ua": s["mean"]["test_unweighted_accuracy"],
            "std_ua": s["std"]["test_unweighted_accuracy"],
            "pooled_wa": s["pooled"]["weighted_accuracy"],
            "pooled_ua": s["pooled"]["unweighted_accuracy"],
            "folds": {r["fold"]: r["test_accuracy"] for r in s["folds"]},
        }
        for name, s in summaries.items()
    }
    io.write_json(
        {"config_file": config_file, "floors": table}, os.path.join(output_dir, FLOORS_FILE)
    )
    return table


def format_table(table: dict[str, Any]) -> str:
    pct = lambda x: f"{100 * x:.1f}"
    lines = [
        "linear floors: logistic regression on clip statistics, test speakers of each fold",
        f"{'floor':<16}{'WA mean +- sd':>16}{'UA mean +- sd':>16}{'pooled WA':>11}{'pooled UA':>11}",
    ]
    for name, r in table.items():
        lines.append(
            f"{name:<16}{pct(r['mean_wa']) + ' +- ' + pct(r['std_wa']):>16}"
            f"{pct(r['mean_ua']) + ' +- ' + pct(r['std_ua']):>16}"
            f"{pct(r['pooled_wa']):>11}{pct(r['pooled_ua']):>11}"
        )
    return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string(
        "config", None, "Config file of the protocol, with its argument (FILE[:ARG])."
    )
    flags.DEFINE_string("output_dir", None, "Where the floors' folders and floors.json go.")
    flags.DEFINE_string("data_dir", None, "TFDS data dir (default: the config's).")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.config or not FLAGS.output_dir:
        raise app.UsageError("--config and --output_dir are needed")
    try:
        table = run_floors(FLAGS.config, FLAGS.output_dir, FLAGS.data_dir)
    except (cross_validation.CrossValidationError, predictions_lib.EvaluationError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_table(table))
    print(f"\nwritten: {os.path.join(FLAGS.output_dir, FLOORS_FILE)}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
