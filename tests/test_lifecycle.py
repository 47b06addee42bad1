"""Lifecycle: exact sharding, per-sample outcomes, regression checks, the lifecycle flow and its CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO, build_mlp, goal
from nnassay.tasks.methods.registry import get_method

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane


@pytest.fixture(scope="module")
def prefect_harness():  # type: ignore[no-untyped-def]
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# --- sharding: merged parts equal the unsharded run bit for bit -------------------------------


def test_shard_ranges_cover_in_whole_units() -> None:
    from nnassay.tasks.pipeline.sharding import shard_ranges

    for n, unit, target in [(120, 64, 50), (1000, 64, 256), (64, 64, 1), (130, 10, 35), (5, 64, 2)]:
        ranges = shard_ranges(n, unit, target)
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a % unit == 0 and a < b for a, b in ranges)
        assert all(b1 == a2 for (_, b1), (a2, _) in zip(ranges, ranges[1:], strict=False))


@pytest.mark.parametrize(
    "threat", [{"kind": "gaussian_noise", "sigma": 0.3}, {"kind": "uniform_noise", "eps": 0.2}]
)
@pytest.mark.parametrize("shard", [1, 64])
def test_noise_accuracy_shards_merge_exactly(image_case, context_factory, threat, shard: int) -> None:
    from nnassay.tasks.pipeline.sharding import shard_ranges

    method = get_method("statistical.noise_accuracy")
    ctx = context_factory(image_case, threat, seed=17)
    params = method.params_for(ctx.threat, {"draws": 3})
    whole = method.run(ctx, params)
    parts = [
        method.run_part(ctx, params, a, b) for a, b in shard_ranges(len(ctx.data), method.shard_unit, shard)
    ]
    assert len(parts) > 1
    assert method.merge_parts(ctx, params, parts[::-1]) == whole  # any order, same outcome


def test_per_sample_outcomes_round_trip_and_match_the_rate(image_case, context_factory) -> None:
    from nnassay.tasks.methods.statistical.core import pack_outcomes, unpack_outcomes

    flags = np.random.default_rng(0).random(1001) < 0.3
    assert np.array_equal(unpack_outcomes(pack_outcomes(flags)), flags)
    method = get_method("statistical.noise_accuracy")
    ctx = context_factory(image_case, {"kind": "gaussian_noise", "sigma": 0.2})
    out = method.run(ctx, method.params_for(ctx.threat, {"draws": 2}))
    for metric in ("accuracy", "label_flip_rate"):
        stored = unpack_outcomes(out.details["per_sample"][metric])
        assert stored.size == out.metrics[metric].n and stored.sum() == out.metrics[metric].successes


def test_sharded_test_equals_whole_test(tmp_path: Path, image_case, spec_writer) -> None:
    from nnassay.tasks.pipeline import execute
    from nnassay.tasks.pipeline.sharding import plan_shards

    spec_path = spec_writer(
        image_case, [goal("N", {"kind": "gaussian_noise", "sigma": 0.2}, "accuracy", ">=", 0.5)]
    )
    spec, _ = execute.state_goals(spec_path, prefer_cuda=False)
    test = execute.preflight(spec_path, prefer_cuda=False).tests[0]
    shards = plan_shards(test, 64)
    assert len(shards) == 2 and plan_shards(test, 0) == [] and plan_shards(test, 10_000) == []
    whole = execute.run_test(test, spec, tmp_path, prefer_cuda=False)
    parts = [execute.run_shard(test, spec, tmp_path, s, prefer_cuda=False) for s in shards]
    merged = execute.merge_shards(test, spec, tmp_path, parts, prefer_cuda=False)
    assert merged.model_dump(exclude={"time_s"}) == whole.model_dump(exclude={"time_s"})


def test_verification_is_sharded_one_instance_per_task(tmp_path: Path, image_case, spec_writer) -> None:
    from nnassay.tasks.pipeline import execute
    from nnassay.tasks.pipeline.sharding import plan_shards

    eps_goal = goal("V", {"kind": "linf_ball", "eps": 0.01}, "verified_fraction", ">=", 0.5)
    eps_goal["methods"] = [{"name": "formal.local_robustness", "params": {"time_per_sample_s": 5.0}}]
    eps_goal["budget"] = {"samples": 4}
    spec_path = spec_writer(image_case, [eps_goal])
    spec, _ = execute.state_goals(spec_path, prefer_cuda=False)
    test = execute.preflight(spec_path, prefer_cuda=False).tests[0]
    shards = plan_shards(test, 2048)
    assert [(s.start, s.stop) for s in shards] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert plan_shards(test, 0) == []  # sharding off
    whole = execute.run_test(test, spec, tmp_path / "whole", prefer_cuda=False)
    parts = [execute.run_shard(test, spec, tmp_path / "parts", s, prefer_cuda=False) for s in shards]
    merged = execute.merge_shards(test, spec, tmp_path / "parts", parts, prefer_cuda=False)
    per_sample = [(row["index"], row["verdict"]) for row in merged.details["per_sample"]]
    assert per_sample == [(row["index"], row["verdict"]) for row in whole.details["per_sample"]]
    assert merged.metrics["verified_fraction"] == whole.metrics["verified_fraction"]


# --- the lifecycle flow: trend, regression finding, model change, Failed state ---------------


def _series(tmp_path: Path, image_case, *, noisy_threshold: float) -> tuple[Path, Path]:
    """A spec whose model file we can swap between runs; CLEAN passes for both models."""
    model = tmp_path / "model.onnx"
    model.write_bytes(image_case.model.read_bytes())
    spec = {
        "id": "series",
        "title": "Lifecycle series",
        "seed": 5,
        "model": {"path": str(model), "layout": "NCHW", "value_range": [0.0, 1.0]},
        "data": {"path": str(image_case.data)},
        "goals": [
            goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.1),
            goal("NOISY", {"kind": "gaussian_noise", "sigma": 0.1}, "label_flip_rate", "<=", noisy_threshold),
        ],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path, model


def test_lifecycle_flags_a_regression_that_still_passes(tmp_path: Path, image_case, prefect_harness) -> None:
    from mlflow.tracking import MlflowClient

    from nnassay.flows.lifecycle import lifecycle_assess
    from nnassay.schemas.settings import LifecycleRequest

    spec, model = _series(tmp_path, image_case, noisy_threshold=0.9)
    uri = f"sqlite:///{tmp_path / 'series.db'}"
    request = LifecycleRequest(
        spec_path=spec, output_root=tmp_path / "runs", mlflow_tracking_uri=uri, prefer_cuda=False
    )
    first = lifecycle_assess(request)
    same = lifecycle_assess(request)  # same model: paired test, nothing changed
    assert all(not v.findings for v in first.verdicts + same.verdicts)
    build_mlp(model, [36, 16, 3], image_shape=(1, 6, 6), seed=9)  # a new, worse model
    worse = lifecycle_assess(request)

    clean = next(v for v in worse.verdicts if v.goal_id == "CLEAN")
    assert clean.verdict.value == "pass"  # still passes its goal ...
    assert any(f.startswith("regression: accuracy worsened") and "paired" in f for f in clean.findings)
    assert any(f.startswith("model changed") for f in clean.findings)  # ... and the change is on record
    assert len({b.provenance.extra["run_folder"] for b in (first, same, worse)}) == 3

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(worse.provenance.mlflow_run_id)
    assert run.data.tags["nnassay.regression.CLEAN"] == "true"
    assert run.data.tags["nnassay.model_changed"] == "true"
    assert run.data.tags["nnassay.lifecycle.previous_run_id"] == same.provenance.mlflow_run_id
    trend = [
        client.get_metric_history(b.provenance.mlflow_run_id, "lifecycle.goal.CLEAN.accuracy")[0]
        for b in (first, same, worse)
    ]
    assert [m.step for m in trend] == [1, 2, 3]
    assert trend[2].value < trend[1].value == trend[0].value


def test_lifecycle_run_with_a_failed_goal_ends_failed(tmp_path: Path, image_case, prefect_harness) -> None:
    from nnassay.flows.lifecycle import lifecycle_assess
    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.schemas.settings import LifecycleRequest

    spec, _ = _series(tmp_path, image_case, noisy_threshold=0.0001)
    request = LifecycleRequest(
        spec_path=spec,
        output_root=tmp_path / "runs",
        prefer_cuda=False,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'series.db'}",
    )
    state = lifecycle_assess(request, return_state=True)
    assert state.is_failed() and "NOISY" in state.message and "CLEAN" not in state.message
    bundle = state.result(raise_on_failure=False)
    assert isinstance(bundle, EvidenceBundle) and bundle.overall.value == "fail"


def test_rates_comparison_when_the_data_changed(tmp_path: Path, image_case, prefect_harness) -> None:
    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest
    from nnassay.tasks.governance import lifecycle

    spec, model = _series(tmp_path, image_case, noisy_threshold=0.9)
    assess = assess_runner(None)  # the evidence, also when the run ends Failed
    before = assess(AssessRequest(spec_path=spec, output=tmp_path / "a", track=False, prefer_cuda=False))
    build_mlp(model, [36, 16, 3], image_shape=(1, 6, 6), seed=9)
    after = assess(AssessRequest(spec_path=spec, output=tmp_path / "b", track=False, prefer_cuda=False))
    other_data = before.model_copy(update={"plan": before.plan.model_copy(update={"data_sha256": "0" * 64})})
    comparison = lifecycle.compare(after.plan, after.results, after.verdicts, other_data, sequence=2)
    clean = next(g for g in comparison.goals if g.goal_id == "CLEAN")
    assert not clean.test.startswith("mcnemar") and clean.regression and clean.difference < 0
    paired = lifecycle.compare(after.plan, after.results, after.verdicts, before, sequence=2)
    assert next(g for g in paired.goals if g.goal_id == "CLEAN").test.startswith("mcnemar")
    first = lifecycle.compare(after.plan, after.results, after.verdicts, None, sequence=1)
    assert first.regressions == [] and not first.model_changed and first.findings("CLEAN") == []


# --- CLI and deployments ----------------------------------------------------------------------


def test_cli_lifecycle_exit_codes(tmp_path: Path, image_case, prefect_harness) -> None:
    from typer.testing import CliRunner

    from nnassay.flows.cli.app import app

    spec, _ = _series(tmp_path, image_case, noisy_threshold=0.0001)
    args = [
        "lifecycle",
        str(spec),
        "--output-root",
        str(tmp_path / "runs"),
        "--cpu",
        "--mlflow-uri",
        f"sqlite:///{tmp_path / 'cli.db'}",
    ]
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code == 1, failed.output
    assert "NOISY" in failed.output
    missing = CliRunner().invoke(app, ["lifecycle", str(tmp_path / "nope.yaml"), "--cpu"])
    assert missing.exit_code == 2


def test_schedule_builds_a_cron_deployment_of_the_lifecycle_flow(tmp_path: Path, image_case) -> None:
    from typer.testing import CliRunner

    from nnassay.flows.cli.app import app
    from nnassay.flows.cli.lifecycle import deployment
    from nnassay.flows.lifecycle import lifecycle_assess
    from nnassay.schemas.settings import LifecycleRequest

    spec, _ = _series(tmp_path, image_case, noisy_threshold=0.9)
    shown = CliRunner().invoke(app, ["schedule", str(spec), "--cron", "0 3 * * 1", "--dry-run"])
    assert shown.exit_code == 0 and "0 3 * * 1" in shown.output and "series" in shown.output
    both = CliRunner().invoke(app, ["schedule", str(spec), "--cron", "0 3 * * 1", "--interval", "60"])
    assert both.exit_code == 2
    kwargs = deployment(LifecycleRequest(spec_path=spec), "series", "series", cron="0 3 * * 1", interval=None)
    runner_deployment = lifecycle_assess.to_deployment(**kwargs)
    assert runner_deployment.schedules[0].schedule.cron == "0 3 * * 1"
    assert LifecycleRequest.model_validate(runner_deployment.parameters["request"]).spec_path == spec


def test_prefect_yaml_declares_the_lifecycle_deployment() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from nnassay.schemas.settings import LifecycleRequest

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (deployment,) = config["deployments"]
    assert deployment["entrypoint"] == "flows/lifecycle.py:lifecycle_assess"
    flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    assert flow.name == "lifecycle-assess"
    request = LifecycleRequest.model_validate(deployment["parameters"]["request"])
    assert (REPO / request.spec_path).is_file()
    assert deployment["schedules"][0]["cron"] == "0 3 * * 1"


def test_lifecycle_run_with_a_sign_key_is_signed(
    tmp_path: Path, image_case, prefect_harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signing key is a field of the request, so a lifecycle (or scheduled) run signs its records;
    the spec's MLflow history is read once per assessment (attempts, regressions, chain, rows)."""
    from nnassay.flows.lifecycle import lifecycle_assess
    from nnassay.schemas.settings import LifecycleRequest
    from nnassay.tasks.governance import history
    from nnassay.tasks.governance.integrity import fingerprint, generate_key, load_public_key, verify

    reads: list[str] = []
    original = history.past_assessments

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(args[1])
        return original(*args, **kwargs)

    monkeypatch.setattr(history, "past_assessments", counted)

    key, pub = generate_key(tmp_path / "keys" / "sign.pem")
    spec, _ = _series(tmp_path, image_case, noisy_threshold=0.9)
    request = LifecycleRequest(
        spec_path=spec,
        output_root=tmp_path / "runs",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'series.db'}",
        prefer_cuda=False,
        sign_key=key,
    )
    lifecycle_assess(request)
    bundle = lifecycle_assess(request)  # the second run has history: regression check and chain
    assert reads == ["series", "series"]  # once per assessment
    assert bundle.previous_evidence_sha256 and bundle.history
    assert bundle.provenance.signer_public_key_sha256 == fingerprint(load_public_key(pub))
    folder = Path(str(bundle.provenance.extra["run_folder"]))
    assert (folder / "manifest.sig").is_file()
    run = verify(folder)
    assert run.exit_code == 0, run.problems
    assert any("manifest.sig: Ed25519 signature valid" in c for c in run.checked), run.checked
    pdf = verify(folder / "dossier.pdf")
    assert any("embedded evidence.json signature valid" in c for c in pdf.checked), pdf.checked
