"""Evidence stage: goals + plan + results + verdicts + provenance, the record auditors keep."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, JsonValue

from nnassay.schemas.common import SCHEMA_VERSION, Measurement, Record, Verdict
from nnassay.schemas.explain import ExplanationSet
from nnassay.schemas.goals import AssessmentSpec, Criterion
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import MethodResult


class GoalVerdict(Record):
    """The interpretation of one goal: its measured value against its criterion."""

    goal_id: str = Field(description="Goal id.")
    verdict: Verdict = Field(description="pass, fail or inconclusive (never a silent guess).")
    metric: str = Field(description="Metric compared with the criterion.")
    measured: Measurement | None = Field(description="The measured value and its interval.")
    criterion: Criterion = Field(description="The acceptance criterion.")
    reason: str = Field(description="Why the verdict is what it is, in one or two sentences.")
    recommendation: str = Field(description="What to do next: fix, collect more data, or nothing.")
    samples_needed: int | None = Field(
        default=None, description="Extra samples that would likely decide an inconclusive goal."
    )
    tests: list[str] = Field(description="Test ids that contributed, primary first.")
    findings: list[str] = Field(
        default_factory=list, description="Further findings, e.g. a regression against history."
    )


class ArtifactDigest(Record):
    """One file of the assessment with its SHA-256 digest."""

    path: str = Field(description="Path relative to the run folder (or absolute for inputs).")
    sha256: str = Field(description="SHA-256 of the file's bytes.")
    role: str = Field(description="What the file is: spec, model, data, plan, result, artifact, ...")


class Provenance(Record):
    """Where, when and with what the assessment ran."""

    assessment_id: str = Field(description="Unique id of this assessment run.")
    started_at: datetime = Field(description="Start time (UTC).")
    finished_at: datetime = Field(description="End time (UTC).")
    spec_path: str = Field(description="The spec file as given.")
    spec_sha256: str = Field(description="SHA-256 of the spec file.")
    model_path: str = Field(description="The ONNX model file.")
    model_sha256: str = Field(description="SHA-256 of the ONNX model file.")
    data_path: str = Field(description="The test data file.")
    data_sha256: str = Field(description="SHA-256 of the test data.")
    execution_provider: str = Field(description="ONNX Runtime provider actually used.")
    available_providers: list[str] = Field(description="Providers ONNX Runtime offered.")
    device: str = Field(description="CPU model, and GPU when one was used.")
    hostname: str = Field(description="Machine name.")
    platform: str = Field(description="Operating system and architecture.")
    python: str = Field(description="Python version.")
    packages: dict[str, str] = Field(description="Versions of the packages that shape the numbers.")
    code_version: str = Field(description="nnassay version and git commit when known.")
    command: str = Field(description="The command line that ran the assessment.")
    constraints_sha256: str | None = Field(
        default=None, description="SHA-256 of the pinned constraints file used to install."
    )
    seed: int = Field(description="Master seed of the spec.")
    mlflow_run_id: str | None = Field(default=None, description="MLflow parent run id.")
    mlflow_tracking_uri: str | None = Field(default=None, description="MLflow tracking URI.")
    prefect_flow_run_id: str | None = Field(default=None, description="Prefect flow run id.")
    signer_public_key_sha256: str | None = Field(
        default=None,
        description="Who signed the run's manifest? SHA-256 of the raw Ed25519 public key; None: unsigned.",
    )
    model_registry_uri: str | None = Field(
        default=None,
        description="Which registered model was assessed? e.g. 'models:/digits/3'; None: a file.",
    )
    extra: dict[str, JsonValue] = Field(default_factory=dict, description="Further facts.")


class EvidenceBundle(Record):
    """Everything the dossier shows; the report is rendered from this alone."""

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    spec: AssessmentSpec = Field(description="The goals as stated (step 1).")
    plan: AssessmentPlan = Field(description="The test plan (step 2).")
    results: list[MethodResult] = Field(description="What each test measured (step 3).")
    verdicts: list[GoalVerdict] = Field(description="Per-goal interpretation (step 3).")
    overall: Verdict = Field(description="fail if any goal failed, else inconclusive if any was, else pass.")
    explanations: list[ExplanationSet] = Field(
        default_factory=list,
        description="Why goals failed: attributions of failed samples with their faithfulness, per goal.",
    )
    provenance: Provenance = Field(description="Where, when and with what it ran.")
    manifest: list[ArtifactDigest] = Field(
        default_factory=list, description="Digest of every artefact of the assessment."
    )
    previous_evidence_sha256: str | None = Field(
        default=None, description="Digest of the previous assessment's evidence of the same spec id."
    )
    history: list[dict[str, JsonValue]] = Field(
        default_factory=list, description="Earlier assessments of the same spec: time, verdicts, metrics."
    )


class RunManifest(Record):
    """manifest.json of a run folder: the digest of every file, written after the dossier.

    The evidence cannot hold its own digest nor the dossier's, so this file closes the record; its
    own digest goes to the tracker (MLflow tag) and, when a key is named, it is signed (manifest.sig).
    """

    schema_version: Literal["1"] = Field(default=SCHEMA_VERSION, description="Schema version.")
    spec_id: str = Field(description="Which assessment series does the run belong to?")
    assessment_id: str = Field(description="Which assessment run is this?")
    created_at: datetime = Field(description="When was the manifest written (UTC)?")
    evidence_sha256: str = Field(description="SHA-256 of evidence.json in the run folder.")
    previous_evidence_sha256: str | None = Field(
        default=None, description="Digest of the previous evidence of the same spec id (hash chain)."
    )
    files: list[ArtifactDigest] = Field(
        description="Every file of the run folder (relative paths) and the inputs outside it (absolute)."
    )
    signature_algorithm: Literal["ed25519"] | None = Field(
        default=None, description="How manifest.sig signs this file's bytes; None: unsigned."
    )
    signer_public_key_sha256: str | None = Field(
        default=None, description="SHA-256 of the raw public key that signs this manifest."
    )
