"""Field accuracy: measured when the field data carry labels, estimated from confidence when not.

With labels: the field accuracy with its Clopper-Pearson interval, against the accuracy on the
reference (assessed) data by Fisher's exact test and Newcombe's interval of the difference
(``tasks/stats/contrast.py``).

Without labels: confidence-based performance estimation (CBPE, as NannyML does). The model's
maximum softmax probability is calibrated on the labelled reference data by isotonic regression
of correctness on confidence (``scipy.optimize.isotonic_regression``); the expected field accuracy
is the mean calibrated confidence of the field inputs. The interval is a two-sample percentile
bootstrap that refits the calibration on each reference resample, so it carries the calibration's
uncertainty as well as the field sample's. It relies on two assumptions, stated in the finding:
the shift is a covariate shift (P(label | input) unchanged), and the calibration map learnt on the
reference still holds on the field data.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import isotonic_regression
from scipy.stats import bootstrap

from nnassay.schemas.common import Interval
from nnassay.schemas.monitoring import DriftFinding, FindingKind
from nnassay.tasks.stats.contrast import compare_rates
from nnassay.tasks.stats.intervals import proportion_interval

CALIBRATION = (
    "isotonic regression of correctness on the maximum softmax probability, fitted on the labelled "
    "reference data; assumes P(label | input) is unchanged and the calibration holds on the field data"
)


def accuracy_finding(
    reference_correct: np.ndarray, field_correct: np.ndarray, *, confidence: float = 0.95
) -> DriftFinding:
    """Field accuracy against reference accuracy (labelled field data)."""
    k_ref, n_ref = int(reference_correct.sum()), len(reference_correct)
    k_fld, n_fld = int(field_correct.sum()), len(field_correct)
    contrast = compare_rates(k_ref, n_ref, k_fld, n_fld, confidence)
    interval = proportion_interval(k_fld, n_fld, confidence)
    return DriftFinding(
        what="accuracy (field labels)",
        kind=FindingKind.ACCURACY,
        test="fisher exact (two-sided) on field vs reference accuracy; newcombe interval of the difference",
        p_value=contrast.p_value,
        value=k_fld / n_fld,
        reference_value=k_ref / n_ref,
        interval=interval,
        effect_size=contrast.difference,
        effect_name="accuracy difference (field - reference)",
        counts_for_verdict=True,
        drifted=False,
        sentence=f"Accuracy on the labelled field data is {k_fld / n_fld:.1%} ({interval.confidence:.0%} "
        f"interval {interval.low:.1%} to {interval.high:.1%}) against {k_ref / n_ref:.1%} on the "
        f"reference data ({contrast.difference:+.1%}).",
    )


def fit_calibration(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic map from confidence to P(correct): (distinct confidences, calibrated values)."""
    levels, inverse = np.unique(confidence, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(levels)).astype(float)
    means = np.bincount(inverse, weights=correct.astype(float), minlength=len(levels)) / counts
    fitted = isotonic_regression(means, weights=counts, increasing=True).x
    return levels, np.asarray(fitted)


def expected_accuracy(calibration: tuple[np.ndarray, np.ndarray], confidence: np.ndarray) -> float:
    """Mean calibrated confidence (linear between fitted points, constant beyond them)."""
    levels, fitted = calibration
    return float(np.mean(np.interp(confidence, levels, fitted)))


def cbpe_estimate(
    reference_confidence: np.ndarray,
    reference_correct: np.ndarray,
    field_confidence: np.ndarray,
    *,
    confidence: float = 0.95,
    rng: np.random.Generator,
    n_resamples: int = 1000,
) -> tuple[float, Interval]:
    """CBPE estimate of field accuracy and its two-sample bootstrap interval."""
    point = expected_accuracy(fit_calibration(reference_confidence, reference_correct), field_confidence)

    def statistic(ref_rows: np.ndarray, field_rows: np.ndarray) -> float:
        ref_rows, field_rows = ref_rows.astype(np.intp), field_rows.astype(np.intp)
        calibration = fit_calibration(reference_confidence[ref_rows], reference_correct[ref_rows])
        return expected_accuracy(calibration, field_confidence[field_rows])

    result = bootstrap(
        (np.arange(len(reference_confidence)), np.arange(len(field_confidence))),
        statistic,
        paired=False,
        vectorized=False,
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        rng=rng,
    )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    method = f"two-sample percentile bootstrap ({n_resamples} resamples, calibration refitted)"
    return point, Interval(low=min(low, point), high=max(high, point), confidence=confidence, method=method)


def cbpe_finding(
    reference_confidence: np.ndarray,
    reference_correct: np.ndarray,
    field_confidence: np.ndarray,
    *,
    confidence: float = 0.95,
    rng: np.random.Generator,
) -> DriftFinding:
    """Estimated field accuracy from calibrated confidence; informs, does not enter the verdict."""
    point, interval = cbpe_estimate(
        reference_confidence, reference_correct, field_confidence, confidence=confidence, rng=rng
    )
    assessed = float(np.mean(reference_correct))
    return DriftFinding(
        what="estimated accuracy (no labels)",
        kind=FindingKind.ESTIMATED_ACCURACY,
        test=f"confidence-based performance estimation (CBPE): {CALIBRATION}",
        value=point,
        reference_value=assessed,
        interval=interval,
        effect_size=point - assessed,
        effect_name="estimated accuracy difference (field - reference)",
        counts_for_verdict=False,
        drifted=False,
        sentence=f"From its calibrated confidence the model is expected to be {point:.1%} accurate on the "
        f"field data ({interval.confidence:.0%} interval {interval.low:.1%} to {interval.high:.1%}) "
        f"against {assessed:.1%} measured on the reference data, if the calibration still holds there.",
    )
