"""Invalid input, OOD, domain shift, tabular perturbations, deployment, and data-kind refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TinyCase, goal, make_context
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.results import TestStatus
from nnassay.tasks.errors import PlanError
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.empirical.ood import auroc, fpr_at_tpr
from nnassay.tasks.methods.registry import get_method
from nnassay.tasks.pipeline.planning import PlanFacts, make_plan
from tests.empirical.linear import make_linear_case


@pytest.fixture(scope="module")
def linear_case(tmp_path_factory: pytest.TempPathFactory) -> TinyCase:
    return make_linear_case(tmp_path_factory.mktemp("linear"))


def run(case: TinyCase, name: str, threat: dict, tmp: Path, **overrides: object):  # type: ignore[no-untyped-def]
    ctx = make_context(case, threat, tmp, seed=2)
    method = get_method(name)
    return method.run(ctx, method.params_for(ctx.threat, overrides)), ctx


def test_invalid_input_counts_non_finite_outputs(linear_case: TinyCase, tmp_path: Path) -> None:
    outcome, _ = run(
        linear_case,
        "empirical.invalid_input",
        {"kind": "invalid_input", "cases": ["nan", "constant"]},
        tmp_path,
    )
    per_case = outcome.details["per_case"]
    assert per_case["nan"]["non_finite"]["value"] == 1.0  # a linear model propagates NaN
    assert per_case["constant"]["non_finite"]["value"] == 0.0
    assert outcome.metrics["non_finite_rate"].value == 0.5 and outcome.metrics["crash_rate"].value == 0.0


def test_invalid_input_counts_each_crash_without_hiding_others(
    linear_case: TinyCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ModelRunner.logits

    def fragile(self: ModelRunner, x: np.ndarray, **kw: object) -> np.ndarray:
        if np.isinf(x).any():
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : infinite input")
        return real(self, x)

    monkeypatch.setattr(ModelRunner, "logits", fragile)
    outcome, _ = run(linear_case, "empirical.invalid_input", {"kind": "invalid_input"}, tmp_path)
    per_case = outcome.details["per_case"]
    assert per_case["pos_inf"]["crashed"]["value"] == 1.0 and per_case["neg_inf"]["crashed"]["value"] == 1.0
    assert per_case["nan"]["crashed"]["value"] == 0.0 and per_case["nan"]["non_finite"]["value"] == 1.0
    assert "infinite input" in per_case["pos_inf"]["errors"][0]
    assert outcome.metrics["crash_rate"].value == pytest.approx(2 / 7)
    assert outcome.metrics["crash_rate"].interval is not None


def test_auroc_and_fpr_on_separable_scores() -> None:
    inside, outside = np.linspace(0.8, 1.0, 50), np.linspace(0.1, 0.5, 30)
    assert auroc(inside, outside) == 1.0 and auroc(outside, inside) == 0.0
    assert fpr_at_tpr(inside, outside)[0] == 0
    assert auroc(inside, inside) == pytest.approx(0.5)


def test_ood_file_far_from_the_data_is_detected(linear_case: TinyCase, tmp_path: Path) -> None:
    ood = tmp_path / "ood.npz"
    np.savez(ood, x=np.zeros((20, 1, 2, 2), np.float32))
    outcome, _ = run(
        linear_case, "empirical.ood_detection", {"kind": "ood", "path": str(ood)}, tmp_path / "o"
    )
    # test data: margin 0.45 (msp 0.61); OOD zeros: margin 0.2 (msp 0.55) -> perfectly separated
    assert outcome.metrics["auroc"].value == 1.0 and outcome.metrics["fpr_at_95_tpr"].value == 0.0
    assert {s.kind for s in outcome.series} == {"histogram"} and len(outcome.series) == 2


def test_generated_ood_sets_run_on_images(image_case: TinyCase, tmp_path: Path) -> None:
    outcome, _ = run(image_case, "empirical.ood_detection", {"kind": "ood", "score": "energy"}, tmp_path)
    assert set(outcome.details["sets"]) == {"uniform_noise", "shuffled_pixels", "blank"}
    assert 0.0 <= outcome.metrics["auroc"].value <= 1.0


def test_domain_shift_reports_the_difference(image_case: TinyCase, tmp_path: Path) -> None:
    with np.load(image_case.data) as d:
        np.savez(tmp_path / "shift.npz", x=np.clip(d["x"] * 0.3, 0, 1), y=d["y"])
    outcome, _ = run(
        image_case,
        "empirical.domain_shift",
        {"kind": "domain_shift", "path": str(tmp_path / "shift.npz")},
        tmp_path / "o",
    )
    diff = outcome.metrics["accuracy_difference"]
    clean = outcome.details["clean_accuracy"]
    assert diff.value == pytest.approx(outcome.metrics["accuracy"].value - clean)
    assert diff.interval.low <= diff.value <= diff.interval.high


@pytest.mark.parametrize("perturbation", ["numeric_noise", "multiplicative", "missing", "range_edge"])
def test_tabular_perturbations(tabular_case: TinyCase, tmp_path: Path, perturbation: str) -> None:
    outcome, _ = run(
        tabular_case,
        "empirical.tabular_perturbation",
        {"kind": "tabular", "perturbation": perturbation, "strength": 0.3},
        tmp_path,
    )
    assert outcome.status == TestStatus.COMPLETED
    assert 0.0 <= outcome.metrics["label_flip_rate"].value <= 1.0
    if perturbation == "missing":
        assert set(outcome.details["variants"]) == {"nan_fed", "mean_imputed"}
    if perturbation == "range_edge":
        assert set(outcome.details["variants"]) == {"beyond_range", "at_range_edge"}


def test_categorical_swap_without_categories_is_inconclusive(tabular_case: TinyCase, tmp_path: Path) -> None:
    outcome, _ = run(
        tabular_case,
        "empirical.tabular_perturbation",
        {"kind": "tabular", "perturbation": "categorical_swap"},
        tmp_path,
    )
    assert outcome.status == TestStatus.INCONCLUSIVE and "categorical" in outcome.reason


def test_deployment_compares_reduced_precision_and_is_honest_about_providers(
    image_case: TinyCase, tmp_path: Path
) -> None:
    outcome, _ = run(image_case, "empirical.deployment_consistency", {"kind": "deployment"}, tmp_path)
    assert set(outcome.details["variants"]) >= {"float16", "int8_dynamic"}
    assert outcome.metrics["max_output_deviation"].value < 1.0
    if "providers" in outcome.details["unavailable"]:
        assert "one execution provider" in outcome.reason


@pytest.mark.parametrize(
    "name,threat",
    [
        ("empirical.corruption_accuracy", {"kind": "corruption"}),
        ("empirical.geometric_worst_case", {"kind": "geometric", "transform": "rotation", "values": [5.0]}),
        ("empirical.square_linf", {"kind": "linf_ball", "eps": 0.1}),
    ],
)
def test_image_threat_on_tabular_data_is_refused_naming_the_goal(name: str, threat: dict) -> None:
    spec = AssessmentSpec.model_validate(
        {
            "id": "x",
            "title": "t",
            "model": {"path": "m.onnx", "layout": "NC"},
            "data": {"path": "d.npz"},
            "goals": [goal("G7", threat, get_method(name).metrics[0], ">=", 0.5, methods=[{"name": name}])],
        }
    )
    facts = PlanFacts(
        spec_sha256="s", model_sha256="m", data_sha256="d", data_samples=100, data_kind="tabular"
    )
    with pytest.raises(PlanError) as err:
        make_plan(spec, facts)
    assert "goal G7" in str(err.value) and "needs image data" in str(err.value)


def test_tabular_threat_on_images_is_refused() -> None:
    from nnassay.schemas.threats import TabularPerturbation

    method = get_method("empirical.tabular_perturbation")
    problems = method.check(TabularPerturbation(kind="tabular", perturbation="missing"), "image")
    assert problems and "needs tabular data" in problems[0]


def test_tabular_perturbations_follow_the_declared_features() -> None:
    """Declared ranges, noise scales and categorical codes drive every tabular perturbation."""
    from nnassay.schemas.goals import FeatureSpec
    from nnassay.tasks.methods.empirical.features import columns
    from nnassay.tasks.methods.empirical.tabular import perturb_tabular

    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(10, 20, 200), rng.choice([0.0, 1.0, 2.0], 200), rng.uniform(0, 1, 200)], 1)
    specs = (
        FeatureSpec(name="age", range=(0.0, 100.0), noise_scale=5.0),
        FeatureSpec(name="colour", kind="categorical", values=[0.0, 1.0, 2.0]),
        FeatureSpec(name="2", range=(0.0, 1.0)),
    )
    cols = columns(x, ("age", "colour", "w"), specs)
    assert (cols[0].low, cols[0].high, cols[0].spread) == (0.0, 100.0, 5.0)
    assert cols[1].kind == "categorical" and cols[1].values == (0.0, 1.0, 2.0)
    assert (cols[2].low, cols[2].high) == (0.0, 1.0)  # matched by index when the name is not declared

    noisy = perturb_tabular(x, cols, "numeric_noise", 0.2, np.random.default_rng(1))["noise"]
    assert np.std(noisy[:, 0] - x[:, 0]) == pytest.approx(0.2 * 5.0, rel=0.15)  # strength x declared scale
    assert np.array_equal(noisy[:, 1], x[:, 1].astype(np.float32))  # categorical untouched by noise
    assert noisy[:, 2].min() >= 0.0 and noisy[:, 2].max() <= 1.0  # clipped to the declared range

    scaled = perturb_tabular(x, cols, "multiplicative", 0.05, np.random.default_rng(2))["multiplicative"]
    ratio = scaled[:, 0] / x[:, 0]
    assert ratio.min() >= 0.95 - 1e-6 and ratio.max() <= 1.05 + 1e-6 and np.ptp(ratio) > 0.05

    swapped = perturb_tabular(x, cols, "categorical_swap", 1.0, np.random.default_rng(3))["swap"]
    assert np.all(swapped[:, 1] != x[:, 1]) and set(np.unique(swapped[:, 1])) <= {0.0, 1.0, 2.0}
    assert np.array_equal(swapped[:, [0, 2]], x[:, [0, 2]].astype(np.float32))

    edges = perturb_tabular(x, cols, "range_edge", 1.0, np.random.default_rng(4))
    at, beyond = edges["at_range_edge"], edges["beyond_range"]
    assert set(np.unique(at[:, 0])) <= {0.0, 100.0} and set(np.unique(at[:, 2])) <= {0.0, 1.0}
    assert set(np.unique(beyond[:, 0])) <= {-50.0, 150.0} and set(np.unique(beyond[:, 2])) <= {-0.5, 1.5}
    assert np.array_equal(at[:, 1], x[:, 1].astype(np.float32))  # categorical codes are not numeric edges

    missing = perturb_tabular(x, cols, "missing", 1 / 3, np.random.default_rng(5))
    holes = np.isnan(missing["nan_fed"])
    assert np.all(holes.sum(axis=1) == 1) and not np.isnan(missing["mean_imputed"]).any()
    # a goal's subset imputes with the whole data's means, not its own rows'
    whole = np.vstack([x, x + np.array([40.0, 0.0, 0.0], dtype=x.dtype)])
    filled = perturb_tabular(x, cols, "missing", 1 / 3, np.random.default_rng(5), reference=whole)
    holes = np.isnan(filled["nan_fed"][:, 0])
    assert holes.any() and np.allclose(filled["mean_imputed"][holes, 0], whole[:, 0].mean())
    assert not np.allclose(filled["mean_imputed"][holes, 0], x[:, 0].mean())


def test_ood_reports_msp_and_energy_per_set_with_intervals(image_case: TinyCase, tmp_path: Path) -> None:
    outcome, _ = run(image_case, "empirical.ood_detection", {"kind": "ood", "score": "energy"}, tmp_path)
    assert outcome.details["score"] == "energy"
    for facts in outcome.details["sets"].values():
        for score in ("msp", "energy"):
            low, high = facts[score]["fpr_at_95_tpr_interval"]
            assert low <= facts[score]["fpr_at_95_tpr"] <= high and 0.0 <= facts[score]["auroc"] <= 1.0
    fpr = outcome.metrics["fpr_at_95_tpr"]
    assert fpr.is_rate and fpr.interval is not None and outcome.metrics["auroc"].interval is not None


def test_energy_of_a_probability_output_uses_log_probabilities() -> None:
    """Energy needs logits; for a probabilities output, log-probabilities stand in (logsumexp = 0)."""
    from types import SimpleNamespace

    from nnassay.tasks.methods.empirical.ood import scores

    probabilities = np.array([[0.7, 0.2, 0.1], [0.34, 0.33, 0.33]], np.float32)
    model = SimpleNamespace(
        logits=lambda x: np.log(probabilities), spec=SimpleNamespace(output="probabilities")
    )
    got = scores(SimpleNamespace(model=model), np.zeros((2, 1)))  # type: ignore[arg-type]
    np.testing.assert_allclose(got["msp"], [0.7, 0.34], rtol=1e-6)
    np.testing.assert_allclose(got["energy"], [0.0, 0.0], atol=1e-6)
    model.spec.output = "logits"
    model.logits = lambda x: probabilities
    logits = scores(SimpleNamespace(model=model), np.zeros((2, 1)))  # type: ignore[arg-type]
    assert logits["energy"][0] == pytest.approx(np.log(np.exp(probabilities[0]).sum()), rel=1e-6)
