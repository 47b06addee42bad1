"""Per-feature two-sample tests of tabular field data against the reference data.

Numeric features: two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``), effect size the
standardized mean difference (field minus reference, over the pooled standard deviation).
Categorical features (declared ``kind: categorical``, or integer-valued with at most
``MAX_LEVELS`` distinct values): chi-squared test of homogeneity on the 2 x levels table
(``scipy.stats.chi2_contingency``), effect size Cramér's V. The raw p-values are corrected
together with the other tests of the verdict (Holm, see ``verdict.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp
from scipy.stats.contingency import association

from nnassay.schemas.goals import FeatureSpec
from nnassay.schemas.monitoring import DriftFinding, FindingKind
from nnassay.tasks.monitoring.distribution import histograms, shares

MAX_LEVELS = 10  # integer-valued features with at most this many values are tested as categories


def is_categorical(reference: np.ndarray, field: np.ndarray, spec: FeatureSpec | None = None) -> bool:
    """Declared categorical, or whole numbers with at most ``MAX_LEVELS`` distinct values."""
    if spec is not None:
        return spec.kind == "categorical"
    pooled = np.concatenate([reference, field])
    return bool(np.all(np.mod(pooled, 1) == 0) and len(np.unique(pooled)) <= MAX_LEVELS)


def feature_findings(
    reference: np.ndarray,
    field: np.ndarray,
    names: Sequence[str],
    specs: Sequence[FeatureSpec] = (),
) -> list[DriftFinding]:
    """One finding per column of the (N, features) arrays, with raw p-values (not yet corrected)."""
    by_name = {s.name: s for s in specs}
    findings = []
    for column, name in enumerate(names):
        ref, fld = reference[:, column].astype(float), field[:, column].astype(float)
        if is_categorical(ref, fld, by_name.get(name)):
            findings.append(categorical_finding(ref, fld, f"feature {name!r}"))
        else:
            findings.append(numeric_finding(ref, fld, f"feature {name!r}"))
    return findings


def numeric_finding(reference: np.ndarray, field: np.ndarray, what: str) -> DriftFinding:
    """Two-sample KS test and standardized mean difference of one numeric variable."""
    result = ks_2samp(reference, field)
    smd = standardized_mean_difference(reference, field)
    return DriftFinding(
        what=what,
        kind=FindingKind.FEATURE,
        test="kolmogorov-smirnov (two-sample, two-sided)",
        statistic=float(result.statistic),
        p_value=float(result.pvalue),
        value=float(np.mean(field)),
        reference_value=float(np.mean(reference)),
        effect_size=smd,
        effect_name="standardized mean difference (field - reference, pooled sd)",
        counts_for_verdict=True,
        drifted=False,
        sentence=f"The distribution of {what} differs by at most {result.statistic:.3f} in cumulative "
        f"share (KS distance); its mean moved by {smd:+.2f} standard deviations.",
        distribution=histograms(reference, field, what),
    )


def standardized_mean_difference(reference: np.ndarray, field: np.ndarray) -> float:
    """(mean field - mean reference) / pooled sd; 0 when both samples are constant."""
    n1, n2 = len(reference), len(field)
    pooled = ((n1 - 1) * np.var(reference, ddof=1) + (n2 - 1) * np.var(field, ddof=1)) / max(n1 + n2 - 2, 1)
    diff = float(np.mean(field) - np.mean(reference))
    return 0.0 if pooled <= 0 else diff / float(np.sqrt(pooled))


def categorical_finding(reference: np.ndarray, field: np.ndarray, what: str) -> DriftFinding:
    """Chi-squared test of homogeneity and Cramér's V of one categorical variable."""
    table = contingency(reference, field)
    statistic, p_value, v = chi_squared(table)
    return DriftFinding(
        what=what,
        kind=FindingKind.FEATURE,
        test="chi-squared (homogeneity, 2 x levels)",
        statistic=statistic,
        p_value=p_value,
        effect_size=v,
        effect_name="Cramér's V",
        counts_for_verdict=True,
        drifted=False,
        sentence=f"The shares of the {table.shape[1]} values of {what} changed with Cramér's V = {v:.3f} "
        "(0: same shares, 1: the batches share no value).",
        distribution=shares(np.unique(np.concatenate([reference, field])), table, what),
    )


def contingency(reference: np.ndarray, field: np.ndarray) -> np.ndarray:
    """2 x levels table of counts (reference row first), levels seen in either sample."""
    levels = np.unique(np.concatenate([reference, field]))
    return np.stack(
        [np.array([np.sum(sample == level) for level in levels]) for sample in (reference, field)]
    )


def chi_squared(table: np.ndarray) -> tuple[float, float, float]:
    """(statistic, p-value, Cramér's V) of a 2 x k table; one level only: no evidence of change."""
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0, 0.0
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue), float(association(table, method="cramer"))


def image_findings(reference: np.ndarray, field: np.ndarray) -> list[DriftFinding]:
    """KS tests of two per-image summaries: brightness (mean value) and contrast (standard deviation).

    Images have too many pixels to test one by one; these two summaries catch the commonest sensor
    shifts (exposure, gain, noise) in input space, beside the output tests that catch the rest.
    """
    ref, fld = reference.reshape(len(reference), -1), field.reshape(len(field), -1)
    return [
        numeric_finding(ref.mean(axis=1), fld.mean(axis=1), "image brightness (mean pixel value)"),
        numeric_finding(ref.std(axis=1), fld.std(axis=1), "image contrast (pixel standard deviation)"),
    ]
