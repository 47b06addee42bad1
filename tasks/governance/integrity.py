"""Integrity of the governance records: run manifest, Ed25519 signing, and verification.

``manifest.json`` closes a run folder: the SHA-256 of every file (evidence and dossier included)
and of the inputs outside it. Its digest goes to MLflow; with a key it is signed (``manifest.sig``).
Verification checks digests, the signature, the MLflow anchor and the artifact copies stored there
(``mlflow_copies``), the hash chain of earlier runs (``chain``), the result cache, and for a dossier
PDF its PAdES signature and its pages against a fresh rendering (``pdf_verify``); it names every
mismatch. Every file of a run folder is covered but the documented caches (``NOT_COVERED_DIRS``).
"""

from __future__ import annotations

import base64
import json
import stat
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from nnassay.schemas.evidence import ArtifactDigest, EvidenceBundle, RunManifest
from nnassay.tasks.errors import AssessmentError
from nnassay.tasks.io.files import sha256_bytes, sha256_file, write_atomic, write_json

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST, SIGNATURE, PUBLIC_KEY = "manifest.json", "manifest.sig", "manifest.pub"
# embedded in dossier.pdf beside evidence.json when the run is signed: the PDF alone then carries a
# signature of its evidence (the manifest, written after the PDF, cannot be inside it)
EVIDENCE_SIGNATURE, SIGNER_KEY = "evidence.json.sig", "signer.pub"
EVIDENCE, DOSSIER = "evidence.json", "dossier.pdf"
RUNS_URI = "runs:/"  # an MLflow run to verify: runs:/RUN_ID
# written with or after the manifest, or by the MLflow SQLite store while the run is logged
NOT_COVERED = {
    MANIFEST,
    SIGNATURE,
    PUBLIC_KEY,
    "mlflow.db",
    "mlflow.db-journal",
    "mlflow.db-wal",
    "mlflow.db-shm",
}
# the only folders of a run folder where an added file is not tampering: MLflow's artifact stores
# (their copies are checked against the manifest by ``mlflow_copies``) and the result cache (each
# entry is checked against its digest before reuse, ``result_cache``)
NOT_COVERED_DIRS = {"mlartifacts", "mlruns", ".nnassay-cache"}
ROLES = {
    EVIDENCE: "evidence",
    DOSSIER: "dossier",
    "dossier.html": "dossier-html",
    "summary.md": "summary",
    "plan.json": "plan",
    "junit.xml": "junit",
}


class KeyPermissionWarning(UserWarning):
    """A signing key file that others can read: the signature proves less than it seems."""


class SigningKeyError(AssessmentError):
    """A signing or public key file cannot be used."""


# ---------------------------------------------------------------- keys and signatures


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PEM, unencrypted); warn when group or others can read the file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    payload = _read_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warnings.warn(
            f"signing key {path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}",
            KeyPermissionWarning,
            stacklevel=2,
        )
    try:
        key = load_pem_private_key(payload, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"not an unencrypted PEM private key: {exc}",
            file=str(path),
            fix="nnassay evidence keygen PATH writes a suitable Ed25519 key",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"the key is {type(key).__name__}, not Ed25519",
            file=str(path),
            fix="nnassay evidence keygen PATH writes a suitable Ed25519 key",
        )
    return key


def load_public_key(path: Path, payload: bytes | None = None) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM public key file (or from a private key file); ``payload``
    gives the file's bytes when they come from elsewhere (e.g. embedded in a PDF)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

    payload = _read_key_file(path) if payload is None else payload
    try:
        key: Any = load_pem_public_key(payload)
    except ValueError:
        try:
            key = load_pem_private_key(payload, password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(
                f"not a PEM key: {exc}",
                file=str(path),
                fix="pass the .pub file written by nnassay evidence keygen",
            ) from None
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(
            f"the key is {type(key).__name__}, not Ed25519",
            file=str(path),
            fix="pass the Ed25519 public key the run was signed with",
        )
    return key


def _read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeyError(
            f"cannot read key file: {exc.strerror or exc}",
            file=str(path),
            fix="name an existing PEM key file",
        ) from None


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 (hex) of the raw 32-byte public key."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return sha256_bytes(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def public_pem(key: Ed25519PublicKey) -> bytes:
    """The public key as PEM (SubjectPublicKeyInfo)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def sign_bytes(key: Ed25519PrivateKey, payload: bytes) -> bytes:
    """An Ed25519 signature of the bytes, base64 encoded (the format of manifest.sig)."""
    return base64.b64encode(key.sign(payload))


def generate_key(path: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (mode 600) and its public key beside it (PATH.pub)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    write_atomic(path, pem, mode=0o600)  # never readable by others, not even for a moment
    pub = write_atomic(path.with_name(path.name + ".pub"), public_pem(key.public_key()))
    return path, pub


# ---------------------------------------------------------------- writing the manifest


def covered_files(run_dir: Path) -> list[Path]:
    """Files of a run folder the manifest covers: every file, dot-files included, but the manifest's
    own files, the MLflow SQLite store and the cache folders (``NOT_COVERED_DIRS``)."""
    found = []
    for path in sorted(run_dir.rglob("*")):
        rel = path.relative_to(run_dir)
        if rel.parts[0] in NOT_COVERED_DIRS or str(rel) in NOT_COVERED:
            continue
        if path.is_dir() and not path.is_symlink():  # a link is an entry of its own, never followed
            continue
        found.append(path)
    return found


def _role(rel: Path) -> str:
    if str(rel) in ROLES:
        return ROLES[str(rel)]
    if rel.parts[0] in ("results", "tests", "model"):
        return {"results": "result", "tests": "artifact", "model": "model"}[rel.parts[0]]
    return "spec" if rel.name.startswith("spec.") and len(rel.parts) == 1 else "file"


def build_manifest(run_dir: Path, evidence: EvidenceBundle, *, signer: str | None = None) -> RunManifest:
    """The manifest of a finished run folder: its files plus the inputs recorded outside it."""
    files = [
        ArtifactDigest(
            path=str(p.relative_to(run_dir)), sha256=sha256_file(p), role=_role(p.relative_to(run_dir))
        )
        for p in covered_files(run_dir)
    ]
    files += [a for a in evidence.manifest if Path(a.path).is_absolute()]
    return RunManifest(
        spec_id=evidence.spec.id,
        assessment_id=evidence.provenance.assessment_id,
        created_at=datetime.now(UTC),
        evidence_sha256=sha256_file(run_dir / EVIDENCE),
        previous_evidence_sha256=evidence.previous_evidence_sha256,
        files=files,
        signature_algorithm="ed25519" if signer else None,
        signer_public_key_sha256=signer,
    )


def write_manifest(run_dir: Path, evidence: EvidenceBundle, key: Ed25519PrivateKey | None = None) -> str:
    """Write manifest.json (and manifest.sig + manifest.pub when a key is given); return its digest."""
    signer = fingerprint(key.public_key()) if key else None
    path = write_json(run_dir / MANIFEST, build_manifest(run_dir, evidence, signer=signer))
    payload = path.read_bytes()
    for stale in (SIGNATURE, PUBLIC_KEY):
        (run_dir / stale).unlink(missing_ok=True)
    if key is not None:
        write_atomic(run_dir / SIGNATURE, base64.b64encode(key.sign(payload)) + b"\n")
        write_atomic(run_dir / PUBLIC_KEY, public_pem(key.public_key()))
    return sha256_bytes(payload)


# ---------------------------------------------------------------- verification


@dataclass
class Verification:
    """What a verification found: problems (tampering), checks passed, notes, or why unreadable."""

    target: str
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unreadable: str | None = None

    @property
    def status(self) -> str:
        """'unreadable', 'tampered' or 'intact'."""
        return "unreadable" if self.unreadable else "tampered" if self.problems else "intact"

    @property
    def exit_code(self) -> int:
        """0 intact, 1 tampered, 2 unreadable."""
        return {"intact": 0, "tampered": 1, "unreadable": 2}[self.status]


@dataclass(frozen=True)
class VerifyOptions:
    """Where to look for earlier records and which key to trust."""

    history: tuple[Path, ...] = ()
    tracking_uri: str | None = None
    use_tracker: bool = True
    public_key: Path | None = None
    trusted_cert: Path | None = None  # the dossier's PAdES signer must chain to this certificate


def verify(path: Path, options: VerifyOptions = VerifyOptions()) -> Verification:
    """Verify a run folder, an evidence file, a dossier PDF, or an MLflow run (``runs:/RUN_ID``)."""
    from nnassay.tasks.governance.pdf_keys import PdfSignatureError

    v = Verification(str(path))
    try:
        if str(path).startswith(RUNS_URI):
            from nnassay.tasks.governance.mlflow_copies import verify_mlflow_run

            verify_mlflow_run(str(path).removeprefix(RUNS_URI).strip("/"), v, options)
        elif path.is_dir():
            _verify_run_dir(path, v, options)
        elif path.suffix.lower() == ".pdf":
            _verify_pdf(path, v, options)
        elif path.is_file():
            _verify_evidence_file(path, v, options)
        else:
            v.unreadable = f"{path} does not exist"
    except (SigningKeyError, PdfSignatureError) as exc:
        v.unreadable = str(exc)
    return v


def read_evidence(payload: bytes, where: str, v: Verification) -> EvidenceBundle | None:
    try:
        return EvidenceBundle.model_validate_json(payload)
    except ValidationError as exc:
        v.problems.append(
            f"{where}: not a valid evidence bundle ({exc.error_count()} errors, first: "
            f"{exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})"
        )
        return None


def _verify_run_dir(run_dir: Path, v: Verification, options: VerifyOptions) -> None:
    if not (run_dir / MANIFEST).is_file() and not (run_dir / EVIDENCE).is_file():
        v.unreadable = f"{run_dir} holds neither {MANIFEST} nor {EVIDENCE}: not a run folder"
        return
    if not (run_dir / EVIDENCE).is_file():
        v.problems.append(f"{EVIDENCE}: missing from the run folder")
        return
    evidence_bytes = (run_dir / EVIDENCE).read_bytes()
    evidence = read_evidence(evidence_bytes, EVIDENCE, v)
    manifest_sha = _check_manifest(run_dir, evidence, v, options)
    _check_cache(run_dir, v)
    signer = evidence.provenance.signer_public_key_sha256 if evidence is not None else None
    if (run_dir / DOSSIER).is_file() and (signer or options.public_key or options.trusted_cert):
        from nnassay.tasks.governance import pdf_verify

        pdf_verify.check_signature(run_dir / DOSSIER, evidence, v, options, in_run_folder=True)
    if evidence is not None:
        check_external(evidence, sha256_bytes(evidence_bytes), manifest_sha, v, options, copies=True)


def _verify_evidence_file(path: Path, v: Verification, options: VerifyOptions) -> None:
    if path.parent.joinpath(MANIFEST).is_file() and path.name == EVIDENCE:
        _verify_run_dir(path.parent, v, options)
        return
    payload = path.read_bytes()
    try:
        json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        v.unreadable = f"{path} is not JSON: {exc}"
        return
    evidence = read_evidence(payload, path.name, v)
    v.notes.append(f"no {MANIFEST} beside {path.name}: file digests and signature not checked")
    if evidence is not None:
        check_external(evidence, sha256_bytes(payload), None, v, options)


def _verify_pdf(path: Path, v: Verification, options: VerifyOptions) -> None:
    from nnassay.tasks.governance import pdf_verify

    try:
        payload = path.read_bytes()
        attachments = pdf_verify.embedded_files(payload)
    except Exception as exc:  # pypdf raises many types for a damaged file
        v.unreadable = f"{path} cannot be read as a PDF: {type(exc).__name__}: {exc}"
        return
    embedded = attachments.get(EVIDENCE)
    if embedded is None:
        v.unreadable = f"{path} carries no embedded {EVIDENCE} (not an nnassay dossier, or stripped)"
        return
    v.checked.append(f"{path.name}: embedded {EVIDENCE} extracted (sha256 {sha256_bytes(embedded)})")
    evidence = read_evidence(embedded, f"{path.name} embedded {EVIDENCE}", v)
    signed = pdf_verify.check_signature(path, evidence, v, options)
    if v.unreadable:
        return
    if evidence is not None:
        _check_embedded_signature(path, embedded, evidence, v, options)
    run_dir = path.parent
    if (run_dir / MANIFEST).is_file():
        sha = sha256_bytes(embedded)
        if (run_dir / EVIDENCE).is_file() and sha256_file(run_dir / EVIDENCE) != sha:
            v.problems.append(f"{path.name}: the embedded {EVIDENCE} differs from {run_dir / EVIDENCE}")
        manifest_sha = _check_manifest(run_dir, evidence, v, options, only=path.name)
    else:
        manifest_sha = None
        v.notes.append(f"no {MANIFEST} beside {path.name}: the PDF's own digest is not checked")
    if evidence is not None:
        pdf_verify.check_pages(path, payload, signed, evidence, attachments, v)
        check_external(evidence, sha256_bytes(embedded), manifest_sha, v, options)


def _check_embedded_signature(
    path: Path, embedded: bytes, evidence: EvidenceBundle, v: Verification, options: VerifyOptions
) -> None:
    """The signature of the embedded evidence, embedded beside it by a signed run."""
    from cryptography.exceptions import InvalidSignature

    declared = evidence.provenance.signer_public_key_sha256
    signature = extract_embedded(path, EVIDENCE_SIGNATURE)
    if signature is None:
        if declared:
            v.problems.append(
                f"{path.name}: the run was signed by key {declared}, but the PDF embeds no "
                f"{EVIDENCE_SIGNATURE} (rendered again without the key)"
            )
        return
    if options.public_key is not None:
        key, source = load_public_key(options.public_key), str(options.public_key)
    else:
        pem = extract_embedded(path, SIGNER_KEY)
        if pem is None:
            v.problems.append(
                f"{path.name}: embeds {EVIDENCE_SIGNATURE} but no {SIGNER_KEY}; pass --public-key"
            )
            return
        key, source = load_public_key(Path(f"{path.name}:{SIGNER_KEY}"), pem), f"the PDF's own {SIGNER_KEY}"
    used = fingerprint(key)
    if used != declared:
        v.problems.append(
            f"{path.name}: the key of {source} (sha256 {used}) is not the key the evidence "
            f"names as signer ({declared})"
        )
        return
    try:
        key.verify(base64.b64decode(signature.strip(), validate=True), embedded)
    except (InvalidSignature, ValueError):
        v.problems.append(
            f"{path.name}: {EVIDENCE_SIGNATURE} does not match the embedded {EVIDENCE} under key {used}"
        )
        return
    v.checked.append(
        f"{path.name}: embedded {EVIDENCE} signature valid (Ed25519, key sha256 {used}, from {source})"
    )
    if options.public_key is None:
        v.notes.append(
            f"{path.name}: signature checked with the key the PDF carries; pass --public-key to "
            "check it against a key you trust"
        )


def extract_embedded(pdf: Path, name: str) -> bytes | None:
    """The bytes of an embedded file of a PDF, or None when it has none of that name."""
    from pypdf import PdfReader

    found = PdfReader(pdf).attachments.get(name)
    return found[0] if found else None


def _check_manifest(
    run_dir: Path,
    evidence: EvidenceBundle | None,
    v: Verification,
    options: VerifyOptions,
    only: str | None = None,
) -> str | None:
    path = run_dir / MANIFEST
    if not path.is_file():
        v.problems.append(f"{MANIFEST}: missing from {run_dir} (every finished run writes one)")
        return None
    payload = path.read_bytes()
    try:
        manifest = RunManifest.model_validate_json(payload)
    except ValidationError as exc:
        v.problems.append(f"{MANIFEST}: does not parse as a run manifest ({exc.errors()[0]['msg']})")
        return None
    _check_files(run_dir, manifest, v)
    check_manifest_signature(run_dir, payload, manifest, evidence, v, options)
    if evidence is not None:
        check_evidence_digests(evidence, manifest, v)
    return sha256_bytes(payload)


def _check_files(run_dir: Path, manifest: RunManifest, v: Verification) -> None:
    listed = set()
    for item in manifest.files:
        path = Path(item.path) if Path(item.path).is_absolute() else run_dir / item.path
        listed.add(path.resolve())
        if not path.is_file():
            if Path(item.path).is_absolute():
                v.notes.append(f"input {item.path} ({item.role}) is not on this machine: not checked")
            else:
                v.problems.append(f"deleted: {item.path} ({item.role}) is listed in {MANIFEST} but missing")
            continue
        actual = sha256_file(path)
        if actual != item.sha256:
            v.problems.append(
                f"changed: {item.path} ({item.role}) has sha256 {actual}, {MANIFEST} records {item.sha256}"
            )
    extra = [p for p in covered_files(run_dir) if p.resolve() not in listed]
    v.problems += [
        f"added: {p.relative_to(run_dir)} is in the run folder but not in {MANIFEST} (only "
        f"{', '.join(sorted(NOT_COVERED_DIRS))} may hold files added later)"
        for p in extra
    ]
    v.checked.append(f"{MANIFEST}: {len(manifest.files)} file digests compared")


def check_evidence_digests(evidence: EvidenceBundle, manifest: RunManifest, v: Verification) -> None:
    recorded = {a.path: a.sha256 for a in manifest.files}
    for item in evidence.manifest:
        if item.path in recorded and recorded[item.path] != item.sha256:
            v.problems.append(
                f"{EVIDENCE} records sha256 {item.sha256} for {item.path}, "
                f"{MANIFEST} records {recorded[item.path]}"
            )
    if manifest.assessment_id != evidence.provenance.assessment_id:
        v.problems.append(
            f"{MANIFEST} belongs to assessment {manifest.assessment_id}, "
            f"{EVIDENCE} to {evidence.provenance.assessment_id}"
        )


def check_manifest_signature(
    run_dir: Path,
    payload: bytes,
    manifest: RunManifest,
    evidence: EvidenceBundle | None,
    v: Verification,
    options: VerifyOptions,
) -> None:
    from cryptography.exceptions import InvalidSignature

    declared = evidence.provenance.signer_public_key_sha256 if evidence else manifest.signer_public_key_sha256
    if declared != manifest.signer_public_key_sha256:
        v.problems.append(
            f"signer: {EVIDENCE} names key {declared}, {MANIFEST} names {manifest.signer_public_key_sha256}"
        )
    sig_path = run_dir / SIGNATURE
    if declared is None and not sig_path.is_file():
        if options.public_key:
            v.problems.append(f"{SIGNATURE}: the run is unsigned, but a public key was given to check")
        else:
            v.notes.append("the run is not signed (no --sign-key at assessment time)")
        return
    if not sig_path.is_file():
        v.problems.append(f"{SIGNATURE}: missing, but the run was signed by key {declared}")
        return
    key_path = options.public_key or run_dir / PUBLIC_KEY
    if not key_path.is_file():
        v.problems.append(f"{PUBLIC_KEY}: missing; pass --public-key to check {SIGNATURE}")
        return
    key = load_public_key(key_path)
    used = fingerprint(key)
    if declared and used != declared:
        v.problems.append(
            f"signer: the key {key_path.name} (sha256 {used}) is not the key the run was "
            f"signed with ({declared})"
        )
    try:
        key.verify(base64.b64decode(sig_path.read_bytes().strip(), validate=True), payload)
    except (InvalidSignature, ValueError):
        v.problems.append(f"{SIGNATURE}: the signature does not match {MANIFEST} under key {used}")
        return
    v.checked.append(f"{SIGNATURE}: Ed25519 signature valid (key sha256 {used})")


def _check_cache(run_dir: Path, v: Verification) -> None:
    """Entries of the result cache must be as nnassay wrote them (a changed one is never reused,
    but it was changed); entries refused by an earlier resume are named."""
    from nnassay.tasks.governance import result_cache

    cache = run_dir / result_cache.CACHE_DIR
    entries = [p for p in sorted(cache.iterdir()) if p.is_file()] if cache.is_dir() else []
    for path in entries:
        try:
            result_cache.check_entry(path.read_bytes())
        except result_cache.CacheEntryError as exc:
            v.problems.append(f"changed: {result_cache.CACHE_DIR}/{path.name} (result cache): {exc}")
    for note in result_cache.rejections(cache):
        v.notes.append(f"result cache: entry {note['key']} was refused on {note['at']} ({note['reason']})")
    if entries:
        v.checked.append(f"{result_cache.CACHE_DIR}: {len(entries)} cached result(s) match their digests")


def check_external(
    evidence: EvidenceBundle,
    evidence_sha: str,
    manifest_sha: str | None,
    v: Verification,
    options: VerifyOptions,
    *,
    copies: bool = False,
) -> None:
    from nnassay.tasks.governance import chain

    uri = chain.tracking_uri_for(evidence, options)
    if uri is None:
        v.notes.append(
            "MLflow not checked (--no-mlflow)"
            if not options.use_tracker
            else "MLflow not checked (no reachable tracking store; pass --mlflow-uri)"
        )
    else:
        chain.check_tracker(evidence, evidence_sha, manifest_sha, uri, v)
        if copies and evidence.provenance.mlflow_run_id:
            from nnassay.tasks.governance.mlflow_copies import check_copies

            check_copies(evidence.provenance.mlflow_run_id, uri, v, options)
    chain.check_chain(evidence, evidence_sha, options.history, uri, v)
