"""Confidence intervals for rates, and the samples needed to decide a criterion."""

from __future__ import annotations

import math

from scipy.stats import binomtest

from schemas.common import Interval


def proportion_interval(successes: int, n: int, confidence: float = 0.95,
                        method: str = "clopper-pearson") -> Interval:  # fmt: skip
    """Two-sided interval for a binomial proportion: exact Clopper-Pearson or Wilson (scipy)."""
    if n <= 0:
        return Interval(low=0.0, high=1.0, confidence=confidence, method=method)
    scipy_method = {"clopper-pearson": "exact", "wilson": "wilson"}[method]
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method=scipy_method)
    return Interval(low=float(ci.low), high=float(ci.high), confidence=confidence, method=method)


def samples_to_decide(rate: float, threshold: float, confidence: float = 0.95,
                      *, limit: int = 10_000_000) -> int | None:  # fmt: skip
    """Smallest n whose Clopper-Pearson interval around ``rate`` excludes ``threshold``.

    Assumes the observed rate stays as measured; None when no n up to ``limit`` decides (rate is
    at the threshold).
    """
    if rate == threshold:
        return None

    def decides(n: int) -> bool:
        k = round(rate * n)
        ci = proportion_interval(k, n, confidence)
        return ci.low > threshold or ci.high < threshold

    high = 1
    while not decides(high):
        high *= 2
        if high > limit:
            return None
    low = high // 2
    while high - low > max(1, low // 100):
        mid = (low + high) // 2
        low, high = (low, mid) if decides(mid) else (mid, high)
    return high


def zero_failure_samples(max_rate: float, confidence: float = 0.95) -> int:
    """Draws with zero failures needed to bound a failure rate below ``max_rate`` (rule of three)."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - max_rate))


def min_samples_to_pass(higher_is_better: bool, threshold: float, confidence: float = 0.95,
                        *, limit: int = 10_000_000) -> int | None:  # fmt: skip
    """Fewest samples with which a perfect outcome (all successes, or no failures) would pass.

    Fewer samples than this can never decide the criterion in favour of the model. None when no
    sample size up to ``limit`` suffices (threshold at 1 for '>=' or 0 for '<=').
    """
    def passes(n: int) -> bool:
        ci = proportion_interval(n if higher_is_better else 0, n, confidence)
        return ci.low >= threshold if higher_is_better else ci.high <= threshold

    if (higher_is_better and threshold >= 1.0) or (not higher_is_better and threshold <= 0.0):
        return None
    high = 1
    while not passes(high):
        high *= 2
        if high > limit:
            return None
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if passes(mid) else (mid, high)
    return high
