"""Counterexample search (uniform sampling + PGD with restarts) and the ONNX Runtime re-check.

A candidate is returned only after ONNX Runtime (float32) re-executes it, it lies inside the
region's box and its outputs satisfy a violation clause with zero tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from nnassay.tasks.methods.formal.property import Halfspace, Property, Region

Tensor = torch.Tensor


@dataclass(frozen=True)
class Spec:
    """A region's output condition as a matrix: rows ``c_i . y <= rhs_i``, clauses OR'ed over AND-rows."""

    c: Tensor  # (m, n_outputs) float64
    rhs: Tensor  # (m,)
    clauses: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, region: Region, n_outputs: int) -> Spec:
        """Stack every halfspace of ``region``; clause ``i`` keeps the indices of its rows. A clause
        without halfspaces (say ``(<= Y_1 Y_1)``: no condition on the outputs) holds everywhere; it
        gets the row ``0 . y <= 0``, which is violated at every point and never proved."""
        rows: list[Halfspace] = []
        clauses = []
        for clause in region.disjuncts:
            clause = clause or (Halfspace(coeffs=np.zeros(n_outputs), rhs=0.0),)
            clauses.append(tuple(range(len(rows), len(rows) + len(clause))))
            rows += list(clause)
        c = torch.tensor(np.stack([h.coeffs for h in rows]), dtype=torch.float64)
        rhs = torch.tensor([h.rhs for h in rows], dtype=torch.float64)
        return cls(c, rhs, tuple(clauses))

    def objective(self, values: Tensor) -> Tensor:
        """``min_clause max_row (v_row - rhs_row)`` per sample for ``values`` (B, m) of ``C y``.

        For exact outputs, <= 0 means a violation; for lower bounds, > 0 proves there is none.
        """
        return self.clause_gaps(values).amin(1)

    def clause_gaps(self, values: Tensor) -> Tensor:
        """``max_row (v_row - rhs_row)`` per sample and clause (B, k)."""
        gap = values - self.rhs
        return torch.stack([gap[:, list(rows)].amax(1) for rows in self.clauses], 1)

    def of_outputs(self, y: Tensor) -> Tensor:
        """``objective`` of exact outputs (B, n_outputs)."""
        return self.objective(y.to(self.c.dtype) @ self.c.T)


class OrtChecker:
    """Re-executes candidates on ONNX Runtime (float32) and checks them against the property."""

    def __init__(self, onnx_path: str, prop: Property) -> None:
        from nnassay.tasks.engine.onnx_torch import ort_session

        self.session, self.prop = ort_session(onnx_path), prop
        self.calls = 0

    def confirm(
        self, xs: np.ndarray, box_low: np.ndarray, box_high: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The first candidate (float32, moved inside the box) that violates on ORT, else None."""
        from nnassay.tasks.engine.onnx_torch import run_ort
        from nnassay.tasks.methods.formal.command import check_counterexample

        x32 = inside_float32(np.asarray(xs, dtype=np.float64), box_low, box_high)
        ys = run_ort(self.session, x32)
        self.calls += len(x32)
        for x, y in zip(x32, ys, strict=True):
            if check_counterexample(self.prop, x, y, box_tol=0.0, out_tol=0.0) is None:
                return x.copy(), np.asarray(y).reshape(-1).copy()
        return None


def inside_float32(xs: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Round candidates to float32 and step any value that rounding pushed outside back into the box."""
    x32 = np.clip(xs, low, high).astype(np.float32)
    over, under = x32.astype(np.float64) > high, x32.astype(np.float64) < low
    x32 = np.where(over, np.nextafter(x32, np.float32(-np.inf)), x32)
    return np.where(under, np.nextafter(x32, np.float32(np.inf)), x32).astype(np.float32)


@dataclass
class FalsifyStats:
    """What one counterexample search did: model passes (forward, or forward and backward) and
    whether it stopped at its deadline before finishing."""

    passes: int = 0
    stopped_at_deadline: bool = False


def now() -> float:
    """The clock the deadlines are compared with (``time.monotonic``; tests substitute it)."""
    return time.monotonic()


SAMPLE_CHUNK = 32  # uniform samples per forward pass, the deadline checked between passes


def falsify_region(
    model: torch.nn.Module,
    spec: Spec,
    low: Tensor,
    high: Tensor,
    checker: OrtChecker,
    *,
    rng: torch.Generator,
    n_samples: int = 512,
    restarts: int = 16,
    steps: int = 40,
    deadline: float | None = None,
    stats: FalsifyStats | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Uniform sampling, then PGD from the best samples and random restarts, minimising the objective.

    ``model`` maps flat float64 inputs to outputs; ``low``/``high`` are (n,) float64. Every pass
    checks ``deadline`` (a ``now()`` value) first; at the deadline the search stops with what it
    has (``stats.stopped_at_deadline``), so a large model spends at most one pass beyond it.
    """
    stats = stats if stats is not None else FalsifyStats()

    def late() -> bool:
        if deadline is not None and now() > deadline:
            stats.stopped_at_deadline = True
        return stats.stopped_at_deadline

    lo_np, hi_np = low.cpu().numpy(), high.cpu().numpy()
    pool = low + (high - low) * torch.rand(n_samples, low.numel(), generator=rng, dtype=torch.float64)
    pool = torch.cat([((low + high) / 2).unsqueeze(0), pool])  # the centre first
    seen, objs = [], []
    with torch.no_grad():
        for chunk in pool.split(SAMPLE_CHUNK):
            if late():
                break
            stats.passes += 1
            objs.append(spec.of_outputs(model(chunk).reshape(len(chunk), -1)))
            seen.append(chunk)
    if not seen:
        return None
    xs, obj = torch.cat(seen), torch.cat(objs)
    found = _check_best(xs, obj, checker, lo_np, hi_np)
    if found is not None or late():
        return found
    starts = xs[obj.argsort()[:restarts]]
    x = pgd(model, spec, starts, low, high, steps=steps, deadline=deadline, stats=stats)
    if late():  # the last step's point is not evaluated: one more pass would overrun the deadline
        return None
    stats.passes += 1
    with torch.no_grad():
        obj = spec.of_outputs(model(x).reshape(len(x), -1))
    return _check_best(x, obj, checker, lo_np, hi_np)


def _check_best(
    xs: Tensor, obj: Tensor, checker: OrtChecker, low: np.ndarray, high: np.ndarray, keep: int = 8
) -> tuple[np.ndarray, np.ndarray] | None:
    """ORT-check the ``keep`` candidates with the smallest objective when any is close to violating."""
    order = obj.argsort()[:keep]
    scale = 1e-3 * (1 + obj.abs().min().item())
    if obj[order[0]].item() > scale:
        return None
    return checker.confirm(xs[order].detach().cpu().numpy(), low, high)


def pgd(
    model: Callable[[Tensor], Tensor],
    spec: Spec,
    x: Tensor,
    low: Tensor,
    high: Tensor,
    *,
    steps: int,
    deadline: float | None = None,
    stats: FalsifyStats | None = None,
) -> Tensor:
    """Signed-gradient descent on the objective inside the box, step size decaying from 1/4 of the width."""
    x = x.clone()
    width = high - low
    for t in range(steps):
        if deadline is not None and now() > deadline:
            if stats is not None:
                stats.stopped_at_deadline = True
            break
        if stats is not None:
            stats.passes += 1
        x.requires_grad_(True)
        obj = spec.of_outputs(model(x).reshape(len(x), -1))
        (grad,) = torch.autograd.grad(obj.sum(), x)
        step = 0.25 * width * (1 - t / steps) + 1e-3 * width
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - step * grad.sign(), low), high)
    return x.detach()
