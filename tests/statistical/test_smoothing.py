"""Randomized smoothing: closed-form radii of a linear classifier, PREDICT, and parameter checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy.stats import norm
from stat_helpers import binary_case, context

from nnassay.schemas.common import ClaimKind
from nnassay.tasks.methods.registry import get_method
from nnassay.tasks.methods.statistical.smoothing import ABSTAIN, SmoothingParams, certify, max_radius, predict
from nnassay.tasks.stats.intervals import lower_bounds

SIGMA = 0.5


def test_certified_radius_matches_distance_to_hyperplane(tmp_path: Path) -> None:
    margins = [0.3, -0.6, 1.0, 1.6, -2.0]
    path, x, y, w = binary_case(tmp_path, margins)
    ctx = context(path, x, y, {"kind": "l2_ball", "eps": 0.2}, tmp_path / "out")
    distance = np.abs(margins) / np.linalg.norm(w)  # the smoothed classifier's exact radius
    p_true = norm.cdf(distance / SIGMA)
    certs, done = certify(ctx.model, x, SIGMA, 100, 100_000, 0.001, seed=3)
    assert done == len(x) and np.array_equal(certs.prediction, y)
    assert np.all(certs.p_lower <= p_true + 1e-9)  # lower bounds (alpha = 0.001)
    assert np.all(certs.radius <= distance + 1e-6)
    spread = 4.5 * np.sqrt(100_000 * p_true * (1 - p_true))  # count noise around the expected count
    expected = [
        SIGMA
        * norm.ppf(lower_bounds(np.clip(np.round(p_true * 100_000 + d * spread), 0, 100_000), 100_000, 0.999))
        for d in (-1, 1)
    ]
    assert np.all((expected[0] - 1e-9 <= certs.radius) & (certs.radius <= expected[1] + 1e-9))


def test_abstains_on_the_boundary_and_predict_agrees(tmp_path: Path) -> None:
    path, x, y, w = binary_case(tmp_path, [0.0, 1.2, -1.2])
    ctx = context(path, x, y, {"kind": "l2_ball", "eps": 0.2}, tmp_path / "out")
    certs, _ = certify(ctx.model, x, SIGMA, 100, 2000, 0.001, seed=0)
    assert certs.prediction[0] == ABSTAIN and certs.radius[0] == 0.0
    smoothed = predict(ctx.model, x, SIGMA, 2000, 0.001, seed=0)
    assert smoothed[0] == ABSTAIN and list(smoothed[1:]) == list(y[1:])


def test_method_reports_the_smoothed_classifier(tmp_path: Path) -> None:
    path, x, y, w = binary_case(tmp_path, list(np.linspace(-2, 2, 12)))
    ctx = context(path, x, y, {"kind": "l2_ball", "eps": 0.3}, tmp_path / "out")
    method = get_method("statistical.randomized_smoothing")
    params = method.params_for(ctx.threat, {"sigma": SIGMA, "n": 4000, "predict": True})
    outcome = method.run(ctx, params)
    distance = np.abs(np.linspace(-2, 2, 12)) / np.linalg.norm(w)
    accuracy = outcome.metrics["certified_accuracy"]
    assert accuracy.claim == ClaimKind.CERTIFICATE
    assert accuracy.successes is not None
    assert accuracy.successes <= int((distance >= 0.3).sum())
    assert accuracy.successes >= int((distance >= 0.3 + 0.1 * SIGMA).sum())
    assert "smoothed classifier" in accuracy.description and "different classifier" in (outcome.reason or "")
    assert outcome.details["certified_classifier"] == "smoothed" and "smoothed_accuracy" in outcome.details
    curve = outcome.series[0]
    assert curve.x[0] == 0.0 and np.all(np.diff(curve.y) <= 0) and 0.3 in curve.x
    sharded = [method.run_part(ctx, params, a, b) for a, b in ((0, 5), (5, 12))]  # type: ignore[attr-defined]
    assert method.merge_parts(ctx, params, sharded).metrics == outcome.metrics  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "fields, where",
    [
        ({"n": 50, "n0": 100}, "n0"),
        ({"sigma": 0.0}, "sigma"),
        ({"alpha": 1.0}, "alpha"),
        ({"n": 2, "n0": 1, "alpha": 0.2}, "alpha"),
        ({"n": 50}, "n0"),
    ],
)
def test_bad_params_name_the_field(fields: dict, where: str) -> None:
    with pytest.raises(ValidationError) as info:
        SmoothingParams(**fields)
    assert any(e["loc"] == (where,) for e in info.value.errors())


def test_eps_beyond_reach_is_rejected() -> None:
    from nnassay.schemas.threats import L2Ball

    assert max_radius(0.25, 1000, 0.001) == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 1000)))
    with pytest.raises(ValueError, match="field 'sigma'.*largest certifiable"):
        get_method("statistical.randomized_smoothing").params_for(
            L2Ball(kind="l2_ball", eps=1.0, sweep=None), {}
        )
