"""The copies of a run's records stored in MLflow (what an auditor downloads from the MLflow UI),
checked against the manifest stored with them and the digests tagged on the run.

The run's artifacts are downloaded to a temporary folder and read as bytes and JSON only: nothing
downloaded is unpickled, imported or executed.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from nnassay.schemas.evidence import EvidenceBundle, RunManifest
from nnassay.tasks.io.files import sha256_bytes, sha256_file

if TYPE_CHECKING:
    from nnassay.tasks.governance.integrity import Verification, VerifyOptions

# what ``records.seal`` logs on the parent run: a manifest entry named so is expected there
LOGGED_TOP = frozenset({"results", "tests", "model"})
GOAL_TABLE, EVIDENCE_NAME = "goals.json", "evidence.json"  # the goal table is checked against the evidence
LOGGED_FILES = frozenset({"evidence.json", "plan.json", "dossier.pdf", "dossier.html", "summary.md"})


def verify_mlflow_run(ref: str, v: Verification, options: VerifyOptions) -> None:
    """Verify a run's records as stored in MLflow alone (``nnassay evidence verify runs:/RUN_ID``)."""
    from nnassay.tasks.governance.integrity import check_external

    v.target = f"runs:/{ref}"
    if not options.tracking_uri:
        v.unreadable = f"runs:/{ref}: pass --mlflow-uri (the tracking store holding the run)"
        return
    found = _download_and_check(ref, options.tracking_uri, v, options)
    if found is not None:
        evidence, evidence_sha, manifest_sha = found
        check_external(evidence, evidence_sha, manifest_sha, v, options)


def check_copies(run_id: str, uri: str, v: Verification, options: VerifyOptions) -> None:
    """From a run folder's verification: the same check of the run's copies in MLflow."""
    _download_and_check(run_id, uri, v, options)


def _download_and_check(
    run_id: str, uri: str, v: Verification, options: VerifyOptions
) -> tuple[EvidenceBundle, str, str | None] | None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    try:
        run = client.get_run(run_id)
        children = client.search_runs(
            [run.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}'",
            max_results=10_000,
        )
    except Exception as exc:  # MlflowException for a missing run or an unreadable store
        v.unreadable = (
            f"MLflow run {run_id} cannot be read from {uri}: {type(exc).__name__}: {str(exc)[:300]}"
        )
        return None
    with tempfile.TemporaryDirectory(prefix="nnassay-mlflow-copy-") as tmp:
        try:
            stored = _files(_download(run_id, uri, Path(tmp) / "parent"))
            for child in children:
                test = child.data.tags.get("mlflow.runName", child.info.run_name or "")
                folder = _download(child.info.run_id, uri, Path(tmp) / child.info.run_id)
                for rel, path in _files(folder).items():
                    stored.setdefault(_test_file(rel, test), path)
        except Exception as exc:  # the artifact store is unreachable or damaged
            v.problems.append(f"MLflow copy: the artifacts of run {run_id} cannot be downloaded: {exc}")
            return None
        return _check_stored(run_id, stored, run.data.tags, v, options)


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _test_file(rel: str, test_id: str) -> str:
    """Where a file of a test's nested run lives in the run folder: its result file under results/,
    the rest under tests/<test>/ (``records.test_artifacts``)."""
    safe = test_id.replace("/", "__")
    if rel in (f"{safe}.json", f"results/{safe}.json"):
        return f"results/{safe}.json"
    if rel.startswith("tests/"):
        return rel
    return f"tests/{rel}" if rel.startswith(f"{safe}/") else f"tests/{safe}/{rel}"


def _download(run_id: str, uri: str, dst: Path) -> Path:
    import mlflow.artifacts

    dst.mkdir(parents=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, tracking_uri=uri, dst_path=str(dst)))


def _check_stored(
    run_id: str, stored: dict[str, Path], tags: dict[str, Any], v: Verification, options: VerifyOptions
) -> tuple[EvidenceBundle, str, str | None] | None:
    from nnassay.tasks.governance import integrity as ig

    where = f"MLflow copy (run {run_id})"
    evidence_path, manifest_path = stored.get(ig.EVIDENCE), stored.get(ig.MANIFEST)
    if evidence_path is None or manifest_path is None:
        missing = [n for n, p in ((ig.EVIDENCE, evidence_path), (ig.MANIFEST, manifest_path)) if p is None]
        v.problems.append(f"{where}: {', '.join(missing)} missing from the run's artifacts")
        return None
    evidence_sha, manifest_sha = sha256_file(evidence_path), sha256_file(manifest_path)
    for name, actual in (("evidence", evidence_sha), ("manifest", manifest_sha)):
        recorded = tags.get(f"nnassay.{name}_sha256")
        if recorded is None:
            v.problems.append(f"{where}: the run carries no nnassay.{name}_sha256 tag")
        elif recorded != actual:
            v.problems.append(
                f"{where}: {name} artifact has sha256 {actual}, the run's tag records {recorded}"
            )
    evidence = ig.read_evidence(evidence_path.read_bytes(), f"{where} {ig.EVIDENCE}", v)
    try:
        manifest = RunManifest.model_validate_json(manifest_path.read_bytes())
    except ValidationError as exc:
        v.problems.append(f"{where}: {ig.MANIFEST} does not parse ({exc.errors()[0]['msg']})")
        return None
    _compare_files(where, stored, manifest, v)
    _check_signature_copy(stored, manifest_path.read_bytes(), manifest, evidence, v, options)
    if evidence is None:
        return None
    _check_goal_table(where, stored.get(GOAL_TABLE), evidence, v)
    ig.check_evidence_digests(evidence, manifest, v)
    if evidence.provenance.mlflow_run_id != run_id:
        v.problems.append(
            f"{where}: its {ig.EVIDENCE} belongs to MLflow run {evidence.provenance.mlflow_run_id}, not {run_id}"
        )
    return evidence, evidence_sha, manifest_sha


def _check_signature_copy(
    stored: dict[str, Path],
    payload: bytes,
    manifest: RunManifest,
    evidence: EvidenceBundle | None,
    v: Verification,
    options: VerifyOptions,
) -> None:
    """The manifest's signature as stored on the run (its signature and public key files beside it)."""
    from nnassay.tasks.governance import integrity as ig

    with tempfile.TemporaryDirectory(prefix="nnassay-mlflow-sig-") as tmp:
        for name in (ig.SIGNATURE, ig.PUBLIC_KEY):
            if name in stored:
                (Path(tmp) / name).write_bytes(stored[name].read_bytes())
        ig.check_manifest_signature(Path(tmp), payload, manifest, evidence, v, options)


def _check_goal_table(where: str, stored: Path | None, evidence: EvidenceBundle, v: Verification) -> None:
    """The per-goal table logged for the MLflow UI must say what the evidence says."""
    from nnassay.tasks.governance.records import goal_table

    if stored is None:
        return
    try:
        table = json.loads(stored.read_bytes())
        columns, rows = table["columns"], table["data"]
    except (ValueError, KeyError, TypeError):
        v.problems.append(f"changed: {where}: {GOAL_TABLE} is not the table nnassay logs")
        return
    expected = goal_table(evidence)
    wanted = [list(r) for r in zip(*expected.values(), strict=True)]
    if columns != list(expected) or len(rows) != len(wanted) or not all(map(_same_row, rows, wanted)):
        v.problems.append(f"changed: {where}: {GOAL_TABLE} does not show the goals of its {EVIDENCE_NAME}")
    else:
        v.checked.append(f"{where}: {GOAL_TABLE} shows the goals of its {EVIDENCE_NAME}")


def _same_row(a: Any, b: list[Any]) -> bool:
    if not isinstance(a, list) or len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if isinstance(y, float) and isinstance(x, int | float) and not isinstance(x, bool):
            if not math.isclose(x, y, rel_tol=1e-8, abs_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


def _compare_files(where: str, stored: dict[str, Path], manifest: RunManifest, v: Verification) -> None:
    """Each file of the manifest stored on the run must match its digest, and the run holds no other."""
    from nnassay.tasks.governance import integrity as ig

    listed = {item.path: item for item in manifest.files if not Path(item.path).is_absolute()}
    for rel, item in listed.items():
        path = stored.get(rel)
        if path is None:
            if Path(rel).parts[0] in LOGGED_TOP or rel in LOGGED_FILES or rel.startswith("spec."):
                v.problems.append(f"deleted: {where}: {rel} ({item.role}) is in {ig.MANIFEST} but not stored")
            continue
        actual = sha256_bytes(path.read_bytes())
        if actual != item.sha256:
            v.problems.append(
                f"changed: {where}: {rel} ({item.role}) has sha256 {actual}, {ig.MANIFEST} records {item.sha256}"
            )
    extra = sorted(set(stored) - set(listed) - ig.NOT_COVERED - {GOAL_TABLE})
    v.problems += [f"added: {where}: {rel} is stored on the run but not in {ig.MANIFEST}" for rel in extra]
    v.checked.append(f"{where}: {len(stored)} stored file(s) compared with {ig.MANIFEST}")
