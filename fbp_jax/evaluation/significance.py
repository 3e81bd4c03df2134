"""Exact McNemar test between two systems on the same clips (matched pairs)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as scipy_stats

from fbp_jax.evaluation.predictions import Predictions


@dataclasses.dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of systems A and B on the same clips.

    Attributes:
      num_examples: clips compared.
      both_correct, only_a, only_b, both_wrong: the 2x2 table of correct / wrong.
      p_two_sided: H1: A and B differ.
      p_a_better: one-sided, H1: A is right more often than B.
      p_b_better: one-sided, H1: B is right more often than A.
      accuracy_a, accuracy_b: weighted accuracies.
    """

    num_examples: int
    both_correct: int
    only_a: int
    only_b: int
    both_wrong: int
    p_two_sided: float
    p_a_better: float
    p_b_better: float
    accuracy_a: float
    accuracy_b: float


def mcnemar_exact(only_a: int, only_b: int) -> tuple[float, float, float]:
    """Exact (binomial) McNemar p-values from the discordant pairs.

    Under H0 a discordant clip is equally likely to favour either system, so only_a ~
    Binomial(only_a + only_b, 1/2).

    Args:
      only_a: clips A gets right and B wrong.
      only_b: clips B gets right and A wrong.

    Returns:
      (two-sided, one-sided A better, one-sided B better); 1.0 when there is no discordant clip.
    """
    n = only_a + only_b
    if n == 0:
        return 1.0, 1.0, 1.0
    a_better = float(scipy_stats.binom.sf(only_a - 1, n, 0.5))  # P(X >= only_a)
    b_better = float(scipy_stats.binom.cdf(only_a, n, 0.5))  # P(X <= only_a)
    return min(1.0, 2.0 * min(a_better, b_better)), a_better, b_better


def mcnemar(a: Predictions, b: Predictions) -> McNemarResult:
    """Exact McNemar test between two prediction sets on the same clips (matched pairs)."""
    b = b.aligned_to(a)
    ca, cb = a.correct, b.correct
    only_a, only_b = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    two, a_better, b_better = mcnemar_exact(only_a, only_b)
    n = len(ca)
    return McNemarResult(
        num_examples=n,
        both_correct=int(np.sum(ca & cb)),
        only_a=only_a,
        only_b=only_b,
        both_wrong=int(np.sum(~ca & ~cb)),
        p_two_sided=two,
        p_a_better=a_better,
        p_b_better=b_better,
        accuracy_a=float(ca.mean()) if n else math.nan,
        accuracy_b=float(cb.mean()) if n else math.nan,
    )


def format_mcnemar(result: McNemarResult, name_a: str = "A", name_b: str = "B") -> str:
    r = result
    return (
        f"{r.num_examples} clips: {name_a} {100 * r.accuracy_a:.2f}% WA, "
        f"{name_b} {100 * r.accuracy_b:.2f}% WA\n"
        f"both right {r.both_correct}, only {name_a} right {r.only_a}, "
        f"only {name_b} right {r.only_b}, both wrong {r.both_wrong}\n"
        f"exact McNemar p-values: two-sided {r.p_two_sided:.4g}; "
        f"one-sided ({name_a} better) {r.p_a_better:.4g}; "
        f"one-sided ({name_b} better) {r.p_b_better:.4g}"
    )
