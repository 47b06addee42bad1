"""Prefect tasks of the lifecycle: link crashed attempts, and check goals against the last assessment.

Thin wrappers around ``nnassay.tasks.governance.resume`` and ``nnassay.tasks.governance.lifecycle``; ``nnassay.flows.assess`` uses them.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from nnassay.schemas.evidence import GoalVerdict
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import MethodResult
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance import history, lifecycle, records, resume
from nnassay.tasks.governance.tracking import Tracker


@task(name="link attempts", cache_policy=NO_CACHE)
def link_attempts(
    tracker: Tracker | None, handle: records.TrackingHandle, spec: AssessmentSpec, request: AssessRequest
) -> str | None:
    """Mark earlier crashed attempts in this run folder FAILED and link the new run to them."""
    if tracker is None or handle.run_id is None:
        return None
    return resume.link_attempts(tracker, handle.run_id, spec.id, request.output)


@task(name="check regressions", cache_policy=NO_CACHE)
def check_regressions(
    spec: AssessmentSpec,
    test_plan: AssessmentPlan,
    results: list[MethodResult],
    verdicts: list[GoalVerdict],
    tracker: Tracker | None,
    handle: records.TrackingHandle,
) -> list[GoalVerdict]:
    """Compare every goal with the previous finished assessment; log the trend; add findings."""
    if tracker is None or handle.run_id is None or handle.uri is None:
        return verdicts
    past = history.past_assessments(handle.uri, spec.id, limit=10_000)
    previous = history.load_past_evidence(handle.uri, past[0].run_id) if past else None
    sequence = int(past[0].tags.get("nnassay.lifecycle.sequence", len(past))) + 1 if past else 1
    comparison = lifecycle.compare(
        test_plan,
        results,
        verdicts,
        previous,
        sequence=sequence,
        previous_run_id=past[0].run_id if past else None,
    )
    tracker.log_metrics(handle.run_id, comparison.metrics(), step=sequence)
    tracker.set_tags(handle.run_id, comparison.tags())
    return lifecycle.with_findings(verdicts, comparison)
