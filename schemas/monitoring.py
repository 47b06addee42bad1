"""Monitoring stage: drift of field data against the assessed (reference) data, as findings and a verdict."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nnassay.schemas.common import SCHEMA_VERSION, Interval, Probability, Record
from nnassay.schemas.results import Series


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
    distribution: list[Series] = Field(
        default_factory=list,
        description="The compared quantity on the reference and the field data (shares per bin or"
        " value), for the report's plots; empty for rates and accuracies (their interval says it).",
    )


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


class MonitoredBatch(Record):
    """One field batch of a monitoring run, with its drift report."""

    name: str = Field(description="File or folder name of the batch.")
    modified: datetime = Field(description="When the batch was last changed (UTC): its time in MLflow.")
    report: MonitoringReport = Field(description="Drift of the batch against the reference data.")


class Reassessment(Record):
    """The assessment a drift finding led to (``nnassay monitor --reassess``)."""

    batch: str = Field(description="The drifted, labelled field batch the derived spec assesses.")
    derived_spec: str = Field(description="The derived spec, relative to the monitoring folder.")
    derived_spec_sha256: str = Field(description="SHA-256 of the derived spec file.")
    run_folder: str | None = Field(default=None, description="Folder of the re-assessment, if it ran.")
    evidence_sha256: str | None = Field(
        default=None, description="SHA-256 of the re-assessment's evidence.json, if it ran."
    )
    overall: str | None = Field(default=None, description="Overall verdict of the re-assessment.")
    reason: str = Field(default="", description="Why no re-assessment ran, when none did.")


class MonitoringRecord(Record):
    """monitoring.json: one monitoring run of a spec's field data, linked to the assessment it checks."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    monitoring_id: str = Field(description="Unique id of this monitoring run.")
    spec_id: str = Field(description="Which assessment series is monitored?")
    spec_path: str = Field(description="The assessment spec the reference data come from.")
    spec_sha256: str = Field(description="SHA-256 of the spec file.")
    field_path: str = Field(description="The field data file or folder that was monitored.")
    created_at: datetime = Field(description="When the monitoring ran (UTC).")
    verdict: DriftVerdict = Field(
        description="drift when a batch drifted, else insufficient_data when a batch had too few"
        " samples, else no_drift."
    )
    summary: str = Field(description="The outcome over all batches in plain words.")
    batches: list[MonitoredBatch] = Field(min_length=1, description="Every batch, oldest name first.")
    assessment_evidence_sha256: str | None = Field(
        default=None,
        description="SHA-256 of the evidence of the spec's latest assessment (hash chain); None: no"
        " tracked assessment of the spec was found.",
    )
    assessment_run_id: str | None = Field(
        default=None, description="MLflow run of that assessment, if found."
    )
    mlflow_run_id: str | None = Field(default=None, description="MLflow run of this monitoring.")
    mlflow_tracking_uri: str | None = Field(default=None, description="Where that run is stored.")
    reassessment: Reassessment | None = Field(
        default=None, description="The re-assessment a drift finding led to, when asked for."
    )


class MonitorRequest(BaseModel):
    """One monitoring run (the Prefect flow's parameter): which spec, which field data, which records."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec_path: Path = Field(description="The assessment spec (YAML or JSON) whose data are the reference.")
    field_path: Path = Field(description="A field batch file, an image folder, or a folder of batches.")
    output: Path = Field(default=Path("runs/monitor"), description="Folder of monitoring.json and reports.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else mlflow.db in the folder"
        " that holds the output folder (where `nnassay assess` keeps it by default).",
    )
    track: bool = Field(default=True, description="Log a run to MLflow and link the latest assessment.")
    reassess: bool = Field(
        default=False, description="On drift in a labelled batch, assess the derived spec (lifecycle)."
    )
    alpha: Probability = Field(default=0.05, description="Family-wise false-alarm rate per batch.")
    seed: int = Field(default=0, ge=0, description="Seed of the permutation test and the bootstrap.")
    prefer_cuda: bool = Field(default=False, description="Use CUDA when it really works.")
    run_subfolder: bool = Field(
        default=False,
        description="Write each run to <output>/<UTC time of the run> (served schedules) instead of"
        " <output> itself.",
    )
