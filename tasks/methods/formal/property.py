"""The property type shared by the VNN-LIB parser, the verifier and the assessment methods.

A ``Property`` is a union of input boxes, each with the output condition that counts as a
*violation* there (VNN-LIB semantics: ``sat`` means some input of some region violates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """An input region, flattened row-major like the ONNX input."""

    lower: np.ndarray  # float64, shape (n_inputs,)
    upper: np.ndarray


@dataclass(frozen=True)
class Halfspace:
    """``sum_j coeffs[j] * Y_j <= rhs`` (the violation side)."""

    coeffs: np.ndarray  # float64, shape (n_outputs,)
    rhs: float


@dataclass(frozen=True)
class Region:
    """One input box with the output condition that counts as a violation there."""

    box: Box
    disjuncts: tuple[tuple[Halfspace, ...], ...]  # OR over AND-clauses of halfspaces


@dataclass(frozen=True)
class Property:
    """VNN-LIB semantics: sat = some input of some region violates."""

    regions: tuple[Region, ...]
    n_inputs: int
    n_outputs: int
    source: str = ""


def local_robustness(
    x: np.ndarray,
    label: int,
    eps: float,
    n_classes: int,
    lower: float | np.ndarray,
    upper: float | np.ndarray,
) -> Property:
    """L-inf local robustness of ``x`` at radius ``eps``, clipped to ``[lower, upper]``.

    Violation: some class ``j != label`` with ``Y_label - Y_j <= 0``.
    """
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), flat.shape)
    hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), flat.shape)
    box = Box(lower=np.clip(flat - eps, lo, hi), upper=np.clip(flat + eps, lo, hi))
    return robustness_property(box, label, n_classes, f"local_robustness(label={label}, eps={eps:g})")


def robustness_property(box: Box, label: int, n_classes: int, source: str) -> Property:
    """Local robustness over any input box: violated where some class ``j != label`` has
    ``Y_label - Y_j <= 0``."""
    clauses = []
    for j in range(n_classes):
        if j != label:
            coeffs = np.zeros(n_classes)
            coeffs[label], coeffs[j] = 1.0, -1.0
            clauses.append((Halfspace(coeffs=coeffs, rhs=0.0),))
    region = Region(box=box, disjuncts=tuple(clauses))
    return Property(regions=(region,), n_inputs=box.lower.size, n_outputs=n_classes, source=source)
