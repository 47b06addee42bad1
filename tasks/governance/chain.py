"""The hash chain and the tracker anchor of evidence bundles, checked during verification.

Each bundle names the digest of the previous evidence of the same spec id. Walking the links
through run folders (``--history``) or the MLflow store finds a deleted or altered past record.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnassay.schemas.evidence import EvidenceBundle
from nnassay.tasks.governance.history import experiment_name
from nnassay.tasks.io.files import sha256_bytes

if TYPE_CHECKING:
    from nnassay.tasks.governance.integrity import Verification, VerifyOptions

MAX_LINKS = 1000
STOP = object()  # the search already reported why the chain ends here


@dataclass(frozen=True)
class Found:
    """A past evidence bundle located in some source."""

    evidence: EvidenceBundle
    where: str


def tracking_uri_for(evidence: EvidenceBundle, options: VerifyOptions) -> str | None:
    """The MLflow store to check: the one given, else the recorded one when it is a local file that exists."""
    if not options.use_tracker:
        return None
    if options.tracking_uri:
        return options.tracking_uri
    uri = evidence.provenance.mlflow_tracking_uri
    if uri and uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).is_file():
        return uri
    return None


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def check_tracker(
    evidence: EvidenceBundle, evidence_sha: str, manifest_sha: str | None, uri: str, v: Verification
) -> None:
    """The MLflow parent run must exist and record the same evidence (and manifest) digest."""
    run_id = evidence.provenance.mlflow_run_id
    if run_id is None:
        v.notes.append("the assessment was not tracked in MLflow: no tracker anchor to compare")
        return
    try:
        run = _client(uri).get_run(run_id)
    except Exception:  # MlflowException for a missing run
        v.problems.append(f"MLflow: run {run_id} of this assessment is missing from {uri} (deleted?)")
        return
    if run.info.lifecycle_stage == "deleted":
        v.problems.append(f"MLflow: run {run_id} of this assessment was deleted from {uri}")
    tags = run.data.tags
    for name, actual in (("evidence", evidence_sha), ("manifest", manifest_sha)):
        recorded = tags.get(f"nnassay.{name}_sha256")
        if actual is None or recorded is None:
            continue
        if recorded != actual:
            v.problems.append(f"MLflow: run {run_id} records {name} sha256 {recorded}, the file has {actual}")
        else:
            v.checked.append(f"MLflow: run {run_id} records the same {name} sha256")


def check_chain(
    evidence: EvidenceBundle, evidence_sha: str, history: tuple[Path, ...], uri: str | None, v: Verification
) -> None:
    """Walk the previous-evidence links back to the first assessment of the spec id."""
    if evidence.previous_evidence_sha256 is None:
        v.checked.append("chain: first assessment of this spec id (no previous evidence to link)")
        return
    if not history and uri is None:
        v.notes.append("chain not checked: pass --history DIR (earlier run folders) or --mlflow-uri")
        return
    index = _index_folders(history)
    current, links, seen = evidence, 0, {evidence_sha}
    while current.previous_evidence_sha256 and links < MAX_LINKS:
        wanted = current.previous_evidence_sha256
        found = index.get(wanted) or (_find_in_mlflow(uri, current.spec.id, wanted, v) if uri else None)
        if found is STOP:
            return
        if not isinstance(found, Found):
            v.problems.append(_missing_message(current, wanted, index, history, uri))
            return
        if wanted in seen:
            v.problems.append(f"chain: evidence {wanted} links back to itself (a loop)")
            return
        seen.add(wanted)
        links += 1
        _check_copies(found.evidence, wanted, index, v)
        current = found.evidence
    v.checked.append(f"chain: {links} earlier assessment(s) linked and found intact, back to the first")


def _check_copies(found: EvidenceBundle, sha: str, index: dict[str, Found], v: Verification) -> None:
    """Every other copy of a linked assessment's evidence in the history folders must be identical."""
    for other_sha, other in index.items():
        if other_sha != sha and other.evidence.provenance.assessment_id == found.provenance.assessment_id:
            v.problems.append(
                f"chain: assessment {found.provenance.assessment_id} was altered: {other.where} "
                f"no longer has the linked sha256 {sha}"
            )


def _index_folders(folders: tuple[Path, ...]) -> dict[str, Found]:
    index: dict[str, Found] = {}
    for folder in folders:
        candidates = [folder] if folder.is_file() else sorted(folder.rglob("evidence.json"))
        for path in candidates:
            payload = path.read_bytes()
            try:
                index[sha256_bytes(payload)] = Found(EvidenceBundle.model_validate_json(payload), str(path))
            except ValueError:  # altered beyond parsing: it simply links nothing
                continue
    return index


def _find_in_mlflow(uri: str, spec_id: str, wanted: str, v: Verification) -> Found | object | None:
    client = _client(uri)
    experiment = client.get_experiment_by_name(experiment_name(spec_id))
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], f"tags.`nnassay.evidence_sha256` = '{wanted}'")
    for run in runs:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                payload = Path(client.download_artifacts(run.info.run_id, "evidence.json", tmp)).read_bytes()
            except Exception:  # MLflow raises several types for a missing artifact
                v.problems.append(f"chain: MLflow run {run.info.run_id} lost its evidence.json artifact")
                return STOP
        if sha256_bytes(payload) != wanted:
            v.problems.append(
                f"chain: the evidence.json of MLflow run {run.info.run_id} was altered "
                f"(sha256 {sha256_bytes(payload)}, the chain expects {wanted})"
            )
        return Found(EvidenceBundle.model_validate_json(payload), f"MLflow run {run.info.run_id}")
    return None


def _missing_message(
    current: EvidenceBundle, wanted: str, index: dict[str, Found], history: tuple[Path, ...], uri: str | None
) -> str:
    row = next((r for r in current.history if r.get("evidence_sha256") == wanted), {})
    who = f"assessment {row['assessment_id']}" if row.get("assessment_id") else "the previous assessment"
    when = row.get("started_ms")
    if isinstance(when, int):
        who += f" of {datetime.fromtimestamp(when / 1000, UTC):%Y-%m-%d %H:%M} UTC"
    places = [str(p) for p in history] + ([uri] if uri else [])
    altered = [
        f.where
        for f in index.values()
        if row.get("assessment_id") and f.evidence.provenance.assessment_id == row["assessment_id"]
    ]
    if altered:
        return (
            f"chain: {who} (linked from {current.provenance.assessment_id}) was altered: {altered[0]} "
            f"no longer has the linked sha256 {wanted}"
        )
    return (
        f"chain: {who} (evidence sha256 {wanted}, linked from {current.provenance.assessment_id}) is "
        f"missing from {', '.join(places)}: deleted or altered"
    )
