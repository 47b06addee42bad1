"""Lifecycle regression checks: compare each goal's metric with the previous assessment. Pure.

Where both assessments measured the same samples the same way (same data digest, same planned test
and per-sample outcomes stored by the method), the comparison is paired (McNemar exact test and a
paired difference interval); otherwise it compares the two rates with their counts. A significant
change in the undesirable direction is a regression, even when the goal still passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnassay.schemas.evidence import EvidenceBundle, GoalVerdict
from nnassay.schemas.plan import AssessmentPlan, TestSpec
from nnassay.schemas.results import MethodResult
from nnassay.tasks.methods.statistical.core import unpack_outcomes
from nnassay.tasks.stats.contrast import Contrast, compare_paired, compare_rates


@dataclass(frozen=True)
class GoalChange:
    """How one goal's metric moved since the previous assessment."""

    goal_id: str
    metric: str
    previous: float | None
    current: float | None
    test: str  # 'mcnemar-exact' (paired), 'fisher-exact', or 'none: <why>'
    difference: float | None = None  # current - previous
    interval: tuple[float, float] | None = None
    p_value: float | None = None
    significant: bool = False
    regression: bool = False
    improvement: bool = False
    samples: int | None = None

    def finding(self, since: str) -> str | None:
        """One sentence for GoalVerdict.findings, or None when nothing changed significantly."""
        if not (self.regression or self.improvement):
            return None
        kind, verb = ("regression", "worsened") if self.regression else ("improvement", "improved")
        low, high = self.interval or (math.nan, math.nan)
        paired = f", same {self.samples} paired outcomes" if self.test.startswith("mcnemar") else ""
        return (
            f"{kind}: {self.metric} {verb} from {self.previous:.4g} to {self.current:.4g} since {since}"
            f" (difference {self.difference:+.4g}, interval [{low:.4g}, {high:.4g}], {self.test}"
            f" p = {self.p_value:.3g}{paired})"
        )


@dataclass(frozen=True)
class Comparison:
    """The regression check of one assessment against the previous one of the same spec."""

    sequence: int  # 1 for the first assessment of the spec id, then 2, 3, ...
    previous_run_id: str | None
    previous_assessment_id: str | None
    previous_model_sha256: str | None
    model_sha256: str
    goals: list[GoalChange] = field(default_factory=list)

    @property
    def model_changed(self) -> bool:
        """True when the previous assessment saw a different model file."""
        return self.previous_model_sha256 is not None and self.previous_model_sha256 != self.model_sha256

    @property
    def regressions(self) -> list[str]:
        """Goal ids with a significant change in the undesirable direction."""
        return [g.goal_id for g in self.goals if g.regression]

    def findings(self, goal_id: str) -> list[str]:
        """Findings of one goal: model change, regression or improvement."""
        since = f"assessment {self.previous_assessment_id}"
        out = []
        if self.model_changed:
            out.append(
                f"model changed since {since}: sha256 {str(self.previous_model_sha256)[:12]}..."
                f" -> {self.model_sha256[:12]}..."
            )
        out += [f for g in self.goals if g.goal_id == goal_id and (f := g.finding(since))]
        return out

    def metrics(self) -> dict[str, float]:
        """MLflow metrics logged at step = sequence (the trend across assessments)."""
        found = {
            "lifecycle.sequence": float(self.sequence),
            "lifecycle.regressions": float(len(self.regressions)),
        }
        for g in self.goals:
            prefix = f"lifecycle.goal.{g.goal_id}"
            values = {
                f"{prefix}.{g.metric}": g.current,
                f"{prefix}.difference": g.difference,
                f"{prefix}.p_value": g.p_value,
                f"{prefix}.regression": float(g.regression),
            }
            found |= {k: float(v) for k, v in values.items() if v is not None and math.isfinite(v)}
        return found

    def tags(self) -> dict[str, str]:
        """MLflow tags of the check."""
        tags = {
            "nnassay.lifecycle.sequence": str(self.sequence),
            "nnassay.lifecycle.previous_run_id": self.previous_run_id or "",
            "nnassay.model_changed": str(self.model_changed).lower(),
            "nnassay.regressions": ",".join(self.regressions),
        }
        tags |= {f"nnassay.regression.{g.goal_id}": str(g.regression).lower() for g in self.goals}
        return tags


def compare(
    plan: AssessmentPlan,
    results: list[MethodResult],
    verdicts: list[GoalVerdict],
    previous: EvidenceBundle | None,
    *,
    sequence: int,
    previous_run_id: str | None = None,
) -> Comparison:
    """Compare every goal with the previous assessment's evidence (None: first assessment)."""
    base = Comparison(
        sequence=sequence,
        previous_run_id=previous_run_id,
        previous_assessment_id=previous.provenance.assessment_id if previous else None,
        previous_model_sha256=previous.plan.model_sha256 if previous else None,
        model_sha256=plan.model_sha256,
    )
    changes = [compare_goal(v, plan, results, previous) for v in verdicts]
    return Comparison(**{**base.__dict__, "goals": changes})


def with_findings(verdicts: list[GoalVerdict], comparison: Comparison) -> list[GoalVerdict]:
    """The verdicts with the comparison's findings appended to each goal's findings."""
    return [
        v.model_copy(update={"findings": [*v.findings, *comparison.findings(v.goal_id)]}) for v in verdicts
    ]


def compare_goal(
    verdict: GoalVerdict, plan: AssessmentPlan, results: list[MethodResult], previous: EvidenceBundle | None
) -> GoalChange:
    """The change of one goal's metric; paired when the same samples were measured the same way."""
    current = verdict.measured.value if verdict.measured else None
    change: dict[str, Any] = {"goal_id": verdict.goal_id, "metric": verdict.metric, "current": current}
    old = _previous_verdict(verdict, previous)
    if previous is None or old is None or old.measured is None or verdict.measured is None:
        return GoalChange(**change, previous=None, test="none: no previous measurement of this goal")
    change["previous"] = old.measured.value
    test_now, test_then = _primary(verdict, plan), _primary(old, previous.plan)
    if test_now is None or test_then is None or _setup(test_now) != _setup(test_then):
        return GoalChange(**change, test="none: the goal's threat, method or criterion changed")
    confidence = verdict.criterion.confidence
    pair = _paired_outcomes(verdict, test_now, plan, results, test_then, previous)
    if pair is not None:
        return _judge(change, compare_paired(pair[0], pair[1], confidence), verdict, len(pair[0]))
    m_now, m_then = verdict.measured, old.measured
    if (
        m_now.is_rate
        and m_then.is_rate
        and None not in (m_now.successes, m_now.n, m_then.successes, m_then.n)
    ):
        rates = compare_rates(m_then.successes, m_then.n, m_now.successes, m_now.n, confidence)  # type: ignore[arg-type]
        return _judge(change, rates, verdict, None)
    return GoalChange(
        **change,
        difference=verdict.measured.value - old.measured.value,
        test="none: the metric is not a rate with counts",
    )


def _judge(
    change: dict[str, Any], contrast: Contrast, verdict: GoalVerdict, samples: int | None
) -> GoalChange:
    worse = (
        contrast.difference < 0 if verdict.criterion.comparator.higher_is_better else contrast.difference > 0
    )
    significant = contrast.significant
    return GoalChange(
        **change,
        test=contrast.test,
        difference=contrast.difference,
        interval=(contrast.interval.low, contrast.interval.high),
        p_value=contrast.p_value,
        significant=significant,
        regression=significant and worse,
        improvement=significant and not worse,
        samples=samples,
    )


def _previous_verdict(verdict: GoalVerdict, previous: EvidenceBundle | None) -> GoalVerdict | None:
    if previous is None:
        return None
    return next(
        (v for v in previous.verdicts if v.goal_id == verdict.goal_id and v.metric == verdict.metric), None
    )


def _primary(verdict: GoalVerdict, plan: AssessmentPlan) -> TestSpec | None:
    return next((t for t in plan.tests if verdict.tests and t.test_id == verdict.tests[0]), None)


def _setup(test: TestSpec) -> tuple[str, str, str, str]:
    """What must be equal for two measurements of a goal to be comparable at all."""
    return test.method, test.metric, test.threat.model_dump_json(), test.criterion.model_dump_json()


def _paired_outcomes(
    verdict: GoalVerdict,
    test_now: TestSpec,
    plan: AssessmentPlan,
    results: list[MethodResult],
    test_then: TestSpec,
    previous: EvidenceBundle,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(previous, current) per-sample outcomes when both runs measured the same samples the same way."""
    same_draws = (test_now.seed, test_now.samples, test_now.params) == (
        test_then.seed,
        test_then.samples,
        test_then.params,
    )
    if plan.data_sha256 != previous.plan.data_sha256 or not same_draws:
        return None
    now = _outcomes(results, test_now.test_id, verdict.metric)
    then = _outcomes(previous.results, test_then.test_id, verdict.metric)
    if now is None or then is None or len(now) != len(then):
        return None
    return then, now


def _outcomes(results: list[MethodResult], test_id: str, metric: str) -> np.ndarray | None:
    result = next((r for r in results if r.test_id == test_id), None)
    stored = result.details.get("per_sample") if result else None
    if not isinstance(stored, dict) or not isinstance(stored.get(metric), dict):
        return None
    return unpack_outcomes(stored[metric])  # type: ignore[arg-type]
