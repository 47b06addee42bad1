"""Records of a monitoring run: monitoring.json, its manifest and chain link, and the MLflow run.

The folder is closed by ``manifest.json`` in the assessments' integrity scheme
(``tasks/governance/integrity.py``): the digest of every file plus the inputs outside it, with
``evidence_sha256`` the digest of monitoring.json and ``previous_evidence_sha256`` the evidence of
the assessment it monitors (the spec's latest tracked assessment: the chain link). MLflow: one run
per monitoring in the spec's experiment, drift statistics as metrics with step = batch time.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from nnassay.schemas.evidence import ArtifactDigest, RunManifest
from nnassay.schemas.monitoring import (
    DriftVerdict,
    MonitoredBatch,
    MonitoringRecord,
    MonitoringReport,
    MonitorRequest,
    Reassessment,
)
from nnassay.tasks.governance import integrity
from nnassay.tasks.governance.history import PastAssessment, experiment_name, past_assessments
from nnassay.tasks.governance.tracking import MlflowTracker, Tracker
from nnassay.tasks.io.files import sha256_file, write_json
from nnassay.tasks.monitoring.field_io import FieldBatch

MONITORING = "monitoring.json"
REPORT_HTML, REPORT_PDF = "monitoring.html", "monitoring.pdf"
DERIVED_SPEC = "derived-spec.yaml"
REASSESSMENT = "reassessment"  # folder of the re-assessment runs (lifecycle output root)
ROLES = {
    MONITORING: "monitoring",
    REPORT_HTML: "monitoring-report-html",
    REPORT_PDF: "monitoring-report",
    DERIVED_SPEC: "derived-spec",
}
EXIT_CODES = {DriftVerdict.NO_DRIFT: 0, DriftVerdict.DRIFT: 1, DriftVerdict.INSUFFICIENT_DATA: 3}


def new_monitoring_id() -> str:
    """A fresh unique monitoring id."""
    return uuid.uuid4().hex[:16]


def batch_time(batch: FieldBatch) -> datetime:
    """The batch's time (its file's last change, UTC)."""
    return datetime.fromtimestamp(batch.modified, UTC)


def latest_assessment(tracking_uri: str | None, spec_id: str) -> PastAssessment | None:
    """The spec's latest finished, tracked assessment with an evidence digest (the chain link)."""
    if tracking_uri is None:
        return None
    return next((p for p in past_assessments(tracking_uri, spec_id) if p.evidence_sha256), None)


def overall(reports: Sequence[MonitoringReport]) -> tuple[DriftVerdict, str]:
    """(verdict, summary) over the batches: drift wins, then insufficient data, else no drift."""
    drifted = [r for r in reports if r.verdict == DriftVerdict.DRIFT]
    short = [r for r in reports if r.verdict == DriftVerdict.INSUFFICIENT_DATA]
    if drifted:
        names = "; ".join(f"{r.field_name}: {', '.join(r.drifted)}" for r in drifted)
        return DriftVerdict.DRIFT, f"Drift in {len(drifted)} of {len(reports)} batch(es) ({names})."
    if short:
        names = ", ".join(f"{r.field_name} ({r.field_samples} of ~{r.needed_samples or '?'})" for r in short)
        return (
            DriftVerdict.INSUFFICIENT_DATA,
            f"No drift found, but {len(short)} of {len(reports)} batch(es) hold too few samples to tell"
            f" ({names}): nothing reliable was measured there.",
        )
    return DriftVerdict.NO_DRIFT, f"No drift in any of the {len(reports)} batch(es)."


def build_record(
    request: MonitorRequest,
    spec_id: str,
    batches: Sequence[MonitoredBatch],
    link: PastAssessment | None,
    *,
    monitoring_id: str,
    tracking_uri: str | None,
    reassessment: Reassessment | None = None,
) -> MonitoringRecord:
    """The content of monitoring.json (the MLflow run id is added once the run is open)."""
    verdict, summary = overall([b.report for b in batches])
    return MonitoringRecord(
        monitoring_id=monitoring_id,
        spec_id=spec_id,
        spec_path=str(request.spec_path.resolve()),
        spec_sha256=sha256_file(request.spec_path),
        field_path=str(request.field_path.resolve()),
        created_at=datetime.now(UTC),
        verdict=verdict,
        summary=summary,
        batches=list(batches),
        assessment_evidence_sha256=link.evidence_sha256 if link else None,
        assessment_run_id=link.run_id if link else None,
        mlflow_tracking_uri=tracking_uri,
        reassessment=reassessment,
    )


# ---------------------------------------------------------------- MLflow


def metric_key(what: str) -> str:
    """An MLflow metric name part from a finding's ``what``: 'image brightness (mean pixel value)'
    -> 'image_brightness_mean_pixel_value'."""
    return re.sub(r"[^a-z0-9]+", "_", what.lower()).strip("_")[:80] or "finding"


def batch_metrics(report: MonitoringReport) -> dict[str, float]:
    """The drift statistics of one batch, by MLflow metric name (finite values only)."""
    flat: dict[str, float | None] = {
        "drift.detected": float(report.verdict == DriftVerdict.DRIFT),
        "drift.insufficient_data": float(report.verdict == DriftVerdict.INSUFFICIENT_DATA),
        "drift.drifted_count": float(len(report.drifted)),
        "field_samples": float(report.field_samples),
    }
    for f in report.findings:
        key = f"drift.{metric_key(f.what)}"
        flat |= {
            f"{key}.statistic": f.statistic,
            f"{key}.p_value": f.p_value,
            f"{key}.adjusted_p_value": f.adjusted_p_value,
            f"{key}.effect_size": f.effect_size,
            f"{key}.value": f.value,
            f"{key}.drifted": float(f.drifted),
        }
    return {k: float(v) for k, v in flat.items() if v is not None and math.isfinite(v)}


def open_run(tracker: Tracker, request: MonitorRequest, spec_id: str, monitoring_id: str) -> str:
    """The monitoring run in the spec's experiment (never tagged as an assessment, so the history,
    regressions and hash chain of assessments do not see it)."""
    tags = {
        "nnassay.kind": "monitoring",
        "nnassay.monitoring_id": monitoring_id,
        "nnassay.spec_id": spec_id,
        "nnassay.field_path": str(request.field_path.resolve()),
    }
    params = {"field_path": str(request.field_path), "alpha": request.alpha, "seed": request.seed}
    return tracker.start(experiment_name(spec_id), f"monitor-{monitoring_id[:8]}", tags, params)


def batch_steps(batches: Sequence[MonitoredBatch]) -> list[int]:
    """MLflow step of each batch: its time in POSIX seconds, raised by the fewest seconds needed to
    keep batches of the same second apart (files copied together share a modification time)."""
    order = sorted(range(len(batches)), key=lambda i: (batches[i].modified, batches[i].name))
    steps, last = [0] * len(batches), -1
    for i in order:
        last = max(int(batches[i].modified.timestamp()), last + 1)
        steps[i] = last
    return steps


def log_batches(tracker: Tracker, run_id: str, batches: Sequence[MonitoredBatch]) -> None:
    """Each batch's drift statistics with step = batch time (``batch_steps``) and that timestamp."""
    for batch, step in zip(batches, batch_steps(batches), strict=True):
        metrics = batch_metrics(batch.report)
        if isinstance(tracker, MlflowTracker):  # the tracker's log_metrics stamps "now"
            from mlflow.entities import Metric

            stamp = int(batch.modified.timestamp() * 1000)
            items = [Metric(k, v, stamp, step) for k, v in metrics.items()]
            for start in range(0, len(items), 500):
                tracker.client.log_batch(run_id, metrics=items[start : start + 500])
        else:
            tracker.log_metrics(run_id, metrics, step=step)


def close_run(
    tracker: Tracker, run_id: str, folder: Path, record: MonitoringRecord, manifest_sha: str
) -> None:
    """Tag the outcome and digests, upload the record and the reports, finish the run."""
    tags = {
        "nnassay.verdict": record.verdict.value,
        "nnassay.monitoring_sha256": sha256_file(folder / MONITORING),
        "nnassay.manifest_sha256": manifest_sha,
        "nnassay.drifted": "; ".join(d for b in record.batches for d in b.report.drifted)[:2000],
    }
    if record.assessment_evidence_sha256:
        tags["nnassay.assessment_evidence_sha256"] = record.assessment_evidence_sha256
    if record.reassessment and record.reassessment.evidence_sha256:
        tags["nnassay.reassessment_evidence_sha256"] = record.reassessment.evidence_sha256
    tracker.set_tags(run_id, tags)
    for name in (MONITORING, REPORT_HTML, REPORT_PDF, integrity.MANIFEST, DERIVED_SPEC):
        if (folder / name).is_file():
            tracker.log_artifact(run_id, folder / name)
    tracker.finish(run_id)


# ---------------------------------------------------------------- files and manifest


def clear_folder(folder: Path) -> None:
    """Remove the files an earlier monitoring left in ``folder`` (the manifest covers every file)."""
    for name in (*ROLES, integrity.MANIFEST, integrity.SIGNATURE, integrity.PUBLIC_KEY):
        (folder / name).unlink(missing_ok=True)


def write_record(folder: Path, record: MonitoringRecord, html: str, pdf: bytes) -> Path:
    """Write monitoring.json and the report (HTML and PDF) into ``folder``; return monitoring.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT_HTML).write_text(html, encoding="utf-8")
    (folder / REPORT_PDF).write_bytes(pdf)
    return write_json(folder / MONITORING, record)


def _role(rel: Path) -> str:
    return ROLES.get(str(rel), "reassessment" if rel.parts[0] == REASSESSMENT else "file")


def build_manifest(folder: Path, record: MonitoringRecord, inputs: Sequence[Path]) -> RunManifest:
    """The manifest of a monitoring folder: its files (``integrity.covered_files``) and the inputs
    outside it (spec, field batches), linked to the monitored assessment's evidence."""
    files = [
        ArtifactDigest(
            path=str(p.relative_to(folder)), sha256=sha256_file(p), role=_role(p.relative_to(folder))
        )
        for p in integrity.covered_files(folder)
    ]
    files += [ArtifactDigest(path=str(p.resolve()), sha256=sha256_file(p), role="input") for p in inputs]
    return RunManifest(
        spec_id=record.spec_id,
        assessment_id=record.monitoring_id,
        created_at=datetime.now(UTC),
        evidence_sha256=sha256_file(folder / MONITORING),
        previous_evidence_sha256=record.assessment_evidence_sha256,
        files=files,
    )


def write_manifest(folder: Path, record: MonitoringRecord, inputs: Sequence[Path]) -> str:
    """Write manifest.json; return its digest (tagged on the MLflow run)."""
    path = write_json(folder / integrity.MANIFEST, build_manifest(folder, record, inputs))
    return sha256_file(path)


def input_files(request: MonitorRequest, batches: Sequence[FieldBatch]) -> list[Path]:
    """The files read outside the folder: the spec and every field batch file."""
    paths = [request.spec_path]
    for batch in batches:
        path = batch.data.path
        paths += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return paths


# ---------------------------------------------------------------- verification


def verify_monitoring(folder: Path, *, tracking_uri: str | None = None) -> integrity.Verification:
    """Check a monitoring folder: every digest of its manifest, monitoring.json against the manifest,
    and (with a tracking store) that the linked assessment is recorded there."""
    v = integrity.Verification(str(folder))
    manifest_path, record_path = folder / integrity.MANIFEST, folder / MONITORING
    if not manifest_path.is_file() or not record_path.is_file():
        v.unreadable = f"{folder} holds no {integrity.MANIFEST} and {MONITORING}: not a monitoring folder"
        return v
    try:
        manifest = RunManifest.model_validate_json(manifest_path.read_bytes())
    except ValidationError as exc:
        v.problems.append(f"{integrity.MANIFEST}: does not parse as a manifest ({exc.errors()[0]['msg']})")
        return v
    integrity._check_files(folder, manifest, v)  # the assessments' own file check, reused as is
    if sha256_file(record_path) != manifest.evidence_sha256:
        v.problems.append(f"changed: {MONITORING} differs from the digest {integrity.MANIFEST} records")
    record = _read_record(record_path, v)
    if record is not None and record.assessment_evidence_sha256 != manifest.previous_evidence_sha256:
        v.problems.append(f"chain: {MONITORING} and {integrity.MANIFEST} link different assessments")
    if record is not None and tracking_uri is not None:
        _check_link(record, tracking_uri, v)
    return v


def _read_record(path: Path, v: integrity.Verification) -> MonitoringRecord | None:
    try:
        return MonitoringRecord.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        v.problems.append(f"{MONITORING}: not a valid monitoring record ({exc.errors()[0]['msg']})")
        return None


def _check_link(record: MonitoringRecord, tracking_uri: str, v: integrity.Verification) -> None:
    wanted = record.assessment_evidence_sha256
    if wanted is None:
        v.notes.append("chain: the monitoring links no assessment (none was tracked when it ran)")
        return
    found = [
        p for p in past_assessments(tracking_uri, record.spec_id, limit=1000) if p.evidence_sha256 == wanted
    ]
    if found:
        v.checked.append(f"chain: the monitored assessment (evidence {wanted[:16]}) is run {found[0].run_id}")
    else:
        v.problems.append(
            f"chain: no assessment of {record.spec_id!r} with evidence {wanted} in {tracking_uri}"
        )
