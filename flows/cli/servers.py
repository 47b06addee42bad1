"""The servers an assessment talks to: the embedded Prefect server it starts, and the ones the user runs.

nnassay starts the embedded (temporary) Prefect server itself rather than leaving it to Prefect's
ephemeral mode: Prefect starts it from whichever thread first needs the API and stops it only at a
normal interpreter exit (atexit), so a killed or crashed assessment left it running, and an early exit
raced the thread that was booting it (exit 134). Here it is started from the main thread, before any
Prefect import, with a parent-death signal (Linux): it goes when its assessment goes, whatever the cause.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from types import FrameType

from nnassay.tasks.errors import AssessmentError

PR_SET_PDEATHSIG = 1
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}  # the shell's 128 + signal number


class ServerUnavailableError(AssessmentError):
    """A server the assessment needs does not answer."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop, keep what is finished, exit with the signal's code."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = SIGNAL_EXIT.get(signal.Signals(signum), 128 + signum)


def _raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGTERM and SIGINT raise `Interrupted` in the main thread (the default SIGTERM kills without cleanup)."""
    for sig in SIGNAL_EXIT:
        signal.signal(sig, _raise_interrupted)


def answers(url: str, timeout_s: float) -> str | None:
    """None when GET url answers 2xx within the timeout, else why not (one line)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (http(s) only, checked)
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def check_prefect_api(api_url: str, timeout_s: float = 3.0) -> None:
    """Fail fast when the Prefect API the user set does not answer."""
    why = answers(api_url.rstrip("/") + "/health", timeout_s)
    if why is not None:
        raise ServerUnavailableError(
            f"the Prefect API at {api_url} (PREFECT_API_URL) does not answer ({why}): start it"
            " (`prefect server start`) or unset PREFECT_API_URL to run on nnassay's embedded server"
        )


def check_mlflow_server(tracking_uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast when an http(s) MLflow tracking server does not answer (local stores need no check)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    why = answers(tracking_uri.rstrip("/") + "/health", timeout_s)
    if why is not None:
        raise ServerUnavailableError(
            f"the MLflow tracking server at {tracking_uri} does not answer ({why}): start it"
            " (`mlflow server`), pass another --mlflow-uri, or --no-track"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def configured_prefect_api() -> tuple[str | None, bool]:
    """The Prefect API URL the user configured (environment or profile) and whether Prefect may start
    an embedded server when there is none."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return settings.api.url, bool(settings.server.ephemeral.enabled)


class EmbeddedPrefect:
    """Prefect's API and database in a child process on a free loopback port, for one assessment.

    `start()` only launches the process (fast); `wait_ready()` waits for its health check, so that the
    boot overlaps with the input checks; `stop()` ends it. The child dies with its parent.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedPrefect:
        """Launch the server (the flow reaches it through `settings()`)."""
        env = {
            **os.environ,
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        args = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent
        )
        return self

    def settings(self) -> contextlib.AbstractContextManager[object]:
        """Prefect settings pointing at this server, for the flow run (task threads inherit them)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        return temporary_settings(updates={PREFECT_API_URL: self.api_url})

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the API answers; a server that exits or never answers is `ServerUnavailableError`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")[-500:]
                    if self.process and self.process.stderr
                    else ""
                )
                raise ServerUnavailableError(
                    f"the embedded Prefect server exited at start: {err.strip() or 'no message'}"
                )
            if answers(self.api_url + "/health", 1.0) is None:
                return
            time.sleep(0.1)
        raise ServerUnavailableError(
            f"the embedded Prefect server did not answer within {timeout_s:.0f} s: raise"
            " NNASSAY_PREFECT_STARTUP_TIMEOUT_S or run a Prefect server and set PREFECT_API_URL"
        )

    def stop(self) -> None:
        """End the server (terminate, then kill after 5 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
