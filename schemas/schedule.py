"""The schedule of a served lifecycle assessment (`nnassay schedule`): a cron or an interval, and a zone.

Checked before anything is served or any server is contacted, so that a wrong option is one line and
exit 2 instead of a traceback, or a schedule that never fires. Cron strings are checked with Prefect's
own schedule model (what Prefect accepts is accepted here); time zones against the IANA database.
"""

from __future__ import annotations

import math
import zoneinfo
from functools import cache
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CRON_FIX = (
    "give 5 fields 'minute hour day-of-month month day-of-week' (minute 0-59, hour 0-23, day 1-31,"
    " month 1-12 or JAN-DEC, day-of-week 0-7 or SUN-SAT, 0 and 7 = Sunday; * , - / allowed),"
    " e.g. --cron '0 3 * * 1' for Mondays 03:00"
)
TIMEZONE_FIX = "give an IANA time zone name, e.g. UTC, Europe/Paris or America/New_York"
INTERVAL_FIX = "give a number of seconds > 0, e.g. --interval 3600 for hourly runs"


class ScheduleOptionError(ValueError):
    """A schedule option is wrong: ``str()`` is one line naming the option, the value and the fix."""

    def __init__(self, option: str, value: Any, fix: str) -> None:
        self.option, self.value, self.fix = option, value, fix
        if value is None:
            super().__init__(f"{option}: {fix}")
        else:
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            super().__init__(f"{option} {shown} is not valid: {fix}")


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class LifecycleSchedule(BaseModel):
    """When a lifecycle assessment runs: exactly one of a cron string or an interval, in a time zone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cron: str | None = Field(default=None, description="Cron string, e.g. '0 3 * * 1' (Mondays 03:00).")
    interval: float | None = Field(default=None, description="Or: seconds between runs (> 0).")
    timezone: str = Field(default="UTC", description="IANA time zone of the schedule.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=value)
        except ValidationError:
            raise ValueError(CRON_FIX) from None
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(INTERVAL_FIX)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        if value not in _zones():
            raise ValueError(TIMEZONE_FIX)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.cron is None) == (self.interval is None):
            raise ValueError("give exactly one of --cron or --interval")
        return self

    @classmethod
    def from_options(cls, *, cron: str | None, interval: float | None, timezone: str) -> LifecycleSchedule:
        """The schedule of the CLI options; ScheduleOptionError (one line) on the first wrong option."""
        values = {"cron": cron, "interval": interval, "timezone": timezone}
        try:
            return cls(cron=cron, interval=interval, timezone=timezone)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else ""
            fix = str(error.get("ctx", {}).get("error", error["msg"]))
            if field not in values:  # the model-level check: both or neither of cron and interval
                raise ScheduleOptionError("--cron/--interval", None, fix) from None
            raise ScheduleOptionError(f"--{field}", values[field], fix) from None

    def describe(self) -> str:
        """One line for people, e.g. "cron '0 3 * * 1' (UTC)" or "every 60 s"."""
        return f"cron {self.cron!r} ({self.timezone})" if self.cron else f"every {self.interval:g} s"

    def to_prefect(self) -> Any:
        """The ``prefect.schedules`` object of this schedule (for ``flow.serve``)."""
        from prefect.schedules import Cron, Interval

        if self.cron is not None:
            return Cron(self.cron, timezone=self.timezone)
        return Interval(float(self.interval or 0), timezone=self.timezone)
