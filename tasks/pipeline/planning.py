"""Step 2, planning: turn goals into a test plan. Pure: the same inputs give the same plan.

Every problem of the whole spec is collected and reported at once (a PlanError listing them).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

from pydantic import ValidationError

from nnassay.schemas.goals import AssessmentSpec, Goal
from nnassay.schemas.plan import AssessmentPlan, TestSpec
from nnassay.tasks.errors import PlanError
from nnassay.tasks.methods.registry import get_method, list_methods, methods_for, metrics_for, usable_methods
from nnassay.tasks.pipeline.estimate import UnitCosts, estimate_seconds
from nnassay.tasks.stats import sample_size


@dataclass(frozen=True)
class PlanFacts:
    """What planning needs to know about the inputs besides the spec."""

    spec_sha256: str
    model_sha256: str
    data_sha256: str
    data_samples: int
    data_kind: str  # 'image' or 'tabular'
    provider: str = "unknown"  # the ONNX Runtime provider the model runs on (provenance, not planning)
    unit_costs: UnitCosts | None = None  # measured once per model; None: tests get no time estimate
    clean_accuracy: float | None = None  # on the first rows of the data: attacks attack only correct ones
    executor_ok: bool = True  # the torch executor can build the model (white-box methods can run)
    executor_missing_ops: tuple[str, ...] = ()  # op types it lacks, when that is why it cannot
    executor_problem: str = ""  # why it cannot build the model, in words


def derive_seed(master: int, test_id: str) -> int:
    """A stable per-test seed from the master seed and the test id."""
    digest = hashlib.sha256(f"{master}:{test_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def make_plan(spec: AssessmentSpec, facts: PlanFacts) -> AssessmentPlan:
    """Plan one test per goal and method, with parameters, seeds, sample sizes and criteria."""
    tests: list[TestSpec] = []
    problems: list[str] = []
    notes: list[str] = []
    if spec.model.task != "classification":
        problems.append("model.task: regression models are not supported yet; use a classifier")
    for goal in spec.goals:
        goal_tests, goal_problems = _plan_goal(spec, goal, facts)
        tests += goal_tests
        problems += goal_problems
        notes += _sample_notes(goal, goal_tests)
        notes += _limit_notes(goal, goal_tests, facts)
        notes += [
            f"goal {goal.id}: planned {t.method} instead of {t.fallback_from}: {t.fallback_reason}"
            for t in goal_tests
            if t.fallback_reason
        ]
    if problems:
        raise PlanError(
            "the goals cannot be planned:\n  - " + "\n  - ".join(problems),
            field="goals",
            fix="correct each goal named above",
        )
    return AssessmentPlan(
        spec_id=spec.id,
        spec_sha256=facts.spec_sha256,
        model_sha256=facts.model_sha256,
        data_sha256=facts.data_sha256,
        data_samples=facts.data_samples,
        tests=tests,
        notes=notes,
        explain_estimate_s=_explain_estimate(spec, facts, tests),
    )


def _explain_estimate(spec: AssessmentSpec, facts: PlanFacts, tests: list[TestSpec]) -> float | None:
    """The explain step's time if every goal that can leave per-sample failures fails (None: off or
    no unit costs), priced per row at a batch of 64 with the model's measured call times."""
    from nnassay.tasks.explain import cost as explain_cost
    from nnassay.tasks.explain.gather import can_have_failures
    from nnassay.tasks.pipeline.estimate import call_seconds

    costs = facts.unit_costs
    if not spec.explain.enabled or costs is None:
        return None
    per_row = explain_cost.UnitCosts(
        call_seconds(costs.forward, 64) / 64, call_seconds(costs.backward, 64) / 64
    )
    return explain_cost.plan_seconds(
        per_row,
        goals=len({t.goal_id for t in tests if can_have_failures(t.method)}),
        samples=spec.explain.samples + spec.explain.contrast,
        tabular=facts.data_kind == "tabular",
        executor_ok=facts.executor_ok,
        n_features=len(spec.data.features or ()),
    )


def _plan_goal(spec: AssessmentSpec, goal: Goal, facts: PlanFacts) -> tuple[list[TestSpec], list[str]]:
    kind = goal.threat.kind
    choices = goal.methods or []
    names = [c.name for c in choices] or methods_for(kind, goal.metric)[:1]
    if not names:
        known = metrics_for(kind)
        chosen_only = [
            n
            for n in list_methods()
            if kind in get_method(n).threats and goal.metric in get_method(n).metrics
        ]
        if chosen_only:  # the metric is measured, by methods a goal must name (none runs by default)
            return [], [
                f"goal {goal.id}: {goal.metric!r} under threat {kind!r} is measured only by a method named "
                f"in goals[{goal.id}].methods, e.g. methods: [{{name: {chosen_only[0]}}}] (any of {chosen_only})"
            ]
        close = difflib.get_close_matches(goal.metric, known, n=1, cutoff=0.6)
        hint = (
            (f"did you mean {close[0]!r}? " if close else "") + f"metrics available for it: {known}"
            if known
            else "no registered method tests it"
        )
        return [], [f"goal {goal.id}: no method measures {goal.metric!r} under threat {kind!r}; {hint}"]
    overrides = {c.name: c.params for c in choices}
    tests: list[TestSpec] = []
    problems: list[str] = []
    primary_taken = False
    for name in names:
        test, problem = _plan_test(spec, goal, name, overrides.get(name, {}), facts, primary_taken)
        if problem:
            problems.append(problem)
        elif test and all(t.test_id != test.test_id for t in tests):  # two methods, one fallback
            primary_taken = primary_taken or test.primary
            tests.append(test)
    if tests and not primary_taken:
        problems.append(f"goal {goal.id}: none of the methods {names} reports metric {goal.metric!r}")
    return tests, problems


def _plan_test(
    spec: AssessmentSpec, goal: Goal, name: str, overrides: dict, facts: PlanFacts, primary_taken: bool
) -> tuple[TestSpec | None, str | None]:
    try:
        method = get_method(name)
    except KeyError as exc:
        return None, f"goal {goal.id}: {exc.args[0]}"
    fallback = _fallback_for(goal, facts) if method.needs_executor and not facts.executor_ok else None
    if fallback:  # without one the method is planned and reports inconclusive, naming the ops
        return _plan_fallback(spec, goal, name, fallback, overrides, facts, primary_taken)
    kind = goal.threat.kind
    if kind not in method.threats:
        return (
            None,
            f"goal {goal.id}: method {name!r} does not test threat {kind!r} (it tests {list(method.threats)})",
        )
    unfit = method.check(goal.threat, facts.data_kind)
    if unfit:
        return None, f"goal {goal.id}: " + "; ".join(unfit)
    try:
        params = method.params_for(goal.threat, dict(overrides))
    except ValidationError as exc:
        return (
            None,
            f"goal {goal.id}: method {name!r}: {_params_problems(exc, sorted(method.Params.model_fields))}",
        )
    except (ValueError, TypeError) as exc:
        return None, f"goal {goal.id}: method {name!r}: {exc}"
    test_id = f"{goal.id}/{name}"
    samples = min(goal_samples(goal, facts), getattr(params, "max_samples", None) or facts.data_samples)
    params_json = params.model_dump(mode="json")
    estimate = (
        estimate_seconds(
            name,
            params_json,
            samples,
            facts.unit_costs,
            time_s=goal.budget.time_s,
            clean_accuracy=facts.clean_accuracy,
        )
        if facts.unit_costs is not None
        else None
    )
    return TestSpec(
        test_id=test_id,
        goal_id=goal.id,
        method=name,
        family=method.family,
        clause=method.clause,
        threat=goal.threat,
        params=params_json,
        metric=goal.metric,
        criterion=goal.criterion,
        primary=not primary_taken and goal.metric in method.metrics,
        seed=derive_seed(spec.seed, test_id),
        samples=samples,
        samples_needed=_samples_needed(goal),
        time_s=goal.budget.time_s,
        estimate_s=estimate,
    ), None


def _fallback_for(goal: Goal, facts: PlanFacts) -> str | None:
    """The first method that measures the goal without the torch executor (planning's own checks)."""
    options = usable_methods(goal.threat, facts.data_kind, goal.metric, executor_ok=False)
    return options[0] if options else None


def _plan_fallback(
    spec: AssessmentSpec,
    goal: Goal,
    name: str,
    fallback: str,
    overrides: dict,
    facts: PlanFacts,
    primary_taken: bool,
) -> tuple[TestSpec | None, str | None]:
    """The black-box method on ONNX Runtime planned for a white-box method the executor cannot run,
    with the switch and its reason recorded in the test (parameters the fallback lacks dropped)."""
    cause = facts.executor_problem or f"lacks ops {list(facts.executor_missing_ops)}"
    why = f"the torch executor cannot run this model ({cause})"
    chosen = get_method(fallback)
    kept = {k: v for k, v in overrides.items() if k in chosen.Params.model_fields}
    test, problem = _plan_test(spec, goal, chosen.name, kept, facts, primary_taken)
    reason = f"{name} needs gradients through the torch executor, but {why}; {chosen.name} queries ONNX Runtime only"
    return (
        test.model_copy(update={"fallback_from": name, "fallback_reason": reason}) if test else None
    ), problem


def _samples_needed(goal: Goal) -> int | None:
    """Fewest samples with which the best possible outcome would pass (None: threshold not a rate)."""
    return sample_size.samples_needed(goal.criterion)


def goal_samples(goal: Goal, facts: PlanFacts) -> int:
    """The samples a goal asks for: its budget.samples, at most the data's."""
    return min(goal.budget.samples or facts.data_samples, facts.data_samples)


def _limit_notes(goal: Goal, tests: list[TestSpec], facts: PlanFacts) -> list[str]:
    """Notes on what will keep a test from the goal's full work: a method that scores fewer samples
    than the goal asks for (its ``max_samples``), and a time budget shorter than the test's estimate
    (it stops early: intervals on the samples done, or inconclusive)."""
    notes = []
    asked = goal_samples(goal, facts)
    for t in tests:
        if t.samples < asked:
            notes.append(
                f"goal {goal.id}: {t.method} uses {t.samples} of the {asked} samples (its max_samples); "
                f"set it in goals[{goal.id}].methods (params: {{max_samples: {asked}}}) to use them all"
            )
        if facts.unit_costs is None or t.estimate_s is None or t.estimate_s < t.time_s:
            continue
        needs = estimate_seconds(
            t.method, t.params, t.samples, facts.unit_costs, clean_accuracy=facts.clean_accuracy
        )
        if needs > t.time_s:
            notes.append(
                f"goal {goal.id}: {t.method} needs about {needs:.3g} s but its budget is {t.time_s:g} s: it "
                f"will stop early (intervals on the samples done, or inconclusive); raise "
                f"goals[{goal.id}].budget.time_s to about {needs * 1.5:.3g}"
            )
    return notes


def _sample_notes(goal: Goal, tests: list[TestSpec]) -> list[str]:
    """A note when the primary test's samples can never decide the goal (a pass or a fail is impossible)."""
    primary = next((t for t in tests if t.primary), None)
    if primary is None:
        return []
    ok, why = sample_size.can_ever_decide(primary.samples, goal.criterion)
    return (
        [] if ok else [f"goal {goal.id} ({goal.metric}, {primary.samples} samples, if it is a rate): {why}"]
    )


def _params_problems(exc: ValidationError, known: list[str]) -> str:
    """Each parameter error; a misspelt key gets the closest parameter name, or the list of them."""
    out = []
    for err in exc.errors():
        field = ".".join(map(str, err["loc"]))
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else f"parameters are: {', '.join(known) or 'none'}"
            out.append(f"field '{field}': unknown parameter ({hint})")
        else:
            out.append(f"field '{field}': {err['msg']}")
    return "; ".join(out)
