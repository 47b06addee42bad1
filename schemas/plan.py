"""Planning stage: the test plan derived from the goals (step 2 of the TR 24029-1 workflow)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, JsonValue

from nnassay.schemas.common import SCHEMA_VERSION, MethodFamily, Record
from nnassay.schemas.goals import Criterion
from nnassay.schemas.threats import Threat


class TestSpec(Record):
    """One planned test: a method run for a goal with fixed parameters, seed and budget."""

    __test__ = False  # not a pytest class

    test_id: str = Field(description="'<goal id>/<method name>', unique in the plan.")
    goal_id: str = Field(description="Goal the test answers to.")
    method: str = Field(description="Registered method name, 'family.name'.")
    family: MethodFamily = Field(description="TR 24029-1 method class.")
    clause: str = Field(description="TR 24029-1 clause the method belongs to.")
    threat: Threat = Field(description="The goal's threat, as the method receives it.")
    params: dict[str, JsonValue] = Field(description="Validated method parameters.")
    metric: str = Field(description="Metric of the goal this test measures.")
    criterion: Criterion = Field(description="Acceptance criterion copied from the goal.")
    primary: bool = Field(description="True for the test whose metric decides the goal's verdict.")
    seed: int = Field(ge=0, description="Seed of the test, derived from the spec seed and test id.")
    samples: int = Field(ge=1, description="Number of test samples the test uses.")
    samples_needed: int | None = Field(
        default=None, description="Samples needed to decide the criterion, when computable."
    )
    time_s: float = Field(gt=0, description="Wall-time budget of the test in seconds.")
    estimate_s: float | None = Field(
        default=None,
        ge=0,
        description="How long the test was expected to take, in seconds, estimated at planning from the "
        "model's measured unit costs and the method's work (None: not estimated).",
    )
    estimate_pilot: str | None = Field(
        default=None,
        description="When the estimate was checked by a pilot (the method run at planning on a few of "
        "the test's samples, for attacks and proofs whose work depends on what they find): what the "
        "pilot ran and measured; None: the estimate is the unit costs' alone.",
    )
    fallback_from: str | None = Field(
        default=None,
        description="The method the goal asked for (or the planner chose first) when this test replaces "
        "it because it cannot run on this model, e.g. a gradient attack on a model the torch executor "
        "cannot run; None when the test runs the method chosen.",
    )
    fallback_reason: str | None = Field(
        default=None, description="Why that method cannot run here and this one was planned instead."
    )


class AssessmentPlan(Record):
    """The whole test plan, saved as plan.json before anything runs."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    spec_id: str = Field(description="Id of the assessment spec the plan was made from.")
    spec_sha256: str = Field(description="SHA-256 of the spec file.")
    model_sha256: str = Field(description="SHA-256 of the ONNX model file.")
    data_sha256: str = Field(description="SHA-256 of the data file.")
    data_samples: int = Field(ge=1, description="Samples available in the data.")
    tests: list[TestSpec] = Field(min_length=1, description="Planned tests, in execution order.")
    notes: list[str] = Field(default_factory=list, description="Planning remarks for the reader.")
    explain_estimate_s: float | None = Field(
        default=None,
        ge=0,
        description="Estimated time of explaining failures, in seconds, if every goal that can have "
        "per-sample failures fails (None: explanations off or not estimated).",
    )
