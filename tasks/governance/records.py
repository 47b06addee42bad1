"""Step 'record': write the evidence bundle and log the assessment to the tracker (MLflow)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import ArtifactDigest, EvidenceBundle
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import MethodResult
from nnassay.tasks.governance.tracking import Tracker
from nnassay.tasks.io.files import sha256_file, write_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

EVIDENCE = "evidence.json"
PLAN = "plan.json"
DOSSIER = "dossier.pdf"
DOSSIER_HTML = "dossier.html"
SUMMARY = "summary.md"


def load_signer(path: Path | None, *, warn: Callable[[str], None] | None = None) -> Ed25519PrivateKey | None:
    """The signing key of a run (None: unsigned). A loose-permission warning goes to ``warn``
    (default: the 'nnassay' logger), never raised."""
    import logging
    import warnings

    from nnassay.tasks.governance.integrity import KeyPermissionWarning, load_signing_key

    if path is None:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", KeyPermissionWarning)
        key = load_signing_key(path)
    for w in caught:
        (warn or logging.getLogger("nnassay").warning)(str(w.message))
    return key


def signer_fingerprint(key: Ed25519PrivateKey | None) -> str | None:
    """SHA-256 of the signer's public key, for provenance (None: unsigned)."""
    from nnassay.tasks.governance.integrity import fingerprint

    return fingerprint(key.public_key()) if key else None


@dataclass(frozen=True)
class TrackingHandle:
    """The parent run of an assessment, or nothing when tracking is off."""

    run_id: str | None
    uri: str | None
    assessment_id: str


def new_assessment_id() -> str:
    """A fresh unique assessment id."""
    return uuid.uuid4().hex[:16]


def open_run(
    tracker: Tracker | None, spec: AssessmentSpec, plan: AssessmentPlan, assessment_id: str, code_version: str
) -> TrackingHandle:
    """Start the parent MLflow run with the plan's identity as tags and params."""
    if tracker is None:
        return TrackingHandle(None, None, assessment_id)
    tags = {
        "nnassay.spec_id": spec.id,
        "nnassay.assessment_id": assessment_id,
        "nnassay.model_sha256": plan.model_sha256,
        "nnassay.spec_sha256": plan.spec_sha256,
        "nnassay.data_sha256": plan.data_sha256,
        "nnassay.schema_version": plan.schema_version,
        "nnassay.code_version": code_version,
    }
    params = {
        "spec_id": spec.id,
        "seed": spec.seed,
        "goals": len(spec.goals),
        "tests": len(plan.tests),
        "model": spec.model.path.name,
        "data": spec.data.path.name,
    }
    run_id = tracker.start(f"nnassay/{spec.id}", f"{spec.id}-{assessment_id}", tags, params)
    return TrackingHandle(run_id, tracker.uri, assessment_id)


def log_results(
    tracker: Tracker | None, handle: TrackingHandle, plan: AssessmentPlan, results: list[MethodResult]
) -> None:
    """One nested run per test with its parameters and metrics."""
    if tracker is None or handle.run_id is None:
        return
    params = {t.test_id: t.params for t in plan.tests}
    for result in results:
        tracker.log_test(handle.run_id, result, params.get(result.test_id, {}))


def write_results(run_dir: Path, results: list[MethodResult]) -> list[ArtifactDigest]:
    """Each result as results/<test>.json; returns their digests for the manifest."""
    digests = []
    for result in results:
        path = write_json(run_dir / "results" / f"{result.test_id.replace('/', '__')}.json", result)
        digests.append(
            ArtifactDigest(path=str(path.relative_to(run_dir)), sha256=sha256_file(path), role="result")
        )
    return digests


def finish_run(
    tracker: Tracker | None,
    handle: TrackingHandle,
    evidence: EvidenceBundle,
    run_dir: Path,
    files: list[str],
    extra_tags: dict[str, str] | None = None,
) -> None:
    """Log verdict metrics, tags (evidence and manifest digests) and artifacts on the parent run, then close it."""
    if tracker is None or handle.run_id is None:
        return
    verdict_code = {Verdict.PASS: 1.0, Verdict.INCONCLUSIVE: 0.5, Verdict.FAIL: 0.0}
    metrics = {f"goal.{v.goal_id}.verdict": verdict_code[v.verdict] for v in evidence.verdicts}
    metrics |= {f"goal.{v.goal_id}.{v.metric}": v.measured.value for v in evidence.verdicts if v.measured}
    tracker.log_metrics(handle.run_id, metrics)
    tags = {
        "nnassay.verdict": evidence.overall.value,
        "nnassay.evidence_sha256": sha256_file(run_dir / EVIDENCE),
    }
    tags |= {f"nnassay.goal.{v.goal_id}": v.verdict.value for v in evidence.verdicts}
    tags |= extra_tags or {}
    tracker.set_tags(handle.run_id, tags)
    for name in files:
        path = run_dir / name
        if path.exists():
            tracker.log_artifact(handle.run_id, path, None if path.is_file() else name)
    tracker.finish(handle.run_id, "FINISHED")


def fail_run(tracker: Tracker | None, handle: TrackingHandle | None, message: str) -> None:
    """Mark the parent run FAILED (a crashed or invalid assessment is never left 'running')."""
    if tracker is None or handle is None or handle.run_id is None:
        return
    tracker.set_tags(handle.run_id, {"nnassay.error": message[:4000]})
    tracker.finish(handle.run_id, "FAILED")


def copy_registry_model(spec: AssessmentSpec, run_dir: Path) -> list[ArtifactDigest]:
    """A model downloaded from the registry, copied into the run folder (its digest for the manifest)."""
    import shutil

    from nnassay.tasks.io import registry_models

    if registry_models.origin(Path(spec.model.path)) is None:
        return []
    copy = run_dir / "model" / Path(spec.model.path).name
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.model.path, copy)
    return [ArtifactDigest(path=str(copy.relative_to(run_dir)), sha256=sha256_file(copy), role="model")]


def seal(
    tracker: Tracker | None,
    handle: TrackingHandle,
    evidence: EvidenceBundle,
    run_dir: Path,
    spec_copy: str,
    key: Ed25519PrivateKey | None,
) -> str:
    """Write manifest.json (signed when a key is set), close the MLflow run with the digests as tags,
    and tag a registry model version with the verdict (deployment gate). Returns the manifest digest."""
    from nnassay.tasks.governance.integrity import MANIFEST, PUBLIC_KEY, SIGNATURE, write_manifest
    from nnassay.tasks.io import registry_models

    manifest_sha = write_manifest(run_dir, evidence, key)
    evidence_sha = sha256_file(run_dir / EVIDENCE)
    tags = {
        "nnassay.manifest_sha256": manifest_sha,
        "nnassay.signer": evidence.provenance.signer_public_key_sha256 or "unsigned",
    }
    finish_run(
        tracker,
        handle,
        evidence,
        run_dir,
        [
            EVIDENCE,
            PLAN,
            DOSSIER,
            DOSSIER_HTML,
            SUMMARY,
            MANIFEST,
            SIGNATURE,
            PUBLIC_KEY,
            spec_copy,
            "results",
            "tests",
            "model",
        ],
        extra_tags=tags,
    )
    found = registry_models.origin(Path(evidence.spec.model.path))
    if found is not None:
        registry_models.tag_version(
            found,
            {
                "nnassay.verdict": evidence.overall.value,
                "nnassay.gate": "passed" if evidence.overall == Verdict.PASS else "blocked",
                "nnassay.assessment_id": evidence.provenance.assessment_id,
                "nnassay.mlflow_run_id": handle.run_id or "",
                "nnassay.evidence_sha256": evidence_sha,
                "nnassay.manifest_sha256": manifest_sha,
                "nnassay.spec_id": evidence.spec.id,
            },
        )
    return manifest_sha


def publish_summary(evidence: EvidenceBundle, markdown: str) -> None:
    """Publish the Markdown summary as a Prefect artifact (when running inside a flow run)."""
    import re

    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    key = re.sub(r"[^a-z0-9-]", "-", f"nnassay-{evidence.spec.id}".lower())
    create_markdown_artifact(
        markdown=markdown,
        key=key,
        description=f"Robustness assessment {evidence.provenance.assessment_id}: {evidence.overall.value}",
    )
