"""Black-box attacks that only query the deployed model (ONNX Runtime): Square Attack, HopSkipJump.

Pure numpy. Images are handled as (N, C, H, W) in data space; ``logits`` is a function of such a
batch. Every perturbed input stays inside the eps ball around its original and inside the value
range. Randomness comes from the ``rng`` argument only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Logits = Callable[[np.ndarray], np.ndarray]


def margin(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True-class logit minus the best other logit; negative means misclassified."""
    true = logits[np.arange(len(y)), y]
    other = logits.copy()
    other[np.arange(len(y)), y] = -np.inf
    return true - other.max(axis=1)


def project(
    x_adv: np.ndarray, x: np.ndarray, eps: np.ndarray | float, norm: str, value_range: tuple[float, float]
) -> np.ndarray:
    """Project into the eps ball (L-inf or L2) around x and then into the value range.

    For a box range and a ball centred inside the box, clipping after the ball projection keeps the
    point in the ball (each coordinate only moves towards x), so both constraints hold.
    """
    eps_col = np.asarray(eps, np.float64).reshape(-1, *([1] * (x.ndim - 1)))
    delta = x_adv.astype(np.float64) - x
    if norm == "linf":
        delta = np.clip(delta, -eps_col, eps_col)
    else:
        norms = np.sqrt((delta**2).reshape(len(x), -1).sum(axis=1)).reshape(-1, *([1] * (x.ndim - 1)))
        delta = delta * np.where(norms > eps_col, eps_col / np.maximum(norms, 1e-12) * (1 - 1e-7), 1.0)
    return np.clip(x + delta, *value_range).astype(np.float32)


def _p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Square Attack's schedule of the square size (fraction of pixels), rescaled to 10,000 queries."""
    it = int(it / n_iters * 10000)
    for limit, div in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
        (8000, 256),
        (10000, 512),
    ):
        if it <= limit:
            return p_init / div
    return p_init / 512


@dataclass
class SquareState:
    """Best perturbed inputs and their margins while the attack runs."""

    x_best: np.ndarray
    margin_best: np.ndarray
    queries: np.ndarray


def square_linf(
    logits: Logits,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    *,
    n_queries: int,
    value_range: tuple[float, float],
    rng: np.random.Generator,
    p_init: float = 0.05,
) -> SquareState:
    """Square Attack, L-inf (Andriushchenko et al., ECCV 2020), on (N, C, H, W) inputs."""
    lo, hi = value_range
    n, c, h, w = x.shape
    x_best = np.clip(x + eps * rng.choice([-1.0, 1.0], size=(n, c, 1, w)), lo, hi).astype(np.float32)
    state = SquareState(x_best, margin(logits(x_best), y), np.ones(n, np.int64))
    for it in range(n_queries - 1):
        active = np.flatnonzero(state.margin_best > 0)
        if not len(active):
            break
        xs, best = x[active], state.x_best[active]
        side = int(round(np.sqrt(_p_selection(p_init, it, n_queries) * h * w)))
        side = min(max(side, 1), min(h, w) - 1) if min(h, w) > 1 else 1
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        delta = best - xs
        window = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        delta[window] = eps * rng.choice([-1.0, 1.0], size=(len(active), c, 1, 1))
        candidate = project(xs + delta, xs, eps, "linf", value_range)
        _accept(state, active, candidate, margin(logits(candidate), y[active]))
    return state


def _accept(state: SquareState, active: np.ndarray, candidate: np.ndarray, new_margin: np.ndarray) -> None:
    better = new_margin < state.margin_best[active]
    state.x_best[active[better]] = candidate[better]
    state.margin_best[active[better]] = new_margin[better]
    state.queries[active] += 1


def _rectangle(rows: int, cols: int) -> np.ndarray:
    delta = np.zeros((rows, cols))
    r_c, c_c = rows // 2 + 1, cols // 2 + 1
    r0, c0 = r_c - 1, c_c - 1
    for k in range(max(r_c, c_c)):
        delta[max(r0, 0) : min(r0 + 2 * k + 1, rows), max(c0, 0) : min(c0 + 2 * k + 1, cols)] += (
            1.0 / (k + 1) ** 2
        )
        r0, c0 = r0 - 1, c0 - 1
    return delta / max(np.sqrt((delta**2).sum()), 1e-12)


def _meta_gaussian(side: int, rng: np.random.Generator) -> np.ndarray:
    """Square Attack L2's pseudo-Gaussian square: two opposite-sign halves, randomly transposed."""
    delta = np.zeros((side, side))
    if side // 2:
        delta[: side // 2] = _rectangle(side // 2, side)
    delta[side // 2 :] = -_rectangle(side - side // 2, side)
    delta /= max(np.sqrt((delta**2).sum()), 1e-12)
    return delta.T if rng.random() > 0.5 else delta


def _l2_init(x: np.ndarray, eps: float, rng: np.random.Generator) -> np.ndarray:
    n, c, h, w = x.shape
    side = max(h // 5, 1)
    start = (h - side * 5) // 2 if h >= 5 else 0
    delta = np.zeros(x.shape)
    for r in range(start, h - side + 1, side):
        for col in range(start, w - side + 1, side):
            delta[:, :, r : r + side, col : col + side] += _meta_gaussian(side, rng)[None, None] * rng.choice(
                [-1.0, 1.0], size=(n, c, 1, 1)
            )
    norms = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
    return delta / np.maximum(norms, 1e-12) * eps


def square_l2(
    logits: Logits,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    *,
    n_queries: int,
    value_range: tuple[float, float],
    rng: np.random.Generator,
    p_init: float = 0.1,
) -> SquareState:
    """Square Attack, L2 (Andriushchenko et al., ECCV 2020), on (N, C, H, W) inputs."""
    n, c, h, w = x.shape
    x_best = project(x + _l2_init(x, eps, rng), x, eps, "l2", value_range)
    state = SquareState(x_best, margin(logits(x_best), y), np.ones(n, np.int64))
    for it in range(n_queries - 1):
        active = np.flatnonzero(state.margin_best > 0)
        if not len(active):
            break
        xs = x[active].astype(np.float64)
        delta = state.x_best[active] - xs
        side = max(int(round(np.sqrt(_p_selection(p_init, it, n_queries) * h * w))), 3)
        side = min(side + (side % 2 == 0), min(h, w) - 1)
        t1, l1 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        t2, l2 = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        win1 = (slice(None), slice(None), slice(t1, t1 + side), slice(l1, l1 + side))
        win2 = (slice(None), slice(None), slice(t2, t2 + side), slice(l2, l2 + side))
        mask = np.zeros_like(delta)
        mask[win1], mask[win2] = 1.0, 1.0
        norm_win = np.sqrt((delta[win1] ** 2).sum(axis=(2, 3), keepdims=True))
        norm_img = np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True))
        norm_both = np.sqrt(((delta * mask) ** 2).sum(axis=(2, 3), keepdims=True))
        new = _meta_gaussian(side, rng)[None, None] * rng.choice([-1.0, 1.0], size=(len(active), c, 1, 1))
        new = new + delta[win1] / (1e-10 + norm_win)
        new = (
            new
            / np.maximum(np.sqrt((new**2).sum(axis=(2, 3), keepdims=True)), 1e-12)
            * np.sqrt(np.maximum(eps**2 - norm_img**2, 0) / c + norm_both**2)
        )
        delta[win2] = 0.0
        delta[win1] = new
        scaled = delta / np.maximum(np.sqrt((delta**2).sum(axis=(1, 2, 3), keepdims=True)), 1e-12) * eps
        candidate = project(xs + scaled, xs, eps, "l2", value_range)
        _accept(state, active, candidate, margin(logits(candidate), y[active]))
    return state
