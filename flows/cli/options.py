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
        help="Ed25519 private key (PEM) to sign manifest.json with; its public key fingerprint"
        " goes into the evidence. Keep it chmod 600 (a warning names looser modes).",
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
