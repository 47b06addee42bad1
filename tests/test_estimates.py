"""Time estimates and budgets: unit costs, every method's cost, scaling, `nnassay plan`, early stops.

No assertion is on seconds measured here: counts, statuses, ratios of priced work and presence only.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from conftest import TinyCase, goal
from nnassay.flows.cli.plan import register
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.results import TestStatus
from nnassay.tasks.errors import PlanError
from nnassay.tasks.methods.cost import Cost, conservative_cost
from nnassay.tasks.methods.registry import RobustnessMethod, get_method, list_methods
from nnassay.tasks.pipeline import estimate, execute
from nnassay.tasks.pipeline.estimate import UnitCosts, call_seconds, has_cost, method_cost
from nnassay.tasks.pipeline.planning import PlanFacts, make_plan

UNITS = UnitCosts(  # made-up unit costs: the pricing is then exact and machine-independent
    forward=((1, 1e-4), (256, 2e-3), (2048, 1.6e-2)),
    backward=((1, 1e-3), (64, 4e-3), (256, 1.6e-2)),
    torch_setup_s=0.01,
    draw_s=1e-6,
    executor=True,
)


def _priced(name: str, samples: int, **overrides: Any) -> float:
    params = get_method(name).Params(**overrides).model_dump(mode="json")
    return UNITS.seconds(method_cost(name, params, samples))


def test_unit_costs_are_positive_and_measured_once_per_model(
    tabular_case: TinyCase, spec_writer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(estimate, "_MEASURED", weakref.WeakKeyDictionary())
    calls = []
    measure = estimate.measure_unit_costs
    monkeypatch.setattr(estimate, "measure_unit_costs", lambda r, x: calls.append(1) or measure(r, x))
    path = spec_writer(tabular_case, [goal("A", {"kind": "none"}, "accuracy", ">=", 0.5)])
    _, first = execute.state_goals(path, prefer_cuda=False)
    _, second = execute.state_goals(path, prefer_cuda=False)
    assert len(calls) == 1 and first.unit_costs is second.unit_costs
    units = first.unit_costs
    assert units is not None and units.executor
    for curve in (units.forward, units.backward):
        assert curve[0][0] == 1 and len(curve) >= 2
        assert all(t > 0 for _, t in curve) and [b for b, _ in curve] == sorted(b for b, _ in curve)
    assert units.draw_s > 0 and units.torch_setup_s >= 0 and units.measure_s > 0


def test_call_seconds_interpolates_and_extends_the_last_slope() -> None:
    curve = ((1, 1.0), (11, 2.0), (21, 4.0))
    assert call_seconds(curve, 1) == 1.0 and call_seconds(curve, 6) == pytest.approx(1.5)
    assert call_seconds(curve, 31) == pytest.approx(6.0) and call_seconds(curve, 0.5) == 1.0


class FakeClock:
    """A clock that only moves when a fake model call says so: timing without time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_stalled_window_does_not_set_the_unit_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call takes 1 ms but one (a 1 s stall of the process on a busy machine): the time is the
    median window's mean, 1 ms, where one window's mean would say up to 50 ms."""
    clock = FakeClock()
    monkeypatch.setattr(estimate.time, "perf_counter", clock)
    calls = []

    def call() -> None:
        calls.append(1)
        clock.now += 1.0 if len(calls) == 3 else 1e-3

    assert estimate._timed(call) == pytest.approx(1e-3)
    assert len(calls) > estimate.WINDOWS  # several windows, each of several calls


def test_a_slow_first_row_still_times_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call of one row over the call budget: the first batch size is timed all the same, so rows
    are priced by the measured slope, not each as a whole call."""
    clock = FakeClock()
    monkeypatch.setattr(estimate.time, "perf_counter", clock)
    per_call, per_row = 2 * estimate.CALL_BUDGET_S, 1e-4

    def call(batch: np.ndarray) -> None:
        clock.now += per_call + per_row * len(batch)

    rows = np.zeros((4, 3), dtype=np.float32)
    curve = estimate._curve(call, rows, estimate.FORWARD_BATCHES, floats=3)
    assert [b for b, _ in curve] == [1, estimate.FORWARD_BATCHES[0]]  # the budget stops after the batch
    assert call_seconds(curve, 1000) == pytest.approx(per_call + per_row * 1000)


@pytest.mark.parametrize("name", list_methods(), ids=str)
def test_every_registered_method_has_a_cost(name: str) -> None:
    """Its own count (the method's ``cost`` or a formula in estimate.py), not the default, and a
    positive finite price with its default parameters."""
    assert has_cost(name), f"{name} has no cost: add a `cost` classmethod next to it"
    cost = method_cost(name, get_method(name).Params().model_dump(mode="json"), 100)
    assert isinstance(cost, Cost) and min(cost.forwards, cost.backwards, cost.draws, cost.fixed_s) >= 0
    assert 0 < UNITS.seconds(cost) < 1e7


def test_the_default_cost_is_conservative() -> None:
    """A method that states no cost inherits one far above a real single pass over the data."""
    assert RobustnessMethod.cost.__func__(RobustnessMethod, None, 100) == conservative_cost(100)  # type: ignore[attr-defined]
    assert UNITS.seconds(conservative_cost(100)) > 10 * _priced("statistical.clean_accuracy", 100)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("statistical.noise_accuracy", {"strength": 0.1, "sweep": [0.05, 0.1]}),
        ("statistical.randomized_smoothing", {}),
        ("empirical.pgd_linf", {"eps": 0.1, "sweep": [0.05, 0.1], "batch_size": 64}),
        ("empirical.square_linf", {"eps": 0.1, "batch_size": 64}),
        ("empirical.corruption_accuracy", {}),
        ("formal.local_robustness", {"eps": 0.01}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_double_the_samples_about_doubles_the_estimate(name: str, params: dict[str, Any]) -> None:
    ratio = _priced(name, 16384, **params) / _priced(name, 8192, **params)
    assert 1.6 < ratio < 2.2, ratio


@pytest.mark.parametrize(
    ("name", "field", "low", "high"),
    [
        ("empirical.pgd_linf", "steps", 20, 40),
        ("statistical.randomized_smoothing", "n", 1000, 2000),
        ("statistical.probabilistic_robustness", "draws", 500, 1000),
        ("empirical.square_linf", "queries", 500, 1000),
    ],
)
def test_more_work_per_sample_costs_about_proportionally_more(
    name: str, field: str, low: int, high: int
) -> None:
    ratio = _priced(name, 200, **{field: high}) / _priced(name, 200, **{field: low})
    assert 1.6 < ratio < 2.2, ratio


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("empirical.pgd_linf", {"eps": 0.1, "sweep": [0.025, 0.05, 0.075, 0.1]}),
        ("empirical.autoattack_lite", {"eps": 0.1, "sweep": [0.025, 0.05, 0.075, 0.1]}),
        ("empirical.square_linf", {"eps": 0.1, "sweep": [0.05, 0.1]}),
        ("empirical.tabular_random_search", {"eps": 0.1, "sweep": [0.05, 0.1]}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_attack_is_priced_between_one_radius_and_every_radius(
    name: str, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Expected work: the smallest radius in full, half the work of the larger ones (a broken sample
    is not attacked again), so below the upper end (no sample ever broken) and above one radius."""
    expected = _priced(name, 200, **params)
    one = _priced(name, 200, **{**params, "sweep": [params["eps"]]})
    share = estimate.ATTACK_UNBROKEN_SHARE
    monkeypatch.setattr(estimate, "ATTACK_UNBROKEN_SHARE", 1.0)
    upper = _priced(name, 200, **params)
    assert one < expected < upper
    radii = len(params["sweep"])
    assert expected / upper == pytest.approx((1 + share * (radii - 1)) / radii, rel=0.1)


def test_an_attack_whose_work_ignores_the_radii_is_priced_at_its_cost() -> None:
    """HopSkipJump searches each sample's smallest radius once, whatever the sweep: no discount."""
    method = get_method("empirical.hop_skip_jump")
    typed = method.Params(eps=0.5, sweep=[0.25, 0.5], queries=100)
    assert _priced("empirical.hop_skip_jump", 50, **typed.model_dump()) == pytest.approx(
        UNITS.seconds(type(method).cost(typed, 50))
    )


def test_a_scaled_cost_prices_proportionally() -> None:
    cost = Cost(forwards=1000.0, backwards=64.0, fixed_s=0.5, draws=10.0)
    half = cost.scaled(0.5)
    assert (half.forwards, half.backwards, half.fixed_s, half.draws) == (500.0, 32.0, 0.25, 5.0)
    assert half.calls() == (cost.calls()[0] * 0.5, cost.calls()[1] * 0.5)


def test_child_processes_are_priced_by_the_measured_slowdown() -> None:
    """A child's start is interpreter and import work: it takes longer as the machine gets busier,
    which the measured slowdown says; the model's own work does not move with it (already timed)."""
    idle, busy = UNITS, UnitCosts(**{**UNITS.__dict__, "slowdown": 10.0})
    variants = {"variants": ["float16", "int8_dynamic"]}
    cost = method_cost("empirical.deployment_consistency", variants, 100)
    assert cost.children == 4  # per converted variant: the conversion's child and the session check's
    extra = busy.seconds(cost) - idle.seconds(cost)
    assert extra == pytest.approx(4 * estimate.CHILD_START_S * 9)
    assert method_cost("empirical.deployment_consistency", {"variants": ["providers"]}, 100).children == 0
    assert 1.0 <= estimate.measure_slowdown() < 1e6


def _spec(*goals: dict[str, Any]) -> AssessmentSpec:
    base = {"id": "x", "title": "t", "model": {"path": "m.onnx"}, "data": {"path": "d.npz"}}
    return AssessmentSpec.model_validate({**base, "goals": list(goals)})


def test_make_plan_fills_estimates_from_the_facts_and_stays_pure() -> None:
    spec = _spec(
        goal("A", {"kind": "none"}, "accuracy", ">=", 0.9),
        goal("B", {"kind": "linf_ball", "eps": 0.1}, "robust_accuracy", ">=", 0.5, budget={"time_s": 0.5}),
    )
    bare = PlanFacts(spec_sha256="s", model_sha256="m", data_sha256="d", data_samples=400, data_kind="image")
    without = make_plan(spec, bare)
    assert all(t.estimate_s is None for t in without.tests)  # old facts, old plans: no estimate
    facts = PlanFacts(**{**bare.__dict__, "unit_costs": UNITS})
    plan = make_plan(spec, facts)
    assert plan == make_plan(spec, facts)
    clean, attack = plan.tests
    assert clean.estimate_s is not None and attack.estimate_s is not None
    assert (
        0 < clean.estimate_s < attack.estimate_s <= 0.5 + estimate.TEST_OVERHEAD_S + 0.1
    )  # capped by budget
    assert estimate.total_estimate_s(plan) == pytest.approx(clean.estimate_s + attack.estimate_s)
    assert "estimated" in estimate.estimate_line(plan) and "no time estimate" in estimate.estimate_line(
        without
    )


def test_the_plan_notes_a_budget_shorter_than_the_work_and_a_method_capping_samples() -> None:
    """A test that will stop at its budget, and a method that scores fewer samples than the goal asks
    for (CLEVER's max_samples), are named in the plan with the field to change; the capped test's
    samples are the ones it will use."""
    spec = _spec(
        goal("B", {"kind": "linf_ball", "eps": 0.1}, "robust_accuracy", ">=", 0.5, budget={"time_s": 0.5}),
        goal(
            "C",
            {"kind": "linf_ball", "eps": 0.1},
            "mean_clever_score",
            ">=",
            0.01,
            budget={"samples": 200},
            methods=[{"name": "statistical.clever"}],
        ),
        goal("D", {"kind": "none"}, "accuracy", ">=", 0.9, budget={"time_s": 0.5}),
    )
    facts = PlanFacts(
        spec_sha256="s",
        model_sha256="m",
        data_sha256="d",
        data_samples=400,
        data_kind="image",
        unit_costs=UNITS,
    )
    plan = make_plan(spec, facts)
    attack, clever, clean = plan.tests
    assert clever.method == "statistical.clever" and clever.samples == clever.params["max_samples"] == 50
    assert any(n.startswith("goal C: statistical.clever uses 50 of the 200 samples") for n in plan.notes)
    stops = [n for n in plan.notes if "will stop early" in n]
    assert len(stops) == 1 and stops[0].startswith("goal B:") and "goals[B].budget.time_s" in stops[0]
    with pytest.raises(PlanError, match=r"measured only by a method named in goals\[C\]\.methods") as info:
        make_plan(_spec(goal("C", {"kind": "linf_ball", "eps": 0.1}, "mean_clever_score", ">=", 0.01)), facts)
    assert "statistical.clever" in str(info.value) and "did you mean" not in str(info.value)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("version")(lambda: None)  # two commands, so `plan` is a subcommand as in nnassay
    register(app)
    return app


def test_plan_command_prints_every_test_and_a_total_and_runs_nothing(
    image_case: TinyCase, spec_writer: Any, tmp_path: Path
) -> None:
    goals = [
        goal("A", {"kind": "none"}, "accuracy", ">=", 0.5),
        goal("B", {"kind": "gaussian_noise", "sigma": 0.1}, "accuracy", ">=", 0.5),
        goal("C", {"kind": "linf_ball", "eps": 0.05}, "robust_accuracy", ">=", 0.3, budget={"samples": 10}),
    ]
    path = spec_writer(image_case, goals)
    before = sorted(p for p in tmp_path.rglob("*"))
    out = CliRunner().invoke(_cli(), ["plan", str(path), "--cpu"])
    assert out.exit_code == 0, out.output
    plan = make_plan(*execute.state_goals(path, prefer_cuda=False))
    for test in plan.tests:
        line = next(x for x in out.output.splitlines() if x.startswith(test.test_id))
        assert test.method in line and str(test.samples) in line
    assert any(x.startswith("total") and x.rstrip().endswith("s") for x in out.output.splitlines())
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no run folder, results or plan.json
    bad = CliRunner().invoke(_cli(), ["plan", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2 and "missing.yaml" in bad.output


BUDGET_CASES = [  # method, threat, params, a part of the reason naming what was done
    ("empirical.hop_skip_jump", {"kind": "l2_ball", "eps": 0.5}, {"queries": 100}, "after 1 of the"),
    (
        "empirical.pgd_linf",
        {"kind": "linf_ball", "eps": 0.2},
        {"batch_size": 4, "sweep": [0.2]},
        "after 4 of the",
    ),
    ("empirical.corruption_accuracy", {"kind": "corruption"}, {"severities": [1, 2]}, "after 1 of"),
    (
        "statistical.randomized_smoothing",
        {"kind": "l2_ball", "eps": 0.05},
        {"n": 200, "n0": 16},
        "before any",
    ),
    ("statistical.clever", {"kind": "linf_ball", "eps": 0.05}, {"n_batches": 5, "batch_size": 8}, "after"),
]


@pytest.mark.parametrize(("name", "threat", "params", "done"), BUDGET_CASES, ids=[c[0] for c in BUDGET_CASES])
def test_a_spent_budget_stops_early_and_says_how_much_was_done(
    image_case: TinyCase,
    context_factory: Any,
    name: str,
    threat: dict[str, Any],
    params: dict[str, Any],
    done: str,
) -> None:
    method = get_method(name)
    ctx = context_factory(image_case, threat, samples=20)
    ctx.time_s = 0.0  # the budget is already spent: the first unit of work is the most a method may do
    outcome = method.run(ctx, method.params_for(ctx.threat, params))
    assert outcome.status in (TestStatus.COMPLETED, TestStatus.INCONCLUSIVE)
    assert outcome.reason is not None and "time budget ran out" in outcome.reason and done in outcome.reason


def test_an_attack_is_priced_on_the_samples_it_will_attack() -> None:
    """Only correctly classified samples are attacked: a model right on 10% of the rows costs the attack
    about a tenth of its work (the ONNX Runtime checks of every sample stay), and accuracy is measured."""
    params = {"eps": 0.1, "sweep": [0.05, 0.1], "steps": 20}
    full = method_cost("empirical.pgd_linf", params, 200)
    weak = method_cost("empirical.pgd_linf", params, 200, clean_accuracy=0.1)
    assert weak.backwards == pytest.approx(full.backwards * 0.1, rel=0.05)
    assert weak.forwards == full.forwards  # every sample is still checked on ONNX Runtime
    assert method_cost("empirical.pgd_linf", params, 200, clean_accuracy=None) == full
    assert estimate.attacked_samples(200, 0.0) == 1 and estimate.attacked_samples(200, 1.5) == 200


def test_planning_measures_the_clean_accuracy_that_prices_attacks(
    tmp_path: Path, image_case: TinyCase
) -> None:
    from conftest import write_spec

    spec_path = write_spec(
        tmp_path, image_case, [goal("A", {"kind": "linf_ball", "eps": 0.1}, "robust_accuracy", ">=", 0.5)]
    )
    _, facts = execute.state_goals(spec_path, prefer_cuda=False)
    runner, data = execute.load_inputs(
        AssessmentSpec.model_validate_json(_.model_dump_json()), prefer_cuda=False
    )
    rows = min(len(data), execute.ACCURACY_ROWS)
    assert facts.clean_accuracy == pytest.approx(
        float(np.mean(runner.predict(data.x[:rows]) == data.y[:rows]))
    )
    predicted: list[int] = []
    real = type(runner).predict

    def counting(self: Any, x: np.ndarray) -> np.ndarray:
        predicted.append(len(x))
        return real(self, x)

    with pytest.MonkeyPatch.context() as patch:  # the flow plans again after the CLI's preflight
        patch.setattr(type(runner), "predict", counting)
        execute.state_goals(spec_path, prefer_cuda=False)
    assert predicted == []  # measured once per loaded model and data


def test_a_deployment_variant_pass_is_priced_by_its_cpu_kernels() -> None:
    """int8_dynamic runs several times slower than fp32 on CPU kernels, float16 about as fast; the
    passes are priced so, and nothing else grows with the variants but their child processes."""
    from nnassay.tasks.methods.empirical.deployment import PASS_FACTORS

    def rows(*variants: str) -> float:
        return method_cost("empirical.deployment_consistency", {"variants": list(variants)}, 100).forwards

    assert rows("providers") == 200  # the model and the variant, once each
    assert rows("int8_dynamic") == pytest.approx(100 * (1 + PASS_FACTORS["int8_dynamic"]))
    assert rows("float16", "int8_dynamic") == pytest.approx(
        100 * (1 + PASS_FACTORS["float16"] + PASS_FACTORS["int8_dynamic"])
    )
