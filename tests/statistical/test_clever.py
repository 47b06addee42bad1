"""CLEVER: exact on linear models (constant gradients), the Weibull fit, executor failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import weibull_max
from stat_helpers import binary_case, context

from nnassay.schemas.common import ClaimKind
from nnassay.schemas.results import TestStatus
from nnassay.tasks.methods.registry import get_method
from nnassay.tasks.methods.statistical.clever import estimate_lipschitz

MARGINS = [0.3, -0.5, 1.0, 2.0]


@pytest.mark.parametrize("kind, order", [("linf_ball", 1), ("l2_ball", 2)])
def test_linear_model_gives_exact_minimal_distortion(kind: str, order: int, tmp_path: Path) -> None:
    pytest.importorskip("nnassay.tasks.engine.onnx_torch")
    path, x, y, w = binary_case(tmp_path, MARGINS)
    ctx = context(path, x, y, {"kind": kind, "eps": 0.05}, tmp_path / "out")
    method = get_method("statistical.clever")
    params = method.params_for(ctx.threat, {"sample_radius": 10.0, "n_batches": 5, "batch_size": 8})
    outcome = method.run(ctx, params)
    assert outcome.status == TestStatus.COMPLETED, outcome.reason
    expected = np.abs(MARGINS) / np.linalg.norm(w, ord=order)  # dual norm of the gradient
    assert outcome.details["scores"] == pytest.approx(expected, rel=1e-4)
    assert outcome.metrics["fraction_clever_above_eps"].value == pytest.approx(np.mean(expected >= 0.05))
    assert all(m.claim == ClaimKind.ESTIMATE for m in outcome.metrics.values())
    assert (
        "not guarantees" in (outcome.reason or "")
        and "not a bound" in outcome.metrics["mean_clever_score"].description
    )


def test_executor_failure_is_inconclusive(tmp_path: Path) -> None:
    path, x, y, _ = binary_case(tmp_path, MARGINS)
    ctx = context(path, x, y, {"kind": "linf_ball", "eps": 0.05}, tmp_path / "out")

    def unsupported() -> None:
        raise NotImplementedError("op 'Loop' is not supported")

    ctx.model.torch_module = unsupported  # type: ignore[method-assign, assignment]
    method = get_method("statistical.clever")
    outcome = method.run(ctx, method.params_for(ctx.threat, {}))
    assert outcome.status == TestStatus.INCONCLUSIVE and "Loop" in (outcome.reason or "")


def test_reverse_weibull_recovers_the_maximum() -> None:
    rng = np.random.default_rng(0)
    estimates = [
        estimate_lipschitz(weibull_max.rvs(3.0, loc=5.0, scale=2.0, size=60, random_state=rng))
        for _ in range(10)
    ]
    assert all(e.value >= e.observed_max for e in estimates)
    assert np.median([e.value for e in estimates]) == pytest.approx(5.0, rel=0.1)
    constant = estimate_lipschitz(np.full(20, 2.5))
    assert constant.value == 2.5 and constant.ks_p_value is None
