"""Fallback, never a dead end (issue 15, item 4): a white-box method the torch executor cannot run is
planned as a black-box attack on ONNX Runtime that fits the data, with the switch and its reason in
the plan, and advice names only methods planning would accept."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, "tests")
import zoo_models  # noqa: E402

from nnassay.schemas.goals import AssessmentSpec  # noqa: E402
from nnassay.schemas.plan import TestSpec  # noqa: E402
from nnassay.schemas.threats import L2Ball, LinfBall  # noqa: E402
from nnassay.tasks.errors import PlanError  # noqa: E402
from nnassay.tasks.methods.registry import get_method, list_methods, usable_methods  # noqa: E402
from nnassay.tasks.pipeline.planning import PlanFacts, make_plan  # noqa: E402

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

REPO = Path(__file__).resolve().parents[1]
NO_EXECUTOR = {"executor_ok": False, "executor_missing_ops": ("ai.onnx.ml:TreeEnsembleClassifier",)}


def _facts(kind: str, **extra: Any) -> PlanFacts:
    return PlanFacts(
        spec_sha256="s", model_sha256="m", data_sha256="d", data_samples=100, data_kind=kind, **extra
    )


def _spec(
    threat: dict[str, Any], methods: list[str] | None, metric: str = "robust_accuracy", steps: bool = True
) -> AssessmentSpec:
    goal: dict[str, Any] = {
        "id": "G1",
        "statement": "robust",
        "threat": threat,
        "metric": metric,
        "criterion": {"comparator": ">=", "threshold": 0.5},
        "risk": {"id": "R", "source": "B.5 risk sources related to machine learning"},
    }
    if methods is not None:
        goal["methods"] = [{"name": n, "params": {"steps": 7} if steps else {}} for n in methods]
    return AssessmentSpec.model_validate(
        {"id": "x", "title": "t", "model": {"path": "m.onnx"}, "data": {"path": "d.npz"}, "goals": [goal]}
    )


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("tabular", "empirical.tabular_random_search"), ("image", "empirical.square_linf")],
)
@pytest.mark.parametrize("methods", [["empirical.pgd_linf"], None, ["empirical.pgd_linf", "empirical.apgd"]])
def test_white_box_goal_falls_back_to_a_black_box_attack_that_fits_the_data(
    kind: str, expected: str, methods: list[str] | None
) -> None:
    plan = make_plan(_spec({"kind": "linf_ball", "eps": 0.1}, methods), _facts(kind, **NO_EXECUTOR))
    (test,) = plan.tests  # two white-box methods falling back to the same one make one test
    assert test.method == expected and test.primary
    assert test.fallback_from in ("empirical.pgd_linf", "empirical.autoattack_lite")
    assert test.fallback_reason and "TreeEnsembleClassifier" in test.fallback_reason
    assert "steps" not in test.params  # a parameter the fallback does not have is dropped
    assert TestSpec.model_validate_json(test.model_dump_json()) == test
    assert any(f"planned {expected} instead of" in note for note in plan.notes)  # shown in the dossier


def test_no_fallback_when_the_executor_runs_the_model() -> None:
    plan = make_plan(_spec({"kind": "linf_ball", "eps": 0.1}, ["empirical.pgd_linf"]), _facts("tabular"))
    (test,) = plan.tests
    assert test.method == "empirical.pgd_linf" and test.fallback_from is None and test.fallback_reason is None


def test_old_plans_without_fallback_fields_still_validate() -> None:
    plan = make_plan(_spec({"kind": "linf_ball", "eps": 0.1}, ["empirical.pgd_linf"]), _facts("image"))
    data = json.loads(plan.tests[0].model_dump_json())
    del data["fallback_from"], data["fallback_reason"]
    assert TestSpec.model_validate(data).fallback_from is None


def test_a_method_without_a_black_box_substitute_is_planned_and_left_to_say_why() -> None:
    spec = _spec({"kind": "linf_ball", "eps": 0.1}, ["empirical.min_eps"], metric="median_min_eps")
    plan = make_plan(spec, _facts("tabular", **NO_EXECUTOR))  # HopSkipJump reports minimal eps too
    assert plan.tests[0].method == "empirical.hop_skip_jump"
    clever = _spec(
        {"kind": "linf_ball", "eps": 0.1}, ["statistical.clever"], "mean_clever_score", steps=False
    )
    (test,) = make_plan(clever, _facts("tabular", **NO_EXECUTOR)).tests  # no black-box CLEVER
    assert test.method == "statistical.clever" and test.fallback_from is None  # inconclusive, naming ops
    with pytest.raises(PlanError, match="no method measures"):
        make_plan(_spec({"kind": "l2_ball", "eps": 0.1}, None, "x"), _facts("tabular", **NO_EXECUTOR))


@pytest.mark.parametrize("threat", [LinfBall(kind="linf_ball", eps=0.1), L2Ball(kind="l2_ball", eps=0.5)])
@pytest.mark.parametrize("executor_ok", [True, False])
def test_advice_for_tabular_data_names_no_image_only_method(threat: Any, executor_ok: bool) -> None:
    image_only = {n for n in list_methods() if get_method(n).data_kinds == ("image",)}
    assert "empirical.square_linf" in image_only
    for metric in (None, "robust_accuracy", "median_min_eps"):
        named = usable_methods(threat, "tabular", metric, executor_ok=executor_ok)
        assert named and not set(named) & image_only
        if not executor_ok:
            assert not any(get_method(n).needs_executor for n in named)


def test_the_executor_refusal_advises_only_methods_that_would_run(tmp_path: Path) -> None:
    from nnassay.tasks.methods.empirical.methods_whitebox import black_box_advice

    class Ctx:  # the three fields the advice reads
        threat = LinfBall(kind="linf_ball", eps=0.1)
        metric = "robust_accuracy"

        class data:  # noqa: N801
            kind = "tabular"

    advice = black_box_advice(Ctx())  # type: ignore[arg-type]
    assert "empirical.tabular_random_search" in advice and "square" not in advice


@pytest.mark.timeout(600)
def test_pgd_on_a_random_forest_runs_the_fallback_and_measures(tmp_path: Path) -> None:
    model = zoo_models.build("sk_forest", tmp_path / "zoo", tiny=True)
    spec = zoo_models.standard_spec(model, samples=40)
    spec["goals"] = [g for g in spec["goals"] if g["id"] == "ATTACK"]
    spec["goals"][0]["methods"] = [{"name": "empirical.pgd_linf", "params": {"steps": 10}}]
    spec["goals"][0]["threat"]["eps"] = 0.5
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [sys.executable, "-m", "nnassay.flows", "assess", str(path), "--output", str(tmp_path / "run")]
    done = subprocess.run(
        [*cmd, "--no-track", "--cpu"], capture_output=True, text=True, timeout=550, cwd=REPO
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a goal failed, which is a verdict
    evidence = json.loads((tmp_path / "run" / "evidence.json").read_text())
    (test,) = evidence["plan"]["tests"]
    assert test["method"] == "empirical.tabular_random_search"
    assert test["fallback_from"] == "empirical.pgd_linf"
    assert "TreeEnsembleClassifier" in test["fallback_reason"]
    (result,) = evidence["results"]
    assert result["status"] == "completed", result.get("reason")
    assert result["metrics"]["robust_accuracy"]["n"] == spec["goals"][0]["budget"]["samples"]
    assert result["metrics"]["attack_success_rate"]["successes"] > 0  # eps 0.5 x scale breaks some
    assert result["details"]["eps_units"] == "units of each feature's scale"
    assert "instead of empirical.pgd_linf" in (tmp_path / "run" / "dossier.html").read_text()
