"""Assemble the evidence bundle (pure) and collect provenance facts about the run."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import JsonValue

from nnassay.schemas.evidence import ArtifactDigest, EvidenceBundle, GoalVerdict, Provenance
from nnassay.schemas.explain import ExplanationSet
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import MethodResult
from nnassay.tasks.io.files import sha256_file
from nnassay.tasks.pipeline.interpret import interpret_goal, overall

PACKAGES = (
    "nnassay",
    "onnxruntime-gpu",
    "onnxruntime",
    "onnx",
    "torch",
    "numpy",
    "scipy",
    "prefect",
    "mlflow",
    "pydantic",
    "weasyprint",
)
REPO_ROOT = Path(__file__).resolve().parents[2]  # tasks/pipeline/ -> the checkout


def interpret_all(spec: AssessmentSpec, results: list[MethodResult]) -> list[GoalVerdict]:
    """One verdict per goal, in the spec's order."""
    return [interpret_goal(g, [r for r in results if r.goal_id == g.id]) for g in spec.goals]


def manifest(
    spec_path: Path,
    spec: AssessmentSpec,
    spec_sha: str,
    plan: AssessmentPlan,
    results: list[MethodResult],
    extra: list[ArtifactDigest],
) -> list[ArtifactDigest]:
    """Digests of the inputs (spec, model, data, and every file a goal reads) and every artefact
    the tests wrote."""
    items = [
        ArtifactDigest(path=str(spec_path), sha256=spec_sha, role="spec"),
        ArtifactDigest(path=str(spec.model.path), sha256=plan.model_sha256, role="model"),
        ArtifactDigest(path=str(spec.data.path), sha256=plan.data_sha256, role="data"),
        *goal_inputs(spec),
        *extra,
    ]
    items += [
        ArtifactDigest(path=a.path, sha256=a.sha256, role="artifact") for r in results for a in r.artifacts
    ]
    return items


def goal_inputs(spec: AssessmentSpec) -> list[ArtifactDigest]:
    """Digests of the files the goals' threats read (shifted data, OOD sets, field data, VNN-LIB
    properties: every path in a threat), once each, with the ids of the goals reading them."""
    readers: dict[str, list[str]] = {}
    for g in spec.goals:
        for path in _paths(g.threat.model_dump()):
            readers.setdefault(str(path), []).append(g.id)
    return [
        ArtifactDigest(path=path, sha256=sha256_file(Path(path)), role=f"goal input ({', '.join(ids)})")
        for path, ids in readers.items()
        if Path(path).exists()
    ]


def _paths(value: Any) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list | tuple):
        return [p for v in value for p in _paths(v)]
    return []


def assemble_evidence(
    spec: AssessmentSpec,
    plan: AssessmentPlan,
    results: list[MethodResult],
    verdicts: list[GoalVerdict],
    provenance: Provenance,
    files: list[ArtifactDigest],
    *,
    previous_sha256: str | None = None,
    history: list[dict[str, Any]] | None = None,
    explanations: list[ExplanationSet] | None = None,
) -> EvidenceBundle:
    """Goals + plan + results + verdicts + provenance (+ link to the previous evidence, explanations of
    failures), in one bundle."""
    return EvidenceBundle(
        spec=spec,
        plan=plan,
        results=results,
        verdicts=verdicts,
        overall=overall(verdicts),
        provenance=provenance,
        manifest=files,
        previous_evidence_sha256=previous_sha256,
        history=history or [],
        explanations=explanations or [],
    )


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_commit() -> str | None:
    """The git commit of the nnassay checkout, when it is one."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def code_version() -> str:
    """'nnassay <version>' plus the git commit when known."""
    version = package_versions().get("nnassay", "0+unknown")
    commit = git_commit()
    return f"nnassay {version}" + (f" (git {commit[:12]})" if commit else "")


def cpu_name() -> str:
    """The CPU model name, from /proc/cpuinfo where it exists."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_facts() -> dict[str, str]:
    """Machine facts for provenance."""
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "device": cpu_name(),
    }


def now() -> datetime:
    """The current UTC time."""
    from datetime import UTC

    return datetime.now(UTC)


def constraints_digest() -> str | None:
    """SHA-256 of the pinned constraints file shipped with the code, when present."""
    path = REPO_ROOT / "constraints.txt"
    return sha256_file(path) if path.is_file() else None


def build_provenance(
    spec: AssessmentSpec,
    spec_path: Path,
    plan: AssessmentPlan,
    *,
    assessment_id: str,
    started: datetime,
    provider: str,
    command: str,
    flow_run_id: str | None,
    mlflow_run_id: str | None = None,
    mlflow_tracking_uri: str | None = None,
    signer_public_key_sha256: str | None = None,
    model_registry_uri: str | None = None,
    extra: dict[str, JsonValue] | None = None,
) -> Provenance:
    """The provenance of an assessment, built once at the end of execution (finished_at is now)."""
    import onnxruntime

    return Provenance(
        assessment_id=assessment_id,
        started_at=started,
        finished_at=now(),
        spec_path=str(spec_path.resolve()),
        spec_sha256=plan.spec_sha256,
        model_path=str(spec.model.path),
        model_sha256=plan.model_sha256,
        data_path=str(spec.data.path),
        data_sha256=plan.data_sha256,
        execution_provider=provider,
        available_providers=onnxruntime.get_available_providers(),
        packages=package_versions(),
        code_version=code_version(),
        command=command,
        constraints_sha256=constraints_digest(),
        seed=spec.seed,
        mlflow_run_id=mlflow_run_id,
        mlflow_tracking_uri=mlflow_tracking_uri,
        prefect_flow_run_id=flow_run_id,
        signer_public_key_sha256=signer_public_key_sha256,
        model_registry_uri=model_registry_uri,
        extra=extra or {},
        **host_facts(),
    )
