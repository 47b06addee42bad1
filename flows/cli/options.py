"""Typer options shared by `assess`, `lifecycle`, `schedule` and `monitor`; each becomes a field of the
request, or sets how much the libraries underneath may print (`quiet_libraries`).

Imports stay light (fast --help): the signing key is read only when a command runs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from nnassay.schemas.schedule import LifecycleSchedule

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
        " instead of the spec's model.path; its artifact folder is downloaded (external-data files with it, nothing unpickled); the version is tagged"
        " with the verdict afterwards.",
    ),
]
Dask = Annotated[
    str | None,
    typer.Option(
        "--dask", help="Run tests on the Dask scheduler at this address (default: $NNASSAY_DASK_ADDRESS)."
    ),
]

Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        help="Also show what MLflow, Prefect and ONNX Runtime print (INFO logs, run links, download"
        " bars, warnings); hidden by default, shown by --debug too.",
    ),
]
Debug = Annotated[
    bool,
    typer.Option("--debug", help="Show tracebacks (bad input still exits 2) and every library's debug logs."),
]
EXIT_INVALID = 2  # bad input (1 means a goal failed)


def fail(exc: BaseException, debug: bool) -> NoReturn:
    """Bad input: one line naming the problem and the fix, exit 2 (with --debug, the traceback first:
    the exit code stays 2, since 1 means a goal failed). Every command's --debug ends here."""
    if debug:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(f"nnassay: error: {exc}", err=True)
    raise typer.Exit(EXIT_INVALID)


# Environment read by the libraries when they are imported (a value the user set is kept)
_QUIET_ENV = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # "Creating initial MLflow database tables..." and other INFO
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # "Downloading artifacts" bars (models:/ URIs)
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # "View run ... at" / "View experiment at"
}
_SET_BY_NNASSAY = "NNASSAY_QUIETED"  # which of them nnassay set (a later --verbose unsets those only)
ORT_WARNING, ORT_ERROR = 2, 3  # ONNX Runtime logger severities


class LibraryWarnings(logging.Filter):
    """Drops warnings that libraries send to the root logger (ONNX Runtime's quantiser: 'Please consider
    to run pre-processing before quantization'); nnassay records what matters in the evidence."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and f"{os.sep}onnxruntime{os.sep}" in record.pathname)


def quiet_libraries(*, debug: bool, verbose: bool) -> None:
    """Hide third-party noise (MLflow INFO lines and run links, download bars, Prefect's INFO lines,
    ONNX Runtime warnings) unless ``verbose`` or ``debug``; call before Prefect or MLflow is imported.
    Levels the user set in the environment win; nnassay's own progress lines are never hidden."""
    loud = verbose or debug
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "DEBUG" if debug else "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's own embedded server (lifecycle runs) can need more than its 20 s on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    ours = set(filter(None, os.environ.get(_SET_BY_NNASSAY, "").split(",")))
    for key, value in _QUIET_ENV.items():
        if loud and key in ours:
            del os.environ[key]  # set by an earlier quiet command in this process
            ours.discard(key)
        elif not loud and key not in os.environ:
            os.environ[key] = value
            ours.add(key)
    os.environ[_SET_BY_NNASSAY] = ",".join(sorted(ours))
    if "mlflow" in sys.modules:  # imported already: its logger was configured at import
        logging.getLogger("mlflow").setLevel(logging.INFO if loud else logging.WARNING)
    root = logging.getLogger()
    for old in [f for f in root.filters if isinstance(f, LibraryWarnings)]:
        root.removeFilter(old)
    if not loud:
        root.addFilter(LibraryWarnings())
    import onnxruntime  # small; loaded by every assessment anyway

    onnxruntime.set_default_logger_severity(ORT_WARNING if loud else ORT_ERROR)


def check_sign_key(path: Path | None, *, debug: bool = False) -> None:
    """Read the signing key before the run starts: exit 2 when it cannot be used; warn (once) when
    others can read it."""
    if path is None:
        return
    from nnassay.tasks.governance.integrity import SigningKeyError
    from nnassay.tasks.governance.records import load_signer

    try:
        load_signer(path, warn=lambda message: typer.echo(f"nnassay: warning: {message}", err=True))
    except SigningKeyError as exc:
        fail(exc, debug)


def schedule_or_exit(
    *, cron: str | None, interval: float | None, timezone: str, debug: bool = False
) -> LifecycleSchedule:
    """The schedule the --cron/--interval/--timezone options give; exit 2 with one line naming the wrong
    option and its fix (for a cron string: the field out of range, its range and the value given),
    before anything is read, served or contacted."""
    from nnassay.schemas.schedule import LifecycleSchedule, ScheduleOptionError

    try:
        return LifecycleSchedule.from_options(cron=cron, interval=interval, timezone=timezone)
    except ScheduleOptionError as exc:
        field_fix = cron_field_fix(cron) if exc.option == "--cron" and cron is not None else None
        named = ScheduleOptionError("--cron", cron, field_fix) if field_fix else exc
        fail(named.with_traceback(exc.__traceback__), debug)


# The fields of a cron string as Prefect reads them (5; a 6th is seconds, a 7th the year), with the
# values each takes (besides * , - /)
CRON_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT (0 and 7 = Sunday)"),
    ("second", "0-59"),
    ("year", "1970-2099"),
)
CRON_EXAMPLE = "e.g. --cron '0 3 * * 1' for Mondays 03:00"


def cron_field_fix(cron: str) -> str | None:
    """Which field of a cron string Prefect refuses, its range and the value given, e.g. "the minute
    (field 1 of 5) is '61'; allowed: 0-59 ...". Each field is checked alone by Prefect's own
    ``CronSchedule`` (the others set to *), so what Prefect accepts is accepted here; None when no
    single field is at fault."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    fields = cron.split()
    if not 5 <= len(fields) <= len(CRON_FIELDS):
        return (
            f"it has {len(fields)} field(s); give 5: 'minute hour day-of-month month day-of-week',"
            f" {CRON_EXAMPLE}"
        )
    for i, value in enumerate(fields):
        alone = ["*"] * len(fields)
        alone[i] = value
        try:
            CronSchedule(cron=" ".join(alone))
        except ValidationError:
            name, allowed = CRON_FIELDS[i]
            return (
                f"the {name} (field {i + 1} of {len(fields)}) is {value[:32]!r}; allowed: {allowed},"
                f" with * , - / ({CRON_EXAMPLE})"
            )
    return None


def check_sign_cert(path: Path | None, sign_key: Path | None, *, debug: bool = False) -> None:
    """Read the dossier certificate before the run starts: exit 2 when it cannot be read, is given
    without --sign-key, or is for another key than --sign-key."""
    if path is None:
        return
    from nnassay.tasks.errors import AssessmentError

    if sign_key is None:
        fail(AssessmentError("--sign-cert needs --sign-key (the key the certificate is for)"), debug)
    from nnassay.tasks.governance.pdf_keys import PdfSignatureError, key_fingerprint, load_certificates
    from nnassay.tasks.governance.records import load_signer

    try:
        cert = load_certificates(path)[0]
        key = load_signer(sign_key, warn=lambda message: None)
    except PdfSignatureError as exc:
        fail(exc, debug)
    if key is not None and key_fingerprint(cert.public_key()) != key_fingerprint(key.public_key()):
        fail(
            AssessmentError(
                f"{path}: the certificate ({cert.subject.rfc4514_string()}) is for another key"
                f" than {sign_key}; pass the certificate issued for the signing key"
            ),
            debug,
        )
