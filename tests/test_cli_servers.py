"""Fail fast and stop cleanly: dead servers are exit 2 in one line, signals cancel within a bound,
the embedded Prefect server goes when its assessment goes, and bad input never races to exit 134."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import TinyCase, build_slow_case, goal, write_spec
from nnassay.flows.cli.servers import (
    EmbeddedPrefect,
    ServerUnavailableError,
    check_mlflow_server,
    check_prefect_api,
)
from nnassay.tasks.governance.resume import cache_dir

pytestmark = pytest.mark.slow  # whole assessments, renderings or child processes: the full lane

REPO = Path(__file__).resolve().parents[1]
SERVER_MARK = "prefect.server.api.server:create_app"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the block ends: nothing listens there


def _cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "nnassay.flows", *args]
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=REPO, text=True, **kwargs)


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = _cli(*args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _assert_one_line_exit_2(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("nnassay: error:")]
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture(scope="module")
def slow_case(tmp_path_factory: pytest.TempPathFactory) -> TinyCase:
    return build_slow_case(tmp_path_factory.mktemp("slow"))


def _slow_spec(folder: Path, case: TinyCase) -> Path:
    noisy = goal("SLOW", {"kind": "gaussian_noise", "sigma": 0.1}, "accuracy", ">=", 0.5)
    noisy["methods"] = [{"name": "statistical.noise_accuracy", "params": {"draws": 1000}}]
    return write_spec(folder, case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5), noisy])


def test_checks_name_the_url_of_a_server_that_does_not_answer() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(ServerUnavailableError, match=f"{url}/api.*PREFECT_API_URL"):
        check_prefect_api(f"{url}/api", timeout_s=1)
    with pytest.raises(ServerUnavailableError, match=f"{url}.*--no-track"):
        check_mlflow_server(url, timeout_s=1)
    check_mlflow_server("sqlite:///nowhere/mlflow.db")  # a local store needs no server


def test_embedded_server_answers_and_is_gone_after_stop(tmp_path: Path) -> None:
    server = EmbeddedPrefect()
    old = os.environ.get("PREFECT_API_URL")
    try:
        server.start()
        assert server.process is not None
        pid = server.process.pid
        server.wait_ready(180)
        check_prefect_api(server.api_url)
    finally:
        server.stop()
        os.environ.pop("PREFECT_API_URL", None) if old is None else os.environ.update(PREFECT_API_URL=old)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_dead_prefect_api_is_exit_2_naming_it(tmp_path: Path, image_case: TinyCase) -> None:
    spec = write_spec(tmp_path / "spec", image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    url = f"http://127.0.0.1:{_closed_port()}/api"
    done = _run("assess", str(spec), "--output", str(tmp_path / "run"), env={"PREFECT_API_URL": url})
    _assert_one_line_exit_2(done, url, "prefect server start")


def test_dead_mlflow_server_is_exit_2_naming_it(tmp_path: Path, image_case: TinyCase) -> None:
    spec = write_spec(tmp_path / "spec", image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    url = f"http://127.0.0.1:{_closed_port()}"
    done = _run("assess", str(spec), "--output", str(tmp_path / "run"), "--mlflow-uri", url)
    _assert_one_line_exit_2(done, url, "--no-track")


@pytest.mark.slow
def test_repeated_bad_input_always_exits_2(tmp_path: Path, image_case: TinyCase) -> None:
    """The early exit used to race the thread booting Prefect (exit 134 about one run in seven)."""
    spec = write_spec(tmp_path / "spec", image_case, [goal("G1", {"kind": "none"}, "accuracy", ">=", 0.5)])
    spec.write_text(spec.read_text().replace(str(image_case.model), str(tmp_path / "missing.onnx")))
    codes = [_run("assess", str(spec), "--output", str(tmp_path / f"run{i}")).returncode for i in range(50)]
    assert set(codes) == {2}, codes


def _server_children(proc: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in proc.children(recursive=True):
        try:
            if SERVER_MARK in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _wait_until_running(proc: subprocess.Popen[str], run: Path) -> list[psutil.Process]:
    """Wait (bounded) until the assessment is executing tests; its embedded server processes."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        cache = cache_dir(run)  # a persisted result: tracking is open and tests are running
        if cache.is_dir() and any(cache.iterdir()):
            servers = _server_children(psutil.Process(proc.pid))
            if servers:
                return servers
        time.sleep(0.2)
    raise AssertionError(f"the assessment never started its tests (exit {proc.poll()})")


def _gone(processes: list[psutil.Process], within_s: float) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=within_s)
    return not alive


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_the_run_and_marks_mlflow(
    tmp_path: Path, slow_case: TinyCase, sig: signal.Signals
) -> None:
    from mlflow.tracking import MlflowClient

    spec, run, uri = (
        _slow_spec(tmp_path / "spec", slow_case),
        tmp_path / "run",
        f"sqlite:///{tmp_path / 'm.db'}",
    )
    proc = _cli(
        "assess", str(spec), "--output", str(run), "--cpu", "--mlflow-uri", uri, stderr=subprocess.PIPE
    )
    try:
        servers = _wait_until_running(proc, run)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)  # "within a few seconds", with room for a loaded machine
    finally:
        proc.kill()
    assert proc.returncode == {signal.SIGTERM: 143, signal.SIGINT: 130}[sig], err[-2000:]
    assert "Traceback" not in err
    assert "interrupted" in err
    assert _gone(servers, 10), "the embedded Prefect server outlived its assessment"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parents and all(r.info.status in ("FAILED", "KILLED") for r in parents)


@pytest.mark.slow
def test_embedded_server_dies_with_a_killed_assessment(tmp_path: Path, slow_case: TinyCase) -> None:
    spec, run = _slow_spec(tmp_path / "spec", slow_case), tmp_path / "run"
    proc = _cli("assess", str(spec), "--output", str(run), "--cpu", "--no-track", stderr=subprocess.DEVNULL)
    try:
        servers = _wait_until_running(proc, run)
        proc.kill()  # SIGKILL: no handler, no atexit
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert _gone(servers, 10), "the embedded Prefect server outlived its killed assessment"
