r"""Commands on trained runs: evaluate, ensemble, mcnemar.

    # A workdir's best-on-validation checkpoint (or --step=latest / a step) on a split:
    fbp-jax evaluate --workdir=W [--split=actor13+actor14] [--step=best]
    # Average the posteriors of several systems (workdirs, prediction files, CV workdirs):
    fbp-jax ensemble --members=W1,W2,preds.csv --split=S --output_dir=D
    # Exact McNemar test between two systems on the same clips:
    fbp-jax mcnemar A B [--split=S]

(`python -m fbp_jax.evaluation evaluate|ensemble|mcnemar ...` is the same.) `evaluate` writes
`metrics.json` (WA = overall accuracy, UA = mean recall over the classes present, per-class
accuracy, confusion matrix) and `predictions.csv` (clip id, label, predicted class, posteriors,
mu / eta) into `W/eval/<split>-step<step>/`, or `--output_dir`. `--split` defaults to the
config's test split (`data.test_split`, set by the fold configs), else its validation split.
Everything but `evaluate` (and ensemble members given as workdirs) works without TensorFlow.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from absl import app, flags

from fbp_jax.evaluation.evaluate import (
    evaluate_workdir,
    format_metrics,
    load_predictions,
    save_evaluation,
)
from fbp_jax.evaluation.predictions import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    EvaluationError,
    ensemble,
)
from fbp_jax.evaluation.significance import format_mcnemar, mcnemar
from fbp_jax.metrics import percent
from fbp_jax.workdir import WorkdirError

FLAGS = flags.FLAGS
COMMANDS = ("evaluate", "ensemble", "mcnemar")


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "evaluate: the training workdir.")
    flags.DEFINE_string(
        "split", None, "TFDS split (default: the config's test split, else its validation split)."
    )
    flags.DEFINE_string("step", "best", "Checkpoint: 'best' (on validation), 'latest' or a step.")
    flags.DEFINE_integer("batch_size", None, "Evaluation batch size (default: the config's).")
    flags.DEFINE_string("data_dir", None, "TFDS data dir (default: the config's).")
    flags.DEFINE_string(
        "data_name", None, "evaluate: another prepared dataset of the same schema (cross-corpus)."
    )
    flags.DEFINE_string(
        "output_dir", None, "Where to write (default: <workdir>/eval/<split>-step<step>)."
    )
    flags.DEFINE_bool("save_outputs", False, "Also write outputs.npz (embeddings, attention, mu).")
    flags.DEFINE_enum(
        "speaker_stats",
        None,
        ["own", "training"],
        "Speaker-normalised models: standardise each evaluated speaker with its own statistics "
        "(default) or with the training speakers' pooled statistics.",
    )
    flags.DEFINE_bool(
        "balance",
        False,
        "evaluate: each speaker's answers balanced (as `fbp-jax predict --balance` does for a "
        "speaker folder); written to <split>-step<step>-balanced.",
    )
    flags.DEFINE_list(
        "members", [], "ensemble: workdirs, predictions CSVs or cross-validation workdirs."
    )
    flags.DEFINE_list("weights", [], "ensemble: one weight per member (default: equal).")


def main(argv: Sequence[str]) -> None:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"first argument: one of {COMMANDS}")
    import tensorflow as tf

    tf.config.experimental.set_visible_devices([], "GPU")  # TensorFlow only reads data.
    try:
        _run(argv[1], argv[2:])
    except (EvaluationError, WorkdirError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _run(command: str, args: Sequence[str]) -> None:
    if command == "evaluate":
        if not FLAGS.workdir or args:
            raise app.UsageError("evaluate takes --workdir (and no positional argument)")
        _, metrics, out = evaluate_workdir(
            FLAGS.workdir,
            FLAGS.split,
            step=FLAGS.step,
            output_dir=FLAGS.output_dir,
            batch_size=FLAGS.batch_size,
            data_dir=FLAGS.data_dir,
            data_name=FLAGS.data_name,
            save_outputs=FLAGS.save_outputs,
            speaker_stats=FLAGS.speaker_stats,
            balance=FLAGS.balance,
        )
        print(f"{FLAGS.workdir}, step {metrics['step']}, split {metrics['split']}")
        print(format_metrics(metrics))
        print(f"\nwritten: {out}/{METRICS_FILE}, {out}/{PREDICTIONS_FILE}")
    elif command == "ensemble":
        if len(FLAGS.members) < 1 or not FLAGS.output_dir:
            raise app.UsageError("ensemble takes --members=a,b,... and --output_dir")
        members = [load_predictions(m, FLAGS.split, FLAGS.step) for m in FLAGS.members]
        weights = [float(w) for w in FLAGS.weights] if FLAGS.weights else None
        combined = ensemble(members, weights)
        info = {"members": list(FLAGS.members), "weights": weights, "split": FLAGS.split}
        metrics = save_evaluation(combined, FLAGS.output_dir, info)
        for m in members:
            mm = m.metrics()
            print(
                f"member {m.source}: WA {percent(mm['weighted_accuracy'])}, "
                f"UA {percent(mm['unweighted_accuracy'])}"
            )
        print("ensemble: " + format_metrics(metrics))
        print(
            f"\nwritten: {FLAGS.output_dir}/{METRICS_FILE}, {FLAGS.output_dir}/{PREDICTIONS_FILE}"
        )
    else:
        if len(args) != 2:
            raise app.UsageError("mcnemar takes two arguments: predictions of systems A and B")
        a, b = (load_predictions(x, FLAGS.split, FLAGS.step) for x in args)
        print(f"A: {a.source}\nB: {b.source}")
        print(format_mcnemar(mcnemar(a, b)))
