"""Adaptive multilevel splitting agrees with Monte Carlo where MC reaches, and with exact tails."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from stat_helpers import context, linear_onnx

from nnassay.tasks.methods.registry import get_method
from nnassay.tasks.methods.statistical.ams import ams

DIM = 8


def test_ams_method_agrees_with_monte_carlo(tmp_path: Path) -> None:
    sums = np.random.default_rng(0).uniform(-1, 1, (2_000_000, DIM)).sum(axis=1)
    t = float(np.quantile(sums, 1 - 1e-3))
    shift = (t - float(np.quantile(sums, 1 - 1e-2))) / DIM
    weights = np.stack([np.zeros(DIM), np.ones(DIM)])  # logit1 - logit0 = sum(x) - t
    path = linear_onnx(tmp_path / "sum.onnx", weights, np.array([0.0, -t]))
    x = np.stack([np.zeros(DIM), np.full(DIM, shift)])
    ctx = context(path, x, np.zeros(2), {"kind": "linf_ball", "eps": 1.0}, tmp_path / "out", seed=4)
    method = get_method("statistical.rare_event_ams")
    outcome = method.run(ctx, method.params_for(ctx.threat, {"particles": 1000, "mh_steps": 10}))
    reference = [math.log10(np.mean(sums >= t)), math.log10(np.mean(sums + DIM * shift >= t))]
    estimated = outcome.details["log10_violation_probability"]
    assert isinstance(estimated, list)
    assert estimated == pytest.approx(reference, abs=0.25)  # about -3 and -2
    assert outcome.metrics["worst_log10_violation_probability"].value == pytest.approx(
        max(float(v) for v in estimated)
    )  # type: ignore[arg-type]
    assert outcome.metrics["rare_event_robust_fraction"].successes == 0  # both far above 1e-6


def test_ams_reaches_an_exact_deep_tail() -> None:
    # S = sum of 8 U(0, 1): P(S >= 8 - u) = u^8 / 8! for u < 1 (Irwin-Hall tail), here 1e-6
    u = (1e-6 * math.factorial(DIM)) ** (1 / DIM)

    def score(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).sum(axis=1).astype(np.float64) - (DIM - u)

    low, high = np.zeros(DIM, np.float32), np.ones(DIM, np.float32)
    runs = [ams(score, low, high, np.random.default_rng(k), particles=1000, mh_steps=10) for k in range(3)]
    assert all(r.reached for r in runs)
    assert np.mean([r.log_p / math.log(10) for r in runs]) == pytest.approx(-6.0, abs=0.3)


def test_ams_stops_at_the_floor() -> None:
    def score(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).sum(axis=1).astype(np.float64) - 100.0  # never violated

    low, high = np.zeros(DIM, np.float32), np.ones(DIM, np.float32)
    run = ams(score, low, high, np.random.default_rng(0), particles=200, mh_steps=2, log_floor=math.log(1e-4))
    assert run.floored and not run.reached and run.log_p == pytest.approx(math.log(1e-4))
