"""Goals stage: the assessment spec a stakeholder writes (step 1 of the TR 24029-1 workflow)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, JsonValue, PositiveFloat, PositiveInt, model_validator

from nnassay.schemas.common import SCHEMA_VERSION, Comparator, Confidence, Record, reject_nul
from nnassay.schemas.threats import Threat

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Layout(StrEnum):
    """Axis order of an input tensor (batch axis first)."""

    NCHW = "NCHW"
    NHWC = "NHWC"
    FLAT = "NC"  # one feature vector per sample (tabular, or flattened images)


class Preprocessing(Record):
    """What the model expects done to data before it: ``x_model = (x * scale - mean) / std``."""

    scale: PositiveFloat = Field(default=1.0, description="Factor applied first.")
    mean: list[float] = Field(
        default_factory=lambda: [0.0], description="Per-channel mean (one value for all channels)."
    )
    std: list[PositiveFloat] = Field(
        default_factory=lambda: [1.0], description="Per-channel std (one value for all channels)."
    )


class ModelSpec(Record):
    """Which model is assessed, and how its input is laid out and scaled."""

    path: Path = Field(description="ONNX file, relative to the spec file's folder.")
    input_name: str | None = Field(default=None, description="Input to feed; default: the first.")
    layout: Layout = Field(default=Layout.NCHW, description="Axis order the model input expects.")
    value_range: tuple[float, float] = Field(
        default=(0.0, 1.0), description="Valid range of data values (before preprocessing)."
    )
    preprocessing: Preprocessing = Field(
        default_factory=Preprocessing, description="Normalisation the model expects."
    )
    task: Literal["classification", "regression"] = Field(
        default="classification", description="What the model does; regression is not yet supported."
    )
    output_name: str | None = Field(
        default=None,
        description="Output holding the class scores; default: the only output that can hold them "
        "(a float [N, classes] tensor or a ZipMap), so a label output beside it is ignored.",
    )
    output: Literal["logits", "probabilities"] | None = Field(
        default=None,
        description="Whether that output holds logits or probabilities; default: detected (rows that "
        "are non-negative and sum to 1 are probabilities, anything else logits).",
    )
    labels: list[str] | None = Field(default=None, description="Class names, by class index.")
    name: str | None = Field(default=None, description="Human name of the model for the dossier.")
    version: str | None = Field(default=None, description="Model version, as the owner tracks it.")
    intended_use: str | None = Field(default=None, description="Intended use, as declared.")
    operating_domain: str | None = Field(default=None, description="Operating domain, as declared.")

    @model_validator(mode="after")
    def _range_ordered(self) -> ModelSpec:
        low, high = self.value_range
        if not low < high:
            raise ValueError(f"value_range must be [low, high] with low < high, got {[low, high]}")
        return self


class FeatureSpec(Record):
    """One tabular feature: its type, valid range and scale, or its categorical values.

    Tabular threat magnitudes are in units of each feature's scale: noise of strength s has spread
    s x scale, and an attack radius eps (linf_ball, l2_ball) on tabular data means eps x scale on each
    feature (L-inf: the box x +- eps x scale; L2: the ellipsoid sum((delta / scale)^2) <= eps^2).
    """

    name: str = Field(description="Column name (CSV) or feature index as text (npz).")
    kind: Literal["numeric", "integer", "categorical"] = Field(
        default="numeric",
        description="Feature type: numeric (any value in range), integer (whole numbers, kept whole "
        "under perturbation) or categorical (one of `values`; attacks leave it unchanged).",
    )
    range: tuple[float, float] | None = Field(
        default=None, description="Valid numeric range [min, max]; same as `min` and `max` together."
    )
    min: float | None = Field(default=None, description="Smallest valid value; default: the data's.")
    max: float | None = Field(default=None, description="Largest valid value; default: the data's.")
    scale: PositiveFloat | None = Field(
        default=None,
        description="The feature's unit of change for threat magnitudes; default: `noise_scale`, else "
        "the feature's standard deviation in the test data (its range if constant, else 1).",
    )
    noise_scale: PositiveFloat | None = Field(
        default=None, description="Spread used for noise; same as `scale` (kept for older specs)."
    )
    values: list[float] | None = Field(default=None, description="Categorical codes allowed.")
    immutable: bool = Field(
        default=False, description="True when the feature cannot change (e.g. age): never perturbed."
    )

    @model_validator(mode="after")
    def _bounds_consistent(self) -> FeatureSpec:
        low, high = self.bounds()
        if low is not None and high is not None and low > high:
            raise ValueError(f"feature {self.name!r}: min {low:g} > max {high:g}; swap them")
        if self.range is not None and (
            (self.min is not None and self.min != self.range[0])
            or (self.max is not None and self.max != self.range[1])
        ):
            raise ValueError(
                f"feature {self.name!r}: range {list(self.range)} disagrees with min/max "
                f"{[self.min, self.max]}; give one of them"
            )
        if self.kind == "categorical" and self.values is not None and not self.values:
            raise ValueError(f"feature {self.name!r}: categorical values must not be empty")
        return self

    def bounds(self) -> tuple[float | None, float | None]:
        """Declared (min, max), from `min`/`max` or `range`; None where not declared."""
        low = self.min if self.min is not None else (self.range[0] if self.range else None)
        high = self.max if self.max is not None else (self.range[1] if self.range else None)
        return low, high

    def declared_scale(self) -> float | None:
        """`scale`, else `noise_scale`, else None (derive from the data)."""
        return self.scale or self.noise_scale


class DataSpec(Record):
    """The test data: a file the user names."""

    path: Path = Field(description="npz (x, y), CSV, or image folder, relative to the spec file.")
    format: Literal["auto", "npz", "csv", "image_folder"] = Field(
        default="auto", description="File format; 'auto' decides by extension."
    )
    layout: Layout | None = Field(
        default=None, description="Axis order of the stored arrays; default: the model's layout."
    )
    label_column: str = Field(default="label", description="CSV column holding the class index.")
    limit: PositiveInt | None = Field(default=None, description="Use only the first N samples.")
    features: list[FeatureSpec] | None = Field(
        default=None,
        description="Tabular features in column order (all of them, or the ones named), for tabular "
        "threats: type, range, scale, immutability. Undeclared features are numeric with the data's "
        "range and standard deviation as scale.",
    )
    name: str | None = Field(default=None, description="Data set name for the dossier.")
    source: str | None = Field(default=None, description="Origin and licence of the data.")


class Criterion(Record):
    """Acceptance criterion: the measured metric compared with a threshold."""

    comparator: Comparator = Field(description="How the metric must relate to the threshold.")
    threshold: float = Field(description="Threshold value of the metric.")
    confidence: Confidence = Field(
        default=0.95, description="Confidence at which the whole interval must clear the threshold."
    )
    interval: Literal["clopper-pearson", "wilson"] = Field(
        default="clopper-pearson", description="Interval used for rates."
    )


class RiskRef(Record):
    """The risk a goal answers to (ISO/IEC 23894 6.4.2 risk identification)."""

    id: str = Field(description="Risk id in the organisation's risk register.")
    source: str = Field(
        description="Risk source, e.g. 'B.5 risk sources related to machine learning' (23894 Annex B)."
    )
    description: str = Field(default="", description="What could go wrong.")
    impact: Literal["low", "medium", "high", "critical"] = Field(
        default="medium", description="Declared impact if the risk materialises."
    )


class MethodChoice(Record):
    """A method chosen explicitly for a goal, with parameter overrides."""

    name: str = Field(description="Registered method name, 'family.name'.")
    params: dict[str, JsonValue] = Field(
        default_factory=dict, description="Overrides of the method's default parameters."
    )


class Budget(Record):
    """How much work a goal may take."""

    samples: PositiveInt | None = Field(
        default=None, description="Test samples to use; default: all (or what statistics needs)."
    )
    time_s: PositiveFloat = Field(default=600.0, description="Wall-time limit per test, seconds.")


class Goal(Record):
    """One robustness goal: a threat, a metric and the criterion it must meet."""

    id: str = Field(pattern=ID_PATTERN, description="Short unique id, e.g. 'G1'.")
    statement: str = Field(min_length=1, description="The goal in plain language.")
    threat: Threat = Field(description="What the model must withstand.")
    metric: str = Field(description="Metric compared with the criterion, e.g. 'accuracy'.")
    criterion: Criterion = Field(description="Acceptance criterion.")
    risk: RiskRef = Field(description="The risk this goal answers to.")
    controls: list[str] = Field(
        default_factory=list, description="ISO/IEC 42001 Annex A control ids evidenced, e.g. 'A.6.2.4'."
    )
    methods: list[MethodChoice] | None = Field(
        default=None, description="Methods to use; default: the planner's choice for the threat."
    )
    budget: Budget = Field(default_factory=Budget, description="Samples and time allowed.")


class Roles(Record):
    """People accountable for the assessment (ISO/IEC 42001 A.3.2)."""

    assessor: str | None = Field(default=None, description="Who ran the assessment.")
    reviewer: str | None = Field(default=None, description="Who reviewed it.")
    approver: str | None = Field(default=None, description="Who approves the outcome.")


class ExplainSettings(Record):
    """Whether and how far failures are explained after interpretation (TR 24029-1 transparency)."""

    enabled: bool = Field(default=True, description="Explain failed and inconclusive goals' failures?")
    samples: int = Field(
        default=8, ge=1, le=64, description="Failed samples explained per goal (k), chosen deterministically."
    )
    contrast: int = Field(
        default=2, ge=0, le=16, description="Correctly handled samples explained beside them, for contrast."
    )


class AssessmentSpec(Record):
    """A whole assessment: model, data and goals. Written by the user as YAML or JSON."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    id: str = Field(pattern=ID_PATTERN, description="Stable id of this assessment series.")
    title: str = Field(description="Title for the dossier.")
    description: str = Field(default="", description="Context of the assessment.")
    model: ModelSpec = Field(description="The model under assessment.")
    data: DataSpec = Field(description="The test data.")
    goals: list[Goal] = Field(min_length=1, description="Robustness goals.")
    seed: int = Field(default=0, ge=0, description="Master seed; every test derives its own.")
    roles: Roles = Field(default_factory=Roles, description="Accountable people.")
    explain: ExplainSettings = Field(
        default_factory=ExplainSettings,
        description="Explanations of failures (attributions with faithfulness); 'enabled: false' turns them off.",
    )
    lifecycle_stage: str | None = Field(
        default=None, description="Life-cycle stage, e.g. 'verification and validation'."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return reject_nul(data)

    @model_validator(mode="after")
    def _unique_goal_ids(self) -> AssessmentSpec:
        ids = [g.id for g in self.goals]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"goal ids must be unique; repeated: {duplicates}")
        return self

    def resolve_paths(self, base: Path) -> AssessmentSpec:
        """Return a copy whose relative file paths are resolved against ``base``."""
        data: dict[str, Any] = self.model_dump()
        data["model"]["path"] = _resolve(base, self.model.path)
        data["data"]["path"] = _resolve(base, self.data.path)
        for goal in data["goals"]:
            if goal["threat"].get("path") is not None:
                goal["threat"]["path"] = _resolve(base, Path(goal["threat"]["path"]))
        return AssessmentSpec.model_validate(data)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()
