"""The `nnassay` command line. Imports stay light here: each command imports what it needs."""

from __future__ import annotations

import contextlib
import inspect
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nnassay.flows.cli import lifecycle as cli_lifecycle
from nnassay.flows.cli import monitor as cli_monitor
from nnassay.flows.cli import plan as cli_plan
from nnassay.flows.cli import records as cli_records
from nnassay.flows.cli.options import (
    Dask,
    Debug,
    JunitXml,
    ModelUri,
    SignCert,
    SignKey,
    Verbose,
    check_sign_cert,
    check_sign_key,
    fail,
    quiet_libraries,
)
from nnassay.flows.cli.servers import (
    EmbeddedPrefect,
    Interrupted,
    check_mlflow_server,
    embedded_prefect_early,
    exit_interrupted,
    install_signal_handlers,
    prefect_server,
    prepare_sqlite_store,
)

if TYPE_CHECKING:
    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.schemas.settings import AssessRequest

app = typer.Typer(
    name="nnassay",
    help="Assess the robustness of an ONNX neural network (ISO/IEC TR 24029-1 workflow: goals, plan,"
    " execution, interpretation) and leave governance records: an MLflow run, a JSON evidence"
    " bundle and a PDF dossier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_PASS, EXIT_NOT_PASSED, EXIT_INVALID = 0, 1, 2


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"nnassay {version('nnassay')}")
        raise typer.Exit(EXIT_PASS)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Assess the robustness of an ONNX neural network and leave governance records."""


@app.command()
def assess(
    spec: Annotated[Path, typer.Argument(help="Assessment spec (YAML or JSON): model, data and goals.")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Run folder for evidence.json, dossier.pdf, plan and artifacts."),
    ] = Path("runs/latest"),
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            "--mlflow-uri",
            help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else <folder holding --output>/mlflow.db,"
            " shared by the runs beside it).",
        ),
    ] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    cpu: Annotated[bool, typer.Option("--cpu", help="Use the CPU provider even when CUDA works.")] = False,
    dask: Dask = None,
    debug: Debug = False,
    verbose: Verbose = False,
    sign_key: SignKey = None,
    sign_cert: SignCert = None,
    junit_xml: JunitXml = None,
    model_uri: ModelUri = None,
) -> None:
    """Run a robustness assessment. Exit 0: every goal passed; 1: a goal failed or was inconclusive;
    2: invalid input or the run could not be done."""
    started = time.monotonic()
    quiet_libraries(debug=debug, verbose=verbose)
    check_sign_key(sign_key, debug=debug)  # an unusable key fails before anything starts
    check_sign_cert(sign_cert, sign_key, debug=debug)
    resume = f"finished tests are kept in {output}; run the same command again to resume"
    install_signal_handlers(resume)  # SIGTERM/SIGINT: stop within seconds, keep finished results, 143/130
    server = embedded_prefect_early()  # boots while the inputs are checked
    from nnassay.schemas.settings import AssessRequest, Settings
    from nnassay.tasks.errors import AssessmentError
    from nnassay.tasks.io.registry_models import download_scope

    settings = Settings()
    try:
        request = AssessRequest(
            spec_path=spec,
            output=output,
            track=not no_track,
            mlflow_tracking_uri=mlflow_uri or settings.mlflow_tracking_uri,
            prefer_cuda=settings.prefer_cuda and not cpu,
            command=_command_line(spec, output, mlflow_uri, no_track, cpu, dask, model_uri),
            sign_key=sign_key,
            sign_cert=sign_cert,
            model_uri=model_uri,
            junit_xml=junit_xml,
            dask_address=dask or settings.dask_address,
            progress=True,
        )
        server = prefect_server(server)  # the user's API (checked to answer) or the embedded one
        with download_scope():  # a models:/ version is downloaded once: the check and the flow share it
            _check_inputs(request)
            _warm_up(request)  # while the server may still be booting
            if server is not None:
                server.wait_ready(settings.prefect_startup_timeout_s)
            bundle = _run_flow(request, server)
    except AssessmentError as exc:
        _stop(server)
        fail(exc, debug)
        return
    except MemoryError:
        _stop(server)
        fail(
            AssessmentError("ran out of memory; assess fewer samples (goal budget.samples) or free memory"),
            debug,
        )
        return
    except Interrupted as stop:
        _stop(server)
        exit_interrupted(stop, resume)
    _stop(server)
    _print_summary(bundle, output, time.monotonic() - started)
    if junit_xml is not None:
        typer.echo(f"junit:    {junit_xml}")
    raise typer.Exit(EXIT_PASS if bundle.overall.value == "pass" else EXIT_NOT_PASSED)


def _check_inputs(request: AssessRequest) -> None:
    """Fail fast, before any work: the servers in use answer, the inputs are valid, the output is writable."""
    from nnassay.tasks.io.files import ensure_writable_dir
    from nnassay.tasks.io.stores import check_tracking_store
    from nnassay.tasks.pipeline.estimate import estimate_line
    from nnassay.tasks.pipeline.execute import preflight

    if request.track:
        check_mlflow_server(request.tracking_uri())
        check_tracking_store(request.tracking_uri())
    plan = preflight(  # bad input fails here, fast
        request.spec_path,
        prefer_cuda=request.prefer_cuda,
        model_uri=request.model_uri,
        registry_uri=request.mlflow_tracking_uri,
    )
    ensure_writable_dir(request.output)  # after the input checks: bad input leaves no empty folder
    typer.echo(estimate_line(plan), err=True)


def _warm_up(request: AssessRequest) -> None:
    """Work the flow needs anyway, done before waiting for the embedded server: a new local MLflow
    store (created the fast way) and the flow's imports (Prefect's engine, MLflow, the renderer)."""
    if request.track:
        prepare_sqlite_store(request.tracking_uri())
    import weasyprint  # noqa: F401

    import nnassay.flows.lifecycle  # noqa: F401


def _stop(server: EmbeddedPrefect | None) -> None:
    if server is not None:
        flush_prefect()
        server.stop()


def flush_prefect(timeout_s: float = 5.0) -> None:
    """Send Prefect's queued run logs and events while the embedded server still answers: once it has
    stopped they are lost ("Error logging to API") and their retries cost the exit over a second."""
    if "prefect.logging.handlers" not in sys.modules:
        return  # no flow ran: nothing queued
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a worker that never started has nothing to send
            worker.drain_all(timeout=timeout_s)


def _command_line(
    spec: Path,
    output: Path,
    mlflow_uri: str | None,
    no_track: bool,
    cpu: bool,
    dask: str | None,
    model_uri: str | None = None,
) -> str:
    """The `nnassay assess` command that reproduces this run, shell-quoted (recorded in the evidence)."""
    args = ["nnassay", "assess", str(spec), "--output", str(output)]
    args += ["--mlflow-uri", mlflow_uri] if mlflow_uri else []
    args += ["--model-uri", model_uri] if model_uri else []
    args += ["--dask", dask] if dask else []
    args += ["--no-track"] * no_track + ["--cpu"] * cpu
    return shlex.join(args)


def _run_flow(request: AssessRequest, server: EmbeddedPrefect | None) -> EvidenceBundle:
    from nnassay.flows.lifecycle import assess_runner

    with server.settings() if server is not None else contextlib.nullcontext():
        return assess_runner(request.dask_address)(request)


def _print_summary(bundle, output: Path, elapsed: float) -> None:  # type: ignore[no-untyped-def]
    from nnassay.reports.render import fmt_measure

    typer.echo(f"overall: {bundle.overall.value.upper()}  ({elapsed:.1f}s)")
    for v in bundle.verdicts:
        typer.echo(f"  {v.goal_id:<10} {v.verdict.value:<13} {v.metric} = {fmt_measure(v.measured)}")
    typer.echo(f"evidence: {output / 'evidence.json'}\ndossier:  {output / 'dossier.pdf'}")
    if bundle.provenance.mlflow_run_id:
        typer.echo(
            f"mlflow:   run {bundle.provenance.mlflow_run_id} at {bundle.provenance.mlflow_tracking_uri}"
        )
    from nnassay.flows.cli.runs import echo_flow_run

    echo_flow_run(bundle)


@app.command()
def schema(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the JSON Schema files.")] = Path(
        "schema"
    ),
) -> None:
    """Write the JSON Schemas of every stage: goals (the spec), plan, results, evidence."""
    import json

    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.schemas.goals import AssessmentSpec
    from nnassay.schemas.plan import AssessmentPlan
    from nnassay.schemas.results import MethodResult
    from nnassay.tasks.io.files import write_atomic

    for name, model in (
        ("goals", AssessmentSpec),
        ("plan", AssessmentPlan),
        ("results", MethodResult),
        ("evidence", EvidenceBundle),
    ):
        path = write_atomic(output / f"{name}.schema.json", json.dumps(model.model_json_schema(), indent=2))
        typer.echo(str(path))


@app.command("methods")
def list_registered() -> None:
    """List the registered methods with their family, clause, threats and metrics."""
    from nnassay.tasks.methods.registry import get_method, list_methods

    for name in list_methods():
        m = get_method(name)
        typer.echo(
            f"{name:<40} {m.family.value:<12} TR 24029-1 {m.clause:<8} threats={','.join(m.threats)}"
            f" metrics={','.join(m.metrics)}"
        )


@app.command(
    "verify",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def verify(ctx: typer.Context) -> None:
    """Check one VNN-LIB property on an ONNX model (VNN-COMP style):
    --onnx MODEL --vnnlib PROP [--timeout S] [--result-file F]. Prints sat, unsat, unknown or timeout
    on the first line. Exit 0 for any verdict; 1: the verifier crashed; 2: unreadable model or property.
    `nnassay verify --help` lists the options."""
    from nnassay.tasks.methods.formal.command import main as verify_main

    raise typer.Exit(verify_main(list(ctx.args)))


cli_lifecycle.register(app)  # lifecycle, schedule
cli_records.register(app)  # evidence verify / keygen, report
cli_monitor.register(app)  # monitor, monitor-verify, monitor-schedule
cli_plan.register(app)  # plan


def _command_summaries(typer_app: typer.Typer) -> None:
    """Each command's line in `nnassay --help`: its docstring's first paragraph as one reflowed text
    (rich help keeps the docstring's line breaks, which cut sentences in the middle there)."""
    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and doc:
            info.short_help = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _command_summaries(group.typer_instance)


_command_summaries(app)


def main() -> None:
    """Entry point for `python -m nnassay.flows.cli.app` (and `nnassay`): run the command, then exit
    at once (``exit_now``)."""
    try:
        app()
    except SystemExit as done:
        exit_now(done.code)


THREADS_END_S = 10.0  # at exit, running threads get this long to end before the process goes


def end_threads(timeout_s: float) -> bool:
    """What Python's own shutdown does before the exit handlers, within ``timeout_s``: idle thread-pool
    workers are told to stop (they wait for that signal, so joining them first never returns), then
    every other non-daemon thread is joined. True when all ended in time."""
    import threading

    def finish() -> None:
        with contextlib.suppress(Exception):
            from concurrent.futures import thread as pool_threads

            pool_threads._python_exit()  # the interpreter's own first shutdown step for pool workers
        for thread in threading.enumerate():
            if thread not in (threading.current_thread(), threading.main_thread()) and not thread.daemon:
                thread.join()

    waiter = threading.Thread(target=finish, name="nnassay-exit", daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    return not waiter.is_alive()


def exit_now(code: int | str | None) -> None:
    """Exit with ``code`` after what a normal exit does first (join the running threads, run the
    exit handlers: Prefect sends its last logs and events, servers stop), but without tearing down
    every imported module one by one, which takes 1 to 3 s after an assessment (torch, MLflow, Prefect
    and scipy loaded) and changes nothing on disk."""
    if isinstance(code, str):
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else 0 if code is None else 1
    import atexit

    end_threads(THREADS_END_S)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
