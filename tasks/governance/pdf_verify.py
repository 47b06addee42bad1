"""What a dossier PDF proves on its own: its PAdES signature, and its pages against a fresh rendering.

The signature check (``pdf_signature``) finds any change after signing and, with a trusted key or
certificate, who signed. The page check renders the embedded evidence again, with the embedded
pictures (each checked against the digest its evidence records), and compares every page as a
whole (``pdf_compare``): the signed revision of a signed dossier, the whole file of an unsigned one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from nnassay.schemas.evidence import EvidenceBundle
from nnassay.tasks.io.files import sha256_bytes

if TYPE_CHECKING:
    from nnassay.tasks.governance.integrity import Verification, VerifyOptions


def embedded_files(payload: bytes) -> dict[str, bytes]:
    """The embedded files of a PDF by name (the first of each name). pypdf's errors propagate."""
    from pypdf import PdfReader

    return {name: found[0] for name, found in PdfReader(io.BytesIO(payload)).attachments.items() if found}


def check_signature(
    path: Path,
    evidence: EvidenceBundle | None,
    v: Verification,
    options: VerifyOptions,
    *,
    in_run_folder: bool = False,
) -> bool:
    """Check the dossier's PAdES signature, merge what was found into ``v``; True when it is signed.

    The signer the evidence names must have signed; with a trusted key or certificate a missing or
    different signature is tampering. In a run folder an unreadable dossier is a changed file."""
    from nnassay.tasks.governance.pdf_signature import verify_pdf_signature

    declared = evidence.provenance.signer_public_key_sha256 if evidence is not None else None
    check = verify_pdf_signature(
        path, trusted_cert=options.trusted_cert, public_key=options.public_key, declared_signer=declared
    )
    if check.unreadable and in_run_folder:
        v.problems.append(f"changed: {check.unreadable}")
    elif check.unreadable:
        v.unreadable = check.unreadable
    v.problems += check.problems
    v.checked += check.checked
    v.notes += check.notes
    return check.signed


def check_pictures(name: str, evidence: EvidenceBundle, embedded: dict[str, bytes], v: Verification) -> None:
    """Each embedded picture must be the file its evidence records (by digest)."""
    from nnassay.tasks.governance.dossier import picture_artifacts, picture_name

    for artifact in picture_artifacts(evidence):
        payload = embedded.get(picture_name(artifact))
        if payload is not None and sha256_bytes(payload) != artifact.sha256:
            v.problems.append(
                f"{name}: embedded picture {artifact.path} has sha256 {sha256_bytes(payload)}, its "
                f"evidence records {artifact.sha256}"
            )


def check_pages(
    path: Path,
    payload: bytes,
    signed: bool,
    evidence: EvidenceBundle,
    embedded: dict[str, bytes],
    v: Verification,
) -> None:
    """Compare every page, the catalog and the file structure with a fresh rendering of the embedded
    evidence and pictures. A difference is tampering when this nnassay version rendered the dossier;
    rendered by another version it can be a template change: then a note, to re-check with that one."""
    from nnassay.tasks.governance.dossier import rerender
    from nnassay.tasks.governance.integrity import EVIDENCE
    from nnassay.tasks.governance.pdf_compare import compare_pages, rendered_revision
    from nnassay.tasks.pipeline.evidence import code_version

    check_pictures(path.name, evidence, embedded, v)
    shown = rendered_revision(payload) if signed else payload
    try:
        differences = compare_pages(shown, rerender(evidence, embedded[EVIDENCE], embedded))
    except Exception as exc:  # pypdf raises many types for a damaged file
        v.problems.append(
            f"{path.name}: pages cannot be compared with a rendering: {type(exc).__name__}: {exc}"
        )
        return
    what = "its signed revision" if signed else "the whole file"
    if not differences:
        v.checked.append(
            f"{path.name}: every page ({what}) equals a fresh rendering of the embedded {EVIDENCE} and pictures"
        )
        return
    here, there = code_version(), evidence.provenance.code_version
    listed = "; ".join(differences[:12]) + (
        f"; and {len(differences) - 12} more" if len(differences) > 12 else ""
    )
    message = f"{path.name}: {what} differs from a rendering of the embedded {EVIDENCE}: {listed}"
    if here == there:
        v.problems.append(message)
    else:
        v.notes.append(f"{message} (rendered by {there}, compared with {here}: re-check with that version)")
