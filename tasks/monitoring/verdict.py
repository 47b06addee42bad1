"""Combine the findings into one verdict: no drift, drift (naming what drifted) or insufficient data.

Correction: Holm's step-down method over every test that enters the verdict (features, outputs,
predicted classes, confidence, OOD rate, labelled accuracy). The verdict is one alarm whose
false-alarm rate is promised to stay at or below ``alpha``; that is family-wise error control, which
Holm gives under any dependence between the tests (the features are correlated and the output
tests all see the same model). Benjamini-Hochberg controls the false discovery rate instead: under
the global null it equals the family-wise rate, but its guarantee needs independence or positive
dependence, and it does not make each *named* drifted feature reliable on its own, which Holm does
(strong control).

Sample size rule (``needed_samples``): the smallest field batch for which a two-sample KS test at
Holm's first-step level alpha / m detects a location shift of ``min_effect`` standard deviations
of a normal variable with probability ``power``. A shift of d has KS distance D = 2 Phi(d / 2) - 1;
the KS critical value is c sqrt(1/n + 1/m_ref) with c = sqrt(-ln(alpha' / 2) / 2), and the
empirical distance at the point of largest difference has standard deviation at most
0.5 sqrt(1/n + 1/m_ref); requiring D >= (c + 0.5 z_power) sqrt(1/n + 1/m_ref) gives
n >= 1 / (q^2 - 1/m_ref) with q = D / (c + 0.5 z_power). The sup over all points only adds power,
so the rule errs on the large side. When q^2 <= 1/m_ref, no field batch suffices: the reference is
too small, and ``needed_samples`` returns None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

from nnassay.schemas.monitoring import DriftFinding, DriftVerdict

MIN_EFFECT = 0.5  # standard deviations: Cohen's "medium" effect
POWER = 0.8


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def needed_samples(
    reference_n: int, tests: int, alpha: float, *, min_effect: float = MIN_EFFECT, power: float = POWER
) -> int | None:
    """Field samples for the stated power (rule in the module docstring); None if none suffice."""
    distance = 2 * norm.cdf(min_effect / 2) - 1
    c = math.sqrt(-math.log(alpha / max(tests, 1) / 2) / 2)
    q = distance / (c + 0.5 * norm.ppf(power))
    room = q**2 - 1 / max(reference_n, 1)
    return math.ceil(1 / room) if room > 0 else None


def power_rule(alpha: float, tests: int, *, min_effect: float = MIN_EFFECT, power: float = POWER) -> str:
    """The needed-sample rule in words, for the report."""
    return (
        f"two-sample KS at level {alpha:g}/{tests} (Holm's first step) detects a shift of {min_effect:g} "
        f"standard deviations with power {power:.0%} (normal approximation, conservative)"
    )


def correct(findings: Sequence[DriftFinding], alpha: float) -> list[DriftFinding]:
    """Findings with Holm-adjusted p-values and ``drifted`` set, for those entering the verdict."""
    counted = [i for i, f in enumerate(findings) if f.counts_for_verdict and f.p_value is not None]
    adjusted = holm([findings[i].p_value or 0.0 for i in counted]) if counted else np.array([])
    out = list(findings)
    for i, q in zip(counted, adjusted, strict=True):
        out[i] = findings[i].model_copy(update={"adjusted_p_value": float(q), "drifted": bool(q <= alpha)})
    return out


def decide(
    findings: Sequence[DriftFinding], field_n: int, needed: int | None
) -> tuple[DriftVerdict, list[str], str]:
    """(verdict, what drifted, summary) from corrected findings and the batch size."""
    drifted = [f.what for f in findings if f.drifted]
    if drifted:
        return DriftVerdict.DRIFT, drifted, f"Drift: {', '.join(drifted)} changed significantly."
    if needed is None:
        return (
            DriftVerdict.INSUFFICIENT_DATA,
            [],
            "Insufficient data: no drift found, but the reference data are too few for the tests to "
            "reach their stated power at any field batch size.",
        )
    if field_n < needed:
        return (
            DriftVerdict.INSUFFICIENT_DATA,
            [],
            f"Insufficient data: no drift found in {field_n} field samples, but the tests need about "
            f"{needed} to detect a shift of the stated size reliably (see the power rule).",
        )
    return DriftVerdict.NO_DRIFT, [], f"No drift: none of the {_count(findings)} tests found a change."


def _count(findings: Sequence[DriftFinding]) -> int:
    return sum(1 for f in findings if f.counts_for_verdict)
