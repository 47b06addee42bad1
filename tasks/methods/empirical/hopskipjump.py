"""HopSkipJump: a decision-based minimal-perturbation attack that only sees predicted labels.

Chen, Jordan & Wainwright, "HopSkipJumpAttack: A Query-Efficient Decision-Based Attack", IEEE S&P
2020. Untargeted, L2 or L-inf; one sample at a time, each query is a batch of label predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

IsAdversarial = Callable[[np.ndarray], np.ndarray]  # (M, *shape) -> bool (M,)


@dataclass
class HsjResult:
    """The closest adversarial input found (None when none was found) and what it cost."""

    x_adv: np.ndarray | None
    distance: float
    queries: int


class _Oracle:
    """Counts queries and stops answering 'adversarial' once the budget is spent."""

    def __init__(self, is_adv: IsAdversarial, budget: int) -> None:
        self.is_adv, self.budget, self.used = is_adv, budget, 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.used += len(batch)
        return self.is_adv(batch.astype(np.float32))

    @property
    def spent(self) -> bool:
        return self.used >= self.budget


def _distance(a: np.ndarray, b: np.ndarray, norm: str) -> float:
    diff = (a - b).ravel()
    return float(np.abs(diff).max() if norm == "linf" else np.sqrt((diff**2).sum()))


def _boundary(oracle: _Oracle, x: np.ndarray, x_adv: np.ndarray, norm: str, theta: float) -> np.ndarray:
    """Binary search between x and an adversarial point to the decision boundary (adversarial side)."""
    high = 1.0 if norm == "l2" else _distance(x_adv, x, "linf")
    low = 0.0
    tolerance = theta if norm == "l2" else theta * high
    best = x_adv
    while high - low > max(tolerance, 1e-7) and not oracle.spent:
        mid = (low + high) / 2
        point = (1 - mid) * x + mid * x_adv if norm == "l2" else np.clip(x_adv, x - mid, x + mid)
        if oracle(point[None])[0]:
            high, best = mid, point
        else:
            low = mid
    return best


def _initial(
    oracle: _Oracle,
    x: np.ndarray,
    value_range: tuple[float, float],
    rng: np.random.Generator,
    tries: int = 100,
) -> np.ndarray | None:
    for _ in range(max(1, tries // 20)):
        noise = rng.uniform(*value_range, size=(20, *x.shape))
        hits = np.flatnonzero(oracle(noise))
        if len(hits):
            return noise[hits[0]]
    return None


def _gradient(
    oracle: _Oracle,
    x_b: np.ndarray,
    delta: float,
    evals: int,
    norm: str,
    value_range: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    shape = (evals, *x_b.shape)
    u = rng.standard_normal(shape) if norm == "l2" else rng.uniform(-1, 1, shape)
    u /= np.sqrt((u**2).reshape(evals, -1).sum(axis=1)).reshape(-1, *([1] * x_b.ndim))
    perturbed = np.clip(x_b + delta * u, *value_range)
    u = (perturbed - x_b) / delta
    phi = 2.0 * oracle(perturbed).astype(np.float64) - 1.0
    if abs(phi.mean()) == 1.0:
        grad = phi.mean() * u.mean(axis=0)
    else:
        grad = ((phi - phi.mean()).reshape(-1, *([1] * x_b.ndim)) * u).mean(axis=0)
    grad /= max(np.sqrt((grad**2).sum()), 1e-12)
    return grad if norm == "l2" else np.sign(grad)


def hop_skip_jump(
    is_adv: IsAdversarial,
    x: np.ndarray,
    *,
    norm: str,
    max_queries: int,
    value_range: tuple[float, float],
    rng: np.random.Generator,
    init_evals: int = 100,
    max_evals: int = 1000,
    gamma: float = 1.0,
) -> HsjResult:
    """Smallest adversarial perturbation of one input ``x`` found within ``max_queries`` queries."""
    oracle = _Oracle(is_adv, max_queries)
    x = x.astype(np.float64)
    d = x.size
    theta = gamma / (d * np.sqrt(d)) if norm == "l2" else gamma / d**2
    start = _initial(oracle, x, value_range, rng)
    if start is None:
        return HsjResult(None, float("inf"), oracle.used)
    x_b = _boundary(oracle, x, start, norm, theta)
    dist = _distance(x_b, x, norm)
    it = 0
    while not oracle.spent:
        it += 1
        delta = (
            0.1 * (value_range[1] - value_range[0])
            if it == 1
            else (np.sqrt(d) * theta * dist if norm == "l2" else d * theta * dist)
        )
        evals = int(min(init_evals * np.sqrt(it), max_evals, max(oracle.budget - oracle.used, 1)))
        update = _gradient(oracle, x_b, max(delta, 1e-8), evals, norm, value_range, rng)
        step = dist / np.sqrt(it)
        for _ in range(25):
            if oracle.spent:
                break
            candidate = np.clip(x_b + step * update, *value_range)
            if oracle(candidate[None])[0]:
                x_b = _boundary(oracle, x, candidate, norm, theta)
                break
            step /= 2
        dist = _distance(x_b, x, norm)
    return HsjResult(x_b.astype(np.float32), dist, oracle.used)
