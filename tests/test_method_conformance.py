"""One conformance suite over every registered method (sklearn common checks, timm test_models).

Conventions the checks rely on (every method follows them):
- Methods that create perturbed inputs save them as an ``application/x-npz`` artifact holding
  ``x_adv`` (perturbed inputs) and ``index`` (their row in the test data); the check verifies they
  stay inside the threat's ball and the declared value range.
- Attacks put the rows they broke in ``details["successful_indices"]`` (broken on ONNX Runtime);
  formal methods put the rows they proved in ``details["verified_indices"]``.
- Curves named '... robust accuracy' or '... certified accuracy' must not rise with strength.
A check that does not apply to a method is listed in its ``known_gaps``; it becomes a strict xfail
mark at collection, so the check still runs and an unexpected pass fails. No check passes on an
empty measurement: each one asserts that something was measured (samples attacked, proved, ...).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import json
import math
import pickle
import pkgutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import nnassay.tasks.methods as methods_package
from nnassay.schemas.common import ClaimKind, MethodFamily
from nnassay.schemas.results import MethodOutcome, MethodResult, TestStatus
from nnassay.schemas.threats import Deployment, NoThreat
from nnassay.tasks.methods.registry import _METHODS, RobustnessMethod, get_method, list_methods, threat_kind
from nnassay.tasks.pipeline.sharding import Shardable, shard_ranges

ALL = list_methods()
EPS = 0.05
SAMPLES = 40  # samples per run of a tiny case
SIMPLE_THREATS: dict[str, dict[str, Any]] = {
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
}
FILE_THREATS = ("vnnlib", "domain_shift")  # built by example_threat from the case's files
LIGHT: dict[str, dict[str, Any]] = {  # lighter settings for the checks (sklearn's checking parameters)
    "formal.max_stable_space": {"tol": 0.25},
    "statistical.rare_event_ams": {"particles": 100, "max_samples": 4},
    "statistical.clever": {"n_batches": 10, "batch_size": 16, "max_samples": 10},
}
_RUNS: dict[str, tuple[MethodResult, Any]] = {}  # runs shared by checks that only read the result


def example_threat(kind: str, tmp: Path, case: Any) -> dict[str, Any]:
    """A small threat of each kind for the tiny models."""
    if kind == "vnnlib":
        return {"kind": "vnnlib", "path": str(write_vnnlib(tmp, case))}
    if kind == "domain_shift":
        with np.load(case.data) as d:
            shifted = np.clip(d["x"] * 0.8 + 0.1, 0, 1)
            np.savez(tmp / "shift.npz", x=shifted, y=d["y"])
        return {"kind": "domain_shift", "path": str(tmp / "shift.npz")}
    return SIMPLE_THREATS[kind]


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


def case_for(method: RobustnessMethod[Any, Any], image_case: Any, tabular_case: Any) -> Any:
    return image_case if "image" in method.data_kinds else tabular_case


SLOW = {"formal.max_stable_space"}  # about 25 s a run here: only its first run is in the fast lane


def gap_marks(name: str, check: str) -> list[pytest.MarkDecorator]:
    """A strict xfail mark when ``check`` is a known gap of the method (the check still runs), and
    the slow mark on the repeated checks of slow methods."""
    reason = _METHODS[name].known_gaps.get(check)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return marks + ([pytest.mark.slow] if name in SLOW and check != "valid_result" else [])


def cases(check: str, names: Iterable[str] = ALL) -> list[Any]:
    """One parameter per method, carrying the method's known gap for ``check`` as a strict xfail."""
    return [pytest.param(n, id=n, marks=gap_marks(n, check)) for n in names]


def threat_cases(check: str, names: Iterable[str] = ALL) -> list[Any]:
    """One parameter per (method, declared threat kind)."""
    return [
        pytest.param(n, kind, id=f"{n}-{kind}", marks=gap_marks(n, check))
        for n in names
        for kind in _METHODS[n].threats
    ]


def measured(result: MethodResult) -> None:
    """The result measured something: completed, with at least one metric."""
    assert result.status == TestStatus.COMPLETED, f"{result.status.value}: {result.reason}"
    assert result.metrics, "the method reported no metric"


@pytest.fixture
def run(image_case, tabular_case, context_factory, tmp_path):  # type: ignore[no-untyped-def]
    """Run a method on a tiny case; returns (result, ctx). Identical calls share one run unless
    ``fresh`` (checks that only read the result need not repeat it)."""

    def go(
        name: str,
        *,
        kind: str | None = None,
        threat: dict[str, Any] | None = None,
        confidence: float = 0.95,
        interval: str | None = None,
        fresh: bool = False,
        on: str | None = None,
    ) -> tuple[MethodResult, Any]:
        kind = None if threat else kind or _METHODS[name].threats[0]
        key = json.dumps([name, kind, threat, confidence, interval, on])
        if key in _RUNS and not fresh:
            return _RUNS[key]
        method = get_method(name)
        case = {"image": image_case, "tabular": tabular_case}.get(
            on or "", case_for(method, image_case, tabular_case)
        )
        chosen = threat or example_threat(kind or method.threats[0], tmp_path, case)
        ctx = context_factory(
            case, chosen, metric=method.metrics[0], seed=5, samples=SAMPLES, confidence=confidence
        )
        if interval is not None:
            ctx.interval = interval  # the goal's criterion.interval, as the runner passes it
        params = method.params_for(ctx.threat, dict(LIGHT.get(name, {})))
        assert isinstance(params, method.Params)
        _RUNS[key] = as_result(method.run(ctx, params), name, ctx.seed), ctx
        return _RUNS[key]

    return go


def as_result(outcome: MethodOutcome, name: str, seed: int) -> MethodResult:
    return MethodResult.from_outcome(
        outcome,
        test_id=f"T/{name}",
        goal_id="T",
        method=name,
        family=get_method(name).family,
        seed=seed,
        time_s=0.0,
        provider="cpu",
    )


# --- the registry and the catalog ---------------------------------------------------------------


def test_registry_meta() -> None:
    assert len(ALL) == len(set(ALL)) >= 2
    for name in ALL:
        cls = _METHODS[name]
        family, _, short = name.partition(".")
        assert family == cls.family.value and short.replace("_", "").isalnum(), name
        assert not getattr(cls, "__abstractmethods__", None), f"{name} is abstract"
        assert cls.threats and cls.metrics and cls.clause, name
        assert cls.__doc__ and len(cls.__doc__.strip()) > 40, f"{name} needs a docstring"
        assert set(cls.threats) <= {threat_kind(c) for c in cls.threat_classes}, name
        assert set(cls.known_gaps) <= CHECKS, f"{name}: known gaps name unknown checks"


def _catalog_imports() -> set[str]:
    source = Path(importlib.import_module("nnassay.tasks.methods.catalog").__file__ or "").read_text()
    return {
        a.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import) for a in node.names
    }


def _registers(source: str) -> bool:
    """The module source defines a class decorated with ``register``."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            for d in node.decorator_list:
                if (isinstance(d, ast.Name) and d.id == "register") or (
                    isinstance(d, ast.Attribute) and d.attr == "register"
                ):
                    return True
    return False


def _method_modules() -> dict[str, Path]:
    """Every module under nnassay.tasks.methods, by dotted name, with its file."""
    found = {}
    for info in pkgutil.walk_packages(methods_package.__path__, methods_package.__name__ + "."):
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    return found


def test_every_registered_method_module_is_in_the_catalog() -> None:
    catalog = _catalog_imports()
    assert catalog, "catalog.py imports no method module"
    missing = {n: _METHODS[n].__module__ for n in ALL if _METHODS[n].__module__ not in catalog}
    assert not missing, f"methods registered by modules missing from catalog.py: {missing}"


def test_every_module_defining_a_method_is_imported_by_the_catalog() -> None:
    """Walk the package: a new method module that catalog.py does not import fails here."""
    modules = _method_modules()
    registering = {name for name, path in modules.items() if _registers(path.read_text())}
    assert registering, "no module under nnassay.tasks.methods registers a method"
    catalog = _catalog_imports()
    assert registering <= catalog, f"add to catalog.py: {sorted(registering - catalog)}"
    assert catalog <= registering, (
        f"catalog.py lists modules that register nothing: {sorted(catalog - registering)}"
    )
    for name in sorted(modules):  # importing every module registers nothing the catalog does not
        importlib.import_module(name)
    assert sorted(_METHODS) == ALL, f"registered outside the catalog: {sorted(set(_METHODS) - set(ALL))}"


def test_known_gaps_become_strict_xfail_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    name = next(n for n in ALL if n not in SLOW)
    monkeypatch.setattr(_METHODS[name], "known_gaps", {"deterministic": "draws depend on the clock"})
    (mark,) = gap_marks(name, "deterministic")
    assert mark.name == "xfail" and mark.kwargs == {"strict": True, "reason": "draws depend on the clock"}
    assert gap_marks(name, "json_round_trip") == []


def test_unknown_method_lists_valid_names() -> None:
    with pytest.raises(KeyError, match="expected one of"):
        get_method("empirical.does_not_exist")
    with pytest.raises(KeyError, match="did you mean 'empirical.pgd_linf'"):  # a typo: the closest name
        get_method("empirical.pgd_lnf")


def test_every_declared_threat_kind_has_an_example() -> None:
    kinds = {k for n in ALL for k in _METHODS[n].threats}
    assert kinds and kinds <= set(SIMPLE_THREATS) | set(FILE_THREATS), sorted(kinds)


@pytest.mark.parametrize("name", cases("rejects_other_threats"))
def test_a_threat_of_an_undeclared_class_is_refused(name: str) -> None:
    """The base checks the threat class once, at ``params_for``, and names the accepted classes."""
    method = get_method(name)
    other = next(
        t for t in (NoThreat(kind="none"), Deployment(kind="deployment")) if t.kind not in method.threats
    )
    with pytest.raises(TypeError, match="tests .* threats, got"):
        method.params_for(other, {})


@pytest.mark.parametrize("name", cases("default_params"))
def test_default_params_construct(name: str) -> None:
    method = get_method(name)
    assert isinstance(method.Params(), method.Params)


# --- every method, on a tiny case -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), threat_cases("valid_result"))
def test_run_returns_valid_result(name: str, kind: str, run) -> None:  # type: ignore[no-untyped-def]
    """Every declared threat kind is exercised (one run per (method, threat) pair)."""
    result, ctx = run(name, kind=kind)
    assert ctx.threat.kind == kind
    assert result.method == name and result.family == get_method(name).family
    measured(result)
    assert set(result.metrics) <= set(get_method(name).metrics), "reports undeclared metrics"
    for metric, m in result.metrics.items():
        assert math.isfinite(m.value), metric
        if m.is_rate:
            assert 0.0 <= m.value <= 1.0, metric
            assert m.interval is not None, f"rate {metric} has no interval"
        if m.interval:
            assert m.interval.low - 1e-9 <= m.value <= m.interval.high + 1e-9, metric
        assert m.description, f"{metric} needs a description for the dossier"


@pytest.mark.parametrize("name", cases("deterministic"))
def test_same_seed_same_result(name: str, run) -> None:  # type: ignore[no-untyped-def]
    first, _ = run(name)
    second, _ = run(name, fresh=True)
    measured(first)
    assert first.metrics == second.metrics
    assert first.series == second.series


@pytest.mark.parametrize("name", cases("json_round_trip"))
def test_json_round_trip(name: str, run) -> None:  # type: ignore[no-untyped-def]
    result, _ = run(name)
    measured(result)
    assert MethodResult.model_validate_json(result.model_dump_json()) == result


# --- sharding ---------------------------------------------------------------------------------------

SHARDABLE = [n for n in ALL if isinstance(get_method(n), Shardable)]


def test_shardable_methods_exist() -> None:
    assert SHARDABLE, "no registered method implements nnassay.tasks.pipeline.sharding.Shardable"


@pytest.mark.parametrize("name", cases("sharded_equals_whole", SHARDABLE))
def test_sharded_run_equals_the_whole_run_bit_for_bit(
    name: str,
    image_case,
    tabular_case,
    context_factory,
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    """As execute.run_shard / merge_shards do it: a fresh context per shard, parts pickled, merged."""
    method = get_method(name)
    assert isinstance(method, Shardable)
    case = case_for(method, image_case, tabular_case)
    unit = method.shard_unit
    samples = 120 if unit > 1 else 10
    ranges = shard_ranges(samples, unit, unit if unit > 1 else 4)
    assert len(ranges) >= 2 and ranges[-1][1] == samples, ranges
    threat = example_threat(method.threats[0], tmp_path, case)

    def context():  # type: ignore[no-untyped-def]
        return context_factory(case, threat, metric=method.metrics[0], seed=3, samples=samples)

    whole_ctx = context()
    params = method.params_for(whole_ctx.threat, dict(LIGHT.get(name, {})))
    whole = as_result(method.run(whole_ctx, params), name, 3)
    parts = [pickle.loads(pickle.dumps(method.run_part(context(), params, a, b))) for a, b in ranges]
    merged = as_result(method.merge_parts(context(), params, parts), name, 3)
    measured(whole)
    assert merged.status == whole.status
    assert merged.metrics == whole.metrics
    assert merged.series == whole.series


# --- perturbations, curves and cross-family soundness -----------------------------------------------


def _perturbed(result: MethodResult, ctx: Any) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(x_adv, x, index) of every npz artifact holding perturbed inputs."""
    found = []
    for artifact in result.artifacts:
        if artifact.media_type != "application/x-npz":
            continue
        with np.load(io.BytesIO((ctx.run_dir / artifact.path).read_bytes())) as data:
            if "x_adv" in data and "index" in data:
                found.append((data["x_adv"], ctx.data.x[data["index"]], data["index"]))
    return found


BALL_ATTACKS = [
    n
    for n in ALL
    if {"linf_ball", "l2_ball"} & set(_METHODS[n].threats) and _METHODS[n].family == MethodFamily.EMPIRICAL
]
STRONG = {  # radii at which every attack breaks some samples of the tiny image model
    "linf_ball": {"kind": "linf_ball", "eps": 0.2, "sweep": [0.05, 0.1, 0.2]},
    "l2_ball": {"kind": "l2_ball", "eps": 1.0},
}


@pytest.mark.parametrize(("name", "kind"), threat_cases("within_eps", BALL_ATTACKS))
def test_perturbations_stay_in_ball_and_range(name: str, kind: str, run) -> None:  # type: ignore[no-untyped-def]
    result, ctx = run(name, threat=STRONG[kind])
    measured(result)
    found = _perturbed(result, ctx)
    assert found, "an attack must store its perturbed inputs (x_adv, index) as an npz artifact"
    assert sum(len(x_adv) for x_adv, _, _ in found) > 0, "no perturbed input to check: nothing was broken"
    eps = ctx.threat.eps
    for x_adv, x, _ in found:
        delta = (x_adv - x).reshape(len(x), -1)
        norm = np.abs(delta).max(axis=1) if kind == "linf_ball" else np.linalg.norm(delta, axis=1)
        if len(x):
            assert norm.max() <= eps * (1 + 1e-5) + 1e-6
            assert x_adv.min() >= 0.0 - 1e-6 and x_adv.max() <= 1.0 + 1e-6


@pytest.mark.parametrize(("name", "kind"), threat_cases("ort_agrees", BALL_ATTACKS))
def test_attack_success_only_where_onnx_runtime_is_wrong(name: str, kind: str, run) -> None:  # type: ignore[no-untyped-def]
    """An attack never 'succeeds' where ONNX Runtime, the deployed model, still predicts the label."""
    result, ctx = run(name, threat=STRONG[kind])
    measured(result)
    successful = sorted(result.details.get("successful_indices", []))
    assert successful, "no success to check: the attack broke nothing"
    stored = _perturbed(result, ctx)
    assert stored, "an attack must store its adversarial inputs"
    for x_adv, _, index in stored:
        assert sorted(int(i) for i in index) == successful
        assert np.all(ctx.model.predict(x_adv) != ctx.data.y[index]), "a success ONNX Runtime disagrees with"
    assert result.metrics["attack_success_rate"].successes == len(successful)


CURVES = ("robust accuracy", "certified accuracy")
CURVE_METHODS = [
    n
    for n in ALL
    if {"robust_accuracy", "certified_accuracy", "certified_fraction_at_eps"} & set(_METHODS[n].metrics)
]


@pytest.mark.parametrize("name", cases("monotone", CURVE_METHODS))
def test_robust_accuracy_does_not_rise_with_strength(name: str, run) -> None:  # type: ignore[no-untyped-def]
    result, _ = run(name)
    measured(result)
    curves = [s for s in result.series if s.kind == "line" and any(c in s.name for c in CURVES)]
    assert curves, f"{name} reports no robust or certified accuracy curve"
    for s in curves:
        order = np.argsort(s.x)
        x, y = np.asarray(s.x)[order], np.asarray(s.y)[order]
        assert len(set(x)) >= 2, f"{s.name}: fewer than two strengths measured"
        assert y[0] > 0, f"{s.name}: no sample counted at the smallest strength (the curve is empty)"
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


@pytest.mark.parametrize("attack", cases("cross_family_soundness", ATTACKS))
def test_no_attack_succeeds_where_a_verifier_proved_robustness(attack: str, run) -> None:  # type: ignore[no-untyped-def]
    assert VERIFIERS, "a formal method for linf_ball must be registered"
    threat = {"kind": "linf_ball", "eps": EPS}
    proved: set[int] = set()
    data_kind = None if "image" in _METHODS[attack].data_kinds else "tabular"  # the attack's own case
    for verifier in VERIFIERS:
        result, _ = run(verifier, threat=threat, on=data_kind)
        measured(result)
        proved |= set(result.details.get("verified_indices", []))
    assert proved, f"no sample proved robust at eps {EPS}: nothing to contrast the attack with"
    broken, _ = run(attack, threat=threat)
    measured(broken)
    assert broken.details["clean_correct"] > 0, "the attack attacked no sample"
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


@pytest.mark.parametrize("name", cases("rate_intervals"))
def test_every_rate_has_an_interval_at_the_goals_confidence_and_a_claim(name: str, run) -> None:  # type: ignore[no-untyped-def]
    """Every rate carries its interval at the goal's confidence and says what kind of claim it is."""
    method = get_method(name)
    result, _ = run(name, confidence=0.8, interval="wilson")
    measured(result)
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
    if method.metrics[0] in result.metrics:
        assert result.metrics[method.metrics[0]].claim == method.claim, (
            f"the headline metric's claim must be the method's declared claim {method.claim.value}"
        )
    for series in result.series:
        if series.y_low is not None or series.y_high is not None:
            assert series.y_low is not None and series.y_high is not None
            assert len(series.y_low) == len(series.y_high) == len(series.y), series.name


CHECKS = {
    "rejects_other_threats",
    "default_params",
    "valid_result",
    "deterministic",
    "json_round_trip",
    "sharded_equals_whole",
    "within_eps",
    "ort_agrees",
    "monotone",
    "cross_family_soundness",
    "rate_intervals",
}
