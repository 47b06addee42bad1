"""Real servers on loopback: `prefect server start` and `mlflow server` with temporary databases.

An assessment runs against them (PREFECT_API_URL, MLFLOW_TRACKING_URI) as a team would run it; the
flow run, its task runs and the MLflow run with its artifacts must be there. The lifecycle flow is
served on a schedule (`nnassay schedule`) and deployed from prefect.yaml (`prefect deploy`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REPO, goal

pytestmark = [pytest.mark.server, pytest.mark.timeout(420)]


@dataclass(frozen=True)
class Servers:
    prefect_api: str
    mlflow_uri: str
    env: dict[str, str]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s: {log.read_text()[-3000:]}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, env=env, cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    home = tmp_path_factory.mktemp("servers")
    p_port, m_port = _port(), _port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    env.pop("PREFECT_API_URL", None)
    procs = [
        _start(
            ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(p_port)],
            env,
            home / "prefect.log",
        ),
        _start(
            [
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(m_port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{home / 'mlflow.db'}",
                "--artifacts-destination",
                str(home / "mlflow-artifacts"),
            ],
            env,
            home / "mlflow.log",
        ),
    ]
    try:
        _wait_http(f"http://127.0.0.1:{p_port}/api/health", procs[0], home / "prefect.log")
        _wait_http(f"http://127.0.0.1:{m_port}/health", procs[1], home / "mlflow.log")
        api, uri = f"http://127.0.0.1:{p_port}/api", f"http://127.0.0.1:{m_port}"
        client_env = {
            **env,
            "PREFECT_API_URL": api,
            "MLFLOW_TRACKING_URI": uri,
            "PREFECT_HOME": str(home / "client"),
            "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        }
        yield Servers(api, uri, client_env)
    finally:
        _stop(procs)


def _prefect(api: str):  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    @contextlib.contextmanager
    def client():  # type: ignore[no-untyped-def]
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as c:
            yield c

    return client()


def test_assessment_against_prefect_and_mlflow_servers(
    tmp_path: Path, image_case, spec_writer, servers: Servers
) -> None:
    from mlflow.tracking import MlflowClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from nnassay.schemas.evidence import EvidenceBundle

    spec = spec_writer(
        image_case,
        [
            goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5),
            goal("NOISY", {"kind": "gaussian_noise", "sigma": 0.05}, "accuracy", ">=", 0.5),
        ],
    )
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "nnassay.flows.cli.app", "assess", str(spec), "--output", str(out), "--cpu"],
        env=servers.env,
        cwd=REPO,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    bundle = EvidenceBundle.model_validate_json((out / "evidence.json").read_text())
    assert bundle.provenance.mlflow_tracking_uri == servers.mlflow_uri

    with _prefect(servers.prefect_api) as client:
        flow_run = client.read_flow_run(bundle.provenance.prefect_flow_run_id)
        assert flow_run.state.is_completed()
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))
    names = {t.name for t in tasks}
    assert {f"execute {t.test_id}" for t in bundle.plan.tests} <= names
    assert all(t.state.is_completed() for t in tasks)

    mlflow = MlflowClient(tracking_uri=servers.mlflow_uri)
    run = mlflow.get_run(bundle.provenance.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert {"evidence.json", "dossier.pdf", "plan.json"} <= {
        a.path for a in mlflow.list_artifacts(run.info.run_id)
    }
    stored = Path(mlflow.download_artifacts(run.info.run_id, "evidence.json", str(tmp_path)))
    assert EvidenceBundle.model_validate_json(stored.read_text()) == bundle


def test_scheduled_lifecycle_deployment_runs_on_the_server(
    tmp_path: Path, image_case, spec_writer, servers: Servers
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    cmd = [
        sys.executable,
        "-m",
        "nnassay.flows.cli.app",
        "schedule",
        str(spec),
        "--interval",
        "86400",
        "--name",
        "tiny-daily",
        "--output-root",
        str(tmp_path / "series"),
        "--cpu",
    ]
    log = tmp_path / "serve.log"
    served = subprocess.Popen(
        cmd,
        env=servers.env,
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with _prefect(servers.prefect_api) as client:
            deployment = _wait_for(lambda: _deployment(client, "lifecycle-assess/tiny-daily"), served, log)
            assert deployment.schedules[0].schedule.interval.total_seconds() == 86400
            run = client.create_flow_run_from_deployment(deployment.id)  # run now, as the schedule would
            flow_run = _wait_for(lambda: _final(client, run.id), served, log)
            assert flow_run.state.is_completed(), flow_run.state.message
            children = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            assert children and children[0].deployment_id == deployment.id
    finally:
        _stop([served])
    assert list((tmp_path / "series").glob("*/evidence.json")), log.read_text()[-3000:]


def test_prefect_yaml_deploys_to_a_work_pool(servers: Servers) -> None:
    for cmd in (
        ["prefect", "work-pool", "create", "nnassay", "--type", "process"],
        ["prefect", "--no-prompt", "deploy", "--all"],
    ):
        done = subprocess.run(cmd, env=servers.env, cwd=REPO, capture_output=True, timeout=180, check=False)
        assert done.returncode == 0, (done.stdout + done.stderr).decode()[-3000:]
    with _prefect(servers.prefect_api) as client:
        deployment = client.read_deployment_by_name("lifecycle-assess/digits-cnn-weekly")
    assert deployment.work_pool_name == "nnassay"
    assert deployment.schedules[0].schedule.cron == "0 3 * * 1"
    assert deployment.parameters["request"]["spec_path"] == "examples/digits/assessment.yaml"


def _deployment(client, name: str):  # type: ignore[no-untyped-def]
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def _final(client, flow_run_id):  # type: ignore[no-untyped-def]
    flow_run = client.read_flow_run(flow_run_id)
    return flow_run if flow_run.state and flow_run.state.is_final() else None


def _wait_for(probe, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 240):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"`nnassay schedule` exited: {log.read_text()[-3000:]}"
        found = probe()
        if found is not None:
            return found
        time.sleep(1)
    raise TimeoutError(f"timed out; serve log: {log.read_text()[-3000:]}")
