"""Governance-record commands: `nnassay evidence verify|keygen`, `nnassay report`, and the record
options of `nnassay assess` (--sign-key, --junit-xml, --model-uri). Heavy imports stay inside commands.
"""

from __future__ import annotations

import inspect
import os
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_INTACT, EXIT_TAMPERED, EXIT_UNREADABLE = 0, 1, 2
evidence_app = typer.Typer(
    help="Check and manage evidence records (manifest, hash chain, signature).", no_args_is_help=True
)

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


@evidence_app.command("verify")
def verify_cmd(
    path: Annotated[Path, typer.Argument(help="A run folder, an evidence.json or a dossier PDF.")],
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
            help="Trusted Ed25519 public key (PEM) the signature must verify with (default: manifest.pub of the run, checked against the fingerprint in the evidence).",
        ),
    ] = None,
) -> None:
    """Check digests, signature, MLflow tags and hash chain. Exit 0 intact, 1 tampered (each mismatch
    is named), 2 unreadable."""
    from nnassay.tasks.governance.integrity import VerifyOptions, verify

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = verify(
        path,
        VerifyOptions(
            history=tuple(history or ()),
            tracking_uri=mlflow_uri,
            use_tracker=not no_mlflow,
            public_key=public_key,
        ),
    )
    for line in result.checked:
        typer.echo(f"  ok       {line}")
    for line in result.notes:
        typer.echo(f"  note     {line}")
    for line in result.problems:
        typer.echo(f"  TAMPERED {line}")
    if result.unreadable:
        typer.echo(f"nnassay: error: {result.unreadable}", err=True)
    typer.echo(f"{result.status}: {path}")
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
            help="The run's Ed25519 key: embed a signature of the evidence, as the original dossier of a signed run does.",
        ),
    ] = None,
) -> None:
    """Re-render the dossier (PDF/A-3 with the evidence embedded) from a stored evidence bundle alone."""
    from pydantic import ValidationError

    from nnassay.reports.render import write_dossier
    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.tasks.governance.integrity import SigningKeyError, fingerprint, load_signing_key

    try:
        payload = evidence.read_bytes()
        bundle = EvidenceBundle.model_validate_json(payload)
    except (OSError, ValidationError) as exc:
        typer.echo(f"nnassay: error: {evidence}: not a readable evidence bundle: {str(exc)[:500]}", err=True)
        raise typer.Exit(2) from None
    key = None
    if sign_key is not None:
        try:
            key = load_signing_key(sign_key)
        except SigningKeyError as exc:
            typer.echo(f"nnassay: error: {exc}", err=True)
            raise typer.Exit(2) from None
        if fingerprint(key.public_key()) != bundle.provenance.signer_public_key_sha256:
            typer.echo(
                f"nnassay: error: {sign_key} is not the key that signed this run "
                f"({bundle.provenance.signer_public_key_sha256 or 'unsigned'})",
                err=True,
            )
            raise typer.Exit(2)
    files = write_dossier(
        bundle,
        payload,
        output,
        run_dir=evidence.resolve().parent,
        html=output.with_suffix(".html") if html else None,
        markdown=output.with_suffix(".md") if markdown else None,
        signing_key=key,
    )
    for path in (files.pdf, files.html, files.markdown):
        if path:
            typer.echo(str(path))


def _extend_assess(app: typer.Typer) -> None:
    """Add --sign-key, --junit-xml and --model-uri to the existing `assess` command."""
    info = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == "assess")  # type: ignore[union-attr]
    original = info.callback
    assert original is not None
    hints = typing.get_type_hints(original, include_extras=True)
    params = [p.replace(annotation=hints[p.name]) for p in inspect.signature(original).parameters.values()]
    extra = {"sign_key": SignKey, "junit_xml": JunitXml, "model_uri": ModelUri}
    params += [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
        for n, a in extra.items()
    ]

    def assess(**kwargs: Any) -> None:
        sign_key, junit_xml, model_uri = (kwargs.pop(n) for n in extra)
        _configure_records(sign_key, model_uri, kwargs.get("mlflow_uri"))
        try:
            original(**kwargs)
        except typer.Exit as done:
            if junit_xml is not None and done.exit_code in (0, 1):
                _write_junit(kwargs["output"], junit_xml)
            raise
        finally:
            _configure_records(None, None, None)

    assess.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    assess.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
    assess.__doc__ = original.__doc__
    info.callback = assess


def _configure_records(sign_key: Path | None, model_uri: str | None, mlflow_uri: str | None) -> None:
    from nnassay.tasks.governance import records
    from nnassay.tasks.governance.integrity import KeyPermissionWarning, SigningKeyError, load_signing_key
    from nnassay.tasks.io import registry_models

    if sign_key is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", KeyPermissionWarning)
            try:
                load_signing_key(sign_key)  # fail before the run starts, and warn once
            except SigningKeyError as exc:
                typer.echo(f"nnassay: error: {exc}", err=True)
                raise typer.Exit(2) from None
        for w in caught:
            typer.echo(f"nnassay: warning: {w.message}", err=True)
    records.configure(sign_key=sign_key)
    registry_models.configure(model_uri=model_uri, registry_uri=mlflow_uri)


def _write_junit(run_dir: Path, target: Path) -> None:
    from nnassay.reports.junit import junit_xml
    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.tasks.io.files import write_atomic

    bundle = EvidenceBundle.model_validate_json((run_dir / "evidence.json").read_text())
    write_atomic(target, junit_xml(bundle))
    typer.echo(f"junit:    {target}")


def register(app: typer.Typer) -> None:
    """Register the record commands on the nnassay app."""
    app.add_typer(evidence_app, name="evidence")
    app.command("report")(report_cmd)
    _extend_assess(app)
