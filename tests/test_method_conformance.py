"""One conformance suite over every registered method (sklearn common checks, timm test_models).

Conventions the checks rely on (every method follows them):
- Methods that create perturbed inputs save them as an ``application/x-npz`` artifact holding
  ``x_adv`` (perturbed inputs) and ``index`` (their row in the test data); the check verifies they
  stay inside the threat's ball and the declared value range.
- Attacks put the rows they broke in ``details["successful_indices"]`` (broken on ONNX Runtime);
  formal methods put the rows they proved in ``details["verified_indices"]``.
- Curves named '... robust accuracy' or '... certified accuracy' must not rise with strength.
A check that does not apply to a method is listed in its ``known_gaps`` and becomes an xfail.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nnassay.schemas.common import ClaimKind, MethodFamily
from nnassay.schemas.results import MethodResult, TestStatus
from nnassay.tasks.methods.registry import _METHODS, RobustnessMethod, get_method, list_methods

ALL = list_methods()
EPS = 0.05


def example_threat(kind: str, tmp: Path, case: Any) -> dict[str, Any]:
    """A small threat of each kind for the tiny models."""
    if kind == "vnnlib":
        return {"kind": "vnnlib", "path": str(write_vnnlib(tmp, case))}
    if kind == "domain_shift":
        with np.load(case.data) as d:
            shifted = np.clip(d["x"] * 0.8 + 0.1, 0, 1)
            np.savez(tmp / "shift.npz", x=shifted, y=d["y"])
        return {"kind": "domain_shift", "path": str(tmp / "shift.npz")}
    return {
        "none": {"kind": "none"},
        "gaussian_noise": {"kind": "gaussian_noise", "sigma": 0.1},
        "uniform_noise": {"kind": "uniform_noise", "eps": 0.1},
        "linf_ball": {"kind": "linf_ball", "eps": EPS, "sweep": [0.01, 0.03, EPS]},
        "l2_ball": {"kind": "l2_ball", "eps": 0.25},
        "corruption": {
            "kind": "corruption",
            "corruptions": ["gaussian_noise", "brightness"],
            "severities": [1, 3],
        },
        "geometric": {"kind": "geometric", "transform": "rotation", "values": [5.0, 15.0]},
        "tabular": {"kind": "tabular", "perturbation": "numeric_noise", "strength": 0.1},
        "invalid_input": {"kind": "invalid_input"},
        "ood": {"kind": "ood"},
        "deployment": {"kind": "deployment", "variants": ["float16", "int8_dynamic"]},
    }[kind]


def write_vnnlib(tmp: Path, case: Any) -> Path:
    """Local robustness of the first sample at eps 0.01, as VNN-LIB (violation: another class wins)."""
    import onnxruntime as ort

    with np.load(case.data) as d:
        x = d["x"][0].reshape(-1)
    session = ort.InferenceSession(str(case.model), providers=["CPUExecutionProvider"])
    label = int(session.run(None, {session.get_inputs()[0].name: d_x(case)})[0].argmax())
    lines = [f"(declare-const X_{i} Real)" for i in range(len(x))]
    lines += [f"(declare-const Y_{j} Real)" for j in range(case.n_classes)]
    for i, v in enumerate(x):
        lines += [
            f"(assert (>= X_{i} {max(v - 0.01, 0.0):.8f}))",
            f"(assert (<= X_{i} {min(v + 0.01, 1.0):.8f}))",
        ]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(case.n_classes) if j != label)
    lines.append(f"(assert (or {others}))")
    path = tmp / "prop.vnnlib"
    path.write_text("\n".join(lines) + "\n")
    return path


def d_x(case: Any) -> np.ndarray:
    with np.load(case.data) as d:
        return d["x"][:1].astype(np.float32)


def case_for(method: RobustnessMethod, image_case: Any, tabular_case: Any) -> Any:
    return image_case if "image" in method.data_kinds else tabular_case


def gap(name: str, check: str) -> None:
    reason = _METHODS[name].known_gaps.get(check)
    if reason:
        pytest.xfail(reason)


@pytest.fixture
def run(image_case, tabular_case, context_factory, tmp_path):  # type: ignore[no-untyped-def]
    """Run a method on a tiny case; returns (result, ctx)."""

    def go(
        name: str,
        *,
        seed: int = 0,
        threat: dict[str, Any] | None = None,
        confidence: float = 0.95,
        interval: str | None = None,
    ) -> tuple[MethodResult, Any]:
        method = get_method(name)
        case = case_for(method, image_case, tabular_case)
        kind = method.threats[0]
        threat = threat or example_threat(kind, tmp_path, case)
        ctx = context_factory(
            case, threat, metric=method.metrics[0], seed=seed, samples=40, confidence=confidence
        )
        if interval is not None:
            ctx.interval = interval  # the goal's criterion.interval, as the runner passes it
        params = method.params_for(ctx.threat, {})
        outcome = method.run(ctx, params)
        result = MethodResult.from_outcome(
            outcome,
            test_id=f"T/{name}",
            goal_id="T",
            method=name,
            family=method.family,
            seed=seed,
            time_s=0.0,
            provider="cpu",
        )
        return result, ctx

    return go


def test_registry_meta() -> None:
    assert len(ALL) == len(set(ALL)) >= 2
    for name in ALL:
        cls = _METHODS[name]
        family, _, short = name.partition(".")
        assert family == cls.family.value and short.replace("_", "").isalnum(), name
        assert not getattr(cls, "__abstractmethods__", None), f"{name} is abstract"
        assert cls.threats and cls.metrics and cls.clause, name
        assert cls.__doc__ and len(cls.__doc__.strip()) > 40, f"{name} needs a docstring"


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="expected one of"):
        get_method("empirical.does_not_exist")


@pytest.mark.parametrize("name", ALL, ids=str)
def test_default_params_construct(name: str) -> None:
    gap(name, "default_params")
    method = get_method(name)
    assert method.Params() is not None


@pytest.mark.parametrize("name", ALL, ids=str)
def test_run_returns_valid_result(name: str, run) -> None:  # type: ignore[no-untyped-def]
    gap(name, "valid_result")
    result, _ = run(name)
    assert result.method == name and result.family == get_method(name).family
    assert result.status != TestStatus.ERROR, result.reason
    if result.status == TestStatus.INCONCLUSIVE:
        assert result.reason, "an inconclusive result must say why"
    assert set(result.metrics) <= set(get_method(name).metrics), "reports undeclared metrics"
    for metric, m in result.metrics.items():
        assert math.isfinite(m.value), metric
        if m.is_rate:
            assert 0.0 <= m.value <= 1.0, metric
            assert m.interval is not None, f"rate {metric} has no interval"
        if m.interval:
            assert m.interval.low - 1e-9 <= m.value <= m.interval.high + 1e-9, metric
        assert m.description, f"{metric} needs a description for the dossier"


@pytest.mark.parametrize("name", ALL, ids=str)
def test_same_seed_same_result(name: str, run) -> None:  # type: ignore[no-untyped-def]
    gap(name, "deterministic")
    first, _ = run(name, seed=5)
    second, _ = run(name, seed=5)
    assert first.metrics == second.metrics
    assert first.series == second.series


@pytest.mark.parametrize("name", ALL, ids=str)
def test_json_round_trip(name: str, run) -> None:  # type: ignore[no-untyped-def]
    gap(name, "json_round_trip")
    result, _ = run(name)
    assert MethodResult.model_validate_json(result.model_dump_json()) == result


def _perturbed(result: MethodResult, ctx: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    found = []
    for artifact in result.artifacts:
        if artifact.media_type != "application/x-npz":
            continue
        with np.load(io.BytesIO((ctx.run_dir / artifact.path).read_bytes())) as data:
            if "x_adv" in data and "index" in data:
                found.append((data["x_adv"], ctx.data.x[data["index"]]))
    return found


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in ALL
        if {"linf_ball", "l2_ball"} & set(_METHODS[n].threats)
        and _METHODS[n].family == MethodFamily.EMPIRICAL
    ],
    ids=str,
)
def test_perturbations_stay_in_ball_and_range(name: str, run) -> None:  # type: ignore[no-untyped-def]
    gap(name, "within_eps")
    result, ctx = run(name)
    pairs = _perturbed(result, ctx)
    assert pairs, "an attack must store its perturbed inputs (x_adv, index) as an npz artifact"
    eps = ctx.threat.eps
    for x_adv, x in pairs:
        delta = (x_adv - x).reshape(len(x), -1)
        norm = np.abs(delta).max(axis=1) if ctx.threat.kind == "linf_ball" else np.linalg.norm(delta, axis=1)
        assert norm.max() <= eps * (1 + 1e-5) + 1e-6
        assert x_adv.min() >= 0.0 - 1e-6 and x_adv.max() <= 1.0 + 1e-6


@pytest.mark.parametrize("name", ALL, ids=str)
def test_robust_accuracy_does_not_rise_with_strength(name: str, run) -> None:  # type: ignore[no-untyped-def]
    gap(name, "monotone")
    result, _ = run(name)
    for s in result.series:
        if s.kind == "line" and ("robust accuracy" in s.name or "certified accuracy" in s.name):
            order = np.argsort(s.x)
            y = np.asarray(s.y)[order]
            assert np.all(np.diff(y) <= 1e-12), f"{s.name} rises with {s.x_label}"


ATTACKS = [
    n for n in ALL if _METHODS[n].family == MethodFamily.EMPIRICAL and "linf_ball" in _METHODS[n].threats
]
VERIFIERS = [
    n
    for n in ALL
    if _METHODS[n].family == MethodFamily.FORMAL
    and "linf_ball" in _METHODS[n].threats
    and _METHODS[n].default
]


@pytest.mark.parametrize("attack", ATTACKS, ids=str)
def test_no_attack_succeeds_where_a_verifier_proved_robustness(attack: str, run) -> None:  # type: ignore[no-untyped-def]
    assert VERIFIERS, "a formal method for linf_ball must be registered"
    gap(attack, "cross_family_soundness")
    threat = {"kind": "linf_ball", "eps": EPS}
    proved: set[int] = set()
    for verifier in VERIFIERS:
        result, _ = run(verifier, threat=threat)
        proved |= set(result.details.get("verified_indices", []))
    broken, _ = run(attack, threat=threat)
    successful = set(broken.details.get("successful_indices", []))
    assert not proved & successful, f"{attack} broke samples a verifier proved: {sorted(proved & successful)}"


NOT_RATES = {"accuracy_drop", "accuracy_difference"}


def looks_like_rate(metric: str) -> bool:
    """Metric names that denote a share of samples, inputs or draws (so they need an interval)."""
    return metric not in NOT_RATES and (
        metric.endswith(("_rate", "accuracy", "_fraction", "fpr_at_95_tpr", "corruption_error"))
        or metric.startswith("fraction_")
        or "_fraction_" in metric
    )


@pytest.mark.parametrize("name", ALL, ids=str)
def test_every_rate_has_an_interval_at_the_goals_confidence_and_a_claim(name: str, run) -> None:  # type: ignore[no-untyped-def]
    """Every rate carries its interval at the goal's confidence and says what kind of claim it is."""
    gap(name, "rate_intervals")
    method = get_method(name)
    result, _ = run(name, confidence=0.8, interval="wilson")
    assert result.status != TestStatus.ERROR, result.reason
    for metric, m in result.metrics.items():
        assert isinstance(m.claim, ClaimKind), metric
        if looks_like_rate(metric):
            assert m.is_rate, f"{metric} is a rate but not marked is_rate"
        if m.is_rate:
            assert m.interval is not None, f"rate {metric} has no interval"
        if m.interval is not None:
            assert m.interval.confidence == pytest.approx(0.8), (
                f"{metric}: interval not at the goal's confidence"
            )
        if m.is_rate and m.successes is not None:
            assert m.interval is not None and m.interval.method == "wilson", (
                f"{metric}: a binomial rate must use the goal's interval method (wilson here), "
                f"got {m.interval.method if m.interval else None}"
            )
    if result.status == TestStatus.COMPLETED and method.metrics[0] in result.metrics:
        assert result.metrics[method.metrics[0]].claim == method.claim, (
            f"the headline metric's claim must be the method's declared claim {method.claim.value}"
        )
    for series in result.series:
        if series.y_low is not None or series.y_high is not None:
            assert series.y_low is not None and series.y_high is not None
            assert len(series.y_low) == len(series.y_high) == len(series.y), series.name


@pytest.mark.parametrize(
    "attack",
    [
        n
        for n in ALL
        if _METHODS[n].family == MethodFamily.EMPIRICAL
        and {"linf_ball", "l2_ball"} & set(_METHODS[n].threats)
    ],
    ids=str,
)
def test_attack_success_only_where_onnx_runtime_is_wrong(attack: str, run) -> None:  # type: ignore[no-untyped-def]
    """An attack never 'succeeds' where ONNX Runtime, the deployed model, still predicts the label."""
    gap(attack, "ort_agrees")
    result, ctx = run(attack)
    successful = sorted(result.details.get("successful_indices", []))
    stored = []
    for artifact in result.artifacts:
        if artifact.media_type != "application/x-npz":
            continue
        with np.load(io.BytesIO((ctx.run_dir / artifact.path).read_bytes())) as data:
            if "x_adv" in data and "index" in data:
                stored.append((data["x_adv"], data["index"]))
    assert stored, "an attack must store its adversarial inputs"
    for x_adv, index in stored:
        assert sorted(int(i) for i in index) == successful
        if len(index):
            assert np.all(ctx.model.predict(x_adv) != ctx.data.y[index]), (
                "a success ONNX Runtime disagrees with"
            )
    broken = result.metrics["attack_success_rate"]
    assert broken.successes == len(successful)
