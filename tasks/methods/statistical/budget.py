"""What a method reports when its time budget (``goal.budget.time_s``, checked with
``RunContext.time_left``) stops it before every sample is done.

Methods that measure sample by sample stop between samples (or blocks of samples) once the budget is
spent, always finishing the first unit, and report on the samples done: ``n`` is the number done, so
every interval widens honestly, and ``details['budget_cut']`` and the reason say what the budget cut.
With fewer than ``MIN_SAMPLES`` done the test is inconclusive: too little was measured to decide.
"""

from __future__ import annotations

from pydantic import JsonValue

from nnassay.schemas.results import MethodOutcome, TestStatus

MIN_SAMPLES = 10  # a run cut before this many samples (when more were planned) is inconclusive
BUDGET_CUT = "budget_cut"  # details key: {done, planned, unit}


def budget_cut(outcome: MethodOutcome, done: int, planned: int, unit: str = "samples") -> MethodOutcome:
    """``outcome`` of a run that the time budget stopped after ``done`` of ``planned`` ``unit``.

    Unchanged when nothing was cut. Otherwise the outcome keeps its metrics (computed on the
    ``done`` units, so their intervals are those of ``n = done``), gains ``details['budget_cut']``
    and a reason that names the cut, and becomes inconclusive when fewer than ``MIN_SAMPLES`` (or
    fewer than planned, when fewer were planned) were done.
    """
    if done >= planned:
        return outcome
    why = (
        f"the time budget ran out after {done} of {planned} {unit}: the metrics cover the first {done} "
        f"only (n = {done}, so their intervals are wider than a full run's)"
    )
    status = outcome.status
    if done < min(MIN_SAMPLES, planned) and status == TestStatus.COMPLETED:
        status = TestStatus.INCONCLUSIVE
        why += f"; fewer than {min(MIN_SAMPLES, planned)} {unit} are too few to decide"
    details = {**outcome.details, BUDGET_CUT: cut_facts(done, planned, unit)}
    reason = f"{why}; {outcome.reason}" if outcome.reason else why
    return outcome.model_copy(update={"status": status, "details": details, "reason": reason})


def cut_facts(done: int, planned: int, unit: str) -> dict[str, JsonValue]:
    """``details['budget_cut']``: how much of the planned work the time budget let run."""
    return {"done": done, "planned": planned, "unit": unit}
