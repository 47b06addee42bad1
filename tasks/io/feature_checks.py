"""Check a tabular feature declaration (``data.features``) against the data it describes.

Every mismatch is collected and reported at once, each naming its spec field and the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnassay.schemas.goals import FeatureSpec
from nnassay.tasks.errors import FeatureError


def check_features(
    features: Sequence[FeatureSpec], x: np.ndarray, names: Sequence[str], path: Path, *, csv: bool
) -> None:
    """Raise one FeatureError listing every declared feature that does not fit x (samples, features)."""
    if not features:
        return
    if x.ndim != 2:
        raise FeatureError(
            f"{len(features)} tabular features are declared but the data is not a table "
            f"(samples of shape {list(x.shape[1:])})",
            file=str(path),
            field="data.features",
            fix="remove data.features (it describes tabular data only)",
        )
    problems = _count_and_names(features, x.shape[1], names, csv=csv)
    if not problems:
        index = {n: i for i, n in enumerate(names)}
        for k, spec in enumerate(features):
            column = index.get(spec.name, k)
            problems += [f"data.features[{k}] ({spec.name!r}): {p}" for p in _values(spec, x[:, column])]
    if problems:
        raise FeatureError(
            "the feature declaration does not match the data:\n  - " + "\n  - ".join(problems),
            file=str(path),
            field="data.features",
            fix="correct each data.features entry named above (name, min/max or range, kind, values), "
            "or remove it to use the data's own range and spread",
        )


def _count_and_names(
    features: Sequence[FeatureSpec], n: int, names: Sequence[str], *, csv: bool
) -> list[str]:
    declared = [f.name for f in features]
    problems = []
    if len(features) > n:
        problems.append(
            f"data.features declares {len(features)} features but the data has {n} ({list(names)})"
        )
    repeated = sorted({d for d in declared if declared.count(d) > 1})
    if repeated:
        problems.append(f"data.features names {repeated} more than once")
    positional = not csv and len(features) == n  # npz: every feature declared, in column order
    unknown = [(k, d) for k, d in enumerate(declared) if d not in names and not positional]
    what = "CSV columns (label column excluded)" if csv else "feature indices of the npz as text"
    problems += [f"data.features[{k}].name {d!r} is not one of the {what}: {list(names)}" for k, d in unknown]
    return problems


def _slack(bound: float) -> float:
    """Float32 rounding of the stored data (values are checked as the model receives them)."""
    return 1e-6 * max(abs(bound), 1.0)


def _values(spec: FeatureSpec, column: np.ndarray) -> list[str]:
    low, high = spec.bounds()
    seen_low, seen_high = float(column.min()), float(column.max())
    problems = []
    if (
        low is not None
        and seen_low < low - _slack(low)
        or high is not None
        and seen_high > high + _slack(high)
    ):
        problems.append(
            f"the data spans [{seen_low:.6g}, {seen_high:.6g}], outside the declared min/max (range) "
            f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]; widen them"
        )
    if spec.kind == "integer" and not np.all(np.equal(np.mod(column, 1), 0)):
        problems.append("kind is 'integer' but the data holds fractional values; use kind 'numeric'")
    if spec.kind == "categorical" and spec.values is not None:
        missing = sorted(set(np.unique(column).tolist()) - set(spec.values))
        if missing:
            problems.append(
                f"the data holds codes {missing[:10]} not in the declared values {spec.values}; add them"
            )
    return problems
