"""Keys and X.509 certificates for the dossier's PDF signature: which keys can sign, a self-signed
certificate made from a key, and loading certificates and public keys from PEM or DER files."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from nnassay.tasks.errors import AssessmentError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

SUPPORTED_KEYS = ("Ed25519", "Ed448", "RSA", "EC (ECDSA)")  # what pyHanko's SimpleSigner signs with


class PdfSignatureError(AssessmentError):
    """A dossier cannot be signed with the given key or certificate."""


def key_fingerprint(key: PublicKeyTypes) -> str:
    """SHA-256 (hex) of a public key: of the raw key for Ed25519/Ed448 (as ``manifest.pub``
    fingerprints are), of the DER SubjectPublicKeyInfo for other key types."""
    from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(key, Ed25519PublicKey | Ed448PublicKey):
        return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()
    return hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def check_key_type(key: PrivateKeyTypes) -> None:
    """Refuse, by name, a key type pyHanko cannot sign with."""
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    if not isinstance(key, Ed25519PrivateKey | Ed448PrivateKey | RSAPrivateKey | EllipticCurvePrivateKey):
        raise PdfSignatureError(
            f"a {type(key).__name__} cannot sign a PDF; pyHanko signs with {', '.join(SUPPORTED_KEYS)} keys",
            fix="nnassay evidence keygen PATH writes a suitable Ed25519 key",
        )


def self_signed_certificate(key: PrivateKeyTypes, *, days: int = 3650, now: datetime | None = None) -> bytes:
    """A self-signed X.509 certificate (PEM) for ``key``: subject ``nnassay dossier signer``,
    organisation ``nnassay``, and the key's SHA-256 fingerprint as serial number attribute.

    It proves only that the holder of the key signed; trust comes from checking the key or this
    certificate against one received out of band (``--public-key`` / a trusted certificate).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    check_key_type(key)
    public = key.public_key()
    fp = key_fingerprint(public)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"nnassay dossier signer {fp[:16]}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nnassay"),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, fp),
        ]
    )
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,  # non-repudiation: what pyHanko requires of a document signer
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)  # type: ignore[arg-type]  # checked by _check_key_type
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)  # type: ignore[arg-type]
    )
    algorithm = None if isinstance(key, Ed25519PrivateKey | Ed448PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(Encoding.PEM)  # type: ignore[arg-type]


def load_certificate(source: Path | bytes) -> x509.Certificate:
    """An X.509 certificate from a PEM or DER file (or its bytes); of a PEM chain, the first."""
    return load_certificates(source)[0]


def load_certificates(source: Path | bytes) -> list[x509.Certificate]:
    """The X.509 certificates of a PEM file (a chain: the signer's first, then its issuers) or of a
    DER file (one certificate)."""
    from cryptography import x509

    where = str(source) if isinstance(source, Path) else "certificate bytes"
    try:
        payload = source.read_bytes() if isinstance(source, Path) else source
    except OSError as exc:
        raise PdfSignatureError(
            f"cannot read certificate: {exc.strerror or exc}", file=where, fix="name an existing PEM file"
        ) from None
    try:
        if b"-----BEGIN" in payload:
            return x509.load_pem_x509_certificates(payload)
        return [x509.load_der_x509_certificate(payload)]
    except ValueError as exc:
        raise PdfSignatureError(
            f"not an X.509 certificate (PEM or DER): {exc}",
            file=where,
            fix="pass the signer's certificate, e.g. the PEM file your CA issued for the key",
        ) from None


def load_public_key(source: Path) -> PublicKeyTypes:
    """A public key from a PEM public key, private key or certificate file."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

    try:
        payload = source.read_bytes()
    except OSError as exc:
        raise PdfSignatureError(
            f"cannot read key file: {exc.strerror or exc}", file=str(source), fix="name an existing PEM file"
        ) from None
    if b"CERTIFICATE-----" in payload:
        return load_certificate(payload).public_key()
    try:
        return load_pem_public_key(payload)
    except ValueError:
        pass
    try:
        return load_pem_private_key(payload, password=None).public_key()
    except (ValueError, TypeError) as exc:
        raise PdfSignatureError(
            f"not a PEM public key, private key or certificate: {exc}",
            file=str(source),
            fix="pass the .pub file written by nnassay evidence keygen, or the signer's certificate",
        ) from None
