"""What the report plots for a finding: the compared quantity on both samples, as shares.

Shares (counts over the sample size) rather than counts, so a field batch of 180 and a reference of
540 draw on the same scale. Numeric values: ``BINS`` equal bins over the pooled range; categories
and classes: one bar per value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnassay.schemas.results import Series

BINS = 20
SAMPLES = ("reference", "field")


def histograms(reference: np.ndarray, field: np.ndarray, x_label: str) -> list[Series]:
    """Two histogram series (reference, field) on the same bin edges."""
    pooled = np.concatenate([reference, field]).astype(float)
    pooled = pooled[np.isfinite(pooled)]
    low, high = (float(pooled.min()), float(pooled.max())) if len(pooled) else (0.0, 1.0)
    edges = np.linspace(low, high if high > low else low + 1.0, BINS + 1)
    return [
        Series(
            name=f"{name} (n={len(sample)})",
            x_label=x_label,
            y_label="share of samples",
            x=[float(e) for e in edges],
            y=[float(c) / max(len(sample), 1) for c in np.histogram(sample, bins=edges)[0]],
            kind="histogram",
        )
        for name, sample in zip(SAMPLES, (reference, field), strict=True)
    ]


def shares(levels: Sequence[float] | np.ndarray, counts: np.ndarray, x_label: str) -> list[Series]:
    """Two bar series (reference, field) from a 2 x levels table of counts."""
    return [
        Series(
            name=f"{name} (n={int(row.sum())})",
            x_label=x_label,
            y_label="share of samples",
            x=[float(v) for v in levels],
            y=[float(c) / max(float(row.sum()), 1.0) for c in row],
            kind="bar",
        )
        for name, row in zip(SAMPLES, counts, strict=True)
    ]
