"""Step 3, interpretation: compare each goal's measurement with its criterion.

A goal passes only when the whole confidence interval clears the threshold, fails when the whole
interval misses it, and is inconclusive otherwise, with the extra samples that would likely decide.
Intervals assume independent samples: when the runner recorded exact duplicate inputs among a test's
samples (``details['duplicate_inputs']``), every verdict based on that test says so in its findings
(the duplicates are flagged, not removed, so the measured values stay those of the data as given).
"""

from __future__ import annotations

from typing import Any

from nnassay.schemas.common import Comparator, Measurement, Verdict
from nnassay.schemas.evidence import GoalVerdict
from nnassay.schemas.goals import Criterion, Goal
from nnassay.schemas.results import MethodResult, TestStatus
from nnassay.tasks.stats.intervals import INTERVAL_METHODS
from nnassay.tasks.stats.sample_size import samples_needed

DUPLICATE_INPUTS = "duplicate_inputs"  # details key: the test's samples that repeat an earlier input
REMEDIES = {
    "none": "improve the model's clean performance (data, capacity, training) before robustness work",
    "gaussian_noise": "train with noise augmentation or add a denoising front end; re-assess after",
    "uniform_noise": "train with noise augmentation or add a denoising front end; re-assess after",
    "linf_ball": "use adversarial training (e.g. PGD training) or certified training (IBP/CROWN)",
    "l2_ball": "use adversarial training or randomized smoothing at deployment",
    "vnnlib": "inspect the counterexample, retrain or constrain the model, and verify again",
    "corruption": "augment training with the failing corruptions (e.g. AugMix) and re-assess",
    "geometric": "augment training with the failing transforms, or add an alignment step",
    "tabular": "harden feature handling: validation, imputation and range checks before the model",
    "invalid_input": "validate inputs before the model (finite, in range) and reject garbage",
    "ood": "add an out-of-distribution detector or a rejection threshold on confidence",
    "domain_shift": "collect data from the shifted domain and fine-tune, or restrict the operating domain",
    "deployment": "calibrate quantisation or keep float32 on the affected provider",
}


def compare(value: float, criterion: Criterion) -> bool:
    """True when a value meets the criterion."""
    t = criterion.threshold
    return {
        Comparator.GE: value >= t,
        Comparator.GT: value > t,
        Comparator.LE: value <= t,
        Comparator.LT: value < t,
    }[criterion.comparator]


def decide(measured: Measurement, criterion: Criterion) -> tuple[Verdict, str, int | None]:
    """Verdict of one measurement, the reason, and the extra samples needed when inconclusive."""
    c = criterion
    rule = f"{c.comparator.value} {c.threshold:g}"
    if measured.interval is None:
        ok = compare(measured.value, c)
        kind = measured.claim.value
        return (
            Verdict.PASS if ok else Verdict.FAIL,
            f"the {kind} {measured.value:.4g} {'meets' if ok else 'misses'} {rule} "
            "(no interval: the value is compared as it is)",
            None,
        )
    ci = measured.interval
    span = f"{ci.confidence:.0%} interval [{ci.low:.4g}, {ci.high:.4g}]"
    if compare(ci.low, c) and compare(ci.high, c):
        return Verdict.PASS, f"the whole {span} meets {rule}", None
    if not compare(ci.low, c) and not compare(ci.high, c):
        return Verdict.FAIL, f"the whole {span} misses {rule}", None
    needed = None
    if measured.is_rate and measured.n:
        # the verdict rule at the interval actually used (a bootstrap interval: plan with the exact one)
        method = ci.method if ci.method in INTERVAL_METHODS else "clopper-pearson"
        total = samples_needed(
            c.model_copy(update={"confidence": ci.confidence, "interval": method}), measured.value
        )
        needed = max(total - measured.n, 1) if total else None
    more = f"; about {needed} more samples would likely decide" if needed else ""
    return Verdict.INCONCLUSIVE, f"the {span} straddles the threshold {rule}{more}", needed


def interpret_goal(goal: Goal, results: list[MethodResult]) -> GoalVerdict:
    """Verdict of one goal from its tests' results (the primary test decides)."""
    ordered = sorted(results, key=lambda r: goal.metric not in r.metrics)
    tests = [r.test_id for r in ordered]
    base: dict[str, Any] = {
        "goal_id": goal.id,
        "metric": goal.metric,
        "criterion": goal.criterion,
        "tests": tests,
    }
    primary = ordered[0] if ordered else None
    if primary is None or primary.status != TestStatus.COMPLETED or goal.metric not in primary.metrics:
        why = _undecided_reason(goal, primary)
        return GoalVerdict(
            verdict=Verdict.INCONCLUSIVE,
            measured=None,
            reason=why,
            recommendation="resolve the cause named, then assess again",
            **base,
        )
    measured = primary.metrics[goal.metric]
    verdict, reason, needed = decide(measured, goal.criterion)
    repeated = duplicate_inputs(primary)
    return GoalVerdict(
        verdict=verdict,
        measured=measured,
        reason=reason,
        samples_needed=needed,
        recommendation=_recommend(goal, verdict, needed, measured.n),
        findings=[independence_note(repeated)] if repeated and measured.interval else [],
        **base,
    )


def duplicate_inputs(result: MethodResult) -> int:
    """Exact duplicate inputs among the samples of a test, as the runner recorded them (0: none or
    not recorded)."""
    found = result.details.get(DUPLICATE_INPUTS)
    return found if isinstance(found, int) and not isinstance(found, bool) and found > 0 else 0


def independence_note(duplicates: int) -> str:
    """The caveat every interval computed on repeated inputs carries."""
    return (
        f"assumes independent samples; {duplicates} exact duplicate input(s) present among the test's "
        "samples, so the interval is narrower than the data support (duplicates flagged, not removed)"
    )


def _undecided_reason(goal: Goal, primary: MethodResult | None) -> str:
    if primary is None:
        return "no test ran for this goal"
    if primary.status != TestStatus.COMPLETED:
        return f"test {primary.test_id} is {primary.status.value}: {primary.reason or 'no reason given'}"
    return f"test {primary.test_id} did not report metric {goal.metric!r}"


def _recommend(goal: Goal, verdict: Verdict, needed: int | None, used: int | None) -> str:
    if verdict == Verdict.PASS:
        return "no action needed; keep re-assessing on schedule"
    if verdict == Verdict.INCONCLUSIVE:
        cap = goal.budget.samples
        if needed and cap is not None and used is not None and used >= cap:
            # the goal's own budget stopped it: raising the budget comes before collecting data
            return (
                f"raise goals[{goal.id}].budget.samples from {cap} to about {used + needed} (and add test "
                "samples if the data file holds fewer), then assess again"
            )
        return (
            f"add about {needed} test samples (or draws) and assess again"
            if needed
            else "add test samples or tighten the method, then assess again"
        )
    return REMEDIES.get(goal.threat.kind, "treat the risk and assess again")


def overall(verdicts: list[GoalVerdict]) -> Verdict:
    """fail if any goal failed, else inconclusive if any was, else pass."""
    kinds = {v.verdict for v in verdicts}
    if Verdict.FAIL in kinds:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE if Verdict.INCONCLUSIVE in kinds else Verdict.PASS
