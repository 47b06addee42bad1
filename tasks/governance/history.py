"""History: earlier assessments of the same spec id, as recorded in the tracking store (MLflow).

Used for the evidence hash chain (the previous evidence digest) and for lifecycle comparisons.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnassay.schemas.evidence import EvidenceBundle


@dataclass(frozen=True)
class PastAssessment:
    """One earlier assessment as the tracker knows it."""

    run_id: str
    assessment_id: str
    started_ms: int
    status: str  # FINISHED / FAILED / RUNNING ...
    verdict: str | None
    evidence_sha256: str | None
    model_sha256: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SpecHistory:
    """The earlier assessments of one spec id (finished or not, newest first), read once per
    assessment and passed to the steps that need them (crashed attempts, regressions, hash chain)."""

    runs: tuple[PastAssessment, ...] = ()

    def finished(self, limit: int | None = None) -> list[PastAssessment]:
        """The finished assessments, newest first (at most ``limit``)."""
        done = [p for p in self.runs if p.status == "FINISHED"]
        return done if limit is None else done[:limit]


def read_history(tracking_uri: str | None, spec_id: str, *, limit: int) -> SpecHistory:
    """The spec's earlier assessments in the tracking store (none without one)."""
    if tracking_uri is None:
        return SpecHistory()
    return SpecHistory(tuple(past_assessments(tracking_uri, spec_id, limit=limit, finished_only=False)))


def experiment_name(spec_id: str) -> str:
    """The MLflow experiment that holds every assessment of a spec id."""
    return f"nnassay/{spec_id}"


def past_assessments(
    tracking_uri: str, spec_id: str, *, limit: int = 50, finished_only: bool = True
) -> list[PastAssessment]:
    """Parent runs of earlier assessments of ``spec_id``, newest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(spec_id))
    if experiment is None:
        return []
    query = "attributes.status = 'FINISHED'" if finished_only else ""
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=query,
        order_by=["attributes.start_time DESC"],
        max_results=limit * 4,
    )
    found = []
    for run in runs:
        tags = run.data.tags
        if "mlflow.parentRunId" in tags or "nnassay.assessment_id" not in tags:
            continue
        found.append(
            PastAssessment(
                run_id=run.info.run_id,
                assessment_id=tags["nnassay.assessment_id"],
                started_ms=run.info.start_time,
                status=run.info.status,
                verdict=tags.get("nnassay.verdict"),
                evidence_sha256=tags.get("nnassay.evidence_sha256"),
                model_sha256=tags.get("nnassay.model_sha256"),
                metrics=dict(run.data.metrics),
                tags=dict(tags),
            )
        )
        if len(found) >= limit:
            break
    return found


def load_past_evidence(tracking_uri: str, run_id: str) -> EvidenceBundle | None:
    """Download and parse the evidence.json artifact of a past run (None when it has none)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "evidence.json", tmp)
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        return EvidenceBundle.model_validate_json(Path(path).read_text())


def history_rows(past: list[PastAssessment]) -> list[dict[str, Any]]:
    """Compact history rows for the evidence bundle (oldest first)."""
    rows = []
    for p in reversed(past):
        goals = {
            k.removeprefix("nnassay.goal."): v for k, v in p.tags.items() if k.startswith("nnassay.goal.")
        }
        metrics = {k: v for k, v in p.metrics.items() if k.startswith("goal.")}
        rows.append(
            {
                "assessment_id": p.assessment_id,
                "run_id": p.run_id,
                "started_ms": p.started_ms,
                "verdict": p.verdict,
                "model_sha256": p.model_sha256,
                "evidence_sha256": p.evidence_sha256,
                "goals": goals,
                "metrics": json.loads(json.dumps(metrics)),
            }
        )
    return rows
