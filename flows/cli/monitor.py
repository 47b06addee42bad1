"""Monitoring commands of the `nnassay` CLI: monitor field data now, or serve the monitoring on a schedule.

``register(app)`` adds them to the main Typer app; imports stay inside the commands (fast --help).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nnassay.flows.cli.options import Debug, Verbose, fail, schedule_or_exit

if TYPE_CHECKING:
    from nnassay.schemas.monitoring import MonitoringRecord, MonitorRequest

EXIT_NO_DRIFT, EXIT_DRIFT, EXIT_INVALID, EXIT_INSUFFICIENT = 0, 1, 2, 3

Spec = Annotated[Path, typer.Argument(help="Assessment spec (YAML or JSON): its data are the reference.")]
Field = Annotated[
    Path,
    typer.Option(
        "--field",
        help="Field data: one batch (.npz or .csv, labels optional; an image folder) or a folder of"
        " batches, each compared with the spec's data.",
    ),
]
Output = Annotated[
    Path, typer.Option("--output", "-o", help="Folder of monitoring.json, the report and the manifest.")
]
MlflowUri = Annotated[
    str | None,
    typer.Option(
        "--mlflow-uri",
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlflow.db beside the"
        " output folder, where `nnassay assess` keeps it).",
    ),
]
NoTrack = Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow (and link no assessment).")]
Reassess = Annotated[
    bool,
    typer.Option(
        "--reassess",
        help="On drift in a labelled batch: write derived-spec.yaml (the goals plus a domain-shift goal"
        " on that batch) and run the lifecycle assessment on it into <output>/reassessment.",
    ),
]
Alpha = Annotated[float, typer.Option("--alpha", help="False-alarm rate of each batch's drift verdict.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the permutation test and the bootstrap.")]


def register(app: typer.Typer) -> None:
    """Add the `monitor`, `monitor-verify` and `monitor-schedule` commands to the CLI."""
    app.command("monitor")(monitor)
    app.command("monitor-verify")(monitor_verify)
    app.command("monitor-schedule")(monitor_schedule)


def _request(
    spec: Path,
    field: Path,
    output: Path,
    mlflow_uri: str | None,
    *,
    track: bool,
    reassess: bool,
    alpha: float,
    seed: int,
) -> MonitorRequest:
    """The checked request: spec readable, field path present (exit 2 before any flow starts)."""
    from pydantic import ValidationError

    from nnassay.schemas.monitoring import MonitorRequest
    from nnassay.tasks.errors import AssessmentError, DataError
    from nnassay.tasks.io.files import ensure_writable_dir
    from nnassay.tasks.io.spec_io import read_spec

    read_spec(spec)
    if not field.exists():
        raise DataError(
            f"field data {field} does not exist", file=str(field), fix="pass an existing file or folder"
        )
    ensure_writable_dir(output)
    try:
        request = MonitorRequest(
            spec_path=spec.resolve(),
            field_path=field.resolve(),
            output=output.resolve(),
            mlflow_tracking_uri=mlflow_uri,
            track=track,
            reassess=reassess,
            alpha=alpha,
            seed=seed,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise AssessmentError(
            f"--{error['loc'][0]}: {error['msg']}", fix="see nnassay monitor --help"
        ) from None
    if track or reassess:  # a tracking server that does not answer fails now, in one line
        from nnassay.flows.cli.servers import check_mlflow_server
        from nnassay.flows.monitor import tracking_uri

        check_mlflow_server(tracking_uri(request))
    return request


def monitor(
    spec: Spec,
    field: Field,
    output: Output = Path("runs/monitor"),
    mlflow_uri: MlflowUri = None,
    no_track: NoTrack = False,
    reassess: Reassess = False,
    alpha: Alpha = 0.05,
    seed: Seed = 0,
    debug: Debug = False,
    verbose: Verbose = False,
) -> None:
    """Compare field data with the data SPEC was assessed on: per-feature or image tests, the model's
    outputs, OOD rate and accuracy, one verdict per batch. Writes monitoring.json, monitoring.html and
    .pdf and manifest.json; logs an MLflow run (metrics with step = batch time). Exit 0: no drift;
    1: drift; 2: invalid input; 3: insufficient data (a batch too small for the tests: nothing
    reliable was measured, so it never passes as 0)."""
    from nnassay.flows.cli.options import quiet_libraries

    quiet_libraries(debug=debug, verbose=verbose)
    from nnassay.tasks.errors import AssessmentError
    from nnassay.tasks.io.registry_models import download_scope

    try:
        with download_scope():  # a models:/ model.path is downloaded once (the check and the flow)
            request = _request(
                spec, field, output, mlflow_uri, track=not no_track, reassess=reassess, alpha=alpha, seed=seed
            )
            result = _run(request)
    except AssessmentError as exc:
        fail(exc, debug)
    _print_summary(result, request.output)
    raise typer.Exit(_exit_code(result))


def _run(request: MonitorRequest) -> MonitoringRecord:
    """Run the monitoring flow; return its record, raise what it raised."""
    from nnassay.flows.monitor import monitor_field
    from nnassay.schemas.monitoring import MonitoringRecord

    state = monitor_field(request, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, MonitoringRecord):
        return outcome
    if isinstance(outcome, BaseException):
        raise outcome
    raise RuntimeError(f"the monitoring flow run ended {state.type.value}: {state.message}")


def _exit_code(result: MonitoringRecord) -> int:
    from nnassay.tasks.monitoring.records import EXIT_CODES

    return EXIT_CODES[result.verdict]


def _print_summary(result: MonitoringRecord, output: Path) -> None:
    from nnassay.reports.monitoring import VERDICT_WORDS

    typer.echo(f"monitoring: {VERDICT_WORDS[result.verdict].upper()}  {result.summary}")
    for b in result.batches:
        typer.echo(f"  {b.name:<28} {VERDICT_WORDS[b.report.verdict]:<18} {b.report.summary}")
    link = result.assessment_evidence_sha256
    typer.echo(f"monitors: assessment evidence {link}" if link else "monitors: no tracked assessment found")
    if result.reassessment is not None:
        r = result.reassessment
        done = f"{r.run_folder} (overall {r.overall})" if r.evidence_sha256 else f"not run ({r.reason})"
        typer.echo(f"reassess: {r.derived_spec or '-'} -> {done}")
    typer.echo(f"record:   {output / 'monitoring.json'}\nreport:   {output / 'monitoring.pdf'}")
    if result.mlflow_run_id:
        typer.echo(f"mlflow:   run {result.mlflow_run_id} at {result.mlflow_tracking_uri}")


def monitor_verify(
    folder: Annotated[
        Path, typer.Argument(help="A monitoring output folder (monitoring.json, manifest.json).")
    ],
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-uri", help="Also check that the monitored assessment is recorded in this store."
        ),
    ] = None,
) -> None:
    """Check a monitoring folder against its manifest (every file, monitoring.json, the chain link).
    Exit 0: intact; 1: tampered (each problem named); 2: not a monitoring folder."""
    from nnassay.tasks.monitoring.records import verify_monitoring

    v = verify_monitoring(folder, tracking_uri=mlflow_uri)
    typer.echo(f"{v.status}: {folder}")
    for line in [*(f"  problem: {p}" for p in v.problems), *(f"  ok: {c}" for c in v.checked)]:
        typer.echo(line)
    for note in v.notes:
        typer.echo(f"  note: {note}")
    if v.unreadable:
        typer.echo(f"nnassay: error: {v.unreadable}", err=True)
    raise typer.Exit(v.exit_code)


def monitor_schedule(
    spec: Spec,
    field: Field,
    interval: Annotated[float | None, typer.Option("--interval", help="Run every this many seconds.")] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="Or: a cron schedule, e.g. '0 * * * *'.")] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of the cron schedule.")] = "UTC",
    name: Annotated[
        str | None, typer.Option("--name", help="Deployment name (default: monitor-<spec id>).")
    ] = None,
    output: Output = Path("runs/monitor"),
    mlflow_uri: MlflowUri = None,
    reassess: Reassess = False,
    alpha: Alpha = 0.05,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the deployment and exit.")] = False,
    debug: Debug = False,
    verbose: Verbose = False,
) -> None:
    """Serve the monitoring of SPEC's field data (PATH, re-read at every run: new batches dropped into
    a folder are picked up) as a Prefect deployment; each run writes <output>/<UTC time>/. Runs until
    stopped. Exit 2: invalid option or input."""
    from nnassay.flows.cli.options import quiet_libraries

    quiet_libraries(debug=debug, verbose=verbose)
    from nnassay.flows.monitor import monitor_field, tracking_uri
    from nnassay.tasks.errors import AssessmentError
    from nnassay.tasks.io.registry_models import download_scope
    from nnassay.tasks.io.spec_io import read_spec

    when = schedule_or_exit(cron=cron, interval=interval, timezone=timezone, debug=debug)  # before any read
    try:
        with download_scope():  # a models:/ model.path is checked, then its download removed
            request = _request(
                spec, field, output, mlflow_uri, track=True, reassess=reassess, alpha=alpha, seed=0
            )
            spec_id = read_spec(request.spec_path).id
    except AssessmentError as exc:
        fail(exc, debug)
    # every run shares one store (the link to the assessments) and gets its own folder
    request = request.model_copy(update={"mlflow_tracking_uri": tracking_uri(request), "run_subfolder": True})
    schedules = [when.to_prefect()]
    parameters = {"request": request.model_dump(mode="json")}
    shown = {"deployment": name or f"monitor-{spec_id}", "schedule": when.describe(), "flow": "monitor-field"}
    typer.echo(json.dumps({**shown, "parameters": parameters}, indent=2))
    if dry_run:
        return
    monitor_field.serve(
        name=shown["deployment"],
        schedules=schedules,
        tags=["nnassay", "monitoring", spec_id],
        parameters=parameters,
        description=f"Field monitoring of {spec_id!r}: {request.field_path}",
    )
