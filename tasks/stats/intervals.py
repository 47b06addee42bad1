"""Confidence intervals for rates, and the samples needed to decide a criterion.

Two-sided intervals (Clopper-Pearson, the default, and Wilson) come from ``scipy.stats.binomtest``;
the vectorised one-sided Clopper-Pearson bounds (``upper_bounds``, ``lower_bounds``) serve methods
that bound many per-sample rates at once (probabilistic robustness, randomized smoothing).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, binomtest

from nnassay.schemas.common import Interval

INTERVAL_METHODS = {"clopper-pearson": "exact", "wilson": "wilson"}


def check_confidence(confidence: float, name: str = "confidence") -> None:
    """Raise ValueError unless 0 < confidence < 1, naming the argument."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


def proportion_interval(
    successes: int, n: int, confidence: float = 0.95, method: str = "clopper-pearson"
) -> Interval:
    """Two-sided interval for a binomial proportion: exact Clopper-Pearson or Wilson (scipy).

    Clopper-Pearson covers the true rate with probability at least ``confidence`` for every rate and
    n (conservative); Wilson is shorter and covers close to ``confidence`` on average. With n = 0
    nothing is known and the interval is [0, 1].
    """
    check_confidence(confidence)
    if method not in INTERVAL_METHODS:
        raise ValueError(f"unknown interval method {method!r}; expected one of {list(INTERVAL_METHODS)}")
    if n <= 0:
        return Interval(low=0.0, high=1.0, confidence=confidence, method=method)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    ci = binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=confidence, method=INTERVAL_METHODS[method]
    )
    return Interval(low=float(ci.low), high=float(ci.high), confidence=confidence, method=method)


def upper_bounds(successes: np.ndarray | int, n: np.ndarray | int, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bounds: P(rate <= bound) >= confidence, elementwise.

    ``successes = n`` gives 1; ``successes = 0`` gives ``1 - (1 - confidence) ** (1 / n)``.
    """
    check_confidence(confidence)
    k, m = np.broadcast_arrays(np.asarray(successes, float), np.asarray(n, float))
    out = np.ones(k.shape)
    inner = k < m
    out[inner] = beta.ppf(confidence, k[inner] + 1, m[inner] - k[inner])
    return out


def lower_bounds(successes: np.ndarray | int, n: np.ndarray | int, confidence: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bounds: P(rate >= bound) >= confidence, elementwise.

    ``successes = 0`` gives 0; ``successes = n`` gives ``(1 - confidence) ** (1 / n)``.
    """
    check_confidence(confidence)
    k, m = np.broadcast_arrays(np.asarray(successes, float), np.asarray(n, float))
    out = np.zeros(k.shape)
    inner = k > 0
    out[inner] = beta.ppf(1.0 - confidence, k[inner], m[inner] - k[inner] + 1)
    return out


def zero_failure_samples(max_rate: float, confidence: float = 0.95) -> int:
    """Draws with zero failures needed for a one-sided ``confidence`` upper bound below ``max_rate``.

    The exact form of the rule of three: ``ceil(ln(1 - confidence) / ln(1 - max_rate))``, e.g. 2,995
    draws for 1e-3 at 95%. A two-sided interval at the same confidence needs more (3,688 here),
    because each tail gets (1 - confidence) / 2; see ``nnassay.tasks.stats.sample_size``.
    """
    check_confidence(confidence)
    if not 0.0 < max_rate < 1.0:
        raise ValueError(f"max_rate must lie strictly between 0 and 1, got {max_rate!r}")
    return math.ceil(math.log(1 - confidence) / math.log(1 - max_rate))
