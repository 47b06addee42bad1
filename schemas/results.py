"""Results stage: what each planned test measured (step 3 of the TR 24029-1 workflow)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, JsonValue

from nnassay.schemas.common import SCHEMA_VERSION, Measurement, MethodFamily, Record


class TestStatus(StrEnum):
    """Whether a test produced its measurements."""

    __test__ = False  # not a pytest class

    COMPLETED = "completed"
    INCONCLUSIVE = "inconclusive"  # ran, but could not decide (reason says why)
    ERROR = "error"  # could not run (reason says why)


class ArtifactRef(Record):
    """A file written by a test (arrays, pictures), stored relative to the run folder."""

    path: str = Field(description="Path of the file relative to the run folder.")
    sha256: str = Field(description="SHA-256 digest of the file's bytes.")
    media_type: str = Field(description="MIME type, e.g. 'image/png' or 'application/x-npz'.")
    caption: str = Field(default="", description="What the file shows, for the dossier.")


class Series(Record):
    """A curve for the dossier's charts, e.g. accuracy against perturbation strength."""

    name: str = Field(description="Legend label of the curve.")
    x_label: str = Field(description="Axis label of x, with unit.")
    y_label: str = Field(description="Axis label of y, with unit.")
    x: list[float] = Field(description="x values.")
    y: list[float] = Field(description="y values, one per x.")
    y_low: list[float] | None = Field(default=None, description="Lower interval end per point.")
    y_high: list[float] | None = Field(default=None, description="Upper interval end per point.")
    kind: Literal["line", "histogram", "heatmap", "bar"] = Field(
        default="line", description="How the dossier draws the series."
    )


class MethodOutcome(Record):
    """What a method returns; the runner wraps it into a MethodResult."""

    status: TestStatus = Field(default=TestStatus.COMPLETED, description="Did the test decide?")
    metrics: dict[str, Measurement] = Field(
        default_factory=dict, description="Measured values by metric name."
    )
    series: list[Series] = Field(default_factory=list, description="Curves for charts.")
    artifacts: list[ArtifactRef] = Field(
        default_factory=list, description="Files the test wrote (arrays, pictures)."
    )
    details: dict[str, JsonValue] = Field(
        default_factory=dict, description="Method-specific facts worth keeping (JSON values)."
    )
    reason: str | None = Field(
        default=None, description="Why the test is inconclusive or errored, or a caveat."
    )


class MethodResult(Record):
    """The stored result of one planned test."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    test_id: str = Field(description="Id of the planned test, '<goal id>/<method name>'.")
    goal_id: str = Field(description="Goal the test answers to.")
    method: str = Field(description="Registered method name, 'family.name'.")
    family: MethodFamily = Field(description="TR 24029-1 method class.")
    status: TestStatus = Field(description="Did the test decide?")
    metrics: dict[str, Measurement] = Field(description="Measured values by metric name.")
    series: list[Series] = Field(default_factory=list, description="Curves for charts.")
    artifacts: list[ArtifactRef] = Field(default_factory=list, description="Files written.")
    details: dict[str, JsonValue] = Field(default_factory=dict, description="Method facts.")
    reason: str | None = Field(default=None, description="Why inconclusive/errored, or caveat.")
    seed: int = Field(description="Seed the test ran with.")
    time_s: float = Field(ge=0, description="Wall time of the test in seconds.")
    provider: str = Field(description="ONNX Runtime execution provider actually used.")

    @classmethod
    def from_outcome(cls, outcome: MethodOutcome, **fields: Any) -> MethodResult:
        """Wrap a method's outcome with the runner's bookkeeping fields."""
        return cls(**outcome.model_dump(), **fields)
