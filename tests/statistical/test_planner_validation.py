"""Bad method parameters reach the planner's message with the goal id and the field name."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import goal
from nnassay.schemas.goals import AssessmentSpec
from nnassay.tasks.errors import PlanError
from nnassay.tasks.pipeline.planning import PlanFacts, make_plan

FACTS = PlanFacts(
    spec_sha256="0" * 64, model_sha256="0" * 64, data_sha256="0" * 64, data_samples=500, data_kind="image"
)


def plan_with(method: str, threat: dict, metric: str, params: dict) -> str:
    spec = AssessmentSpec.model_validate(
        {
            "id": "s",
            "title": "t",
            "model": {"path": "m.onnx"},
            "data": {"path": "d.npz"},
            "goals": [goal("G3", threat, metric, ">=", 0.5, methods=[{"name": method, "params": params}])],
        }
    )
    with pytest.raises(PlanError) as info:
        make_plan(spec, FACTS)
    return str(info.value)


@pytest.mark.parametrize(
    "params, field", [({"n0": 5000}, "n0"), ({"sigma": 0}, "sigma"), ({"alpha": 1.5}, "alpha")]
)
def test_smoothing_params(params: dict, field: str, tmp_path: Path) -> None:
    message = plan_with(
        "statistical.randomized_smoothing", {"kind": "l2_ball", "eps": 0.25}, "certified_accuracy", params
    )
    assert "goal G3" in message and f"field '{field}'" in message


def test_probabilistic_confidence_outside_unit_interval() -> None:
    message = plan_with(
        "statistical.probabilistic_robustness",
        {"kind": "gaussian_noise", "sigma": 0.1},
        "robust_sample_fraction",
        {"bound_confidence": 1.2},
    )
    assert "goal G3" in message and "field 'bound_confidence'" in message
