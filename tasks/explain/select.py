"""Which samples to explain: up to k failures and a few correctly handled ones, chosen
deterministically (the lowest indices, or a seeded draw kept in index order)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    """Rows of the test data to explain, each group in ascending order."""

    failures: tuple[int, ...]
    contrast: tuple[int, ...]


def _pick(candidates: Sequence[int] | np.ndarray, k: int, seed: int | None) -> tuple[int, ...]:
    unique = np.unique(np.asarray(candidates, dtype=np.int64))
    if k <= 0 or not len(unique):
        return ()
    if seed is None or len(unique) <= k:
        return tuple(int(i) for i in unique[:k])
    chosen = np.random.default_rng(seed).choice(unique, size=k, replace=False)
    return tuple(int(i) for i in np.sort(chosen))


def select_samples(
    failed: Sequence[int] | np.ndarray,
    correct: Sequence[int] | np.ndarray,
    *,
    k: int = 8,
    contrast: int = 2,
    seed: int | None = None,
) -> Selection:
    """Up to ``k`` failed rows and ``contrast`` correct rows (never a failed one).

    Without a seed the lowest indices are taken, so the same failures are explained on every run;
    with a seed a reproducible draw spreads the choice over the whole set.
    """
    if k < 0 or contrast < 0:
        raise ValueError(f"k and contrast must be 0 or more, got k={k}, contrast={contrast}")
    failures = _pick(failed, k, seed)
    clean = np.setdiff1d(np.asarray(correct, dtype=np.int64), np.asarray(failed, dtype=np.int64))
    return Selection(failures, _pick(clean, contrast, None if seed is None else seed + 1))
