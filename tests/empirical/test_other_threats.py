"""Invalid input, OOD, domain shift, tabular perturbations, deployment, and data-kind refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TinyCase, goal, make_context
from schemas.goals import AssessmentSpec
from schemas.results import TestStatus
from tasks.empirical.ood import auroc, fpr_at_tpr
from tasks.errors import PlanError
from tasks.model_io import ModelRunner
from tasks.planning import PlanFacts, make_plan
from tasks.registry import get_method
from tests.empirical.linear import make_linear_case


@pytest.fixture(scope="module")
def linear_case(tmp_path_factory: pytest.TempPathFactory) -> TinyCase:
    return make_linear_case(tmp_path_factory.mktemp("linear"))


def run(case: TinyCase, name: str, threat: dict, tmp: Path, **overrides: object):  # type: ignore[no-untyped-def]
    ctx = make_context(case, threat, tmp, seed=2)
    method = get_method(name)
    return method.run(ctx, method.params_for(ctx.threat, overrides)), ctx


def test_invalid_input_counts_non_finite_outputs(linear_case: TinyCase, tmp_path: Path) -> None:
    outcome, _ = run(linear_case, "empirical.invalid_input", {"kind": "invalid_input", "cases": ["nan", "constant"]},
                     tmp_path)  # fmt: skip
    per_case = outcome.details["per_case"]
    assert per_case["nan"]["non_finite"]["value"] == 1.0  # a linear model propagates NaN
    assert per_case["constant"]["non_finite"]["value"] == 0.0
    assert outcome.metrics["non_finite_rate"].value == 0.5 and outcome.metrics["crash_rate"].value == 0.0


def test_invalid_input_counts_each_crash_without_hiding_others(linear_case: TinyCase, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
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
    outcome, _ = run(linear_case, "empirical.ood_detection", {"kind": "ood", "path": str(ood)}, tmp_path / "o")
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
    outcome, _ = run(image_case, "empirical.domain_shift", {"kind": "domain_shift", "path": str(tmp_path / "shift.npz")},
                     tmp_path / "o")  # fmt: skip
    diff = outcome.metrics["accuracy_difference"]
    clean = outcome.details["clean_accuracy"]
    assert diff.value == pytest.approx(outcome.metrics["accuracy"].value - clean)
    assert diff.interval.low <= diff.value <= diff.interval.high


@pytest.mark.parametrize("perturbation", ["numeric_noise", "multiplicative", "missing", "range_edge"])
def test_tabular_perturbations(tabular_case: TinyCase, tmp_path: Path, perturbation: str) -> None:
    outcome, _ = run(tabular_case, "empirical.tabular_perturbation",
                     {"kind": "tabular", "perturbation": perturbation, "strength": 0.3}, tmp_path)  # fmt: skip
    assert outcome.status == TestStatus.COMPLETED
    assert 0.0 <= outcome.metrics["label_flip_rate"].value <= 1.0
    if perturbation == "missing":
        assert set(outcome.details["variants"]) == {"nan_fed", "mean_imputed"}
    if perturbation == "range_edge":
        assert set(outcome.details["variants"]) == {"beyond_range", "at_range_edge"}


def test_categorical_swap_without_categories_is_inconclusive(tabular_case: TinyCase, tmp_path: Path) -> None:
    outcome, _ = run(tabular_case, "empirical.tabular_perturbation",
                     {"kind": "tabular", "perturbation": "categorical_swap"}, tmp_path)  # fmt: skip
    assert outcome.status == TestStatus.INCONCLUSIVE and "categorical" in outcome.reason


def test_deployment_compares_reduced_precision_and_is_honest_about_providers(image_case: TinyCase,
                                                                           tmp_path: Path) -> None:  # fmt: skip
    outcome, _ = run(image_case, "empirical.deployment_consistency", {"kind": "deployment"}, tmp_path)
    assert set(outcome.details["variants"]) >= {"float16", "int8_dynamic"}
    assert outcome.metrics["max_output_deviation"].value < 1.0
    if "providers" in outcome.details["unavailable"]:
        assert "one execution provider" in outcome.reason


@pytest.mark.parametrize("name,threat", [
    ("empirical.corruption_accuracy", {"kind": "corruption"}),
    ("empirical.geometric_worst_case", {"kind": "geometric", "transform": "rotation", "values": [5.0]}),
    ("empirical.square_linf", {"kind": "linf_ball", "eps": 0.1}),
])  # fmt: skip
def test_image_threat_on_tabular_data_is_refused_naming_the_goal(name: str, threat: dict) -> None:
    spec = AssessmentSpec.model_validate({"id": "x", "title": "t", "model": {"path": "m.onnx", "layout": "NC"},
                                          "data": {"path": "d.npz"}, "goals": [
        goal("G7", threat, get_method(name).metrics[0], ">=", 0.5, methods=[{"name": name}])]})  # fmt: skip
    facts = PlanFacts(spec_sha256="s", model_sha256="m", data_sha256="d", data_samples=100, data_kind="tabular")
    with pytest.raises(PlanError) as err:
        make_plan(spec, facts)
    assert "goal G7" in str(err.value) and "needs image data" in str(err.value)


def test_tabular_threat_on_images_is_refused() -> None:
    from schemas.threats import TabularPerturbation

    method = get_method("empirical.tabular_perturbation")
    problems = method.check(TabularPerturbation(kind="tabular", perturbation="missing"), "image")
    assert problems and "needs tabular data" in problems[0]
