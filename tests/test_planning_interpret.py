"""Planning (pure, collects every problem) and interpretation (interval against threshold)."""

from __future__ import annotations

import pytest

from conftest import goal
from nnassay.schemas.common import ClaimKind, Interval, Measurement, Verdict
from nnassay.schemas.goals import AssessmentSpec, Criterion
from nnassay.tasks.errors import PlanError
from nnassay.tasks.pipeline.interpret import decide
from nnassay.tasks.pipeline.planning import PlanFacts, derive_seed, make_plan

FACTS = PlanFacts(spec_sha256="s", model_sha256="m", data_sha256="d", data_samples=500, data_kind="image")


def spec_with(*goals: dict) -> AssessmentSpec:
    return AssessmentSpec.model_validate(
        {
            "id": "x",
            "title": "t",
            "model": {"path": "m.onnx"},
            "data": {"path": "d.npz"},
            "goals": list(goals),
        }
    )


def test_plan_has_one_primary_test_per_goal_with_stable_seeds() -> None:
    spec = spec_with(
        goal("A", {"kind": "none"}, "accuracy", ">=", 0.9),
        goal("B", {"kind": "gaussian_noise", "sigma": 0.1}, "label_flip_rate", "<=", 0.1),
    )
    plan = make_plan(spec, FACTS)
    assert [t.test_id for t in plan.tests] == ["A/statistical.clean_accuracy", "B/statistical.noise_accuracy"]
    assert all(t.primary for t in plan.tests)
    assert plan == make_plan(spec, FACTS)  # pure
    assert plan.tests[0].seed == derive_seed(0, "A/statistical.clean_accuracy") != plan.tests[1].seed
    assert plan.tests[1].params["strength"] == 0.1 and 0.1 in plan.tests[1].params["sweep"]


def test_plan_collects_every_problem_at_once() -> None:
    spec = spec_with(
        goal("A", {"kind": "none"}, "smiles", ">=", 0.9),
        goal("B", {"kind": "none"}, "accuracy", ">=", 0.9, methods=[{"name": "statistical.nope"}]),
        goal(
            "C",
            {"kind": "gaussian_noise", "sigma": 0.1},
            "accuracy",
            ">=",
            0.9,
            methods=[{"name": "statistical.noise_accuracy", "params": {"draws": 0}}],
        ),
    )
    with pytest.raises(PlanError) as err:
        make_plan(spec, FACTS)
    text = str(err.value)
    assert "goal A: no method measures 'smiles'" in text and "accuracy" in text
    assert "goal B: unknown method 'statistical.nope'" in text
    assert "goal C: method 'statistical.noise_accuracy': field 'draws'" in text


def test_plan_notes_a_data_set_too_small_to_ever_pass() -> None:
    spec = spec_with(goal("A", {"kind": "none"}, "accuracy", ">=", 0.999))
    plan = make_plan(spec, FACTS)
    assert plan.tests[0].samples_needed and plan.tests[0].samples_needed > 500
    assert any(
        n.startswith("goal A (accuracy, 500 samples") and "a pass is impossible" in n for n in plan.notes
    )


def rate(value: float, low: float, high: float, n: int = 100) -> Measurement:
    return Measurement(
        value=value,
        interval=Interval(low=low, high=high, confidence=0.95, method="cp"),
        n=n,
        successes=round(value * n),
        is_rate=True,
        claim=ClaimKind.BOUND,
    )


@pytest.mark.parametrize(
    ("measured", "comparator", "threshold", "verdict"),
    [
        (rate(0.95, 0.91, 0.98), ">=", 0.88, Verdict.PASS),
        (rate(0.80, 0.71, 0.87), ">=", 0.88, Verdict.FAIL),
        (rate(0.90, 0.86, 0.94), ">=", 0.88, Verdict.INCONCLUSIVE),
        (rate(0.20, 0.12, 0.28), "<=", 0.05, Verdict.FAIL),
        (rate(0.01, 0.00, 0.04), "<=", 0.05, Verdict.PASS),
        (rate(0.30, 0.25, 0.35), "<=", 0.32, Verdict.INCONCLUSIVE),
    ],
)
def test_decide_uses_the_whole_interval(
    measured: Measurement, comparator: str, threshold: float, verdict: Verdict
) -> None:
    got, reason, needed = decide(measured, Criterion(comparator=comparator, threshold=threshold))
    assert got == verdict, reason
    if verdict == Verdict.INCONCLUSIVE:
        assert needed and needed > 0 and "more samples" in reason


def test_decide_without_interval_says_so() -> None:
    verdict, reason, _ = decide(
        Measurement(value=1.0, claim=ClaimKind.PROOF), Criterion(comparator=">=", threshold=1)
    )
    assert verdict == Verdict.PASS and "no interval" in reason
