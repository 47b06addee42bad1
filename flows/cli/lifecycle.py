"""Lifecycle commands of the `nnassay` CLI: run one lifecycle assessment now, or serve it on a schedule.

``register(app)`` adds them to the main Typer app; imports stay inside the commands (fast --help).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from nnassay.flows.cli.options import (
    Dask,
    Debug,
    ModelUri,
    SignCert,
    SignKey,
    Verbose,
    check_sign_cert,
    check_sign_key,
    fail,
    schedule_or_exit,
)

EXIT_PASS, EXIT_NOT_PASSED, EXIT_INVALID = 0, 1, 2

Spec = Annotated[Path, typer.Argument(help="Assessment spec (YAML or JSON): model, data and goals.")]
OutputRoot = Annotated[
    Path,
    typer.Option("--output-root", "-o", help="Folder of the series; each run writes to <root>/<UTC time>."),
]
MlflowUri = Annotated[
    str | None,
    typer.Option(
        "--mlflow-uri",
        help="MLflow tracking URI shared by the runs (default: $MLFLOW_TRACKING_URI, else"
        " sqlite in the output root).",
    ),
]
Cpu = Annotated[bool, typer.Option("--cpu", help="Use the CPU provider even when CUDA works.")]


def register(app: typer.Typer) -> None:
    """Add the `lifecycle` and `schedule` commands to the CLI."""
    app.command("lifecycle")(lifecycle)
    app.command("schedule")(schedule)


def _request(
    spec: Path,
    output_root: Path,
    mlflow_uri: str | None,
    cpu: bool,
    *,
    sign_key: Path | None = None,
    sign_cert: Path | None = None,
    model_uri: str | None = None,
    dask: str | None = None,
    debug: bool = False,
) -> Any:
    from nnassay.schemas.settings import LifecycleRequest, Settings

    check_sign_key(sign_key, debug=debug)  # an unusable key fails now, not at the first scheduled run
    check_sign_cert(sign_cert, sign_key, debug=debug)
    settings = Settings()
    return LifecycleRequest(
        spec_path=spec.resolve(),
        output_root=output_root.resolve(),
        mlflow_tracking_uri=mlflow_uri,
        prefer_cuda=settings.prefer_cuda and not cpu,
        sign_key=sign_key.resolve() if sign_key else None,
        sign_cert=sign_cert.resolve() if sign_cert else None,
        model_uri=model_uri,
        dask_address=dask,
    )


def lifecycle(
    spec: Spec,
    output_root: OutputRoot = Path("runs/lifecycle"),
    mlflow_uri: MlflowUri = None,
    cpu: Cpu = False,
    debug: Debug = False,
    verbose: Verbose = False,
    sign_key: SignKey = None,
    sign_cert: SignCert = None,
    model_uri: ModelUri = None,
    dask: Dask = None,
) -> None:
    """Run one lifecycle assessment now: assess, compare every goal with the previous assessment of the
    spec (regressions), log the trend. Exit 0: every goal passed; 1: a goal failed or was
    inconclusive; 2: invalid input or the run could not be done."""
    from nnassay.flows.cli.app import _print_summary
    from nnassay.flows.cli.options import quiet_libraries

    quiet_libraries(debug=debug, verbose=verbose)
    from nnassay.flows.lifecycle import lifecycle_assess
    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.schemas.settings import Settings
    from nnassay.tasks.errors import AssessmentError
    from nnassay.tasks.io.registry_models import download_scope
    from nnassay.tasks.pipeline.execute import preflight

    started = time.monotonic()
    request = _request(
        spec,
        output_root,
        mlflow_uri,
        cpu,
        sign_key=sign_key,
        sign_cert=sign_cert,
        model_uri=model_uri,
        dask=dask,
        debug=debug,
    )
    with download_scope():  # a models:/ version is downloaded once: the check and the flow share it
        try:
            preflight(
                request.spec_path,
                prefer_cuda=request.prefer_cuda,
                model_uri=request.model_uri,
                registry_uri=request.tracking_uri(Settings()),
            )
        except AssessmentError as exc:
            fail(exc, debug)
        state = lifecycle_assess(request, return_state=True)
        outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, AssessmentError):
        fail(outcome, debug)
    if not isinstance(outcome, EvidenceBundle):
        raise outcome if isinstance(outcome, BaseException) else RuntimeError(str(state.message))
    folder = outcome.provenance.extra.get("run_folder")
    _print_summary(outcome, Path(str(folder)) if folder else request.output_root, time.monotonic() - started)
    for v in outcome.verdicts:
        for finding in v.findings:
            typer.echo(f"  {v.goal_id}: {finding}")
    raise typer.Exit(EXIT_PASS if outcome.overall.value == "pass" else EXIT_NOT_PASSED)


def schedule(
    spec: Spec,
    cron: Annotated[
        str | None, typer.Option("--cron", help="Cron schedule, e.g. '0 3 * * 1' (Mondays 03:00).")
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", help="Or: run every this many seconds.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name (default: the spec id).")
    ] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of the cron schedule.")] = "UTC",
    output_root: OutputRoot = Path("runs/lifecycle"),
    mlflow_uri: MlflowUri = None,
    cpu: Cpu = False,
    sign_key: SignKey = None,
    sign_cert: SignCert = None,
    model_uri: ModelUri = None,
    dask: Dask = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the deployment and exit.")] = False,
    debug: Debug = False,
    verbose: Verbose = False,
) -> None:
    """Serve lifecycle assessments of SPEC as a Prefect deployment on a cron or interval schedule.
    Runs until stopped (Ctrl-C pauses the schedule). Point PREFECT_API_URL at a Prefect server to see
    the deployment and its runs in the UI."""
    from nnassay.flows.cli.options import quiet_libraries

    quiet_libraries(debug=debug, verbose=verbose)
    from nnassay.tasks.errors import AssessmentError
    from nnassay.tasks.io.registry_models import download_scope
    from nnassay.tasks.io.spec_io import read_spec

    when = schedule_or_exit(cron=cron, interval=interval, timezone=timezone, debug=debug)  # before any read
    request = _request(
        spec,
        output_root,
        mlflow_uri,
        cpu,
        sign_key=sign_key,
        sign_cert=sign_cert,
        model_uri=model_uri,
        dask=dask,
        debug=debug,
    )
    try:
        with download_scope():  # a models:/ model.path is checked, then its download removed
            spec_id = read_spec(request.spec_path).id
    except AssessmentError as exc:
        fail(exc, debug)
    plan = deployment(request, name or spec_id, spec_id, cron=cron, interval=interval, timezone=timezone)
    shown = {
        "deployment": plan["name"],
        "schedule": when.describe(),
        "flow": "lifecycle-assess",
        "parameters": plan["parameters"],
    }
    typer.echo(json.dumps(shown, indent=2))
    if dry_run:
        return
    from nnassay.flows.lifecycle import lifecycle_assess

    lifecycle_assess.serve(**plan)


def deployment(
    request: Any, name: str, spec_id: str, *, cron: str | None, interval: float | None, timezone: str = "UTC"
) -> dict[str, Any]:
    """Keyword arguments of ``lifecycle_assess.serve`` for one spec and schedule (checked: ValueError)."""
    from nnassay.schemas.schedule import LifecycleSchedule

    when = LifecycleSchedule.from_options(cron=cron, interval=interval, timezone=timezone)
    return {
        "name": name,
        "schedules": [when.to_prefect()],
        "tags": ["nnassay", spec_id],
        "parameters": {"request": request.model_dump(mode="json")},
        "description": f"Lifecycle re-assessment of {spec_id!r} ({request.spec_path})",
    }
