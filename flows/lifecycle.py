"""The lifecycle flow: a scheduled re-assessment of one spec, checked against the previous one.

Each run assesses the current model (the ``assess`` flow as a subflow) in its own folder, compares
every goal with the previous assessment of the same spec id (regressions become findings, MLflow
tags and a metric trend) and ends Failed, naming the goals, when a goal failed. Deployed by
``nnassay schedule`` (``flow.serve``) or by ``prefect deploy`` with the repository's prefect.yaml.
"""

# No `from __future__ import annotations`: Prefect builds the parameter schema from the real types
# when a worker loads this file by path (deployment entrypoint).
from datetime import datetime

from prefect import flow, runtime
from prefect.states import Failed, State

from nnassay.flows.assess import assess
from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.settings import AssessRequest, LifecycleRequest, Settings


@flow(name="lifecycle-assess", log_prints=False)
def lifecycle_assess(request: LifecycleRequest) -> EvidenceBundle | State:
    """Assess the current model, compare each goal with the previous assessment, fail on a failed goal."""
    settings = Settings()
    scheduled = runtime.flow_run.scheduled_start_time
    run_request = assess_request(request, settings, scheduled, str(runtime.flow_run.id or "local"))
    bundle = assess_runner(run_request.dask_address)(run_request)
    failed = [v.goal_id for v in bundle.verdicts if v.verdict == Verdict.FAIL]
    if failed:
        return Failed(
            message=f"goal(s) {', '.join(failed)} of {bundle.spec.id!r} failed; see "
            f"{run_request.output / 'evidence.json'}",
            data=bundle,
        )
    return bundle


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
        model_uri=request.model_uri,
        dask_address=request.dask_address or settings.dask_address,
    )


def assess_runner(dask_address: str | None):  # type: ignore[no-untyped-def]
    """The assess flow on local threads, or on the Dask cluster at ``dask_address``."""
    if not dask_address:
        return assess
    from prefect_dask import DaskTaskRunner

    return assess.with_options(task_runner=DaskTaskRunner(address=dask_address))  # type: ignore[arg-type]
