"""Prefect tasks of the lifecycle: link crashed attempts, and check goals against the last assessment.

Thin wrappers around ``nnassay.tasks.governance.resume`` and ``nnassay.tasks.governance.lifecycle``; ``nnassay.flows.assess`` uses them.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from nnassay.schemas.evidence import GoalVerdict
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import MethodResult
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance import history, lifecycle, records, resume
from nnassay.tasks.governance.tracking import Tracker


@task(name="link attempts", cache_policy=NO_CACHE)
def link_attempts(
    tracker: Tracker | None, handle: records.TrackingHandle, request: AssessRequest, past: history.SpecHistory
) -> str | None:
    """Mark earlier crashed attempts in this run folder FAILED and link the new run to them."""
    if tracker is None or handle.run_id is None:
        return None
    return resume.link_attempts(tracker, handle.run_id, request.output, past)


@task(name="check regressions", cache_policy=NO_CACHE)
def check_regressions(
    test_plan: AssessmentPlan,
    results: list[MethodResult],
    verdicts: list[GoalVerdict],
    tracker: Tracker | None,
    handle: records.TrackingHandle,
    past: history.SpecHistory,
) -> list[GoalVerdict]:
    """Compare every goal with the previous finished assessment; log the trend; add findings."""
    if tracker is None or handle.run_id is None or handle.uri is None:
        return verdicts
    done = past.finished()
    previous = history.load_past_evidence(handle.uri, done[0].run_id) if done else None
    sequence = int(done[0].tags.get("nnassay.lifecycle.sequence", len(done))) + 1 if done else 1
    comparison = lifecycle.compare(
        test_plan,
        results,
        verdicts,
        previous,
        sequence=sequence,
        previous_run_id=done[0].run_id if done else None,
    )
    tracker.log_metrics(handle.run_id, comparison.metrics(), step=sequence)
    tracker.set_tags(handle.run_id, comparison.tags())
    return lifecycle.with_findings(verdicts, comparison)
