"""Monitoring stage: drift of field data against the assessed (reference) data, as findings and a verdict."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from nnassay.schemas.common import SCHEMA_VERSION, Interval, Probability, Record


class DriftVerdict(StrEnum):
    """What the monitoring concludes about one field batch."""

    NO_DRIFT = "no_drift"
    DRIFT = "drift"
    INSUFFICIENT_DATA = "insufficient_data"


class FindingKind(StrEnum):
    """Which aspect of the field data a finding looks at."""

    FEATURE = "feature"  # one tabular input feature
    OUTPUTS = "outputs"  # the model's softmax scores, jointly
    PREDICTED_CLASSES = "predicted_classes"
    CONFIDENCE = "confidence"  # the maximum softmax probability
    OOD_RATE = "ood_rate"
    ACCURACY = "accuracy"  # measured with field labels
    ESTIMATED_ACCURACY = "estimated_accuracy"  # from calibrated confidence, no labels


class DriftFinding(Record):
    """One comparison of the field data with the reference data."""

    what: str = Field(description="What was compared, e.g. \"feature 'age'\" or 'model outputs'.")
    kind: FindingKind = Field(description="Which aspect of the data the finding looks at.")
    test: str = Field(description="The test or estimator used, e.g. 'kolmogorov-smirnov (two-sample)'.")
    statistic: float | None = Field(default=None, description="The test statistic, when there is a test.")
    p_value: Probability | None = Field(
        default=None, description="Raw p-value of the test of 'no change', before correction."
    )
    adjusted_p_value: Probability | None = Field(
        default=None, description="p-value after the multiple-testing correction the verdict uses."
    )
    value: float | None = Field(
        default=None, description="The field value of a rate or mean (OOD rate, accuracy), if any."
    )
    reference_value: float | None = Field(
        default=None, description="The same quantity on the reference (assessed) data, if any."
    )
    interval: Interval | None = Field(default=None, description="Confidence interval of ``value``.")
    effect_size: float | None = Field(default=None, description="How large the change is (see effect_name).")
    effect_name: str = Field(
        default="", description="Which effect size, e.g. 'standardized mean difference' or \"Cramér's V\"."
    )
    counts_for_verdict: bool = Field(
        description="True when the finding's test enters the drift verdict (estimates only inform)."
    )
    drifted: bool = Field(description="True when the corrected test rejects 'no change' at alpha.")
    sentence: str = Field(description="The finding in one plain-language sentence.")


class MonitoringReport(Record):
    """Drift of one field batch against the reference data the model was assessed on."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    verdict: DriftVerdict = Field(description="no_drift, drift (naming what drifted) or insufficient_data.")
    summary: str = Field(description="The verdict in one or two plain-language sentences.")
    drifted: list[str] = Field(default_factory=list, description="What drifted (``what`` of each finding).")
    findings: list[DriftFinding] = Field(description="Every comparison made, drifted or not.")
    alpha: Probability = Field(description="Family-wise false-alarm rate the verdict is held to.")
    correction: str = Field(description="Multiple-testing correction applied across the verdict's tests.")
    reference_samples: int = Field(ge=0, description="Reference samples compared (after overlap removal).")
    field_samples: int = Field(ge=0, description="Field samples in the batch.")
    overlap_removed: int = Field(
        default=0, ge=0, description="Reference samples dropped because the field batch repeats them."
    )
    needed_samples: int | None = Field(
        default=None,
        ge=1,
        description="Field samples the tests need for their stated power (when data are insufficient).",
    )
    power_rule: str = Field(description="How the needed sample size is computed (effect, power, level).")
    labelled: bool = Field(description="True when the field batch carries labels.")
    reference_sha256: str = Field(description="SHA-256 of the reference data file (or folder).")
    field_sha256: str = Field(description="SHA-256 of the field batch file (or folder).")
    field_name: str = Field(default="", description="Name of the field batch (file or folder name).")
    model_sha256: str = Field(description="SHA-256 of the ONNX model whose inputs are monitored.")
    assessment_evidence_sha256: str | None = Field(
        default=None, description="SHA-256 of the evidence of the assessment this monitoring checks."
    )
    seed: int = Field(ge=0, description="Seed of the permutation test and the bootstrap.")
