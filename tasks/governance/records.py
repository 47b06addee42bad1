"""Step 'record': write the evidence bundle and log the assessment to the tracker (MLflow)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import ArtifactDigest, EvidenceBundle
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import MethodResult
from nnassay.tasks.governance.tracking import Artifact, DatasetRef, ModelRef, Tracker
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


def system_tags(source_name: str, source_type: str, git_commit: str | None) -> dict[str, str]:
    """MLflow's standard run tags: who ran it, from what, at which commit of nnassay (where known)."""
    import getpass

    from mlflow.utils import mlflow_tags as mt

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        user = "unknown"
    tags = {mt.MLFLOW_USER: user, mt.MLFLOW_SOURCE_NAME: source_name, mt.MLFLOW_SOURCE_TYPE: source_type}
    return tags | ({mt.MLFLOW_GIT_COMMIT: git_commit} if git_commit else {})


def open_run(
    tracker: Tracker | None,
    spec: AssessmentSpec,
    plan: AssessmentPlan,
    assessment_id: str,
    code_version: str,
    system: dict[str, str] | None = None,
) -> TrackingHandle:
    """Start the parent MLflow run with the plan's identity as tags and params (``system``: MLflow's
    standard tags, see ``system_tags``)."""
    if tracker is None:
        return TrackingHandle(None, None, assessment_id)
    tags = (system or {}) | {
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


def log_lineage(
    tracker: Tracker | None, handle: TrackingHandle, spec: AssessmentSpec, plan: AssessmentPlan
) -> None:
    """The run's inputs: the test data and every data file a goal reads (shift, OOD), and the model
    (its registry version, or the ONNX file as an external logged model with its digest)."""
    if tracker is None or handle.run_id is None:
        return
    from nnassay.tasks.io import registry_models

    model_path = Path(spec.model.path)
    registry = registry_models.origin(model_path)
    name = registry["name"] if registry else model_path.stem
    model = ModelRef(name, model_path, plan.model_sha256, registry)
    model_id = tracker.log_inputs(handle.run_id, dataset_refs(spec, plan), model)
    tracker.set_tags(
        handle.run_id, {"nnassay.model_uri": model.uri} | ({"nnassay.model_id": model_id} if model_id else {})
    )


def dataset_refs(spec: AssessmentSpec, plan: AssessmentPlan) -> list[DatasetRef]:
    """The data files of an assessment (test data first), read again for their schema where possible."""
    from nnassay.schemas.goals import DataSpec
    from nnassay.tasks.io.data_io import load_arrays

    refs = [_dataset(spec.data, Path(spec.data.path), "test", plan.data_sha256, spec.data.name, load_arrays)]
    seen = {Path(spec.data.path)}
    for goal in spec.goals:
        path = getattr(goal.threat, "path", None)
        if path is None or goal.threat.kind == "vnnlib" or Path(path) in seen or not Path(path).exists():
            continue
        seen.add(Path(path))
        data = DataSpec(path=path, label_column=spec.data.label_column)
        refs.append(_dataset(data, Path(path), goal.threat.kind, sha256_file(Path(path)), None, load_arrays))
    return refs


def _dataset(data: Any, path: Path, context: str, sha256: str, name: str | None, load: Any) -> DatasetRef:
    try:
        x, y, _ = load(data, path)
    except Exception:  # noqa: BLE001 (no labels, another layout: metadata only, never a failed run)
        x = y = None
    return DatasetRef(name or path.stem, path, sha256, context, x, y)


def log_results(
    tracker: Tracker | None,
    handle: TrackingHandle,
    plan: AssessmentPlan,
    results: list[MethodResult],
    run_dir: Path | None = None,
) -> None:
    """One nested run per test with its parameters, metrics and artifacts (its result file and its
    folder under ``tests/``)."""
    if tracker is None or handle.run_id is None:
        return
    params = {t.test_id: t.params for t in plan.tests}
    for result in results:
        tracker.log_test(
            handle.run_id, result, params.get(result.test_id, {}), test_artifacts(run_dir, result.test_id)
        )


def test_artifacts(run_dir: Path | None, test_id: str) -> list[Artifact]:
    """A test's files in the run folder: results/<test>.json and the contents of tests/<test>/."""
    if run_dir is None:
        return []
    safe = test_id.replace("/", "__")
    return [(run_dir / "results" / f"{safe}.json", None), (run_dir / "tests" / safe, None)]


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
    if (run_dir / SUMMARY).is_file():
        tags["mlflow.note.content"] = (run_dir / SUMMARY).read_text()  # the run's description in the UI
    tags |= extra_tags or {}
    tracker.set_tags(handle.run_id, tags)
    tracker.log_table(handle.run_id, goal_table(evidence), GOAL_TABLE)
    for name in files:
        path = run_dir / name
        if path.exists():
            tracker.log_artifact(handle.run_id, path, None if path.is_file() else name)
    tracker.finish(handle.run_id, "FINISHED")


GOAL_TABLE = "goals.json"  # the per-goal results table (MLflow UI: artifacts, and evaluation views)


def goal_table(evidence: EvidenceBundle) -> dict[str, list[Any]]:
    """One row per goal: verdict, metric, measured value and interval, criterion, tests."""
    rows = evidence.verdicts
    measured = [v.measured for v in rows]
    return {
        "goal": [v.goal_id for v in rows],
        "verdict": [v.verdict.value for v in rows],
        "metric": [v.metric for v in rows],
        "measured": [m.value if m else None for m in measured],
        "ci_low": [m.interval.low if m and m.interval else None for m in measured],
        "ci_high": [m.interval.high if m and m.interval else None for m in measured],
        "criterion": [f"{v.criterion.comparator} {v.criterion.threshold}" for v in rows],
        "tests": [", ".join(v.tests) for v in rows],
        "reason": [v.reason for v in rows],
    }


def fail_run(tracker: Tracker | None, handle: TrackingHandle | None, message: str) -> None:
    """Mark the parent run FAILED (a crashed or invalid assessment is never left 'running')."""
    if tracker is None or handle is None or handle.run_id is None:
        return
    tracker.set_tags(handle.run_id, {"nnassay.error": message[:4000]})
    tracker.finish(handle.run_id, "FAILED")


def copy_registry_model(spec: AssessmentSpec, run_dir: Path) -> list[ArtifactDigest]:
    """A model downloaded from the registry, copied into the run folder with its external-data files
    (their digests for the manifest)."""
    import shutil

    from nnassay.tasks.io import registry_models

    if registry_models.origin(Path(spec.model.path)) is None:
        return []
    digests = []
    for source in registry_models.model_files(Path(spec.model.path)):
        copy = run_dir / "model" / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, copy)
        digests.append(
            ArtifactDigest(path=str(copy.relative_to(run_dir)), sha256=sha256_file(copy), role="model")
        )
    return digests


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
            "model",
        ],  # each test's results/ and tests/ files are on its nested run
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


def publish_summary(
    evidence: EvidenceBundle, markdown: str, *, mlflow_run: str | None = None, dossier: Path | None = None
) -> None:
    """Publish the Markdown summary as a Prefect artifact (when running inside a flow run), headed by
    links to the MLflow run and the dossier."""
    import re

    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    key = re.sub(r"[^a-z0-9-]", "-", f"nnassay-{evidence.spec.id}".lower())
    links = [f"- MLflow run: {_md_link(mlflow_run)}"] if mlflow_run else []
    links += [f"- Dossier: {_md_link(dossier.resolve().as_uri())}"] if dossier else []
    create_markdown_artifact(
        markdown="\n".join(links + [""] + [markdown]) if links else markdown,
        key=key,
        description=f"Robustness assessment {evidence.provenance.assessment_id}: {evidence.overall.value}",
    )


def _md_link(target: str) -> str:
    """A Markdown link when the target is a URL, else the text as code."""
    return f"[{target}]({target})" if target.startswith(("http://", "https://", "file://")) else f"`{target}`"
