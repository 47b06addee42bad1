"""Bootstrap confidence intervals for statistics that are not proportions.

Used for means and other summaries of per-sample values (corruption error, mean minimal eps,
AUROC, mean certified radius), where no exact binomial interval exists.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import bootstrap

from nnassay.schemas.common import Interval
from nnassay.tasks.stats.intervals import check_confidence


def bootstrap_interval(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    confidence: float,
    rng: np.random.Generator,
    n_resamples: int = 2000,
    method: str = "BCa",
) -> Interval:
    """Two-sided bootstrap interval of ``statistic(values)``, resampling the values (axis 0).

    Uses ``scipy.stats.bootstrap`` with BCa (bias-corrected and accelerated) by default and falls
    back to the percentile method when BCa is undefined. Degenerate data are handled without
    resampling: constant values, or a single value, give the point interval [s, s] (the bootstrap
    sees no spread; the method string says so). The interval is widened, if needed, to contain the
    point estimate, so that ``low <= statistic(values) <= high`` always holds.

    Args:
        values: per-sample values, 1-D, or N x ... with one row per sample (rows are resampled
            whole, e.g. (score, label) pairs for AUROC or (corrupted, clean) pairs for a ratio).
        statistic: function of a resample (same shape as ``values``: N rows) returning a float.
        confidence: two-sided confidence level in (0, 1).
        rng: generator making the resampling reproducible.
        n_resamples: bootstrap resamples.
        method: 'BCa' or 'percentile'.

    Raises:
        ValueError: on empty or non-finite values, a bad confidence, or an unknown method.
    """
    check_confidence(confidence)
    if method not in ("BCa", "percentile"):
        raise ValueError(f"unknown bootstrap method {method!r}; expected 'BCa' or 'percentile'")
    data = np.asarray(values, dtype=float)
    if data.size == 0 or len(data) == 0:
        raise ValueError("bootstrap_interval needs at least one value, got none")
    if not np.all(np.isfinite(data)):
        raise ValueError("bootstrap_interval needs finite values; drop NaN and infinities first")
    point = float(statistic(data))
    if len(data) == 1 or np.ptp(data.reshape(len(data), -1), axis=0).max() == 0.0:
        why = "single value" if len(data) == 1 else "constant values"
        return Interval(
            low=point, high=point, confidence=confidence, method=f"bootstrap ({why}: no spread to resample)"
        )
    low, high, used = _resample(data, statistic, confidence, rng, n_resamples, method)
    return Interval(
        low=min(low, point),
        high=max(high, point),
        confidence=confidence,
        method=f"bootstrap {used} ({n_resamples} resamples)",
    )


def _resample(
    data: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    confidence: float,
    rng: np.random.Generator,
    n_resamples: int,
    method: str,
) -> tuple[float, float, str]:
    """Resample whole rows: scipy's bootstrap resamples 1-D row indices, the statistic sees rows.

    ``scipy.stats.bootstrap`` with ``vectorized=False`` treats an N-D array as a batch of independent
    1-D samples along ``axis`` and would hand the statistic single columns (an N x 2 array of
    paired values gave an IndexError or one interval per column). Resampling the index vector
    instead keeps rows together, so multi-column statistics (ratios, AUROC of (score, label) rows)
    work; for 1-D values the resamples are the same as resampling the values themselves.
    """
    rows = np.arange(len(data))

    def on_rows(index: np.ndarray) -> float:
        return float(statistic(data[np.asarray(index, dtype=np.intp)]))

    for attempt in dict.fromkeys((method, "percentile")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning: handled by the fallback
            result = bootstrap(
                (rows,),
                on_rows,
                n_resamples=n_resamples,
                vectorized=False,
                confidence_level=confidence,
                method=attempt,
                rng=rng,
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if np.isfinite(low) and np.isfinite(high):
            return low, high, attempt
    raise ValueError("the bootstrap interval is undefined for these values (statistic not finite)")
