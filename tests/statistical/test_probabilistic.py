"""Probabilistic robustness: closed-form flip probabilities of a linear classifier, sharding, params."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import norm
from stat_helpers import binary_case, context

from nnassay.schemas.results import TestStatus
from nnassay.tasks.methods.registry import get_method
from nnassay.tasks.methods.statistical.probabilistic import ProbabilisticParams
from nnassay.tasks.methods.statistical.sampling import Gaussian, class_counts

SIGMA = 0.5
NAME = "statistical.probabilistic_robustness"


def flips_of(outcome, ctx) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    artifact = outcome.artifacts[0]
    with np.load(io.BytesIO((ctx.run_dir / artifact.path).read_bytes())) as data:
        return data["flips"], data["upper_bound"]


def test_matches_closed_form_flip_probability(tmp_path: Path) -> None:
    path, x, y, w = binary_case(tmp_path, [0.2, 0.6, 1.0, 1.5, -0.8, 3.0])
    truth = norm.cdf(-np.abs([0.2, 0.6, 1.0, 1.5, -0.8, 3.0]) / (SIGMA * np.linalg.norm(w)))
    ctx = context(path, x, y, {"kind": "gaussian_noise", "sigma": SIGMA}, tmp_path / "out")
    method = get_method(NAME)
    draws = 20_000
    outcome = method.run(ctx, method.params_for(ctx.threat, {"draws": draws}))
    flips, upper = flips_of(outcome, ctx)
    estimate = flips / draws
    assert np.all(np.abs(estimate - truth) <= 4.5 * np.sqrt(truth * (1 - truth) / draws) + 1e-4)
    assert np.all(upper >= truth - 1e-4)  # one-sided 95% bounds; 6 samples, all hold at this size
    robust = upper <= 0.01
    assert robust.sum() == outcome.metrics["robust_sample_fraction"].successes
    assert set(np.flatnonzero(truth < 0.002)) <= set(np.flatnonzero(robust))
    assert not robust[truth > 0.05].any()
    mean = outcome.metrics["mean_flip_probability"]
    assert mean.interval is not None and mean.interval.low <= mean.value
    assert mean.value == pytest.approx(truth.mean(), abs=3e-3)
    assert outcome.status == TestStatus.COMPLETED and outcome.series[0].kind == "histogram"


def test_counts_do_not_depend_on_batch_or_sharding(tmp_path: Path) -> None:
    path, x, y, _ = binary_case(tmp_path, list(np.linspace(-1, 1, 9)))
    ctx = context(path, x, y, {"kind": "uniform_noise", "eps": 0.5}, tmp_path / "out", value_range=(-3, 3))
    method = get_method(NAME)
    params = method.params_for(ctx.threat, {"draws": 300, "tolerated_flip_probability": 0.05, "batch": 1000})
    whole = method.run(ctx, params)
    parts = [method.run_part(ctx, params, a, b) for a, b in ((0, 4), (4, 5), (5, 9))]  # type: ignore[attr-defined]
    assert method.merge_parts(ctx, params, parts[::-1]).metrics == whole.metrics  # type: ignore[attr-defined]
    small = class_counts(ctx.model, x, Gaussian(0.3), 250, seed=1, stage=0, batch=77)[0]
    large = class_counts(ctx.model, x, Gaussian(0.3), 250, seed=1, stage=0, batch=5000)[0]
    assert np.array_equal(small, large)


def test_linf_ball_is_uniform_in_ball_within_range(tmp_path: Path) -> None:
    path, x, y, _ = binary_case(tmp_path, [0.3, -0.3])
    ctx = context(path, x, y, {"kind": "linf_ball", "eps": 0.1}, tmp_path / "out")
    method = get_method(NAME)
    outcome = method.run(ctx, method.params_for(ctx.threat, {"draws": 400}))
    assert "uniform over the L-inf ball" in outcome.metrics["robust_sample_fraction"].description


def test_out_of_time_is_inconclusive(tmp_path: Path) -> None:
    path, x, y, _ = binary_case(tmp_path, [0.3, -0.3])
    ctx = context(path, x, y, {"kind": "gaussian_noise", "sigma": 0.1}, tmp_path / "out", time_s=0.0)
    method = get_method(NAME)
    outcome = method.run(ctx, method.params_for(ctx.threat, {}))
    assert outcome.status == TestStatus.INCONCLUSIVE and "time budget" in (outcome.reason or "")


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"bound_confidence": 1.0}, "bound_confidence"),
        ({"bound_confidence": 0.0}, "bound_confidence"),
        ({"draws": 100, "tolerated_flip_probability": 0.01}, "tolerated_flip_probability"),
        ({"draws": 100}, "tolerated_flip_probability"),
        ({"strength": 0.0}, "strength"),
    ],
)
def test_bad_params_name_the_field(fields: dict, where: str) -> None:
    with pytest.raises(ValidationError) as info:
        ProbabilisticParams(**fields)
    assert where in str(info.value)
