"""Schedules: the options of `nnassay schedule` are checked before anything is served, and Prefect's own
scheduler really inserts runs with the pinned libraries (the real scheduler run by a server is tested
in test_servers.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import goal
from nnassay.flows.cli.app import app
from nnassay.schemas.schedule import LifecycleSchedule, ScheduleOptionError


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A Prefect API address that only records whether anything connected to it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        s.setblocking(False)
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{s.getsockname()[1]}/api")
        yield s


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        (
            ["--cron", "0 3 * * 8"],
            [
                "--cron '0 3 * * 8'",
                "the day of week (field 5 of 5) is '8'",
                "0-7 or SUN-SAT",
                "--cron '0 3 * * 1'",
            ],
        ),
        (
            ["--cron", "0 3 * *"],
            ["--cron '0 3 * *'", "it has 4 field(s); give 5", "minute hour day-of-month"],
        ),
        (
            ["--cron", "0 3 * * 1", "--timezone", "Mars/Base"],
            ["--timezone 'Mars/Base'", "IANA", "Europe/Paris"],
        ),
        (["--interval", "-5"], ["--interval -5", "seconds > 0"]),
        (["--interval", "0"], ["--interval 0", "seconds > 0"]),
        (["--interval", "nan"], ["--interval nan", "seconds > 0"]),
        (["--interval", "60", "--cron", "0 3 * * 1"], ["exactly one of --cron or --interval"]),
        ([], ["exactly one of --cron or --interval"]),
    ],
)
def test_bad_schedule_options_exit_2_before_any_server(
    tmp_path: Path, image_case, spec_writer, listener: socket.socket, options: list[str], needles: list[str]
) -> None:
    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    result = CliRunner().invoke(app, ["schedule", str(spec), *options, "--output-root", str(tmp_path / "s")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("nnassay: error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    with pytest.raises(BlockingIOError):  # nobody connected to the Prefect API
        listener.accept()
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("cron", "interval", "timezone", "shown"),
    [
        ("0 3 * * 1", None, "Europe/Paris", "cron '0 3 * * 1' (Europe/Paris)"),
        ("*/15 8-18 * * MON-FRI", None, "UTC", "cron '*/15 8-18 * * MON-FRI' (UTC)"),
        (None, 2.5, "America/New_York", "every 2.5 s"),
    ],
)
def test_good_schedules_become_prefect_schedules(
    cron: str | None, interval: float | None, timezone: str, shown: str
) -> None:
    when = LifecycleSchedule.from_options(cron=cron, interval=interval, timezone=timezone)
    assert when.describe() == shown
    prefect_schedule = when.to_prefect()
    assert prefect_schedule.timezone == timezone
    assert prefect_schedule.cron == cron
    assert (prefect_schedule.interval.total_seconds() if interval else None) == interval


@pytest.mark.parametrize("command", ["schedule", "monitor-schedule"])
@pytest.mark.parametrize(
    ("cron", "named"),
    [
        ("61 * * * *", "the minute (field 1 of 5) is '61'; allowed: 0-59"),
        ("0 25 * * *", "the hour (field 2 of 5) is '25'; allowed: 0-23"),
        ("0 3 32 * *", "the day of month (field 3 of 5) is '32'; allowed: 1-31"),
        ("0 3 1-40 * *", "the day of month (field 3 of 5) is '1-40'; allowed: 1-31"),
        ("0 3 * 13 *", "the month (field 4 of 5) is '13'; allowed: 1-12 or JAN-DEC"),
        ("0 3 * * FRY", "the day of week (field 5 of 5) is 'FRY'; allowed: 0-7 or SUN-SAT"),
    ],
)
def test_a_bad_cron_field_is_named_with_its_range_and_value(
    tmp_path: Path, image_case, spec_writer, command: str, cron: str, named: str
) -> None:
    spec = spec_writer(image_case, [goal("CLEAN", {"kind": "none"}, "accuracy", ">=", 0.5)])
    field = ["--field", str(image_case.data)] if command == "monitor-schedule" else []
    args = [command, str(spec), *field, "--cron", cron, "--dry-run", "-o", str(tmp_path / "s")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"nnassay: error: --cron {cron!r} is not valid: {named}")
    assert "e.g. --cron '0 3 * * 1'" in result.output and "Traceback" not in result.output


def test_cron_fields_prefect_accepts_are_not_blamed() -> None:
    from nnassay.flows.cli.options import cron_field_fix

    for good in ("*/70 * * * *", "0 3 L * *", "0 3 * * 7", "0 3 * * MON-FRI", "0 3 * * * 30"):
        LifecycleSchedule.from_options(cron=good, interval=None, timezone="UTC")  # Prefect takes it
        assert cron_field_fix(good) is None
    assert cron_field_fix("0 3 * * * 61") is not None and "second (field 6 of 6)" in str(
        cron_field_fix("0 3 * * * 61")
    )


def test_schedule_errors_name_the_option() -> None:
    with pytest.raises(ScheduleOptionError) as raised:
        LifecycleSchedule.from_options(cron=None, interval=-5, timezone="Mars/Base")
    assert raised.value.option == "--interval" and raised.value.value == -5
    assert str(raised.value).count("\n") == 0


# Prefect's scheduler service (`schedule_deployments`, what `prefect server start` runs every
# loop) against a fresh SQLite database: with SQLAlchemy 2.1 its bulk insert of flow runs raised
# "Can't evaluate bulk DML statement" and no scheduled run was ever created (issue 16).
_SCHEDULER = textwrap.dedent(
    """
    import asyncio, datetime, json
    from prefect.server import models, schemas
    from prefect.server.database import provide_database_interface
    from prefect.server.schemas.schedules import IntervalSchedule
    from prefect.server.services.scheduler import schedule_deployments

    async def main():
        db = provide_database_interface()
        await db.create_db()
        async with db.session_context(begin_transaction=True) as session:
            flow = await models.flows.create_flow(session=session, flow=schemas.core.Flow(name="f"))
            every = IntervalSchedule(interval=datetime.timedelta(seconds=5))
            await models.deployments.create_deployment(
                session=session,
                deployment=schemas.core.Deployment(
                    name="d",
                    flow_id=flow.id,
                    schedules=[schemas.core.DeploymentSchedule(schedule=every, active=True)],
                ),
            )
        await schedule_deployments()
        async with db.session_context() as session:
            runs = await models.flow_runs.read_flow_runs(session=session)
        states = sorted({r.state_type.value for r in runs})
        print(json.dumps({"runs": len(runs), "states": states, "auto": all(r.auto_scheduled for r in runs)}))

    asyncio.run(main())
    """
)


def test_prefect_scheduler_inserts_runs_on_a_fresh_database(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "ERROR",
    }
    done = subprocess.run(
        [sys.executable, "-c", _SCHEDULER], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["runs"] >= 3 and found["states"] == ["SCHEDULED"] and found["auto"], done.stdout
