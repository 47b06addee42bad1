"""The explain step in the pipeline: failures gathered per source from real test results of a tiny
image model (attack archive, per-sample flags, noise and garbage drawn again, corruptions), the
files and pictures it writes, what it records when it cannot explain, MLflow, and the plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import TinyCase, goal, write_spec
from nnassay.schemas.common import MethodFamily, Verdict
from nnassay.schemas.evidence import GoalVerdict
from nnassay.schemas.goals import AssessmentSpec, ExplainSettings
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import MethodResult, TestStatus
from nnassay.tasks.explain import gather as g
from nnassay.tasks.governance.tracking import InMemoryTracker
from nnassay.tasks.io.files import sha256_file
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.io.spec_io import read_spec
from nnassay.tasks.methods.statistical.core import pack_outcomes
from nnassay.tasks.pipeline import execute, explain_step
from nnassay.tasks.pipeline.evidence import interpret_all
from nnassay.tasks.pipeline.planning import make_plan

GOALS = [
    goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.999),
    goal("NOISE", {"kind": "gaussian_noise", "sigma": 0.3}, "label_flip_rate", "<=", 0.001),
    goal(
        "PGD",
        {"kind": "linf_ball", "eps": 0.2},
        "robust_accuracy",
        ">=",
        0.999,
        methods=[{"name": "empirical.pgd_linf", "params": {"steps": 10, "restarts": 1}}],
        budget={"samples": 40},
    ),
    goal("GARBAGE", {"kind": "invalid_input"}, "confident_garbage_rate", "<=", 0.0),
    goal(
        "CORR",
        {"kind": "corruption", "corruptions": ["gaussian_noise", "contrast"], "severities": [5]},
        "mean_accuracy",
        ">=",
        0.999,
    ),
    goal("OOD", {"kind": "ood"}, "auroc", ">=", 0.999),
    goal("EASY", {"kind": "none"}, "accuracy", ">=", 0.1),
]


@dataclass(frozen=True)
class Assessed:
    """A tiny assessment run up to interpretation, as the explain step receives it."""

    spec: AssessmentSpec
    plan: AssessmentPlan
    results: list[MethodResult]
    verdicts: list[GoalVerdict]
    run_dir: Path
    runner: ModelRunner

    def result(self, goal_id: str) -> MethodResult:
        return next(r for r in self.results if r.goal_id == goal_id)

    def verdict(self, goal_id: str) -> GoalVerdict:
        return next(v for v in self.verdicts if v.goal_id == goal_id)

    def gather(self, goal_id: str, **kw: object) -> g.Found:
        _, data = execute.load_inputs(self.spec, prefer_cuda=False)
        return g.gather(
            self.verdict(goal_id), self.plan.tests, self.results, self.runner, data, self.run_dir, **kw
        )


@pytest.fixture(scope="module")
def assessed(tmp_path_factory: pytest.TempPathFactory, image_case: TinyCase) -> Assessed:
    folder = tmp_path_factory.mktemp("wiring")
    spec_path = write_spec(folder / "spec", image_case, GOALS)
    spec, facts = execute.state_goals(spec_path, prefer_cuda=False)
    plan = make_plan(spec, facts)
    run_dir = folder / "run"
    results = [execute.run_test(t, spec, run_dir, prefer_cuda=False) for t in plan.tests]
    assert all(r.status != TestStatus.ERROR for r in results), [r.reason for r in results]
    runner, _ = execute.load_inputs(spec, prefer_cuda=False)
    return Assessed(spec, plan, results, interpret_all(spec, results), run_dir, runner)


def test_clean_accuracy_failures_are_the_misread_rows(assessed: Assessed) -> None:
    found = assessed.gather("CLEAN")
    assert found.failures is not None and found.failures.inputs is None
    wrong = np.flatnonzero(assessed.runner.predict(found.data.x) != found.data.y)
    assert len(wrong) > 0 and np.array_equal(found.failures.indices, wrong)
    assert "per_sample" in (found.failures.source or "")


def test_attack_failures_are_the_archived_adversarial_examples(assessed: Assessed) -> None:
    found = assessed.gather("PGD")
    archive = next(a for a in assessed.result("PGD").artifacts if a.path.endswith("_adversarial.npz"))
    with np.load(assessed.run_dir / archive.path) as npz:
        index, x_adv = npz["index"], npz["x_adv"]
    assert found.failures is not None and len(index) > 0
    assert np.array_equal(found.failures.indices, index)
    assert found.failures.inputs is not None and np.array_equal(found.failures.inputs, x_adv)
    assert archive.path in (found.failures.source or "")


def test_noise_flips_are_explained_on_the_noisy_inputs_drawn_again(assessed: Assessed) -> None:
    found = assessed.gather("NOISE")
    failures = found.failures
    assert failures is not None and failures.inputs is not None and len(failures.indices) > 0
    clean = assessed.runner.predict(found.data.x[failures.indices])
    assert np.all(assessed.runner.predict(failures.inputs) != clean)  # each input really flips
    assert failures.origins and "drawn again" in failures.origins[0]


def test_noise_not_reproduced_falls_back_to_the_clean_rows(assessed: Assessed) -> None:
    test = next(t for t in assessed.plan.tests if t.goal_id == "NOISE")
    _, data = execute.load_inputs(assessed.spec, prefer_cuda=False)
    wrong_seed = test.model_copy(update={"seed": test.seed + 1})
    src = g.Source(
        wrong_seed, assessed.result("NOISE"), assessed.runner, data.subset(test.samples), assessed.run_dir
    )
    found = g.from_noise(src)
    assert found is not None and found.failures is not None
    assert found.failures.inputs is None and "does not reproduce" in (found.failures.source or "")


def test_confident_garbage_is_drawn_again_case_by_case(assessed: Assessed) -> None:
    found = assessed.gather("GARBAGE", k=4)
    failures = found.failures
    assert failures is not None and failures.inputs is not None and failures.against == "runner_up"
    assert 0 < len(failures.indices) <= 4 and len(set(failures.indices.tolist())) == len(failures.indices)
    top = assessed.runner.probabilities(failures.inputs).max(axis=1)
    assert np.all(top > 0.9)  # each one is a confident answer to garbage
    assert failures.origins and all(o.startswith("invalid input: ") for o in failures.origins)
    stored = assessed.result("GARBAGE").details["per_case"]
    kept = sum(stored[c]["confident"]["successes"] for c in g.FINITE_GARBAGE)  # type: ignore[index,call-overload]
    assert failures.available == kept


def test_corruption_failures_are_clean_right_and_corrupted_wrong(assessed: Assessed) -> None:
    found = assessed.gather("CORR")
    failures = found.failures
    assert failures is not None and failures.inputs is not None and len(failures.indices) > 0
    rows = failures.indices
    assert np.all(assessed.runner.predict(found.data.x[rows]) == found.data.y[rows])
    assert np.all(assessed.runner.predict(failures.inputs) != found.data.y[rows])


def test_a_goal_without_per_sample_data_has_a_reason(assessed: Assessed) -> None:
    found = assessed.gather("OOD")
    assert found.failures is None and "stores no per-sample failures" in found.reason


def _result(details: dict) -> MethodResult:  # type: ignore[type-arg]
    return MethodResult(
        test_id="X/m",
        goal_id="X",
        method="statistical.m",
        family=MethodFamily.STATISTICAL,
        status=TestStatus.COMPLETED,
        metrics={},
        details=details,
        seed=0,
        time_s=0.0,
        provider="CPUExecutionProvider",
    )


def test_flags_of_several_draws_fail_a_row_when_any_draw_fails() -> None:
    flags = np.array([[False, False], [False, True], [True, True]])  # 3 rows x 2 draws, row-major
    found = g.stored_flags(_result({"per_sample": {"accuracy": pack_outcomes(~flags)}}), "accuracy")
    assert found is not None and found[0] == "accuracy"
    assert g._per_row(found[1], 3).tolist() == [False, True, True]
    assert g.stored_flags(_result({"per_sample": [{"x": 1}]}), "accuracy") is None  # formal: a list


def test_listed_non_robust_rows_are_failures(assessed: Assessed) -> None:
    test = next(t for t in assessed.plan.tests if t.goal_id == "CLEAN")
    _, data = execute.load_inputs(assessed.spec, prefer_cuda=False)
    src = g.Source(test, _result({"non_robust_indices": [3, 5]}), assessed.runner, data, assessed.run_dir)
    found = g.from_indices(src)
    assert found is not None and found.failures is not None
    assert found.failures.indices.tolist() == [3, 5]


def _all_failed(assessed: Assessed) -> list[GoalVerdict]:
    return [
        v.model_copy(update={"verdict": Verdict.FAIL}) if v.goal_id != "EASY" else v
        for v in assessed.verdicts
    ]


@pytest.fixture(scope="module")
def explained(assessed: Assessed) -> tuple[explain_step.ExplainOutcome, list[tuple[int, str]]]:
    lines: list[tuple[int, str]] = []
    outcome = explain_step.explain_failures(
        assessed.spec,
        assessed.plan,
        assessed.results,
        _all_failed(assessed),
        assessed.run_dir,
        prefer_cuda=False,
        report=lambda level, line: lines.append((level, line)),
    )
    return outcome, lines


def test_every_failed_goal_with_failures_is_explained_with_pictures(
    assessed: Assessed, explained: tuple[explain_step.ExplainOutcome, list[tuple[int, str]]]
) -> None:
    outcome, lines = explained
    assert {s.goal_id for s in outcome.sets} == {"CLEAN", "NOISE", "PGD", "GARBAGE", "CORR"}
    assert set(outcome.skipped) == {"OOD"} and "no per-sample failures" in outcome.skipped["OOD"]
    assert outcome.notes() == {"explanations_not_made": outcome.skipped}
    assert len(lines) == 6 and all(line.startswith("explain ") for _, line in lines)
    for es in outcome.sets:
        assert es.samples and es.faithfulness and es.source
        assert sum(s.role == "failure" for s in es.samples) <= assessed.spec.explain.samples * len(es.methods)
        assert es.picture is not None and es.picture.media_type == "image/png"  # one panel per goal
        path = assessed.run_dir / es.picture.path
        assert path.parent == assessed.run_dir / "explanations" / es.goal_id
        assert sha256_file(path) == es.picture.sha256
        assert path.read_bytes().startswith(b"\x89PNG")
        for sample in es.samples:
            assert (path.parent / sample.attribution_file).is_file()


def test_every_written_file_is_in_the_manifest_digests(
    assessed: Assessed, explained: tuple[explain_step.ExplainOutcome, list[tuple[int, str]]]
) -> None:
    outcome, _ = explained
    on_disk = {
        p.relative_to(assessed.run_dir).as_posix(): sha256_file(p)
        for p in (assessed.run_dir / "explanations").rglob("*")
        if p.is_file()
    }
    assert on_disk and {d.path: d.sha256 for d in outcome.files} == on_disk
    assert {d.role for d in outcome.files} == {"explanation"}


def test_mlflow_gets_each_goal_folder_and_faithfulness_metrics(
    assessed: Assessed, explained: tuple[explain_step.ExplainOutcome, list[tuple[int, str]]]
) -> None:
    outcome, _ = explained
    tracker = InMemoryTracker()
    run_id = tracker.start("e", "r", {}, {})
    explain_step.log_explanations(tracker, run_id, assessed.run_dir, outcome)
    run = tracker.runs[run_id]
    pgd = next(s for s in outcome.sets if s.goal_id == "PGD")
    assert f"explanations/PGD/{Path(pgd.picture.path).name}" in run["artifacts"]  # type: ignore[union-attr]
    assert f"explanations/PGD/{pgd.samples[0].attribution_file}" in run["artifacts"]
    method = pgd.faithfulness[0].method
    assert run["metrics"][f"explain.PGD.{method}.deletion_gain_low"] == pgd.faithfulness[0].gain_interval.low
    assert run["metrics"]["explain.PGD.samples"] == len(pgd.samples)


def test_one_goals_error_is_a_recorded_reason_not_a_lost_run(
    assessed: Assessed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = explain_step.explain_goal

    def flaky(runner, data, failures, folder, options):  # type: ignore[no-untyped-def]
        if failures.goal_id == "PGD":
            raise RuntimeError("boom")
        return real(runner, data, failures, folder, options)

    monkeypatch.setattr(explain_step, "explain_goal", flaky)
    lines: list[tuple[int, str]] = []
    verdicts = [v for v in _all_failed(assessed) if v.goal_id in ("PGD", "CLEAN")]
    outcome = explain_step.explain_failures(
        assessed.spec,
        assessed.plan,
        assessed.results,
        verdicts,
        tmp_path,
        prefer_cuda=False,
        report=lambda level, line: lines.append((level, line)),
    )
    assert [s.goal_id for s in outcome.sets] == ["CLEAN"]
    assert outcome.skipped["PGD"] == "the explanation failed: RuntimeError: boom"
    assert any(level == 30 and "PGD" in line for level, line in lines)  # a warning
    assert not (tmp_path / "explanations" / "PGD").exists()


def test_switched_off_explains_nothing_and_leaves_no_stale_folder(assessed: Assessed, tmp_path: Path) -> None:
    stale = tmp_path / "explanations" / "OLD" / "x.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    spec = assessed.spec.model_copy(update={"explain": ExplainSettings(enabled=False)})
    outcome = explain_step.explain_failures(
        spec, assessed.plan, assessed.results, _all_failed(assessed), tmp_path, prefer_cuda=False
    )
    assert outcome == explain_step.ExplainOutcome() and not (tmp_path / "explanations").exists()


def test_passing_goals_are_not_explained(assessed: Assessed) -> None:
    assert [v.goal_id for v in explain_step.goals_to_explain(_all_failed(assessed))] == [
        "CLEAN",
        "NOISE",
        "PGD",
        "GARBAGE",
        "CORR",
        "OOD",
    ]


def test_the_plan_estimates_explanations_unless_switched_off(tmp_path: Path, image_case: TinyCase) -> None:
    from nnassay.flows.cli.plan import plan_lines

    spec_path = write_spec(tmp_path / "on", image_case, GOALS)
    assert "explain" not in spec_path.read_text()  # a spec written before the switch still loads
    spec, facts = execute.state_goals(spec_path, prefer_cuda=False)
    assert spec.explain == ExplainSettings()
    plan = make_plan(spec, facts)
    assert plan.explain_estimate_s is not None and plan.explain_estimate_s > 0
    assert any(line.startswith("explanations: up to ") for line in plan_lines(plan, facts.unit_costs))
    fewer = make_plan(spec.model_copy(update={"explain": ExplainSettings(samples=1, contrast=0)}), facts)
    assert fewer.explain_estimate_s is not None and fewer.explain_estimate_s < plan.explain_estimate_s
    off_path = write_spec(tmp_path / "off", image_case, GOALS, explain={"enabled": False})
    off = read_spec(off_path)
    assert off.explain.enabled is False
    off_plan = make_plan(off, facts)
    assert off_plan.explain_estimate_s is None
    assert not any(line.startswith("explanations:") for line in plan_lines(off_plan, facts.unit_costs))


def test_a_table_gets_bar_charts_and_feature_flips(tmp_path: Path, tabular_case: TinyCase) -> None:
    spec_path = write_spec(
        tmp_path / "spec", tabular_case, [goal("T", {"kind": "none"}, "accuracy", ">=", 0.999)]
    )
    spec, facts = execute.state_goals(spec_path, prefer_cuda=False)
    plan = make_plan(spec, facts)
    run_dir = tmp_path / "run"
    results = [execute.run_test(t, spec, run_dir, prefer_cuda=False) for t in plan.tests]
    verdicts = interpret_all(spec, results)
    assert verdicts[0].verdict != Verdict.PASS  # about 90% accurate: the goal cannot pass
    outcome = explain_step.explain_failures(spec, plan, results, verdicts, run_dir, prefer_cuda=False)
    (es,) = outcome.sets
    assert es.samples and len({f for s in es.samples for f in s.top_features}) <= 5  # one unit per feature
    assert any(s.feature_flips for s in es.samples if s.role == "failure")
    assert es.picture is not None and sha256_file(run_dir / es.picture.path) == es.picture.sha256
    png = (run_dir / es.picture.path).read_bytes()
    rows = len({x.sample_index for x in es.samples})
    blocks = 2 if rows > 3 else 1
    width = int.from_bytes(png[16:20], "big")  # bars: 3 inches per method and block, at 100 dpi
    assert width == round(100 * blocks * len(es.methods) * 3.0)
    assert "strongest features" in es.picture.caption  # bars per method, not heat maps


def test_tabular_noise_flips_are_drawn_again_in_each_features_scale(
    tmp_path: Path, tabular_case: TinyCase
) -> None:
    """On a table the noise test draws sigma x scale per feature; drawing it again must do the same, or
    the stored flags are not reproduced and only clean rows could be explained."""
    noise = goal("N", {"kind": "gaussian_noise", "sigma": 0.5}, "label_flip_rate", "<=", 0.0)
    spec, facts = execute.state_goals(write_spec(tmp_path / "spec", tabular_case, [noise]), prefer_cuda=False)
    plan = make_plan(spec, facts)
    run_dir = tmp_path / "run"
    (test,) = plan.tests
    result = execute.run_test(test, spec, run_dir, prefer_cuda=False)
    runner, data = execute.load_inputs(spec, prefer_cuda=False)
    found = g.from_noise(g.Source(test, result, runner, data.subset(test.samples), run_dir))
    assert found is not None and found.failures is not None and len(found.failures.indices) > 0
    assert found.failures.inputs is not None, found.failures.source  # reproduced, not the clean rows
    assert "does not reproduce" not in (found.failures.source or "")
    clean = runner.predict(found.data.x[found.failures.indices])
    assert np.all(runner.predict(found.failures.inputs) != clean)
