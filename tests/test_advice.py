"""Advice for an inconclusive goal names what actually limited it: the goal's sample budget or the data."""

from __future__ import annotations

import json
from pathlib import Path

from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.tasks.pipeline.interpret import interpret_goal

EXAMPLE = Path(__file__).parent / "golden" / "digits_evidence.json"


def g1(budget: dict[str, object]):
    ev = EvidenceBundle.model_validate_json(EXAMPLE.read_text())
    goal = next(g for g in ev.spec.goals if g.id == "G1")
    data = json.loads(goal.model_dump_json())
    data["criterion"]["threshold"] = 0.97  # inside G1's 95% interval of about [0.96, 0.99]
    data["budget"] = {**data["budget"], **budget}
    goal = type(goal).model_validate(data)
    return interpret_goal(goal, [r for r in ev.results if r.goal_id == "G1"])


def test_a_goal_stopped_by_its_own_budget_is_told_to_raise_it() -> None:
    verdict = g1({"samples": 540})
    assert verdict.verdict == Verdict.INCONCLUSIVE and verdict.samples_needed
    assert "raise goals[G1].budget.samples from 540 to about" in verdict.recommendation
    assert str(540 + verdict.samples_needed) in verdict.recommendation


def test_a_goal_that_used_all_the_data_is_told_to_add_samples() -> None:
    verdict = g1({"samples": None})
    assert verdict.verdict == Verdict.INCONCLUSIVE
    assert verdict.recommendation.startswith(f"add about {verdict.samples_needed} test samples")
    roomy = g1({"samples": 5000})  # the budget allowed more than the data holds
    assert "budget.samples" not in roomy.recommendation
