r"""Cross-validation: every fold of a protocol in one command, resumable fold by fold.

    python -m fbp_jax.evaluation.cross_validation --config=configs/synthetic_cv_amfbp.py \
        --workdir=workdirs/cv/am_fbp [--folds=1,2] [--config.num_epochs=5]
    python -m fbp_jax.evaluation.cross_validation --config=configs/ravdess_amfbp.py \
        --workdir=workdirs/cv/ravdess_am_fbp --config.data.data_dir=data
    python -m fbp_jax.evaluation.cross_validation --compare=workdirs/cv/g_fbp,workdirs/cv/am_fbp
    python -m fbp_jax.evaluation.cross_validation --select=workdirs/cv/a,workdirs/cv/b

A protocol is declared by its config file: `get_config(fold)` returns the config of one fold
(with `data.train_split`, `data.eval_split` and `data.test_split`), and every fold's config
lists all folds in `config.folds` (configs/ravdess_common.py: 6 folds of 4 actors;
configs/iemocap_common.py: leave one session out; configs/synthetic_cv_common.py: 5 speaker
folds). Each fold trains in `<workdir>/fold<k>/` on its training speakers, keeps the checkpoint
with the best accuracy on its validation speakers (which are never its test speakers), and only
that checkpoint is evaluated on the test fold. A rerun skips finished folds and resumes an
interrupted one from its last checkpoint; `--config.*` overrides apply to every fold.

When every fold is done the runner prints the per-fold and mean +- std table (sample standard
deviation over folds) and the pooled figures (every test clip once), and writes
`cv_results.json`, `cv_results.csv` and `test_predictions.csv` (all test clips, with their
fold). `--compare` puts several finished runs side by side, with the exact McNemar test of the
first against each other on the pooled test clips. `--select` chooses among finished runs on
validation speakers only (fbp_jax.evaluation.selection): every fold also writes the chosen
checkpoint's predictions on its validation speakers (`fold<k>/validation/`) for that.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from fbp_jax import io
from fbp_jax import workdir as workdir_lib
from fbp_jax.evaluation import evaluate as evaluate_lib
from fbp_jax.evaluation import predictions as predictions_lib
from fbp_jax.evaluation import significance
from fbp_jax.metrics import pct
from fbp_jax.training import loop

FOLD_RESULT = "fold_result.json"
PROTOCOL_FILE = "protocol.json"
RESULTS_JSON = "cv_results.json"
RESULTS_CSV = "cv_results.csv"
POOLED_PREDICTIONS = "test_predictions.csv"
# Fields that define the folds: overriding them would silently change the protocol.
PROTOCOL_FIELDS = ("fold", "folds", "data.train_split", "data.eval_split", "data.test_split")


class CrossValidationError(ValueError):
    """A protocol or workdir problem; the message says which file or fold and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold: its name (from `config.folds`) and the full training config."""

    name: str
    config: ml_collections.ConfigDict

    @property
    def splits(self) -> dict[str, str]:
        d = self.config.data
        return {"train": d.train_split, "validation": d.eval_split, "test": d.test_split}


def split_parts(split: str) -> set[str]:
    """Base split names of a TFDS split expression: 'a+b[:50%]' -> {'a', 'b'}."""
    return {p.split("[")[0].strip() for p in split.split("+") if p.strip()}


def check_fold(fold: Fold) -> None:
    """The fold has a test split and its train, validation and test splits share no split."""
    s = fold.splits
    if not s["test"]:
        raise CrossValidationError(f"fold {fold.name}: the config has no data.test_split")
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        common = split_parts(s[a]) & split_parts(s[b])
        if common:
            raise CrossValidationError(
                f"fold {fold.name}: the {a} and {b} splits share {sorted(common)}"
            )


def _load_config_module(path: str):
    if not os.path.isfile(path):
        raise CrossValidationError(f"{path}: no such config file")
    name = "cv_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        config = config[p]
    config[last] = value


def _fold_argument(fold: str, options: Sequence[str]) -> str:
    return ",".join([fold, *options])


def load_folds(config_file: str, overrides: dict[str, Any] | None = None) -> list[Fold]:
    """Every fold config a config file declares.

    Args:
      config_file: a config file whose `get_config(fold)` gives one fold's config with
        `folds` (all fold names) and `data.test_split`, optionally followed by `:ARG`, the
        argument of the base config (`FOLD[,OPTION...]`): its `folds` name the protocol, and
        each fold's config is `get_config('<fold>,OPTION...')`, e.g.
        `configs/ravdess_amfbp.py:dev,paper` runs folds dev1..dev6 with the paper recipe.
      overrides: {'optim.learning_rate': 3e-4, ...} applied to every fold.

    Returns:
      The folds of the protocol, in the order of `config.folds`.
    """
    path, _, argument = config_file.partition(":")
    options = [p for p in argument.split(",")[1:] if p]
    module = _load_config_module(path)
    base = module.get_config(argument) if argument else module.get_config()
    all_folds = tuple(str(f) for f in (base.get("folds") or ()))
    if not all_folds:
        raise CrossValidationError(
            f"{config_file} declares no folds: its config needs `folds` (all fold names) and "
            "get_config(fold) the config of one fold (see configs/ravdess_common.py)"
        )
    overrides = dict(overrides or {})
    bad = [k for k in overrides if k in PROTOCOL_FIELDS]
    if bad:
        raise CrossValidationError(f"{bad} define the folds of {config_file}; do not override them")
    folds = []
    for name in all_folds:
        config = module.get_config(_fold_argument(name, options))
        with config.unlocked():
            for key, value in overrides.items():
                _set(config, key, value)
        if str(config.get("fold")) != name:
            raise CrossValidationError(
                f"{config_file}: get_config({name!r}) returned fold {config.get('fold')!r}"
            )
        fold = Fold(name, config.lock())
        check_fold(fold)
        folds.append(fold)
    return folds


def fold_dir(workdir: str, fold: str) -> str:
    return os.path.join(workdir, f"fold{fold}")


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def _check_same_config(fold: Fold, directory: str) -> None:
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        return
    with open(path) as f:
        saved = json.load(f)
    new = json.loads(fold.config.to_json_best_effort())
    diff = _config_diff(saved, new)
    if diff:
        raise CrossValidationError(
            f"{path}: fold {fold.name} was started with another config (differs in {diff}); "
            "use a new --workdir or restore the settings"
        )


def _training_finished(directory: str) -> bool:
    """True when train_and_evaluate wrote result.json for the last checkpoint."""
    path = os.path.join(directory, "result.json")
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            step = json.load(f)["step"]
    except (ValueError, KeyError):
        return False
    manager = workdir_lib.create_checkpoint_manager(directory)
    try:
        return manager.latest_step() == step
    finally:
        manager.close()


def _check_protocol(workdir: str, folds: Sequence[Fold], config_file: str) -> None:
    """Writes protocol.json on the first run; later runs must have the same folds and splits."""
    protocol = {"config_file": config_file, "folds": {f.name: f.splits for f in folds}}
    path = os.path.join(workdir, PROTOCOL_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            saved = json.load(f)
        if saved.get("folds") != protocol["folds"]:
            raise CrossValidationError(
                f"{path}: this workdir holds another protocol (folds {sorted(saved['folds'])} or "
                f"their splits differ from those of {config_file}); use a new --workdir"
            )
    else:
        os.makedirs(workdir, exist_ok=True)
        io.write_json(protocol, path)


def _with_fold_init(fold: Fold) -> Fold:
    """Resolves `init.{audio,video}_workdir` given as cross-validation workdirs to this fold's
    run in them, after checking that the run trained on this fold's training speakers only."""
    init = fold.config.get("init")
    if not init:
        return fold
    config = ml_collections.ConfigDict(fold.config.to_dict())
    changed = False
    for key in ("audio_workdir", "video_workdir"):
        path = init.get(key, "")
        if not path or not os.path.isfile(os.path.join(path, PROTOCOL_FILE)):
            continue
        source = fold_dir(path, fold.name)
        if not _fold_trained(source):
            raise CrossValidationError(
                f"{path}: fold {fold.name} has no finished run to initialise {key} from; "
                "run its cross-validation first"
            )
        saved = workdir_lib.load_config(source).data
        if (saved.train_split, saved.eval_split) != (
            fold.config.data.train_split,
            fold.config.data.eval_split,
        ):
            raise CrossValidationError(
                f"{source}: trained on {saved.train_split} / {saved.eval_split}, not on fold "
                f"{fold.name}'s {fold.config.data.train_split} / {fold.config.data.eval_split}"
            )
        config.init[key] = source
        changed = True
    return Fold(fold.name, config.lock()) if changed else fold


def _fold_trained(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, FOLD_RESULT)) or _training_finished(directory)


def run_fold(fold: Fold, workdir: str, eval_batch_size: int | None = None) -> dict[str, Any]:
    """Trains one fold (or resumes it), then evaluates its best-on-validation checkpoint on the
    test split. Returns the fold result (also written to fold<k>/fold_result.json, last)."""
    directory = fold_dir(workdir, fold.name)
    result_path = os.path.join(directory, FOLD_RESULT)
    if os.path.isfile(result_path):
        with open(result_path) as f:
            result = json.load(f)
        if result.get("splits") != fold.splits:
            raise CrossValidationError(f"{result_path}: written for other splits than fold's")
        logging.info("Fold %s: done already (%s).", fold.name, result_path)
        return result
    fold = _with_fold_init(fold)
    _check_same_config(fold, directory)
    start = time.time()
    if _training_finished(directory):
        logging.info("Fold %s: training finished already; evaluating.", fold.name)
    else:
        logging.info("Fold %s: training on %s.", fold.name, fold.splits)
        loop.train_and_evaluate(fold.config, directory)
    train_seconds = time.time() - start
    loaded = workdir_lib.load_trained(directory, "best")
    manager = workdir_lib.create_checkpoint_manager(directory)
    try:
        val = manager.metrics(loaded.step) or {}
    finally:
        manager.close()
    evaluate_part(loaded, directory, "validation", eval_batch_size)
    test = evaluate_part(loaded, directory, "test", eval_batch_size)
    result = {
        "fold": fold.name,
        "splits": fold.splits,
        "fusion": fold.config.model.fusion,
        "best_step": loaded.step,
        "validation_accuracy": val.get("eval_accuracy"),
        "validation_unweighted_accuracy": val.get("eval_unweighted_accuracy"),
        "test_examples": test["num_examples"],
        "test_accuracy": test["weighted_accuracy"],
        "test_unweighted_accuracy": test["unweighted_accuracy"],
        "test_loss": test["loss"],
        "seconds": time.time() - start,
        "train_seconds": train_seconds,
    }
    io.write_json(result, result_path)
    logging.info(
        "Fold %s: best step %d, validation WA %.4f, test WA %.4f, UA %.4f.",
        fold.name,
        loaded.step,
        result["validation_accuracy"] or float("nan"),
        result["test_accuracy"],
        result["test_unweighted_accuracy"],
    )
    return result


PARTS = {"validation": "eval_split", "test": "test_split"}


def evaluate_part(
    loaded: workdir_lib.TrainedModel, directory: str, part: str, batch_size: int | None = None
) -> dict[str, Any]:
    """Evaluates a fold's chosen checkpoint on its validation or test speakers and writes
    `fold<k>/<part>/predictions.csv` and `metrics.json` (validation predictions are what
    ensembles and recipe selection choose on; test is read once, for the chosen)."""
    split = loaded.config.data[PARTS[part]]
    predictions = evaluate_lib.evaluate(loaded, split, batch_size=batch_size, keep_outputs=True)
    info = {"workdir": os.path.abspath(directory), "step": loaded.step, "split": split}
    return evaluate_lib.save_evaluation(predictions, os.path.join(directory, part), info)


def ensure_validation_predictions(workdir: str) -> None:
    """Writes the validation predictions of finished folds that lack them (runs made before
    they were written), from each fold's chosen checkpoint."""
    for name in summarize(workdir)["folds"]:
        directory = fold_dir(workdir, name["fold"])
        path = os.path.join(directory, "validation", predictions_lib.PREDICTIONS_FILE)
        if not os.path.isfile(path):
            if not workdir_lib.is_workdir(directory):
                raise CrossValidationError(f"{directory}: no validation predictions and no run")
            loaded = workdir_lib.load_trained(directory, name["best_step"])
            evaluate_part(loaded, directory, "validation")


def run_cross_validation(
    folds: Sequence[Fold],
    workdir: str,
    *,
    only: Sequence[str] = (),
    config_file: str = "",
    eval_batch_size: int | None = None,
) -> dict[str, Any]:
    """Runs the folds (all, or those named in `only`), resuming, then summarises.

    Returns:
      The summary (see `summarize`); `complete` is False while some folds are not done.
    """
    names = [f.name for f in folds]
    unknown = [f for f in only if f not in names]
    if unknown:
        raise CrossValidationError(f"unknown folds {unknown}; the protocol has {names}")
    _check_protocol(workdir, folds, config_file)
    for fold in folds:
        if not only or fold.name in only:
            run_fold(fold, workdir, eval_batch_size)
    return summarize(workdir, names, write=True)


def _mean_std(values: list[float]) -> tuple[float, float]:
    x = np.asarray([v for v in values if v is not None], np.float64)
    if not len(x):
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def summarize(workdir: str, all_folds: Sequence[str] | None = None, write: bool = False):
    """Per-fold results, mean +- std over folds, and pooled test metrics of a CV workdir.

    Args:
      workdir: the cross-validation workdir.
      all_folds: the protocol's folds (default: those of protocol.json).
      write: write cv_results.json / .csv and test_predictions.csv when every fold is done.

    Returns:
      dict with `folds` (fold results), `missing` (folds not done), `complete`, and when some
      are done `mean` / `std` of the per-fold figures and `pooled` (metrics of all test clips).
    """
    if all_folds is None:
        path = os.path.join(workdir, PROTOCOL_FILE)
        if not os.path.isfile(path):
            raise CrossValidationError(f"{workdir}: not a cross-validation workdir (no {path})")
        with open(path) as f:
            all_folds = list(json.load(f)["folds"])
    results, missing = [], []
    for name in all_folds:
        path = os.path.join(fold_dir(workdir, name), FOLD_RESULT)
        if os.path.isfile(path):
            with open(path) as f:
                results.append(json.load(f))
        else:
            missing.append(name)
    summary: dict[str, Any] = {
        "workdir": os.path.abspath(workdir),
        "folds": results,
        "missing": missing,
        "complete": not missing,
    }
    if not results:
        return summary
    keys = (
        "validation_accuracy",
        "validation_unweighted_accuracy",
        "test_accuracy",
        "test_unweighted_accuracy",
    )
    stats = {k: _mean_std([r[k] for r in results]) for k in keys}
    summary["mean"] = {k: v[0] for k, v in stats.items()}
    summary["std"] = {k: v[1] for k, v in stats.items()}
    pooled, fold_of = _pooled_predictions(workdir, [r["fold"] for r in results])
    summary["fusion"] = results[0].get("fusion")
    metrics = pooled.metrics()
    summary["pooled"] = {
        k: metrics[k] for k in ("num_examples", "weighted_accuracy", "unweighted_accuracy")
    }
    summary["pooled"]["per_class"] = metrics["per_class"]
    summary["pooled"]["confusion_matrix"] = metrics["confusion_matrix"]
    if write and not missing:
        predictions_lib.write_predictions(
            pooled, os.path.join(workdir, POOLED_PREDICTIONS), {"fold": fold_of}
        )
        _write_table_csv(summary, os.path.join(workdir, RESULTS_CSV))
        io.write_json(summary, os.path.join(workdir, RESULTS_JSON))  # Last: complete.
    return summary


def _pooled_predictions(workdir: str, folds: Sequence[str]):
    parts, fold_of = [], []
    for name in folds:
        p = predictions_lib.read_predictions(
            os.path.join(fold_dir(workdir, name), "test", predictions_lib.PREDICTIONS_FILE)
        )
        parts.append(p)
        fold_of += [name] * len(p.clip_ids)
    pooled = predictions_lib.Predictions(
        np.concatenate([p.clip_ids for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.probabilities for p in parts]),
        parts[0].class_names,
        {
            k: np.concatenate([p.outputs[k] for p in parts])
            for k in ("mu", "eta")
            if all(k in p.outputs for p in parts)
        },
        source=os.path.join(workdir, POOLED_PREDICTIONS),
    )
    return pooled, fold_of


def _write_table_csv(summary: dict[str, Any], path: str) -> None:
    """Per-fold rows, then mean, std (over folds) and pooled rows."""
    cols = (
        "best_step",
        "validation_accuracy",
        "validation_unweighted_accuracy",
        "test_examples",
        "test_accuracy",
        "test_unweighted_accuracy",
    )
    rows = [{"fold": r["fold"], **{c: r[c] for c in cols}} for r in summary["folds"]]
    rows.append({"fold": "mean", **summary["mean"]})
    rows.append({"fold": "std", **summary["std"]})
    pooled = summary["pooled"]
    rows.append(
        {
            "fold": "pooled",
            "test_examples": pooled["num_examples"],
            "test_accuracy": pooled["weighted_accuracy"],
            "test_unweighted_accuracy": pooled["unweighted_accuracy"],
        }
    )

    def cell(x):
        return "" if x is None else f"{x:.6f}" if isinstance(x, float) else x

    columns = {c: [cell(r.get(c)) for r in rows] for c in ("fold", *cols)}
    io.write_csv(columns, path)


def format_summary(summary: dict[str, Any]) -> str:
    """Per-fold table, mean +- std (sample std over folds) and pooled line; accuracies in %."""
    metrics = (
        ("val WA", "validation_accuracy"),
        ("val UA", "validation_unweighted_accuracy"),
        ("test WA", "test_accuracy"),
        ("test UA", "test_unweighted_accuracy"),
    )
    header = f"{'fold':<7} {'test clips':>10} {'best step':>9}" + "".join(
        f"{name:>16}" for name, _ in metrics
    )
    lines = [f"{summary['workdir']} ({summary.get('fusion')})", header, "-" * len(header)]
    for r in summary["folds"]:
        lines.append(
            f"{r['fold']:<7} {r['test_examples']:>10} {r['best_step']:>9}"
            + "".join(f"{pct(r[key]):>16}" for _, key in metrics)
        )
    if "mean" in summary:
        m, s = summary["mean"], summary["std"]
        lines.append("-" * len(header))
        lines.append(
            f"{'mean+-sd':<7} {'':>10} {'':>9}"
            + "".join(f"{pct(m[k]) + ' +- ' + pct(s[k]):>16}" for _, k in metrics)
        )
        p = summary["pooled"]
        lines.append(
            f"{'pooled':<7} {p['num_examples']:>10} {'':>9}{'':>32}"
            f"{pct(p['weighted_accuracy']):>16}{pct(p['unweighted_accuracy']):>16}"
        )
    if summary["missing"]:
        lines.append(f"folds not done yet: {', '.join(summary['missing'])}")
    return "\n".join(lines)


def compare(workdirs: Sequence[str]) -> str:
    """Side-by-side test WA / UA per fold of finished CV runs, mean +- std (sample std over
    folds), pooled, and the exact McNemar test of the first run against each other."""
    summaries = [summarize(w) for w in workdirs]
    for w, s in zip(workdirs, summaries, strict=True):
        if not s["complete"]:
            raise CrossValidationError(f"{w}: folds {s['missing']} are not done yet")
    names = [f"{os.path.basename(os.path.normpath(w))}" for w in workdirs]
    folds = [r["fold"] for r in summaries[0]["folds"]]
    for w, s in zip(workdirs[1:], summaries[1:], strict=True):
        if [r["fold"] for r in s["folds"]] != folds:
            raise CrossValidationError(f"{w} has other folds than {workdirs[0]}")
    width = max(15, *(len(n) for n in names))
    lines = [
        "test WA / UA (%) per fold; checkpoints chosen on each fold's validation speakers;",
        "'val WA': mean validation WA, the only row that may choose among these runs",
    ]
    lines.append(f"{'fold':<8}" + "".join(f"{n:>{width + 2}}" for n in names))
    for i, fold in enumerate(folds):
        cells = [
            f"{pct(r['test_accuracy'])} / {pct(r['test_unweighted_accuracy'])}"
            for r in (s["folds"][i] for s in summaries)
        ]
        lines.append(f"{fold:<8}" + "".join(f"{c:>{width + 2}}" for c in cells))
    rows = (
        ("val WA", "validation_accuracy"),  # What may choose among these runs.
        ("mean WA", "test_accuracy"),
        ("mean UA", "test_unweighted_accuracy"),
    )
    for label, key in rows:
        cells = [f"{pct(s['mean'][key])} +- {pct(s['std'][key])}" for s in summaries]
        lines.append(f"{label:<8}" + "".join(f"{c:>{width + 2}}" for c in cells))
    cells = [
        f"{pct(s['pooled']['weighted_accuracy'])} / {pct(s['pooled']['unweighted_accuracy'])}"
        for s in summaries
    ]
    lines.append(f"{'pooled':<8}" + "".join(f"{c:>{width + 2}}" for c in cells))
    first = predictions_lib.read_predictions(os.path.join(workdirs[0], POOLED_PREDICTIONS))
    for name, w in zip(names[1:], workdirs[1:], strict=True):
        other = predictions_lib.read_predictions(os.path.join(w, POOLED_PREDICTIONS))
        result = significance.mcnemar(first, other)
        lines += ["", f"{names[0]} (A) vs {name} (B), pooled test clips:"]
        lines.append(significance.format_mcnemar(result, names[0], name))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Command line

FLAGS = flags.FLAGS


def define_flags() -> None:
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Config file declaring the folds, optionally with the base argument (FILE:ARG).",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", None, "The cross-validation workdir (one fold<k>/ per fold).")
    flags.DEFINE_list("folds", [], "Run only these folds (default: all); a rerun resumes.")
    flags.DEFINE_list("compare", [], "Finished CV workdirs to put side by side (no training).")
    flags.DEFINE_list(
        "select",
        [],
        "Finished CV workdirs (recipes, floors) to choose among on each fold's validation "
        "speakers only; prints validation and test side by side (fbp_jax.evaluation.selection).",
    )
    flags.DEFINE_bool("select_ensembles", False, "--select: ensembles of every subset too.")
    flags.DEFINE_string(
        "select_output", None, "--select: write the nested choice here as a CV workdir."
    )
    flags.DEFINE_integer("eval_batch_size", None, "Test evaluation batch (default: config's).")
    flags.DEFINE_string(
        "compilation_cache_dir",
        None,
        "JAX persistent compilation cache: folds with the same shapes then compile once.",
    )


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    import jax
    import tensorflow as tf

    tf.config.experimental.set_visible_devices([], "GPU")  # TensorFlow only reads data.
    try:
        if FLAGS.compare:
            print(compare(FLAGS.compare))
            return
        if FLAGS.select:
            from fbp_jax.evaluation import selection

            print(selection.run(FLAGS.select, FLAGS.select_ensembles, FLAGS.select_output))
            return
        if not FLAGS.workdir or FLAGS["config"].value is None:
            raise app.UsageError("--config and --workdir are needed (or --compare)")
        if FLAGS.compilation_cache_dir:
            jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache_dir)
        config_file = config_flags.get_config_filename(FLAGS["config"])
        overrides = config_flags.get_override_values(FLAGS["config"])
        folds = load_folds(config_file, overrides)
        summary = run_cross_validation(
            folds,
            FLAGS.workdir,
            only=FLAGS.folds,
            config_file=config_file,
            eval_batch_size=FLAGS.eval_batch_size,
        )
    except (CrossValidationError, predictions_lib.EvaluationError, workdir_lib.WorkdirError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summary))
    if summary["complete"]:
        print(
            f"\nwritten: {os.path.join(FLAGS.workdir, RESULTS_JSON)}, {RESULTS_CSV}, "
            f"{POOLED_PREDICTIONS}"
        )


if __name__ == "__main__":
    define_flags()
    app.run(main)
