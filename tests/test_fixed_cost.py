"""The fixed cost cuts keep behaviour: a new MLflow store made the fast way is MLflow's own schema, an
existing store is never touched, and the fast exit still runs the exit handlers and keeps the code."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def _schema(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str]]]:
    with sqlite3.connect(path) as db:
        tables = db.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        return list(tables), list(db.execute("SELECT version_num FROM alembic_version"))


def test_new_store_has_mlflows_schema_and_works(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from nnassay.flows.cli.servers import prepare_sqlite_store

    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    prepare_sqlite_store(f"sqlite:///{ours}")
    assert ours.is_file() and not list(tmp_path.glob(".*.new"))  # the temporary file is gone
    MlflowClient(tracking_uri=f"sqlite:///{theirs}").search_experiments()  # MLflow creates it its own way
    assert _schema(ours) == _schema(theirs)
    client = MlflowClient(tracking_uri=f"sqlite:///{ours}")
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_existing_store_and_other_uris_are_left_alone(tmp_path: Path) -> None:
    from nnassay.flows.cli.servers import prepare_sqlite_store

    existing = tmp_path / "mlflow.db"
    existing.write_bytes(b"not touched")
    prepare_sqlite_store(f"sqlite:///{existing}")
    assert existing.read_bytes() == b"not touched"
    prepare_sqlite_store("http://127.0.0.1:1")  # a server: nothing to create, nothing contacted
    prepare_sqlite_store(f"sqlite:///{tmp_path / 'missing-folder' / 'mlflow.db'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_fast_exit_runs_exit_handlers_and_keeps_the_code() -> None:
    code = (
        "import atexit, threading, time\n"
        "from nnassay.flows.cli.app import exit_now\n"
        "atexit.register(lambda: print('exit handler ran', flush=True))\n"
        "threading.Thread(target=lambda: (time.sleep(0.5), print('thread joined', flush=True))).start()\n"
        "exit_now(3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines() == ["thread joined", "exit handler ran"]


def test_fast_exit_ends_idle_thread_pool_workers() -> None:
    """An idle ThreadPoolExecutor worker (as MLflow leaves one after reading a store) waits for the
    interpreter's shutdown signal: joining it first hung `nnassay evidence verify` for ever."""
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "from nnassay.flows.cli.app import exit_now\n"
        "pool = ThreadPoolExecutor(1)\n"
        "print(pool.submit(lambda: 'work done').result(), flush=True)\n"
        "exit_now(0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["work done"]


def test_a_stuck_thread_delays_the_exit_by_a_bound_only() -> None:
    code = (
        "import threading\n"
        "from nnassay.flows.cli import app\n"
        "threading.Thread(target=threading.Event().wait).start()  # never ends\n"
        "print(app.end_threads(0.5), flush=True)\n"
        "app.exit_now(4)\n"
    )
    env_code = code.replace("app.exit_now(4)", "app.THREADS_END_S = 0.5; app.exit_now(4)")
    done = subprocess.run(
        [sys.executable, "-c", env_code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 4, done.stderr
    assert done.stdout.splitlines() == ["False"]
