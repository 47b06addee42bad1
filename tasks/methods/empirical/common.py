"""Plumbing shared by the empirical methods: intervals, artifacts, data-kind checks, strength grids."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nnassay.schemas.common import ClaimKind, Interval, Measurement
from nnassay.schemas.results import ArtifactRef, Series
from nnassay.schemas.threats import Threat
from nnassay.tasks.methods.registry import RunContext
from nnassay.tasks.methods.statistical.core import rate

__all__ = [
    "rate",
    "mean_with_interval",
    "save_npz",
    "rate_series",
    "check_kind",
    "strength_grid",
    "ort_wrong",
    "rows_interval",
]


def mean_with_interval(
    values: np.ndarray, ctx: RunContext, description: str, statistic: Callable[[np.ndarray], float] = np.mean
) -> Measurement:
    """A non-proportion summary with a bootstrap interval at the test's confidence (point value if
    fewer than two values)."""
    values = np.asarray(values, dtype=float)
    value = float(statistic(values)) if len(values) else 0.0
    interval = None
    if len(values) >= 2:
        from nnassay.tasks.stats.bootstrap import bootstrap_interval

        interval = bootstrap_interval(
            values,
            lambda v: float(statistic(v)),
            ctx.confidence,
            np.random.default_rng([ctx.seed, 99]),
            n_resamples=1000,
        )
    return Measurement(
        value=value, interval=interval, claim=ClaimKind.OBSERVATION, n=len(values), description=description
    )


def rows_interval(
    rows: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    ctx: RunContext,
    stream: int,
    n_resamples: int = 1000,
) -> Interval | None:
    """Bootstrap interval of a statistic of whole rows (paired values), resampling rows.

    ``bootstrap_interval`` resamples whole rows of 2-D values, so multi-column statistics (ratios,
    AUROC of (score, label) rows) work.
    """
    from nnassay.tasks.stats.bootstrap import bootstrap_interval

    if len(rows) < 2:
        return None
    return bootstrap_interval(
        np.asarray(rows, dtype=float),
        lambda r: float(statistic(r)),
        ctx.confidence,
        np.random.default_rng([ctx.seed, stream]),
        n_resamples=n_resamples,
        method="percentile",
    )


def save_npz(ctx: RunContext, name: str, caption: str, **arrays: np.ndarray) -> ArtifactRef:
    """Save arrays as a compressed npz artifact of the test."""
    buffer = io.BytesIO()
    named: dict[str, Any] = dict(arrays)  # names only: numpy's stub also reads ** as allow_pickle
    np.savez_compressed(buffer, **named)
    return ctx.save_artifact(name, buffer.getvalue(), "application/x-npz", caption)


def rate_series(
    name: str,
    x: Sequence[float],
    counts: Sequence[tuple[int, int]],
    ctx: RunContext,
    x_label: str,
    y_label: str,
    kind: str = "line",
) -> Series:
    """A curve of rates (successes, n) with their Clopper-Pearson intervals."""
    rates = [rate(k, n, ctx, "") for k, n in counts]
    return Series(
        name=name,
        x_label=x_label,
        y_label=y_label,
        x=[float(v) for v in x],
        y=[r.value for r in rates],
        kind=kind,  # type: ignore[arg-type]
        y_low=[r.interval.low if r.interval else r.value for r in rates],
        y_high=[r.interval.high if r.interval else r.value for r in rates],
    )


def check_kind(method_name: str, kinds: tuple[str, ...], threat: Threat, data_kind: str) -> list[str]:
    """The problem message when a threat for one data kind meets the other kind of data."""
    if data_kind in kinds:
        return []
    wants = " or ".join(kinds)
    return [
        f"threat {threat.kind!r} (method {method_name!r}) needs {wants} data, but the data is "
        f"{data_kind}; choose a threat made for {data_kind} data"
    ]


def strength_grid(strength: float, sweep: Sequence[float] | None) -> list[float]:
    """The sweep plus the goal's own strength, ascending (default: quarters up to the strength)."""
    values = sweep or [strength * k / 4 for k in (1, 2, 3)]
    return sorted({round(float(s), 12) for s in [*values, strength]})


def ort_wrong(ctx: RunContext, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bool per sample: ONNX Runtime (the deployed model) misclassifies x."""
    if not len(x):
        return np.zeros(0, dtype=bool)
    return ctx.model.predict(np.ascontiguousarray(x, dtype=np.float32)) != y
