"""How long the explain step will take, for the plan: counts of forward and backward passes per
explained sample times the model's unit costs (measured once, or a forward cost alone)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from nnassay.tasks.explain.attributions import GRADIENT_METHODS, Scorer
from nnassay.tasks.explain.faithfulness import MAX_STEPS
from nnassay.tasks.explain.tabular import GRID
from nnassay.tasks.methods.empirical.methods_whitebox import torch_threads

GRADIENT_PER_FORWARD = 10.0  # torch executor forward+backward vs one ORT forward (digits CNN: about 6)
# Overheads fitted on examples/digits/model.onnx (2 shared cores): the executor and the weight-shuffled
# copy; per method, Captum's set-up for both models and the bootstrap; per sample and method, the
# faithfulness call and the .npy files. Not included: importing Captum once per process (2-8 s).
FIXED_S = 0.1
PER_METHOD_S = {"integrated_gradients": 0.3, "saliency": 0.1}
PER_METHOD_BLACK_BOX_S = 0.05
PER_SAMPLE_METHOD_S = 0.02


@dataclass(frozen=True)
class UnitCosts:
    """Seconds per sample: one ONNX Runtime forward pass, one executor forward+backward pass."""

    forward_s: float
    gradient_s: float


def _per_sample(call: object, x: np.ndarray, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call(x)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best / len(x)


def measure_unit_costs(model: Scorer, x: np.ndarray, module: torch.nn.Module | None = None) -> UnitCosts:
    """Time a batch of ``x`` (e.g. 64 test rows) on ONNX Runtime and, if given, through the executor."""
    forward_s = _per_sample(model.logits, x)
    if module is None:
        return UnitCosts(forward_s, forward_s * GRADIENT_PER_FORWARD)

    def backward(batch: np.ndarray) -> None:
        xt = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).requires_grad_(True)
        module(xt).sum().backward()

    with torch_threads(x, len(x)):  # as the attributions run
        backward(x[:1])  # warm-up: the first backward pass allocates
        return UnitCosts(forward_s, _per_sample(backward, x))


def passes_per_sample(
    methods: Sequence[str], *, n_units: int, n_features: int, steps: int, random_orders: int, tabular: bool
) -> tuple[int, int]:
    """(ORT forwards, executor forward+backward passes) needed to explain one sample."""
    curve = (1 + random_orders) * 2 * (min(n_units, MAX_STEPS) + 1)
    forwards = len(methods) * curve + (n_features * GRID + 1 if tabular else 0)
    gradients = 0
    for method in methods:
        passes = steps if method == "integrated_gradients" else 1
        gradients += 2 * passes if method in GRADIENT_METHODS else 0  # the model, its shuffled copy
        forwards += 0 if method in GRADIENT_METHODS else 2 * (n_units + 1)
    return forwards, gradients


def estimate_seconds(
    costs: UnitCosts,
    *,
    samples: int,
    methods: Sequence[str] = GRADIENT_METHODS,
    n_units: int,
    n_features: int = 0,
    steps: int = 32,
    random_orders: int = 5,
) -> float:
    """Estimated wall time of ``explain_goal`` for ``samples`` explained samples (k + contrast)."""
    forwards, gradients = passes_per_sample(
        methods,
        n_units=n_units,
        n_features=n_features,
        steps=steps,
        random_orders=random_orders,
        tabular=n_features > 0,
    )
    overhead = FIXED_S + sum(PER_METHOD_S.get(m, PER_METHOD_BLACK_BOX_S) for m in methods)
    per_sample = (
        forwards * costs.forward_s + gradients * costs.gradient_s + len(methods) * PER_SAMPLE_METHOD_S
    )
    return overhead + samples * per_sample


IMAGE_UNITS = 64  # pixel regions of an image explanation (at most 8 x 8, ``default_patch``)
TABLE_FEATURES = 16  # features assumed for a table whose features the spec does not declare
PANEL_CELL_S = 0.03  # one cell (input, overlay or bars) of a goal's panel picture (matplotlib; 0.4-1.0 s
# for a 10-sample, 3-column panel on 2 cores at load 1-3, 2026-12-04)


def plan_seconds(
    costs: UnitCosts,
    *,
    goals: int,
    samples: int,
    tabular: bool,
    executor_ok: bool,
    n_features: int = 0,
) -> float:
    """The explain step's time if each of ``goals`` goals has failures to explain: ``samples`` (k and
    contrast) per goal, with the methods the step would use (gradients when the executor runs), and
    and one panel picture per goal (a cell per sample and method, and per sample its input)."""
    from nnassay.tasks.explain.attributions import black_box_method

    units = (n_features or TABLE_FEATURES) if tabular else IMAGE_UNITS
    methods = GRADIENT_METHODS if executor_ok else (black_box_method("tabular" if tabular else "image"),)
    per_goal = estimate_seconds(
        costs, samples=samples, methods=methods, n_units=units, n_features=units if tabular else 0
    )
    return goals * (per_goal + samples * (len(methods) + 1) * PANEL_CELL_S)
