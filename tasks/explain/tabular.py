"""Per-feature sensitivity of a tabular decision: which single-feature changes flip it.

Each feature is moved alone over a grid of its valid values (declared range or categorical codes,
else the range seen in the test data) while the others keep the sample's values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnassay.schemas.explain import FeatureFlip
from nnassay.schemas.goals import FeatureSpec
from nnassay.tasks.explain.attributions import Scorer

GRID = 11  # values tried per numeric feature


def feature_grids(
    x: np.ndarray, features: Sequence[FeatureSpec] = (), points: int = GRID
) -> list[np.ndarray]:
    """Values to try for each feature column of ``x`` (N, F)."""
    low, high = x.min(axis=0), x.max(axis=0)
    grids = [np.linspace(low[j], high[j], points) for j in range(x.shape[1])]
    for j, spec in enumerate(features[: x.shape[1]]):
        if spec.kind == "categorical" and spec.values:
            grids[j] = np.asarray(spec.values, np.float64)
        elif spec.bounds() != (None, None):  # declared min / max (or range); the data's for the other end
            lo, hi = spec.bounds()
            grids[j] = np.linspace(low[j] if lo is None else lo, high[j] if hi is None else hi, points)
    return grids


def feature_flips(
    model: Scorer, x: np.ndarray, names: Sequence[str], grids: Sequence[np.ndarray]
) -> list[FeatureFlip]:
    """For one sample x (F,): per feature, the smallest single change that changes the decision,
    smallest change first (features whose grid never flips it are left out). One ORT call."""
    rows, where = [x[None]], []
    for j, grid in enumerate(grids):
        trial = np.repeat(x[None], len(grid), axis=0)
        trial[:, j] = grid
        rows.append(trial)
        where += [(j, float(v)) for v in grid]
    decisions = model.logits(np.concatenate(rows).astype(np.float32)).argmax(axis=1)
    flips: dict[int, FeatureFlip] = {}
    for (j, value), decision in zip(where, decisions[1:], strict=True):
        change = value - float(x[j])
        if decision != decisions[0] and (j not in flips or abs(change) < abs(flips[j].change)):
            flips[j] = FeatureFlip(feature=names[j], value=value, change=change, new_class=int(decision))
    return sorted(flips.values(), key=lambda f: abs(f.change))
