"""The lifecycle flow: a scheduled re-assessment of one spec, checked against the previous one.

Each run assesses the current model (the ``assess`` flow as a subflow) in its own folder, compares
every goal with the previous assessment of the same spec id (regressions become findings, MLflow
tags and a metric trend) and ends Failed, naming the goals, when a goal failed or was inconclusive.
Deployed by ``nnassay schedule`` (``flow.serve``) or by ``prefect deploy`` with the repository's
prefect.yaml.
"""

# No `from __future__ import annotations`: Prefect builds the parameter schema from the real types
# when a worker loads this file by path (deployment entrypoint).
from collections.abc import Callable
from datetime import datetime
from typing import Any

from prefect import flow, runtime, tags
from prefect.states import State

from nnassay.flows import runs
from nnassay.flows.assess import assess
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.settings import AssessRequest, LifecycleRequest, Settings


@flow(name="lifecycle-assess", flow_run_name=runs.run_name, log_prints=False)
def lifecycle_assess(request: LifecycleRequest) -> EvidenceBundle | State[Any]:
    """Assess the current model, compare each goal with the previous assessment; end Failed, naming
    the goals, when a goal failed or was inconclusive."""
    settings = Settings()
    scheduled = runtime.flow_run.scheduled_start_time
    run_request = assess_request(request, settings, scheduled, str(runtime.flow_run.id or "local"))
    bundle = assess_runner(run_request.dask_address)(run_request)
    runs.add_tags(*runs.creation_tags(request.spec_path), f"verdict:{bundle.overall.value}")
    return runs.final_state(bundle, run_request.output / "evidence.json")


def assess_request(
    request: LifecycleRequest, settings: Settings, scheduled: datetime, flow_run_id: str
) -> AssessRequest:
    """The assessment of one lifecycle run: its own folder (a retry of the same flow run resumes it),
    the series' shared tracking store, the regression check switched on, and the request's options
    (signing key, registry model, Dask scheduler)."""
    folder = f"{scheduled:%Y%m%dT%H%M%SZ}-{flow_run_id[:8]}"
    return AssessRequest(
        spec_path=request.spec_path,
        output=request.output_root / folder,
        mlflow_tracking_uri=request.tracking_uri(settings),
        prefer_cuda=request.prefer_cuda,
        shard_samples=settings.shard_samples,
        compare_history=True,
        command=f"lifecycle-assess {request.spec_path}",
        sign_key=request.sign_key,
        sign_cert=request.sign_cert,
        model_uri=request.model_uri,
        dask_address=request.dask_address or settings.dask_address,
    )


def assess_runner(dask_address: str | None) -> Callable[[AssessRequest], EvidenceBundle]:
    """Run the assess flow (on local threads, or on the Dask cluster at ``dask_address``), tagged with
    the spec id at creation; return its evidence whether the run ended Completed or Failed (a goal
    not passed), raise what a crashed run raised."""
    runner = assess
    if dask_address:
        from prefect_dask import DaskTaskRunner

        runner = assess.with_options(task_runner=DaskTaskRunner(address=dask_address))  # type: ignore[arg-type]

    def run(request: AssessRequest) -> EvidenceBundle:
        with tags(*runs.creation_tags(request.spec_path)):
            state = runner(request, return_state=True)
        return runs.bundle_of(state)

    return run
