"""Step 'record': write the evidence bundle and log the assessment to the tracker (MLflow)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from schemas.common import Verdict
from schemas.evidence import ArtifactDigest, EvidenceBundle
from schemas.goals import AssessmentSpec
from schemas.plan import AssessmentPlan
from schemas.results import MethodResult
from tasks.files import sha256_file, write_json
from tasks.tracking import Tracker

EVIDENCE = "evidence.json"
PLAN = "plan.json"
DOSSIER = "dossier.pdf"


@dataclass(frozen=True)
class TrackingHandle:
    """The parent run of an assessment, or nothing when tracking is off."""

    run_id: str | None
    uri: str | None
    assessment_id: str


def new_assessment_id() -> str:
    """A fresh unique assessment id."""
    return uuid.uuid4().hex[:16]


def open_run(tracker: Tracker | None, spec: AssessmentSpec, plan: AssessmentPlan, assessment_id: str,
             code_version: str) -> TrackingHandle:  # fmt: skip
    """Start the parent MLflow run with the plan's identity as tags and params."""
    if tracker is None:
        return TrackingHandle(None, None, assessment_id)
    tags = {"nnassay.spec_id": spec.id, "nnassay.assessment_id": assessment_id,
            "nnassay.model_sha256": plan.model_sha256, "nnassay.spec_sha256": plan.spec_sha256,
            "nnassay.data_sha256": plan.data_sha256, "nnassay.schema_version": plan.schema_version,
            "nnassay.code_version": code_version}  # fmt: skip
    params = {"spec_id": spec.id, "seed": spec.seed, "goals": len(spec.goals), "tests": len(plan.tests),
              "model": spec.model.path.name, "data": spec.data.path.name}  # fmt: skip
    run_id = tracker.start(f"nnassay/{spec.id}", f"{spec.id}-{assessment_id}", tags, params)
    return TrackingHandle(run_id, tracker.uri, assessment_id)


def log_results(tracker: Tracker | None, handle: TrackingHandle, plan: AssessmentPlan,
                results: list[MethodResult]) -> None:  # fmt: skip
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
        digests.append(ArtifactDigest(path=str(path.relative_to(run_dir)), sha256=sha256_file(path),
                                      role="result"))  # fmt: skip
    return digests


def finish_run(tracker: Tracker | None, handle: TrackingHandle, evidence: EvidenceBundle, run_dir: Path,
               files: list[str]) -> None:  # fmt: skip
    """Log verdict metrics, tags and artifacts on the parent run, then close it."""
    if tracker is None or handle.run_id is None:
        return
    verdict_code = {Verdict.PASS: 1.0, Verdict.INCONCLUSIVE: 0.5, Verdict.FAIL: 0.0}
    metrics = {f"goal.{v.goal_id}.verdict": verdict_code[v.verdict] for v in evidence.verdicts}
    metrics |= {f"goal.{v.goal_id}.{v.metric}": v.measured.value for v in evidence.verdicts if v.measured}
    tracker.log_metrics(handle.run_id, metrics)
    tags = {"nnassay.verdict": evidence.overall.value,
            "nnassay.evidence_sha256": sha256_file(run_dir / EVIDENCE)}  # fmt: skip
    tags |= {f"nnassay.goal.{v.goal_id}": v.verdict.value for v in evidence.verdicts}
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
