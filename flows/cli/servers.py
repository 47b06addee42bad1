"""The servers an assessment talks to: the embedded Prefect server it starts, and the ones the user runs.

nnassay starts the embedded (temporary) Prefect server itself rather than leaving it to Prefect's
ephemeral mode: Prefect starts it from whichever thread first needs the API and stops it only at a
normal interpreter exit (atexit), so a killed or crashed assessment left it running, and an early exit
raced the thread that was booting it (exit 134). Here it is started from the main thread, before any
Prefect import, with a parent-death signal (Linux): it goes when its assessment goes, whatever the cause.
It is launched first thing (``embedded_prefect_early``), so that its 3 to 6 s of boot overlap the
input checks.

A new local MLflow store is created by ``prepare_sqlite_store`` with MLflow's own migrations but one
disk sync instead of one per migration (5 to 6 s down to about 1 s here).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType
from typing import NoReturn

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


_EXITING = threading.Lock()  # held by whichever path ends an interrupted process first


def exit_interrupted(stop: Interrupted, note: str) -> NoReturn:
    """Say why the process stops (once) and end it now with the signal's exit code."""
    if _EXITING.acquire(blocking=False):
        sys.stderr.write(f"nnassay: {stop}: {note}\n")
        sys.stderr.flush()
    os._exit(stop.exit_code)  # running test threads cannot be joined within seconds


def install_signal_handlers(note: str, grace_s: float = 3.0) -> None:
    """SIGTERM and SIGINT raise `Interrupted` in the main thread (the default SIGTERM kills without
    cleanup), so the flow marks its MLflow run failed. A flow run swaps in Prefect's own SIGTERM
    handler, whose way out joins the running test threads; so a watcher thread, woken by Python's
    signal wake-up file for any handler, ends the process ``grace_s`` after the signal, saying ``note``."""

    def interrupted(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    for sig in SIGNAL_EXIT:
        signal.signal(sig, interrupted)
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(target=_watch_signals, args=(read_end, note, grace_s), daemon=True).start()


def _watch_signals(read_end: int, note: str, grace_s: float) -> None:
    while chunk := os.read(read_end, 16):
        for signum in chunk:
            if signum in SIGNAL_EXIT:
                time.sleep(grace_s)
                exit_interrupted(Interrupted(signum), note)


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


def embedded_prefect_early() -> EmbeddedPrefect | None:
    """Launch the embedded server now, before Prefect's settings are even imported, unless
    PREFECT_API_URL is set in the environment; ``prefect_server`` confirms (or stops) it."""
    return None if os.environ.get("PREFECT_API_URL") else EmbeddedPrefect().start()


def prefect_server(early: EmbeddedPrefect | None) -> EmbeddedPrefect | None:
    """The user's Prefect API when one is configured (checked to answer; an early embedded server is
    stopped), else nnassay's embedded one (the early one when it was launched)."""
    api_url, ephemeral = configured_prefect_api()
    if api_url or not ephemeral:
        if early is not None:
            early.stop()
        if api_url:
            check_prefect_api(api_url)
        return None
    return early or EmbeddedPrefect().start()


def prepare_sqlite_store(tracking_uri: str) -> None:
    """Create a new local MLflow SQLite store quickly; an existing one (or another URI) is left alone.

    MLflow would run its schema migrations on the new file, syncing it to disk after each one (about
    5 s on this machine's disk); here the same migrations (MLflow's own ``_initialize_tables``) run on
    a temporary file with SQLite's syncing off, which is then synced once and linked into place (never
    over a store another run created meanwhile). Any failure leaves the creation to MLflow.
    """
    from nnassay.tasks.io.stores import sqlite_path

    path = sqlite_path(tracking_uri)
    if path is None or path.exists() or not path.parent.is_dir():
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    try:
        _migrate_unsynced(tmp)
        os.link(tmp, path)
    except Exception:  # noqa: BLE001 (MLflow creates the store itself, the slow way)
        return
    finally:
        tmp.unlink(missing_ok=True)


def _migrate_unsynced(path: Path) -> None:
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")

    def no_sync(connection: object, _record: object) -> None:
        cursor = connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA synchronous=OFF")
        cursor.execute("PRAGMA journal_mode=MEMORY")
        cursor.close()

    sqlalchemy.event.listen(engine, "connect", no_sync)
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


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
