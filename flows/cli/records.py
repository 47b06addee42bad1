"""Governance-record commands: `nnassay evidence verify|keygen` and `nnassay report`. Heavy imports
stay inside commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from nnassay.flows.cli.options import Debug, check_sign_cert, fail

EXIT_INTACT, EXIT_TAMPERED, EXIT_UNREADABLE = 0, 1, 2
evidence_app = typer.Typer(
    help="Check and manage evidence records (manifest, hash chain, signature).", no_args_is_help=True
)


@evidence_app.command("verify")
def verify_cmd(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="A run folder, an evidence.json, a dossier PDF, or an MLflow run as runs:/RUN_ID"
            " (with --mlflow-uri)."
        ),
    ] = None,
    history: Annotated[
        list[Path] | None,
        typer.Option(
            "--history",
            help="Folder(s) holding earlier run folders (or evidence files) of the same spec, to check the hash chain.",
        ),
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-uri",
            help="MLflow store to check tags and the chain against (default: the recorded one, when it is a local SQLite file).",
        ),
    ] = None,
    no_mlflow: Annotated[
        bool, typer.Option("--no-mlflow", help="Do not consult MLflow; use --history only.")
    ] = False,
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="Trusted public key (PEM) the signatures must verify with: manifest.sig and the dossier's"
            " PDF signature (default: manifest.pub of the run, checked against the fingerprint in the"
            " evidence); a missing or different signature is then tampering.",
        ),
    ] = None,
    trusted_cert: Annotated[
        Path | None,
        typer.Option(
            "--trusted-cert",
            help="Certificate (PEM or DER: the signer's, or its issuing CA) the dossier PDF's signer must"
            " chain to; a missing or different signature is then tampering.",
        ),
    ] = None,
    mlflow_run: Annotated[
        str | None,
        typer.Option(
            "--mlflow-run",
            help="Verify the records stored on this MLflow run (RUN_ID or runs:/RUN_ID; with"
            " --mlflow-uri): artifacts against its manifest and the digests tagged on the run.",
        ),
    ] = None,
) -> None:
    """Check digests, signatures, MLflow tags and copies, the result cache and the hash chain; a dossier
    PDF also against a fresh rendering of its evidence. Exit 0 intact, 1 tampered (each mismatch is
    named), 2 unreadable."""
    from nnassay.tasks.governance.integrity import RUNS_URI, VerifyOptions, verify

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if (path is None) == (mlflow_run is None):
        typer.echo("nnassay: error: give one PATH (or runs:/RUN_ID), or --mlflow-run RUN_ID", err=True)
        raise typer.Exit(EXIT_UNREADABLE)
    if mlflow_run is not None:
        path = Path(RUNS_URI + mlflow_run.removeprefix(RUNS_URI))
    assert path is not None
    result = verify(
        path,
        VerifyOptions(
            history=tuple(history or ()),
            tracking_uri=mlflow_uri,
            use_tracker=not no_mlflow,
            public_key=public_key,
            trusted_cert=trusted_cert,
        ),
    )
    for line in result.checked:
        typer.echo(f"  ok       {line}")
    for line in dict.fromkeys(result.notes):  # once each (a linked earlier run can repeat a note)
        typer.echo(f"  note     {line}")
    for line in result.problems:
        typer.echo(f"  TAMPERED {line}")
    if result.unreadable:
        typer.echo(f"nnassay: error: {result.unreadable}", err=True)
    typer.echo(f"{result.status}: {result.target}")
    raise typer.Exit(result.exit_code)


@evidence_app.command("keygen")
def keygen_cmd(
    path: Annotated[
        Path,
        typer.Argument(
            help="Where to write the private key (PEM, mode 600); the public key goes to PATH.pub."
        ),
    ],
) -> None:
    """Write a new Ed25519 signing key pair for --sign-key."""
    from nnassay.tasks.governance.integrity import fingerprint, generate_key, load_public_key

    if path.exists():
        typer.echo(f"nnassay: error: {path} exists; choose a new path (keys are never overwritten)", err=True)
        raise typer.Exit(2)
    key, pub = generate_key(path)
    typer.echo(f"private key: {key}\npublic key:  {pub}\nfingerprint: {fingerprint(load_public_key(pub))}")


def report_cmd(
    evidence: Annotated[
        Path, typer.Argument(help="A stored evidence.json (pictures are read from its folder).")
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="PDF to write (HTML and Markdown beside it with --html/--markdown)."
        ),
    ] = Path("dossier.pdf"),
    html: Annotated[
        bool, typer.Option("--html", help="Also write the self-contained HTML next to the PDF.")
    ] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Also write the Markdown summary next to the PDF.")
    ] = False,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            help="The run's Ed25519 key: embed a signature of the evidence and sign the PDF (PAdES), as the original dossier of a signed run is.",
        ),
    ] = None,
    sign_cert: Annotated[
        Path | None,
        typer.Option(
            "--sign-cert",
            help="Certificate (PEM) of --sign-key for the PDF signature (default: self-signed from the key).",
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Re-render the dossier (PDF/A-3 with the evidence embedded) from a stored evidence bundle alone."""
    from pydantic import ValidationError

    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.tasks.errors import AssessmentError
    from nnassay.tasks.governance.dossier import write_dossier
    from nnassay.tasks.governance.integrity import SigningKeyError, fingerprint, load_signing_key

    try:
        payload = evidence.read_bytes()
        bundle = EvidenceBundle.model_validate_json(payload)
    except (OSError, ValidationError) as exc:
        unreadable = AssessmentError(f"{evidence}: not a readable evidence bundle: {str(exc)[:500]}")
        unreadable.__cause__ = exc  # --debug shows where reading failed
        fail(unreadable, debug)
    check_sign_cert(sign_cert, sign_key, debug=debug)
    key = None
    if sign_key is not None:
        try:
            loaded = load_signing_key(sign_key)
        except SigningKeyError as exc:
            fail(exc, debug)
        key = loaded
        if fingerprint(loaded.public_key()) != bundle.provenance.signer_public_key_sha256:
            fail(
                AssessmentError(
                    f"{sign_key} is not the key that signed this run "
                    f"({bundle.provenance.signer_public_key_sha256 or 'unsigned'})"
                ),
                debug,
            )
    files = write_dossier(
        bundle,
        payload,
        output,
        run_dir=evidence.resolve().parent,
        html=output.with_suffix(".html") if html else None,
        markdown=output.with_suffix(".md") if markdown else None,
        signing_key=key,
        certificate=sign_cert,
    )
    for path in (files.pdf, files.html, files.markdown):
        if path:
            typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Register the record commands on the nnassay app."""
    app.add_typer(evidence_app, name="evidence")
    app.command("report")(report_cmd)
