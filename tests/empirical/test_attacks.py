"""Known answers for the attacks on a linear model, and the ONNX Runtime re-check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TinyCase, make_context
from schemas.results import TestStatus
from tasks.registry import get_method
from tests.empirical.linear import TRUE_L2, TRUE_LINF, make_linear_case


@pytest.fixture(scope="module")
def linear_case(tmp_path_factory: pytest.TempPathFactory) -> TinyCase:
    return make_linear_case(tmp_path_factory.mktemp("linear"))


def run(case: TinyCase, name: str, kind: str, eps: float, tmp: Path, **overrides: object):  # type: ignore[no-untyped-def]
    ctx = make_context(case, {"kind": kind, "eps": eps, "sweep": [eps / 2]}, tmp, seed=3)
    method = get_method(name)
    return method.run(ctx, method.params_for(ctx.threat, overrides)), ctx


@pytest.mark.parametrize("kind,true_eps", [("linf_ball", TRUE_LINF), ("l2_ball", TRUE_L2)])
def test_min_eps_finds_the_closed_form_radius(linear_case: TinyCase, tmp_path: Path, kind: str, true_eps: float) -> None:
    outcome, _ = run(linear_case, "empirical.min_eps", kind, true_eps, tmp_path, bisections=12)
    found = outcome.metrics["median_min_eps"].value
    assert true_eps * (1 - 1e-4) <= found <= true_eps * 1.01, (found, true_eps)
    assert outcome.details["torch_vs_ort_max_abs_deviation"] < 1e-5


@pytest.mark.parametrize("name", ["empirical.pgd_linf", "empirical.fgsm", "empirical.apgd",
                                  "empirical.autoattack_lite", "empirical.square_linf"])
def test_linf_attacks_break_just_above_and_never_below(linear_case: TinyCase, tmp_path: Path, name: str) -> None:
    above, _ = run(linear_case, name, "linf_ball", TRUE_LINF * 1.05, tmp_path / "a")
    below, _ = run(linear_case, name, "linf_ball", TRUE_LINF * 0.95, tmp_path / "b")
    assert above.metrics["robust_accuracy"].value == 0.0
    assert below.metrics["robust_accuracy"].value == 1.0 and not below.details["successful_indices"]


@pytest.mark.parametrize("name", ["empirical.pgd_l2", "empirical.apgd", "empirical.square_l2"])
def test_l2_attacks_break_just_above_and_never_below(linear_case: TinyCase, tmp_path: Path, name: str) -> None:
    slack = 1.25 if "square" in name else 1.05  # random search is not tight in L2 on 4 pixels
    above, _ = run(linear_case, name, "l2_ball", TRUE_L2 * slack, tmp_path / "a", **(
        {"queries": 3000} if "square" in name else {}))
    below, _ = run(linear_case, name, "l2_ball", TRUE_L2 * 0.95, tmp_path / "b")
    assert above.metrics["robust_accuracy"].value == 0.0
    assert below.metrics["robust_accuracy"].value == 1.0


def test_hop_skip_jump_approaches_the_boundary(linear_case: TinyCase, tmp_path: Path) -> None:
    outcome, _ = run(linear_case, "empirical.hop_skip_jump", "l2_ball", TRUE_L2, tmp_path, queries=600)
    found = outcome.metrics["median_min_eps"].value
    assert TRUE_L2 * (1 - 1e-4) <= found <= TRUE_L2 * 1.2, found


def test_curve_counts_smaller_eps_successes_and_is_monotone(image_case: TinyCase, tmp_path: Path) -> None:
    ctx = make_context(image_case, {"kind": "linf_ball", "eps": 0.1, "sweep": [0.02, 0.05]}, tmp_path, samples=40)
    method = get_method("empirical.pgd_linf")
    outcome = method.run(ctx, method.params_for(ctx.threat, {"steps": 10, "restarts": 1}))
    curve = outcome.series[0]
    assert curve.x == [0.0, 0.02, 0.05, 0.1] and all(np.diff(curve.y) <= 0)
    per_eps = outcome.details["broken_per_eps"]
    assert per_eps["0.02"] <= per_eps["0.05"] <= per_eps["0.1"]
    # every reported success is re-checked on ONNX Runtime
    rows = outcome.details["successful_indices"]
    assert rows and all(isinstance(r, int) for r in rows)


def test_unsupported_model_is_inconclusive_and_points_to_square(tmp_path: Path, image_case: TinyCase,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from tasks.model_io import ModelRunner

    def refuse(self: ModelRunner) -> None:
        raise RuntimeError("1 unsupported node(s): 'n0' (FancyOp)")

    monkeypatch.setattr(ModelRunner, "torch_module", refuse)
    ctx = make_context(image_case, {"kind": "linf_ball", "eps": 0.05}, tmp_path, samples=5)
    method = get_method("empirical.pgd_linf")
    outcome = method.run(ctx, method.params_for(ctx.threat, {}))
    assert outcome.status == TestStatus.INCONCLUSIVE
    assert "FancyOp" in outcome.reason and "square_linf" in outcome.reason
