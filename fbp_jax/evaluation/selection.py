"""Nested selection: choose among systems on each fold's validation speakers, read test once.

    fbp-jax cv --select=cv/audio_a,cv/audio_b,cv/floors/audio_speaker [--select_ensembles] \
        [--select_output=cv/audio_chosen]

A recipe, an ensemble or a floor is a *candidate*: a finished cross-validation workdir whose
folds hold the predictions of the checkpoint each fold chose on its validation speakers, on
those validation speakers (`fold<k>/validation/predictions.csv`) and on its test speakers
(`fold<k>/test/predictions.csv`). With `--select_ensembles`, the equal-weight posterior mean
of every subset of two or more candidates is a candidate too.

Two ways of choosing, both on validation accuracy only, are reported beside each other:

* **nested** (the figure to quote): each fold picks the candidate with the best accuracy on its
  own validation speakers (ties: unweighted accuracy, then the order given), and that fold's
  test speakers are scored for that candidate alone. The pooled test accuracy of these choices
  estimates what the whole procedure (train every candidate, pick on validation) gives on new
  speakers; no test speaker took part in any choice.
* **by mean validation**: the one candidate with the best validation accuracy averaged over the
  folds (what a config's default recipe is). Its test figure is slightly optimistic: in a
  rotating protocol the validation pair of one fold is the test pair of another.

Every candidate's validation and test accuracy are printed side by side, so the optimism of
picking on test (the best test column) is visible. `--select_output` writes the nested choice as
a cross-validation workdir, so `fbp-jax cv --compare` and McNemar tests take it.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from fbp_jax import io
from fbp_jax.evaluation import cross_validation as cv_lib
from fbp_jax.evaluation import predictions as predictions_lib
from fbp_jax.metrics import pct

PARTS = ("validation", "test")
MAX_ENSEMBLE_CANDIDATES = 8  # 2^8 subsets at most.


@dataclasses.dataclass
class Candidate:
    """A system's validation and test predictions per fold: {fold: {part: Predictions}}."""

    name: str
    folds: dict[str, dict[str, predictions_lib.Predictions]]
    splits: dict[str, dict[str, str]]
    members: tuple[str, ...] = ()

    def accuracy(self, fold: str, part: str) -> tuple[float, float]:
        m = self.folds[fold][part].metrics()
        return m["weighted_accuracy"], m["unweighted_accuracy"]


def load_candidate(workdir: str, name: str | None = None) -> Candidate:
    """A finished cross-validation workdir (network or floor) as a candidate; the validation
    predictions of folds run before they were written are made first (needs TensorFlow)."""
    summary = cv_lib.summarize(workdir)
    if not summary["complete"]:
        raise cv_lib.CrossValidationError(f"{workdir}: folds {summary['missing']} are not done yet")
    missing = [
        r["fold"]
        for r in summary["folds"]
        if not os.path.isfile(_predictions_path(workdir, r["fold"], "validation"))
    ]
    if missing:
        cv_lib.ensure_validation_predictions(workdir)
    folds, splits = {}, {}
    for r in summary["folds"]:
        folds[r["fold"]] = {
            part: predictions_lib.read_predictions(_predictions_path(workdir, r["fold"], part))
            for part in PARTS
        }
        splits[r["fold"]] = r["splits"]
    return Candidate(name or os.path.basename(os.path.normpath(workdir)), folds, splits)


def _predictions_path(workdir: str, fold: str, part: str) -> str:
    return os.path.join(cv_lib.fold_dir(workdir, fold), part, predictions_lib.PREDICTIONS_FILE)


def ensemble_of(members: Sequence[Candidate]) -> Candidate:
    """The equal-weight posterior mean of candidates, fold by fold and part by part."""
    folds = {
        fold: {
            part: predictions_lib.ensemble([m.folds[fold][part] for m in members]) for part in PARTS
        }
        for fold in members[0].folds
    }
    names = tuple(m.name for m in members)
    return Candidate(" + ".join(names), folds, members[0].splits, names)


def with_ensembles(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates and the equal-weight ensembles of every subset of two or more."""
    if len(candidates) > MAX_ENSEMBLE_CANDIDATES:
        raise cv_lib.CrossValidationError(
            f"{len(candidates)} candidates: ensembles of every subset need at most "
            f"{MAX_ENSEMBLE_CANDIDATES}"
        )
    out = list(candidates)
    for size in range(2, len(candidates) + 1):
        out += [ensemble_of(c) for c in itertools.combinations(candidates, size)]
    return out


def _check_folds(candidates: Sequence[Candidate]) -> list[str]:
    first = candidates[0]
    for c in candidates[1:]:
        if c.splits != first.splits:
            raise cv_lib.CrossValidationError(
                f"{c.name} and {first.name} were run on other folds or splits"
            )
    return list(first.folds)


def select(candidates: Sequence[Candidate]) -> dict[str, Any]:
    """Both choices (see the module docstring) and every candidate's figures.

    Returns:
      dict with `folds`, `rows` (per candidate: per-fold and mean validation / test WA and UA,
      pooled test WA / UA), `by_mean_validation` (the chosen row's name), and `nested`: the
      candidate chosen per fold with that fold's validation and test accuracy, and the pooled
      test WA / UA of those choices.
    """
    if not candidates:
        raise cv_lib.CrossValidationError("nothing to select from")
    folds = _check_folds(candidates)
    rows = []
    for c in candidates:
        acc = {f: {p: c.accuracy(f, p) for p in PARTS} for f in folds}
        pooled = _pool([c.folds[f]["test"] for f in folds]).metrics()
        rows.append(
            {
                "name": c.name,
                "members": list(c.members),
                "per_fold": acc,
                "mean_validation_wa": float(np.mean([acc[f]["validation"][0] for f in folds])),
                "mean_validation_ua": float(np.mean([acc[f]["validation"][1] for f in folds])),
                "mean_test_wa": float(np.mean([acc[f]["test"][0] for f in folds])),
                "pooled_test_wa": pooled["weighted_accuracy"],
                "pooled_test_ua": pooled["unweighted_accuracy"],
            }
        )
    best = max(
        range(len(rows)),
        key=lambda i: (rows[i]["mean_validation_wa"], rows[i]["mean_validation_ua"], -i),
    )
    chosen, parts = {}, []
    for f in folds:
        i = max(
            range(len(rows)),
            key=lambda i: (*rows[i]["per_fold"][f]["validation"], -i),
        )
        chosen[f] = {
            "candidate": rows[i]["name"],
            "validation_wa": rows[i]["per_fold"][f]["validation"][0],
            "test_wa": rows[i]["per_fold"][f]["test"][0],
            "test_ua": rows[i]["per_fold"][f]["test"][1],
        }
        parts.append(candidates[i].folds[f]["test"])
    nested = _pool(parts).metrics()
    return {
        "folds": folds,
        "rows": rows,
        "by_mean_validation": rows[best]["name"],
        "nested": {
            "per_fold": chosen,
            "mean_validation_wa": float(np.mean([chosen[f]["validation_wa"] for f in folds])),
            "pooled_test_wa": nested["weighted_accuracy"],
            "pooled_test_ua": nested["unweighted_accuracy"],
        },
        "_parts": parts,
        "_splits": candidates[0].splits,
    }


def _pool(parts: Sequence[predictions_lib.Predictions]) -> predictions_lib.Predictions:
    return predictions_lib.Predictions(
        np.concatenate([p.clip_ids for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.probabilities for p in parts]),
        parts[0].class_names,
        source="pooled",
    )


def format_selection(result: dict[str, Any]) -> str:
    """The table: every candidate's mean validation and test WA, pooled test WA / UA; the
    choice by mean validation (marked *); the nested choice per fold and its pooled figure."""
    rows = result["rows"]
    width = max(24, *(len(r["name"]) for r in rows)) + 2
    head = (
        f"{'candidate':<{width}}{'mean val WA':>12}{'mean test WA':>13}{'pooled test WA / UA':>21}"
    )
    lines = [
        "validation chooses, test is read for the chosen (the other test columns show the "
        "optimism of choosing on test)",
        head,
        "-" * len(head),
    ]
    for r in rows:
        mark = "*" if r["name"] == result["by_mean_validation"] else " "
        lines.append(
            f"{mark}{r['name']:<{width - 1}}{pct(r['mean_validation_wa']):>12}"
            f"{pct(r['mean_test_wa']):>13}"
            f"{pct(r['pooled_test_wa']) + ' / ' + pct(r['pooled_test_ua']):>21}"
        )
    n = result["nested"]
    lines += ["", "nested: each fold chooses on its own validation speakers"]
    for f in result["folds"]:
        c = n["per_fold"][f]
        lines.append(
            f"  {f:<8} {c['candidate']:<{width}} val WA {pct(c['validation_wa']):>6}  "
            f"test WA {pct(c['test_wa']):>6}"
        )
    lines.append(
        f"  pooled test WA / UA of the nested choice: {pct(n['pooled_test_wa'])} / "
        f"{pct(n['pooled_test_ua'])}"
    )
    lines.append(f"* by mean validation: {result['by_mean_validation']}")
    return "\n".join(lines)


def write_nested(result: dict[str, Any], output_dir: str) -> dict[str, Any]:
    """Writes the nested choice as a cross-validation workdir (per fold the chosen candidate's
    test predictions), so `cv --compare` and McNemar take it; returns its summary."""
    from fbp_jax.evaluation import evaluate as evaluate_lib

    splits = result["_splits"]
    os.makedirs(output_dir, exist_ok=True)
    io.write_json(
        {"config_file": "selection", "folds": splits},
        os.path.join(output_dir, cv_lib.PROTOCOL_FILE),
    )
    for f, part in zip(result["folds"], result["_parts"], strict=True):
        chosen = result["nested"]["per_fold"][f]
        directory = cv_lib.fold_dir(output_dir, f)
        metrics = evaluate_lib.save_evaluation(
            part, os.path.join(directory, "test"), {"chosen": chosen["candidate"]}
        )
        fold_result = {
            "fold": f,
            "splits": splits[f],
            "fusion": f"selection:{chosen['candidate']}",
            "best_step": 0,
            "validation_accuracy": chosen["validation_wa"],
            "validation_unweighted_accuracy": None,
            "test_examples": metrics["num_examples"],
            "test_accuracy": metrics["weighted_accuracy"],
            "test_unweighted_accuracy": metrics["unweighted_accuracy"],
        }
        io.write_json(fold_result, os.path.join(directory, cv_lib.FOLD_RESULT))
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    io.write_json(public, os.path.join(output_dir, "selection.json"))
    return cv_lib.summarize(output_dir, write=True)


def run(workdirs: Sequence[str], ensembles: bool = False, output_dir: str | None = None) -> str:
    """Loads the candidates, selects, optionally writes the nested choice; returns the table."""
    candidates = [load_candidate(w) for w in workdirs]
    if ensembles:
        candidates = with_ensembles(candidates)
    result = select(candidates)
    text = format_selection(result)
    if output_dir:
        write_nested(result, output_dir)
        text += f"\n\nwritten: {output_dir} (a cross-validation workdir of the nested choice)"
    return text
