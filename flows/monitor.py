"""The monitoring flow: field batches against the assessed data, records, and on drift a re-assessment.

read spec -> load model and reference data -> load field batches -> monitor each batch (a task per
batch) -> link the latest assessment -> (re-assess the derived spec) -> records -> report. Served on
an interval by ``nnassay monitor-schedule``.
"""

# No `from __future__ import annotations`: Prefect builds the parameter schema from the real types.
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, runtime, task
from prefect.cache_policies import NO_CACHE

from nnassay.flows import runs
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.monitoring import MonitoredBatch, MonitoringRecord, MonitorRequest, Reassessment
from nnassay.schemas.settings import Settings, project_store
from nnassay.tasks.governance.history import PastAssessment
from nnassay.tasks.governance.tracking import MlflowTracker
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.io.registry_models import download_scope
from nnassay.tasks.monitoring import records
from nnassay.tasks.monitoring.field_io import FieldBatch
from nnassay.tasks.monitoring.monitor import MonitorOptions, load_field, monitor


def tracking_uri(request: MonitorRequest) -> str:
    """The requested store, else $NNASSAY_MLFLOW_TRACKING_URI, else where `nnassay assess` keeps it."""
    uri = request.mlflow_tracking_uri or Settings().mlflow_tracking_uri
    return uri or f"sqlite:///{project_store(request.output)}"


@task(name="load inputs", cache_policy=NO_CACHE)
def load_inputs(request: MonitorRequest) -> tuple[AssessmentSpec, ModelRunner, Dataset, list[FieldBatch]]:
    """The spec, its model and reference data (checked as for an assessment), and the field batches."""
    from nnassay.tasks.io.spec_io import read_spec
    from nnassay.tasks.pipeline.execute import load_inputs as load_model_and_data

    spec = read_spec(request.spec_path)
    model, reference = load_model_and_data(spec, prefer_cuda=request.prefer_cuda)
    return spec, model, reference, load_field(request.field_path, spec.data, model)


@task(name="link assessment", cache_policy=NO_CACHE)
def link_assessment(uri: str | None, spec_id: str) -> PastAssessment | None:
    """The spec's latest tracked assessment, which this monitoring checks (the chain link)."""
    return records.latest_assessment(uri, spec_id)


@task(name="monitor batch", task_run_name="monitor {batch.name}", cache_policy=NO_CACHE)
def monitor_batch(
    reference: Dataset, batch: FieldBatch, model: ModelRunner, request: MonitorRequest, evidence: str | None
) -> MonitoredBatch:
    """Drift of one field batch against the reference data."""
    report = monitor(
        reference,
        batch.data,
        model,
        field_name=batch.name,
        assessment_evidence_sha256=evidence,
        options=MonitorOptions(alpha=request.alpha, seed=request.seed),
    )
    return MonitoredBatch(name=batch.name, modified=records.batch_time(batch), report=report)


def reassess(request: MonitorRequest, uri: str, monitored: list[MonitoredBatch]) -> Reassessment | None:
    """On drift in a labelled batch: the derived spec in the output folder, assessed by the lifecycle
    flow (a subflow) into <output>/reassessment/; None when nothing drifted."""
    from nnassay.flows.lifecycle import lifecycle_assess
    from nnassay.schemas.settings import LifecycleRequest
    from nnassay.tasks.io.files import sha256_file

    drifted = [b for b in monitored if b.report.verdict.value == "drift"]
    labelled = [b for b in drifted if b.report.labelled]
    if not drifted:
        return None
    if not labelled:
        return Reassessment(
            batch=drifted[0].name,
            derived_spec="",
            derived_spec_sha256="",
            reason="no drifted batch has labels",
        )
    chosen = labelled[-1]  # the last drifted batch with labels, by name
    spec = derive(request, chosen)
    lifecycle = LifecycleRequest(
        spec_path=spec.resolve(),
        output_root=(request.output / records.REASSESSMENT).resolve(),
        mlflow_tracking_uri=uri,
        prefer_cuda=request.prefer_cuda,
    )
    bundle = runs.bundle_of(lifecycle_assess(lifecycle, return_state=True))
    folder = Path(str(bundle.provenance.extra.get("run_folder", "")))
    return Reassessment(
        batch=chosen.name,
        derived_spec=records.DERIVED_SPEC,
        derived_spec_sha256=sha256_file(spec),
        run_folder=str(folder.relative_to(request.output.resolve())),
        evidence_sha256=sha256_file(folder / "evidence.json"),
        overall=bundle.overall.value,
    )


@task(name="derive spec", cache_policy=NO_CACHE)
def derive(request: MonitorRequest, chosen: MonitoredBatch) -> Path:
    """The spec's goals plus a domain-shift goal on the drifted batch, in the output folder."""
    from nnassay.tasks.monitoring.derive import derive_spec

    name = chosen.name
    field = request.field_path if request.field_path.name == name else request.field_path / name
    return derive_spec(request.spec_path, chosen.report, field, request.output / records.DERIVED_SPEC)


@task(name="record", cache_policy=NO_CACHE)
def record(
    request: MonitorRequest,
    spec_id: str,
    monitored: list[MonitoredBatch],
    link: PastAssessment | None,
    batches: list[FieldBatch],
    reassessment: Reassessment | None,
    uri: str | None,
) -> MonitoringRecord:
    """monitoring.json, the report (HTML, PDF) and the manifest; the MLflow run with the metrics."""
    from nnassay.flows.steps import artifact_root
    from nnassay.reports.monitoring import render_monitoring_html, render_monitoring_pdf

    monitoring_id = records.new_monitoring_id()
    tracker = MlflowTracker(uri, artifact_root=artifact_root(uri)) if uri else None
    run_id = records.open_run(tracker, request, spec_id, monitoring_id) if tracker else None
    result = records.build_record(
        request,
        spec_id,
        monitored,
        link,
        monitoring_id=monitoring_id,
        tracking_uri=uri,
        reassessment=reassessment,
    ).model_copy(update={"mlflow_run_id": run_id})
    records.write_record(
        request.output, result, render_monitoring_html(result), render_monitoring_pdf(result)
    )
    manifest_sha = records.write_manifest(request.output, result, records.input_files(request, batches))
    if tracker is not None and run_id is not None:
        records.log_batches(tracker, run_id, monitored)
        records.close_run(tracker, run_id, request.output, result, manifest_sha)
    return result


@flow(name="monitor-field", flow_run_name=runs.run_name, log_prints=False)
def monitor_field(request: MonitorRequest) -> MonitoringRecord:
    """Monitor the field data of one spec: a drift report per batch, records, optional re-assessment."""
    with download_scope():  # a models:/ model: downloaded once per run (or CLI command), then removed
        request = run_folder(request)
        spec, model, reference, batches = load_inputs(request)
        records.clear_folder(request.output)  # after the inputs are known good: a bad call changes nothing
        uri = tracking_uri(request) if request.track or request.reassess else None
        link = link_assessment(uri if request.track else None, spec.id)
        evidence = link.evidence_sha256 if link else None
        futures = [monitor_batch.submit(reference, b, model, request, evidence) for b in batches]
        monitored = [f.result() for f in futures]
        again = reassess(request, uri, monitored) if request.reassess and uri else None
        result = record(request, spec.id, monitored, link, batches, again, uri if request.track else None)
        runs.add_tags(f"spec:{spec.id}", f"drift:{result.verdict.value}")
        return result


def run_folder(request: MonitorRequest) -> MonitorRequest:
    """The request with its own folder <output>/<UTC time> when asked for (served schedules)."""
    if not request.run_subfolder:
        return request
    when = runtime.flow_run.scheduled_start_time or datetime.now(UTC)
    stamp = f"{when:%Y%m%dT%H%M%SZ}-{str(runtime.flow_run.id or 'local')[:8]}"
    return request.model_copy(update={"output": request.output / stamp, "run_subfolder": False})
