"""Typer options shared by `assess`, `lifecycle` and `schedule`; each becomes a field of the request.

Imports stay light (fast --help): the signing key is read only when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SignKey = Annotated[
    Path | None,
    typer.Option(
        "--sign-key",
        help="Ed25519 private key (PEM) to sign manifest.json and the dossier PDF (PAdES) with; its"
        " public key fingerprint goes into the evidence. Keep it chmod 600 (a warning names looser modes).",
    ),
]
SignCert = Annotated[
    Path | None,
    typer.Option(
        "--sign-cert",
        help="X.509 certificate (PEM: the signer's first, then its issuers) of --sign-key for the"
        " dossier's PAdES signature (default: a self-signed certificate made from the key).",
    ),
]
JunitXml = Annotated[
    Path | None,
    typer.Option(
        "--junit-xml",
        help="Also write a JUnit XML report: one test case per goal (fail: failure; inconclusive: error).",
    ),
]
ModelUri = Annotated[
    str | None,
    typer.Option(
        "--model-uri",
        help="Assess this MLflow registry model (models:/NAME/VERSION or models:/NAME@ALIAS)"
        " instead of the spec's model.path; only its ONNX file is downloaded; the version is tagged"
        " with the verdict afterwards.",
    ),
]
Dask = Annotated[
    str | None,
    typer.Option(
        "--dask", help="Run tests on the Dask scheduler at this address (default: $NNASSAY_DASK_ADDRESS)."
    ),
]


def check_sign_key(path: Path | None) -> None:
    """Read the signing key before the run starts: exit 2 when it cannot be used; warn (once) when
    others can read it."""
    if path is None:
        return
    from nnassay.tasks.governance.integrity import SigningKeyError
    from nnassay.tasks.governance.records import load_signer

    try:
        load_signer(path, warn=lambda message: typer.echo(f"nnassay: warning: {message}", err=True))
    except SigningKeyError as exc:
        typer.echo(f"nnassay: error: {exc}", err=True)
        raise typer.Exit(2) from None


def check_sign_cert(path: Path | None, sign_key: Path | None) -> None:
    """Read the dossier certificate before the run starts: exit 2 when it cannot be read, is given
    without --sign-key, or is for another key than --sign-key."""
    if path is None:
        return
    if sign_key is None:
        typer.echo("nnassay: error: --sign-cert needs --sign-key (the key the certificate is for)", err=True)
        raise typer.Exit(2)
    from nnassay.tasks.governance.pdf_keys import PdfSignatureError, key_fingerprint, load_certificates
    from nnassay.tasks.governance.records import load_signer

    try:
        cert = load_certificates(path)[0]
        key = load_signer(sign_key, warn=lambda message: None)
    except PdfSignatureError as exc:
        typer.echo(f"nnassay: error: {exc}", err=True)
        raise typer.Exit(2) from None
    if key is not None and key_fingerprint(cert.public_key()) != key_fingerprint(key.public_key()):
        typer.echo(
            f"nnassay: error: {path}: the certificate ({cert.subject.rfc4514_string()}) is for another key"
            f" than {sign_key}; pass the certificate issued for the signing key",
            err=True,
        )
        raise typer.Exit(2)
