"""Tabular features as threats see them: each feature's type, valid range and scale, and the
per-feature box that noise, invalid input, attacks and formal proofs share.

Threat magnitudes on tabular data are in units of each feature's scale (declared ``scale`` or
``noise_scale``, else its standard deviation in the whole test data file, else its range, else 1): noise of
strength s has spread s x scale, and an attack radius eps is the box x +- eps x scale (L-inf) or the
ellipsoid ``sum((delta / scale)^2) <= eps^2`` (L2). Immutable and categorical features stay fixed
under attacks; integer features stay whole. Image data has no features: nothing here applies.
Observed scales and ranges come from the whole data (``Dataset.whole_x``), never from a test's
subset of samples: every goal of a spec, whatever its budget, and every shard share one box.
The formal methods bound the same L-inf box (``FeatureBox.ball``), with integer features relaxed to
their continuous interval (a sound over-approximation), and snap counterexamples with ``constrain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import JsonValue

from nnassay.schemas.goals import FeatureSpec
from nnassay.tasks.methods.registry import RunContext

if TYPE_CHECKING:
    from nnassay.tasks.io.data_io import Dataset


@dataclass(frozen=True)
class Column:
    """One feature: its type, range (declared, else observed), scale and categories."""

    index: int
    kind: str  # 'numeric', 'integer' or 'categorical'
    low: float
    high: float
    spread: float  # the feature's scale: unit of every threat magnitude on it
    values: tuple[float, ...] = ()
    immutable: bool = False
    bounded: bool = False  # True when the range was declared (not observed)


def match_specs(
    n_features: int, names: Sequence[str], specs: Sequence[FeatureSpec]
) -> list[FeatureSpec | None]:
    """The declaration of each feature: by name, else by position (``specs[i]`` for feature i)."""
    by_name = {s.name: s for s in specs}
    out: list[FeatureSpec | None] = []
    for i in range(n_features):
        name = names[i] if i < len(names) else str(i)
        out.append(by_name.get(name) or (specs[i] if i < len(specs) and specs[i].name not in names else None))
    return out


def columns(x: np.ndarray, names: Sequence[str], specs: Sequence[FeatureSpec]) -> list[Column]:
    """Every feature with its declared (else observed) range, scale, type and categories."""
    out = []
    for i, spec in enumerate(match_specs(x.shape[1], names, specs)):
        declared = spec.bounds() if spec else (None, None)
        low = declared[0] if declared[0] is not None else float(np.nanmin(x[:, i]))
        high = declared[1] if declared[1] is not None else float(np.nanmax(x[:, i]))
        spread = (spec.declared_scale() if spec else None) or float(np.nanstd(x[:, i])) or (high - low) or 1.0
        out.append(
            Column(
                index=i,
                kind=spec.kind if spec else "numeric",
                low=float(low),
                high=float(high),
                spread=float(spread),
                values=tuple(spec.values or ()) if spec else (),
                immutable=bool(spec and spec.immutable),
                bounded=declared != (None, None),
            )
        )
    return out


@dataclass(frozen=True)
class FeatureBox:
    """Per-feature scale, bounds and constraints of the attacks on tabular data, shape (features,)."""

    scale: np.ndarray
    low: np.ndarray
    high: np.ndarray
    frozen: np.ndarray  # bool: immutable or categorical, never moved by an attack
    integer: np.ndarray  # bool: moves in whole steps
    names: tuple[str, ...] = ()  # feature names (CSV column, or index as text)

    def ball(self, x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper corners (float64) of the L-inf ball of radius eps around one sample x:
        x +- eps x scale within each feature's bounds, frozen features fixed (lower == upper == x).

        Every point ``constrain`` returns at radius eps lies inside; integer features span their
        continuous interval, which holds every whole value the attacks can reach.
        """
        x64 = np.asarray(x, np.float64)
        radius = np.where(self.frozen, 0.0, eps * self.scale)
        return np.clip(x64 - radius, self.low, self.high), np.clip(x64 + radius, self.low, self.high)

    def constrain(self, x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Candidates with frozen features reset, integer steps truncated towards x, inside the bounds
        (integer features: inside the whole values of their bounds, so they stay whole).

        Truncating an integer step towards zero only shrinks it, so a point in the ball stays there.
        """
        delta = np.asarray(x_adv, np.float64) - x
        delta = np.where(self.frozen, 0.0, np.where(self.integer, np.trunc(delta), delta))
        low, high = self.whole_bounds()
        return np.clip(x + delta, low, high).astype(np.float32)

    def whole_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Each feature's bounds, narrowed to whole values for integer features (when one fits)."""
        low, high = np.ceil(self.low), np.floor(self.high)
        whole = self.integer & (low <= high)
        return np.where(whole, low, self.low), np.where(whole, high, self.high)

    def distances(self, x_adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
        """Per-sample L-inf or L2 distance in units of each feature's scale."""
        delta = (np.asarray(x_adv, np.float64) - x) / self.scale
        return np.abs(delta).max(axis=1) if norm == "linf" else np.sqrt((delta**2).sum(axis=1))

    def details(self) -> dict[str, JsonValue]:
        """The box's units for the evidence: per feature its name, scale and bounds, and which
        features are fixed (immutable or categorical) or whole (integer)."""
        return {
            "feature_names": list(self.names) or [str(i) for i in range(len(self.scale))],
            "feature_scale": [float(v) for v in self.scale],
            "feature_bounds": [[float(lo), float(hi)] for lo, hi in zip(self.low, self.high, strict=True)],
            "fixed_features": [int(i) for i in np.flatnonzero(self.frozen)],
            "integer_features": [int(i) for i in np.flatnonzero(self.integer)],
        }


def feature_box(
    x: np.ndarray, names: Sequence[str], specs: Sequence[FeatureSpec], value_range: tuple[float, float]
) -> FeatureBox:
    """The attack box of tabular data: declared bounds (else the model's value range) and scales."""
    cols = columns(x, names, specs)
    vr_low, vr_high = value_range
    return FeatureBox(
        scale=np.array([c.spread for c in cols]),
        low=np.array([c.low if c.bounded else vr_low for c in cols]),
        high=np.array([c.high if c.bounded else vr_high for c in cols]),
        frozen=np.array([c.immutable or c.kind == "categorical" for c in cols]),
        integer=np.array([c.kind == "integer" for c in cols]),
        names=tuple(names[i] if i < len(names) else str(i) for i in range(len(cols))),
    )


def data_columns(data: Dataset) -> list[Column]:
    """``columns`` of a test's tabular data, observed ranges and scales from the whole data file."""
    return columns(data.whole_x, data.feature_names, data.features)


def tabular_box(ctx: RunContext) -> FeatureBox | None:
    """The per-feature box of a test's tabular data (None for images: eps stays in data units)."""
    return data_box(ctx.data, ctx.model.value_range)


def data_box(data: Dataset, value_range: tuple[float, float]) -> FeatureBox | None:
    """``tabular_box`` from a test's data and the model's value range, where no RunContext is at hand
    (e.g. drawing a test's noise again to explain it)."""
    if data.kind != "tabular" or data.x.ndim != 2:
        return None
    return feature_box(data.whole_x, data.feature_names, data.features, value_range)
