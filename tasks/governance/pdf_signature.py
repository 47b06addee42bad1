"""PAdES signatures of the dossier PDF: sign it after rendering, verify it on its own.

The signature is an incremental update appended to the rendered PDF/A-3b file (pyHanko), made with
the user's key and certificate, or with a self-signed certificate made from the key. It certifies
the document with "no changes allowed": verification accepts a signature only when it is intact,
valid and covers the whole file, so any byte added or changed after signing is tampering.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from nnassay.tasks.governance.pdf_keys import (
    PdfSignatureError,
    check_key_type,
    key_fingerprint,
    load_certificate,
    load_certificates,
    load_public_key,
    self_signed_certificate,
)
from nnassay.tasks.io.files import write_atomic

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
    from pyhanko.sign.validation.status import PdfSignatureStatus

FIELD_NAME = "nnassay-dossier-signature"
SIGNED_REASON = "nnassay assessment dossier: certified, no changes allowed"
_T = TypeVar("_T")


# ---------------------------------------------------------------- signing


def sign_pdf(
    pdf: bytes | Path,
    key: PrivateKeyTypes,
    *,
    certificate: bytes | Path | None = None,
    reason: str = SIGNED_REASON,
) -> bytes:
    """The PDF with a PAdES certification signature appended as an incremental update.

    ``certificate`` (PEM or DER, bytes or file; a PEM chain: the signer's certificate first, then
    its issuers, all embedded) must hold ``key``'s public key; without one a self-signed
    certificate is made from the key. The signature certifies the document with DocMDP
    "no changes", so viewers, like :func:`verify_pdf_signature`, flag any later change. The
    rendered revision stays byte for byte in front of the signature, with its PDF/A-3b metadata
    and embedded files; the Info dictionary and XMP are updated together so they still agree.
    """
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    check_key_type(key)
    payload = pdf.read_bytes() if isinstance(pdf, Path) else pdf
    if _read_signatures(payload):
        raise PdfSignatureError(
            "the PDF is signed already: a second signature would leave the first covering only part of the file",
            file=str(pdf) if isinstance(pdf, Path) else None,
            fix="sign the dossier as rendered, once",
        )
    chain = load_certificates(certificate if certificate is not None else self_signed_certificate(key))
    cert = chain[0]
    if key_fingerprint(cert.public_key()) != key_fingerprint(key.public_key()):
        raise PdfSignatureError(
            f"the certificate ({cert.subject.rfc4514_string()}) is for another key than the signing key",
            file=str(certificate) if isinstance(certificate, Path) else None,
            fix="pass the certificate issued for the signing key, or none for a self-signed one",
        )
    der_key = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    return _run(_sign(payload, der_key, [c.public_bytes(Encoding.DER) for c in chain], reason))


async def _sign(payload: bytes, der_key: bytes, der_chain: list[bytes], reason: str) -> bytes:
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.metadata.model import VENDOR
    from pyhanko.sign import signers
    from pyhanko.sign.fields import MDPPerm, SigSeedSubFilter
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    chain = [asn1_x509.Certificate.load(der) for der in der_chain]
    signer = signers.SimpleSigner(
        signing_cert=chain[0],
        signing_key=asn1_keys.PrivateKeyInfo.load(der_key),
        cert_registry=SimpleCertificateStore.from_certs(chain),  # embedded, so a verifier can build the path
    )
    writer = IncrementalPdfFileWriter(io.BytesIO(payload), strict=False)
    _agree_metadata(writer, generic, VENDOR)
    meta = signers.PdfSignatureMetadata(
        field_name=FIELD_NAME,
        reason=reason,
        subfilter=SigSeedSubFilter.PADES,
        certify=True,
        docmdp_permissions=MDPPerm.NO_CHANGES,
    )
    output = await signers.async_sign_pdf(writer, meta, signer=signer)
    return bytes(output.getvalue())


def _agree_metadata(writer: Any, generic: Any, vendor: str) -> None:
    """PDF/A wants the Info dictionary and the XMP packet to agree. pyHanko writes its own name as
    XMP ``pdf:Producer`` but appends it to an existing Info ``/Producer``: set both to its name,
    and keep the renderer's name as creator tool (Info ``/Creator``, XMP ``xmp:CreatorTool``)."""
    info = writer.trailer["/Info"].get_object() if "/Info" in writer.trailer else None
    if info is None:
        return
    renderer = str(info.get("/Producer", "")) or None
    if renderer and "/Creator" not in info:
        info["/Creator"] = generic.TextStringObject(renderer)
        writer.document_meta.creator = renderer
    info["/Producer"] = generic.TextStringObject(vendor)
    writer.update_container(info)


def sign_pdf_file(
    path: Path, key: PrivateKeyTypes, *, certificate: bytes | Path | None = None, reason: str = SIGNED_REASON
) -> Path:
    """Sign a dossier PDF file in place (atomically); return its path."""
    return write_atomic(path, sign_pdf(path, key, certificate=certificate, reason=reason))


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a pyHanko coroutine, also from code that already runs an event loop (Prefect)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class SignatureCheck:
    """What the check of a dossier's PDF signature found.

    ``problems`` are tampering or a failed trust check (exit 1); ``checked`` what passed; ``notes``
    what was not checked. ``unreadable`` says why the file could not be examined (exit 2).
    """

    target: str
    signed: bool
    problems: tuple[str, ...] = ()
    checked: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    signer_subject: str | None = None
    signer_key_sha256: str | None = None
    signed_at: datetime | None = None
    unreadable: str | None = None

    @property
    def status(self) -> Literal["intact", "tampered", "unsigned", "unreadable"]:
        """'unreadable'; 'tampered' with any problem; 'unsigned' without a signature (and nothing that
        required one); 'intact' when signed, whole-file and, if asked, by the trusted signer."""
        if self.unreadable:
            return "unreadable"
        return "tampered" if self.problems else "intact" if self.signed else "unsigned"

    @property
    def exit_code(self) -> int:
        """0 intact or unsigned (the caller decides what an unsigned PDF needs), 1 tampered, 2 unreadable."""
        return {"intact": 0, "unsigned": 0, "tampered": 1, "unreadable": 2}[self.status]


@dataclass
class _Findings:
    problems: list[str]
    checked: list[str]
    notes: list[str]


def verify_pdf_signature(
    path: Path | bytes,
    *,
    trusted_cert: Path | x509.Certificate | None = None,
    public_key: Path | PublicKeyTypes | None = None,
    declared_signer: str | None = None,
) -> SignatureCheck:
    """Check the PAdES signature of a dossier PDF.

    Intact means: exactly one signature, its bytes unchanged, cryptographically valid, covering the
    whole file (nothing appended after signing: no annotation, incremental update, image or text).
    With ``trusted_cert`` (the signer's certificate or its issuing CA) the signer must chain to it;
    with ``public_key`` (PEM public/private key or certificate) the signer's key must be that key;
    with ``declared_signer`` (the key fingerprint the evidence names) the signer's key must match it.
    When any of them is given, a missing signature is a problem, never a note.
    """
    name = path.name if isinstance(path, Path) else "dossier.pdf"
    try:
        payload = path.read_bytes() if isinstance(path, Path) else path
    except OSError as exc:
        return SignatureCheck(name, False, unreadable=f"cannot read {name}: {exc.strerror or exc}")
    anchor = load_certificate(trusted_cert) if isinstance(trusted_cert, Path) else trusted_cert
    expected = load_public_key(public_key) if isinstance(public_key, Path) else public_key
    try:
        signatures = _read_signatures(payload)
    except Exception as exc:  # pyHanko raises many types for a damaged file
        return SignatureCheck(
            name, False, unreadable=f"{name} cannot be read as a PDF: {type(exc).__name__}: {exc}"
        )
    found = _Findings([], [], [])
    if not signatures:
        return _unsigned(name, found, anchor is not None or expected is not None, declared_signer)
    if len(signatures) > 1:
        found.problems.append(
            f"{name}: carries {len(signatures)} signatures; nnassay signs a dossier once, so every "
            "later signature is a change made after signing"
        )
    status = _run(_validate(signatures[0], anchor))
    _check_integrity(name, status, _appended(signatures[0], len(payload)), found)
    cert = status.signing_cert
    fp = key_fingerprint(_public_key_of(cert.dump()))
    _check_signer(name, status, fp, anchor, expected, declared_signer, found)
    return SignatureCheck(
        name,
        True,
        tuple(found.problems),
        tuple(found.checked),
        tuple(found.notes),
        signer_subject=cert.subject.human_friendly,
        signer_key_sha256=fp,
        signed_at=status.signer_reported_dt,
    )


def _read_signatures(payload: bytes) -> list[Any]:
    from pyhanko.pdf_utils.reader import PdfFileReader

    return list(PdfFileReader(io.BytesIO(payload), strict=False).embedded_signatures)


def _unsigned(name: str, found: _Findings, trust_given: bool, declared_signer: str | None) -> SignatureCheck:
    if trust_given:
        found.problems.append(
            f"{name}: carries no PDF signature, but a trusted certificate or public key was given: "
            "the signature was removed or the dossier rendered again without its signer"
        )
    if declared_signer:
        found.problems.append(
            f"{name}: its evidence names signer key {declared_signer}, but the PDF carries no signature"
        )
    if not found.problems:
        found.notes.append(f"{name}: carries no PDF signature (no --sign-key when the run was recorded)")
    return SignatureCheck(name, False, tuple(found.problems), notes=tuple(found.notes))


async def _validate(signature: Any, anchor: x509.Certificate | None) -> PdfSignatureStatus:
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from pyhanko.sign.validation import async_validate_pdf_signature
    from pyhanko.sign.validation.settings import KeyUsageConstraints
    from pyhanko_certvalidator import ValidationContext

    roots = [asn1_x509.Certificate.load(anchor.public_bytes(Encoding.DER))] if anchor is not None else []
    context = ValidationContext(trust_roots=roots, allow_fetching=False)
    usage = KeyUsageConstraints(
        key_usage={"digital_signature", "non_repudiation"}, match_all_key_usages=False
    )
    with _quiet("pyhanko"), _quiet("pyhanko_certvalidator"):
        # no difference analysis: it grades later updates (form filling, ...), where any update
        # is tampering here; and it takes seconds per update
        return await async_validate_pdf_signature(
            signature, signer_validation_context=context, key_usage_settings=usage, skip_diff=True
        )


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """pyHanko logs an untrusted (self-signed) signer as an error with a traceback; the result
    says it, so keep the log quiet while validating."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _public_key_of(der_cert: bytes) -> PublicKeyTypes:
    from cryptography import x509

    return x509.load_der_x509_certificate(der_cert).public_key()


def _appended(signature: Any, size: int) -> int | None:
    """Bytes in the file after the signed byte range (None when the range is malformed)."""
    try:
        _, _, start, length = (int(x) for x in signature.byte_range)
    except (TypeError, ValueError):
        return None
    return size - (start + length)


def _check_integrity(name: str, status: PdfSignatureStatus, appended: int | None, found: _Findings) -> None:
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    if status.coverage == SignatureCoverageLevel.ENTIRE_FILE and status.intact and status.valid:
        found.checked.append(
            f"{name}: PDF signature valid and covering the whole file (nothing added after signing)"
        )
        return
    if not status.intact:
        what = "the signed bytes themselves differ (the file was rewritten or edited in place)"
    elif status.coverage != SignatureCoverageLevel.ENTIRE_FILE:
        what = (
            f"{appended} byte(s) follow the signed range" if appended else "the signed range is not the file"
        )
    else:
        what = None
    if what:
        found.problems.append(
            f"{name}: the file was changed after signing: {what}; an added annotation, image, text or "
            "any incremental update counts as tampering"
        )
    if status.intact and not status.valid:
        found.problems.append(f"{name}: the signature does not verify under the certificate it carries")


def _check_signer(
    name: str,
    status: PdfSignatureStatus,
    fp: str,
    anchor: x509.Certificate | None,
    expected: PublicKeyTypes | None,
    declared_signer: str | None,
    found: _Findings,
) -> None:
    subject = status.signing_cert.subject.human_friendly
    if anchor is not None:
        if status.trusted:
            found.checked.append(f"{name}: signer '{subject}' chains to the trusted certificate")
        else:
            why = getattr(status.trust_problem_indic, "name", None)
            found.problems.append(
                f"{name}: signer '{subject}' (key sha256 {fp}) does not chain to the trusted certificate "
                f"'{anchor.subject.rfc4514_string()}'" + (f" ({why})" if why else "")
            )
    if expected is not None:
        want = key_fingerprint(expected)
        if want == fp:
            found.checked.append(f"{name}: signed with the given public key (sha256 {fp})")
        else:
            found.problems.append(
                f"{name}: signed with key sha256 {fp}, not the given public key (sha256 {want})"
            )
    if declared_signer is not None and declared_signer != fp:
        found.problems.append(
            f"{name}: signed with key sha256 {fp}, but its evidence names signer {declared_signer}"
        )
    if anchor is None and expected is None:
        found.notes.append(
            f"{name}: signer '{subject}' (key sha256 {fp}) checked only against the certificate the PDF "
            "carries; pass --public-key or a trusted certificate to check who signed"
        )
