"""Pilots: attack and proof estimates checked by running the method on a few of the test's samples.

Timing is faked where the arithmetic is asserted (a clock that moves only when the fake method says
so); real methods run where the wiring is asserted. No assertion is on seconds measured here.
"""

from __future__ import annotations

import dataclasses
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TinyCase, goal
from nnassay.flows.cli.plan import plan_lines
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan
from nnassay.tasks.methods.registry import get_method
from nnassay.tasks.pipeline import estimate, execute, pilot
from nnassay.tasks.pipeline.estimate import UnitCosts, method_cost
from nnassay.tasks.pipeline.planning import PlanFacts, make_plan

UNITS = UnitCosts(  # made-up unit costs: the pricing is exact and machine-independent
    forward=((1, 1e-4), (256, 2e-3), (2048, 1.6e-2)),
    backward=((1, 1e-2), (64, 4e-2), (256, 1.6e-1)),
    torch_setup_s=0.01,
    draw_s=1e-6,
    executor=True,
)
ROWWISE = dataclasses.replace(  # a model whose gradient calls cost by the row (a pilot is affordable)
    UNITS, backward=((1, 1e-3), (64, 6.4e-2), (256, 2.56e-1))
)
PROOF = goal("P", {"kind": "linf_ball", "eps": 0.01}, "verified_fraction", ">=", 0.5, budget={"samples": 20})
ATTACK = goal(
    "A",
    {"kind": "linf_ball", "eps": 0.05},
    "robust_accuracy",
    ">=",
    0.3,
    methods=[{"name": "empirical.pgd_linf", "params": {"steps": 200}}],
    budget={"samples": 100},
)


class FakeClock:
    """perf_counter that moves only when a fake method spends time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pilot, "_PILOTS", weakref.WeakKeyDictionary())
    monkeypatch.setattr(pilot, "PILOT_MIN_S", 0.0)  # tiny models: every attack and proof is piloted


def _planned(
    path: Path, units: UnitCosts = UNITS
) -> tuple[AssessmentSpec, PlanFacts, AssessmentPlan, Any, Any]:
    spec, facts = execute.state_goals(path, prefer_cuda=False)
    facts = dataclasses.replace(facts, unit_costs=units)
    model, data = execute.load_inputs(spec, prefer_cuda=False)
    return spec, facts, make_plan(spec, facts), model, data


def _correct(model: Any, data: Any, samples: int) -> int:
    rows = data.subset(samples)
    return int(np.sum(model.predict(rows.x) == rows.y))


def test_a_proof_is_priced_by_its_pilots_time_on_the_correctly_classified_samples(
    image_case: TinyCase, spec_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pilot sample 'takes' 0.2 s (far below half its budget): the estimate is that time for every
    correctly classified sample, the misclassified ones at the per-sample checks only."""
    spec, facts, plan, model, data = _planned(spec_writer(image_case, [PROOF]))
    clock, proved = FakeClock(), []
    monkeypatch.setattr(pilot.time, "perf_counter", clock)
    method = get_method("formal.local_robustness")

    def run_part(ctx: Any, params: Any, start: int, stop: int) -> list[Any]:
        assert params.time_per_sample_s == pytest.approx(pilot.FORMAL_STOP * 10.0)  # stopped at half
        assert not any(ctx.run_dir.samefile(p) for p in Path(spec.model.path).parents)  # a temp folder
        proved.append(start)
        clock.now += 0.2
        return []

    monkeypatch.setattr(type(method), "run_part", lambda self, *a: run_part(*a))
    (test,) = pilot.pilot_plan(plan, spec, model, data, facts).tests
    ok = _correct(model, data, 20)
    assert 0 < ok < 20  # the tiny case misclassifies some samples
    wrong = 20 - ok
    expected = (
        estimate.TEST_OVERHEAD_S + estimate.FORMAL_START_S + 0.2 * ok + estimate.FORMAL_SAMPLE_S * wrong
    )
    assert test.estimate_s == pytest.approx(round(expected, 1))
    assert test.estimate_pilot and f"of the {ok} correctly classified" in test.estimate_pilot
    rows = data.subset(20)
    assert all(model.predict(rows.x[i : i + 1])[0] == rows.y[i] for i in proved)  # only correct ones
    assert 1 <= len(proved) <= ok and len(set(proved)) == len(proved)


def test_a_proof_pilot_stopped_undecided_prices_the_whole_budget(
    image_case: TinyCase, spec_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, facts, plan, model, data = _planned(spec_writer(image_case, [PROOF]))
    clock = FakeClock()
    monkeypatch.setattr(pilot.time, "perf_counter", clock)
    method = get_method("formal.local_robustness")

    def run_part(ctx: Any, params: Any, start: int, stop: int) -> list[Any]:
        clock.now += params.time_per_sample_s  # ran until its (halved) budget stopped it
        return []

    monkeypatch.setattr(type(method), "run_part", lambda self, *a: run_part(*a))
    (test,) = pilot.pilot_plan(plan, spec, model, data, facts).tests
    cap = estimate.FORMAL_START_S + 10.0 * 20  # the verifier's own cap: every sample's budget
    ok = _correct(model, data, 20)
    expected = (
        estimate.TEST_OVERHEAD_S + estimate.FORMAL_START_S + 10.0 * ok + estimate.FORMAL_SAMPLE_S * (20 - ok)
    )
    assert test.estimate_s == pytest.approx(round(min(expected, cap), 1))


def test_a_proof_on_misclassified_samples_only_is_priced_without_proofs(
    image_case: TinyCase, spec_writer: Any, tmp_path: Path
) -> None:
    """The real verifier never runs: every sample is misclassified, so it is refuted at once."""
    _, _, _, model, _ = _planned(spec_writer(image_case, [PROOF]))
    data = np.load(image_case.data)
    wrong = (model.predict(data["x"]) + 1) % image_case.n_classes  # every label wrong
    np.savez(tmp_path / "wrong.npz", x=data["x"], y=wrong)
    case = dataclasses.replace(image_case, data=tmp_path / "wrong.npz")
    spec, facts, plan, model, data2 = _planned(spec_writer(case, [PROOF]))
    unpiloted = plan.tests[0].estimate_s
    (test,) = pilot.pilot_plan(plan, spec, model, data2, facts).tests
    assert test.estimate_pilot and "all 20 samples are misclassified" in test.estimate_pilot
    assert test.estimate_s is not None and unpiloted is not None and test.estimate_s < unpiloted
    assert test.estimate_s == pytest.approx(
        round(estimate.TEST_OVERHEAD_S + estimate.FORMAL_START_S + 20 * estimate.FORMAL_SAMPLE_S, 1)
    )


def test_an_attack_is_priced_by_the_share_of_its_work_the_pilot_did(
    image_case: TinyCase, spec_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pilot's attack 'takes' a quarter of the work priced for its samples (they broke early): the
    test's estimate is a quarter of its priced work, its fixed part kept."""
    spec, facts, plan, model, data = _planned(spec_writer(image_case, [ATTACK]), ROWWISE)
    (planned,) = plan.tests
    clock, attacked = FakeClock(), []
    monkeypatch.setattr(pilot.time, "perf_counter", clock)
    method = get_method("empirical.pgd_linf")
    real_run = type(method).run

    def run(self: Any, ctx: Any, params: Any) -> Any:
        attacked.append(len(ctx.data))
        cost = method_cost(planned.method, planned.params, len(ctx.data), 1.0)
        fixed = ROWWISE.fixed_seconds(cost)
        clock.now += fixed + 0.25 * (ROWWISE.seconds(cost) - fixed)
        return real_run(self, ctx, params)

    monkeypatch.setattr(type(method), "run", run)
    (test,) = pilot.pilot_plan(plan, spec, model, data, facts).tests
    ok = _correct(model, data, 100)
    (k,) = attacked
    low, high = pilot.ATTACK_PILOT_SAMPLES
    assert low <= k <= min(high, ok - 1)
    assert ROWWISE.seconds(method_cost(planned.method, planned.params, k, 1.0)) <= (
        pilot.ATTACK_PILOT_SHARE * (planned.estimate_s or 0)
    )
    full = method_cost(planned.method, planned.params, 100, ok / 100)
    fixed = ROWWISE.fixed_seconds(full)
    assert test.estimate_s == pytest.approx(
        round(fixed + 0.25 * (ROWWISE.seconds(full) - fixed), 1), abs=0.11
    )
    assert test.estimate_s is not None and planned.estimate_s is not None
    assert test.estimate_s < planned.estimate_s  # the unit costs alone expect more radii attacked
    assert test.estimate_pilot and f"ran the attack on {k} of the {ok}" in test.estimate_pilot
    assert any(
        line.startswith(f"pilot: {test.test_id}: ran the attack")
        for line in plan_lines(plan.model_copy(update={"tests": [test]}), UNITS)
    )


def test_real_pilots_run_once_per_loaded_model_and_a_failing_one_leaves_the_estimate(
    image_case: TinyCase, spec_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = spec_writer(image_case, [PROOF, ATTACK])
    spec, facts, plan, model, data = _planned(path, ROWWISE)
    first = pilot.pilot_plan(plan, spec, model, data, facts)
    assert all(t.estimate_pilot for t in first.tests)  # the real verifier and attack ran
    calls: list[str] = []
    for name in ("formal.local_robustness", "empirical.pgd_linf"):
        method = get_method(name)
        monkeypatch.setattr(type(method), "run", lambda self, *a, n=name: calls.append(n))
        monkeypatch.setattr(type(method), "run_part", lambda self, *a, n=name: calls.append(n), raising=False)
    again = pilot.pilot_plan(plan, spec, model, data, facts)
    assert calls == [] and again == first  # remembered: the flow's planning after the CLI's preflight

    def broken(self: Any, *args: Any) -> None:
        raise RuntimeError("the pilot fails")

    monkeypatch.setattr(pilot, "_PILOTS", weakref.WeakKeyDictionary())
    monkeypatch.setattr(type(get_method("empirical.pgd_linf")), "run", broken)
    monkeypatch.setattr(type(get_method("formal.local_robustness")), "run_part", broken)
    kept = pilot.pilot_plan(plan, spec, model, data, facts)
    assert [t.estimate_s for t in kept.tests] == [t.estimate_s for t in plan.tests]
    assert not any(t.estimate_pilot for t in kept.tests)


def test_cheap_tests_and_other_methods_are_not_piloted(
    image_case: TinyCase, spec_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pilot, "PILOT_MIN_S", 1e9)
    clean = goal("C", {"kind": "none"}, "accuracy", ">=", 0.5)
    spec, facts, plan, model, data = _planned(spec_writer(image_case, [clean, PROOF, ATTACK]), ROWWISE)
    assert pilot.pilot_plan(plan, spec, model, data, facts) == plan
    monkeypatch.setattr(pilot, "PILOT_MIN_S", 0.0)
    piloted = pilot.pilot_plan(plan, spec, model, data, facts)
    assert [t.estimate_pilot is not None for t in piloted.tests] == [False, True, True]
    no_units = dataclasses.replace(facts, unit_costs=None)
    assert pilot.pilot_plan(plan, spec, model, data, no_units) == plan
