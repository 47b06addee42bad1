"""Runs you can read in Prefect: run logs in the API, names, tags, a Failed state naming the goals,
the summary artifact linking the MLflow run and the dossier, and the flow-run URL of the CLI.

In-process tests use Prefect's test harness (a temporary server); the server test runs the CLI
against `prefect server start` and `mlflow server` on loopback (tests/test_servers.py's fixture).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_servers import Servers, _prefect, servers  # noqa: F401 (the module-scoped server fixture)

from conftest import REPO, goal

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

FAILING = [
    goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
    goal("NOISY", {"kind": "gaussian_noise", "sigma": 0.05}, "label_flip_rate", "<=", 0.0001),
]
PASSING = [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)]


@pytest.fixture(scope="module")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _flush_logs() -> None:
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()


def _run_records(flow_run_id: str) -> tuple[Any, list[str], list[Any]]:
    """The flow run, its log messages and its artifacts, read back through the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    _flush_logs()
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)  # type: ignore[arg-type]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    return flow_run, [log.message for log in logs], artifacts


def test_failed_goal_ends_the_run_failed_and_the_run_reads_well(
    tmp_path: Path, image_case: Any, spec_writer: Any, prefect_harness: None
) -> None:
    from mlflow.tracking import MlflowClient

    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest

    spec = spec_writer(image_case, FAILING)
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    bundle = assess_runner(None)(
        AssessRequest(spec_path=spec, output=out, mlflow_tracking_uri=uri, prefer_cuda=False)
    )

    # the records are complete although the run is Failed
    assert bundle.overall.value in ("fail", "inconclusive") and (out / "evidence.json").is_file()
    assert (out / "dossier.pdf").is_file()
    assert MlflowClient(tracking_uri=uri).get_run(bundle.provenance.mlflow_run_id).info.status == "FINISHED"

    flow_run, messages, artifacts = _run_records(str(bundle.provenance.prefect_flow_run_id))
    assert flow_run.state.is_failed()
    assert "NOISY" in flow_run.state.message and "CLEAN" not in flow_run.state.message
    assert flow_run.name.startswith("tiny-20")  # spec id and UTC time
    assert {"spec:tiny", f"model:{bundle.plan.model_sha256[:12]}", f"verdict:{bundle.overall.value}"} <= set(
        flow_run.tags
    )
    text = "\n".join(messages)
    assert "goal CLEAN: PASS" in text and "goal NOISY: " in text  # per-goal verdicts at INFO/WARNING
    assert any(m.startswith("test ") and "(goal NOISY)" in m for m in messages)  # test progress
    assert "2 goal(s)" in text  # the plan
    (summary,) = [a for a in artifacts if a.type == "markdown"]
    assert (
        bundle.provenance.mlflow_run_id in summary.data
        and (out / "dossier.pdf").resolve().as_uri() in summary.data
    )


def test_passing_run_completes_tagged_pass(
    tmp_path: Path, image_case: Any, spec_writer: Any, prefect_harness: None
) -> None:
    from nnassay.flows.lifecycle import assess_runner
    from nnassay.schemas.settings import AssessRequest

    spec = spec_writer(image_case, PASSING)
    bundle = assess_runner(None)(
        AssessRequest(spec_path=spec, output=tmp_path / "run", track=False, prefer_cuda=False)
    )
    assert bundle.overall.value == "pass"
    flow_run, messages, _ = _run_records(str(bundle.provenance.prefect_flow_run_id))
    assert flow_run.state.is_completed() and "verdict:pass" in flow_run.tags
    assert any("goal CLEAN: PASS" in m for m in messages)


def test_final_state_names_failed_and_inconclusive_goals(image_case: Any) -> None:
    from nnassay.flows.runs import not_passed

    class _V:  # the fields not_passed reads
        def __init__(self, goal_id: str, verdict: str) -> None:
            from nnassay.schemas.common import Verdict

            self.goal_id, self.verdict = goal_id, Verdict(verdict)

    class _B:
        def __init__(self, verdicts: list[_V]) -> None:
            self.verdicts = verdicts
            self.spec = type("S", (), {"id": "tiny"})()

    message = not_passed(_B([_V("A", "pass"), _V("B", "fail"), _V("C", "inconclusive")]))  # type: ignore[arg-type]
    assert message == "goal(s) B fail; goal(s) C inconclusive (spec 'tiny')"
    assert not_passed(_B([_V("A", "pass")])) is None  # type: ignore[arg-type]


def test_flow_run_url_only_with_a_configured_server() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from nnassay.flows.cli.runs import flow_run_url

    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        assert flow_run_url("abc") is None  # the embedded server is gone after the command
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert flow_run_url("abc") == "http://127.0.0.1:4200/runs/flow-run/abc"


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_cli_run_is_readable_on_a_prefect_server(
    tmp_path: Path,
    image_case: Any,
    spec_writer: Any,
    servers: Servers,  # noqa: F811
) -> None:
    """The CLI as a team runs it: Prefect keeps nnassay's run logs although its console stays at
    WARNING; the run is named, tagged and Failed with the goals named; exit code 1; the MLflow run on
    the server has its inputs, its model and each test's artifacts on the nested runs."""
    from mlflow.tracking import MlflowClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from nnassay.flows.cli.runs import flow_run_line
    from nnassay.schemas.evidence import EvidenceBundle

    spec = spec_writer(image_case, FAILING)
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "nnassay.flows.cli.app", "assess", str(spec), "--output", str(out), "--cpu"],
        env=servers.env,
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stderr.decode()[-3000:]
    assert "NOISY" in done.stdout.decode()  # the summary is printed
    bundle = EvidenceBundle.model_validate_json((out / "evidence.json").read_text())
    with _prefect(servers.prefect_api) as client:
        flow_run = client.read_flow_run(bundle.provenance.prefect_flow_run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    assert flow_run.state.is_failed() and "NOISY" in flow_run.state.message
    assert flow_run.name.startswith("tiny-") and {"spec:tiny", f"verdict:{bundle.overall.value}"} <= set(
        flow_run.tags
    )
    assert any(log.message.startswith("goal CLEAN: PASS") for log in logs)
    with temporary_settings({PREFECT_API_URL: servers.prefect_api}):
        line = flow_run_line(bundle)
    assert (
        line
        and line.endswith(f"/runs/flow-run/{flow_run.id}")
        and servers.prefect_api.removesuffix("/api") in line
    )

    mlflow = MlflowClient(tracking_uri=servers.mlflow_uri)
    run = mlflow.get_run(bundle.provenance.mlflow_run_id)
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == [Path(image_case.data).stem]
    assert run.inputs.model_inputs and run.data.tags["mlflow.source.type"] == "LOCAL"
    children = mlflow.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert children and all(mlflow.list_artifacts(c.info.run_id) for c in children)
