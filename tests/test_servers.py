"""Real servers on loopback: `prefect server start` and `mlflow server` with temporary databases.

An assessment runs against them (PREFECT_API_URL, MLFLOW_TRACKING_URI) as a team would run it; the
flow run, its task runs and the MLflow run with its artifacts must be there. The lifecycle flow is
served on a schedule (`nnassay schedule`) and deployed from prefect.yaml (`prefect deploy`) to a
process worker: in both, Prefect's own scheduler creates the run (the test never does), and the run
ends with an evidence bundle in its folder. The scheduler loops every 2 s here (60 s by default).
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

import psutil
import pytest
import yaml

from conftest import REPO, goal

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(420)]


@dataclass(frozen=True)
class Servers:
    prefect_api: str
    mlflow_uri: str
    env: dict[str, str]
    prefect_log: Path


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
    """Stop each process with its group, and its descendants in other groups (Prefect's runner and
    worker may start flow runs in sessions of their own)."""
    family: list[psutil.Process] = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            family += psutil.Process(proc.pid).children(recursive=True)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)  # a test server on a temporary database loses nothing to SIGKILL
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for child in family:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(family, timeout=15)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()


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
        # the scheduler service looks for deployments to schedule every 60 s by default
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "2",
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
            "PREFECT_RUNNER_PROCESS_LIMIT": "1",  # one run at a time on this small machine
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            "PREFECT_WORKER_PREFETCH_SECONDS": "2",
        }
        yield Servers(api, uri, client_env, home / "prefect.log")
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


def test_scheduler_runs_a_served_lifecycle_schedule(
    tmp_path: Path, image_case, spec_writer, servers: Servers
) -> None:
    """`nnassay schedule SPEC --interval 5`: the server's scheduler creates the run, the served runner
    runs it, and its folder holds the evidence."""
    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    series = tmp_path / "series"
    cmd = [
        *[sys.executable, "-m", "nnassay.flows.cli.app", "schedule", str(spec)],
        *["--interval", "5", "--name", "tiny-every-5s", "--output-root", str(series), "--cpu"],
    ]
    log = tmp_path / "serve.log"
    served = _start(cmd, servers.env, log)
    try:
        with _prefect(servers.prefect_api) as client:
            deployment = _wait_for(lambda: _deployment(client, "lifecycle-assess/tiny-every-5s"), served, log)
            assert deployment.schedules[0].schedule.interval.total_seconds() == 5
            flow_run = _scheduled_run_finishes(client, deployment.id, served, log, servers.prefect_log)
    finally:
        _stop([served])
    _check_scheduled_run(flow_run, deployment.id, series, log)


def test_scheduler_runs_the_prefect_yaml_deployment_on_a_process_worker(
    tmp_path: Path, image_case, spec_writer, servers: Servers
) -> None:
    """The repository's prefect.yaml, its deployment pointed at a tiny spec every 5 s: `prefect deploy`,
    a process worker, and the server's scheduler creates the run that the worker runs."""
    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    series = tmp_path / "series"
    project = yaml.safe_load((REPO / "prefect.yaml").read_text())
    (entry,) = project["deployments"]
    entry.update(name="tiny-every-5s-worker", schedules=[{"interval": 5, "timezone": "UTC", "active": True}])
    entry["parameters"]["request"].update(spec_path=str(spec), output_root=str(series), prefer_cuda=False)
    entry["work_pool"]["name"] = pool = "nnassay-scheduled"
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(project, sort_keys=False))
    env = {**servers.env, "NNASSAY_CHECKOUT": str(REPO)}
    for cmd in (
        ["prefect", "work-pool", "create", pool, "--type", "process"],
        ["prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)],
    ):
        done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, timeout=180, check=False)
        assert done.returncode == 0, (done.stdout + done.stderr).decode()[-3000:]
    log = tmp_path / "worker.log"
    worker = _start(["prefect", "worker", "start", "--pool", pool, "--limit", "1"], env, log)
    try:
        with _prefect(servers.prefect_api) as client:
            deployment = client.read_deployment_by_name("lifecycle-assess/tiny-every-5s-worker")
            assert deployment.work_pool_name == pool
            flow_run = _scheduled_run_finishes(client, deployment.id, worker, log, servers.prefect_log)
    finally:
        _stop([worker])
    _check_scheduled_run(flow_run, deployment.id, series, log)


def _scheduled_run_finishes(
    client, deployment_id, proc: subprocess.Popen[bytes], log: Path, server_log: Path
):  # type: ignore[no-untyped-def]
    """Wait until the first run of the deployment that left the Scheduled state is final; once it has
    started, pause the deployment so that no further run starts (pausing deletes the runs the
    scheduler queued meanwhile; the run that started goes on)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    started: list = []  # type: ignore[type-arg]

    def probe():  # type: ignore[no-untyped-def]
        if not started:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )
            started.extend(r for r in runs if r.state and not r.state.is_scheduled())
            if not started:
                return None
            client.pause_deployment(deployment_id)
        return _final(client, started[0].id)

    try:
        return _wait_for(probe, proc, log)
    except TimeoutError as exc:  # name the scheduler's errors (issue 16: SQLAlchemy 2.1)
        errors = [line for line in server_log.read_text().splitlines() if "Error" in line]
        raise TimeoutError(f"no scheduled run finished; Prefect server errors: {errors[-5:]}") from exc


def _check_scheduled_run(flow_run, deployment_id, series: Path, log: Path) -> None:  # type: ignore[no-untyped-def]
    """Created by the scheduler for the deployment, final (a failed goal may end it Failed), with an
    evidence bundle in its own folder of the series."""
    assert flow_run.deployment_id == deployment_id
    assert flow_run.auto_scheduled and "auto-scheduled" in flow_run.tags
    assert flow_run.created_by is not None and flow_run.created_by.type == "SCHEDULE"
    assert flow_run.state.is_completed() or flow_run.state.is_failed(), flow_run.state
    found = list(series.glob(f"*-{str(flow_run.id)[:8]}/evidence.json"))
    assert found, f"{flow_run.state.message}; log: {log.read_text()[-3000:]}"


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
        assert proc.poll() is None, f"{proc.args} exited: {log.read_text()[-3000:]}"
        found = probe()
        if found is not None:
            return found
        time.sleep(1)
    raise TimeoutError(f"timed out after {timeout_s} s; log: {log.read_text()[-3000:]}")
