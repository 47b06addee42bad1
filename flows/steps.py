"""Prefect tasks named after the TR 24029-1 steps; each is a thin wrapper around tasks/ functions."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from nnassay.reports.render import write_dossier
from nnassay.schemas.evidence import ArtifactDigest, EvidenceBundle, GoalVerdict, Provenance
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan, TestSpec
from nnassay.schemas.results import MethodResult
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance import history, records, resume
from nnassay.tasks.governance.tracking import MlflowTracker, Tracker
from nnassay.tasks.io.files import sha256_file, write_json
from nnassay.tasks.pipeline import evidence as ev
from nnassay.tasks.pipeline import execute, planning, sharding
from nnassay.tasks.pipeline.sharding import Shard, ShardResult

PROGRESS_SINK: list[Callable[[str], None]] = []  # set by the CLI for terminal progress (local runs)


@task(name="state goals", cache_policy=NO_CACHE)
def state_goals(request: AssessRequest) -> tuple[AssessmentSpec, planning.PlanFacts]:
    """Step 1: read and validate the spec, load the model on ONNX Runtime and check the data."""
    return execute.state_goals(request.spec_path, prefer_cuda=request.prefer_cuda)


@task(name="plan", cache_policy=NO_CACHE)
def plan(spec: AssessmentSpec, facts: planning.PlanFacts, request: AssessRequest) -> AssessmentPlan:
    """Step 2: the test plan, saved as plan.json next to a copy of the spec."""
    test_plan = planning.make_plan(spec, facts)
    write_json(request.output / records.PLAN, test_plan)
    shutil.copyfile(request.spec_path, request.output / f"spec{request.spec_path.suffix}")
    return test_plan


def _test_key(_: object, args: dict[str, Any]) -> str:
    return resume.test_key(args["test"], args["spec"], prefer_cuda=args["request"].prefer_cuda)


def _shard_key(_: object, args: dict[str, Any]) -> str:
    return resume.test_key(
        args["test"], args["spec"], prefer_cuda=args["request"].prefer_cuda, step="shard", shard=args["shard"]
    )


def _merge_key(_: object, args: dict[str, Any]) -> str:
    return resume.test_key(args["test"], args["spec"], prefer_cuda=args["request"].prefer_cuda, step="merge")


@task(name="execute", task_run_name="execute {test.test_id}", cache_key_fn=_test_key, persist_result=True)
def run_test(test: TestSpec, spec: AssessmentSpec, request: AssessRequest) -> MethodResult:
    """Step 3: run one planned test on ONNX Runtime (result persisted: a rerun after a crash reuses it)."""
    sink = PROGRESS_SINK[0] if PROGRESS_SINK else None
    progress = execute.progress_printer(test.test_id, sink) if sink else None
    result = execute.run_test(test, spec, request.output, prefer_cuda=request.prefer_cuda, progress=progress)
    if sink:
        sink(f"{test.test_id}: {result.status.value} in {result.time_s:.1f}s")
    return result


@task(
    name="execute shard",
    task_run_name="execute {test.test_id} shard {shard.label}",
    cache_key_fn=_shard_key,
    persist_result=True,
)
def run_shard(test: TestSpec, spec: AssessmentSpec, request: AssessRequest, shard: Shard) -> ShardResult:
    """Step 3: one sample shard of a large test (runs on any worker; the model loads there)."""
    return execute.run_shard(test, spec, request.output, shard, prefer_cuda=request.prefer_cuda)


@task(name="merge shards", task_run_name="merge {test.test_id}", cache_key_fn=_merge_key, persist_result=True)
def merge_shards(
    test: TestSpec, spec: AssessmentSpec, request: AssessRequest, shards: list[ShardResult]
) -> MethodResult:
    """Step 3: the sharded test's result, equal to an unsharded run's."""
    result = execute.merge_shards(test, spec, request.output, shards, prefer_cuda=request.prefer_cuda)
    if PROGRESS_SINK:
        PROGRESS_SINK[0](
            f"{test.test_id}: {result.status.value} ({len(shards)} shards, {result.time_s:.1f}s busy)"
        )
    return result


def submit_test(test: TestSpec, spec: AssessmentSpec, request: AssessRequest) -> PrefectFuture[MethodResult]:
    """Submit one test whole, or as shards plus a merge when it is large; results persist in the run folder."""
    options: dict[str, Any] = {
        "result_storage": resume.cache_dir(request.output),
        "refresh_cache": not request.resume,
    }
    shards = sharding.plan_shards(test, request.shard_samples)
    if not shards:
        return run_test.with_options(**options).submit(test, spec, request)
    parts = [run_shard.with_options(**options).submit(test, spec, request, s) for s in shards]
    return merge_shards.with_options(**options).submit(test, spec, request, parts)  # type: ignore[arg-type]


@task(name="interpret", cache_policy=NO_CACHE)
def interpret(spec: AssessmentSpec, results: list[MethodResult]) -> list[GoalVerdict]:
    """Step 3, interpretation: one verdict per goal against its criterion."""
    return ev.interpret_all(spec, results)


def make_tracker(request: AssessRequest) -> Tracker | None:
    """An MLflow tracker on the requested URI (or the run folder's SQLite store), or None."""
    if not request.track:
        return None
    uri = request.tracking_uri()
    remote = uri.startswith(("http://", "https://", "databricks"))  # the server decides where artifacts go
    return MlflowTracker(uri, artifact_root=None if remote else request.output / "mlartifacts")


@task(name="open tracking", cache_policy=NO_CACHE)
def open_tracking(
    tracker: Tracker | None, spec: AssessmentSpec, test_plan: AssessmentPlan
) -> records.TrackingHandle:
    """Start the MLflow parent run."""
    return records.open_run(tracker, spec, test_plan, records.new_assessment_id(), ev.code_version())


@task(name="record", cache_policy=NO_CACHE)
def record(
    spec: AssessmentSpec,
    test_plan: AssessmentPlan,
    results: list[MethodResult],
    verdicts: list[GoalVerdict],
    request: AssessRequest,
    tracker: Tracker | None,
    handle: records.TrackingHandle,
    provenance: dict,
) -> EvidenceBundle:
    """Step 'record': nested MLflow runs per test and the evidence bundle (evidence.json)."""
    records.log_results(tracker, handle, test_plan, results)
    out = request.output
    files = records.write_results(out, results) + [
        ArtifactDigest(path=records.PLAN, sha256=sha256_file(out / records.PLAN), role="plan")
    ]
    signer, registry_files = records.record_extras(spec, out)
    prov = Provenance(**provenance, mlflow_run_id=handle.run_id, mlflow_tracking_uri=handle.uri, **signer)
    manifest = ev.manifest(
        request.spec_path, spec, prov.spec_sha256, test_plan, results, files + registry_files
    )
    past = history.past_assessments(handle.uri, spec.id) if handle.uri else []
    bundle = ev.assemble_evidence(
        spec,
        test_plan,
        results,
        verdicts,
        prov,
        manifest,
        previous_sha256=past[0].evidence_sha256 if past else None,
        history=history.history_rows(past),
    )
    write_json(out / records.EVIDENCE, bundle)
    return bundle


@task(name="report", cache_policy=NO_CACHE)
def report(
    bundle: EvidenceBundle, request: AssessRequest, tracker: Tracker | None, handle: records.TrackingHandle
) -> Path:
    """Step 'report': the dossier (PDF/A-3 with the evidence embedded, HTML, Markdown) from the evidence
    alone; then the manifest (signed when a key is set), MLflow tags and artifacts, registry tags."""
    out = request.output
    dossier = write_dossier(
        bundle,
        (out / records.EVIDENCE).read_bytes(),
        out / records.DOSSIER,
        run_dir=out,
        html=out / records.DOSSIER_HTML,
        markdown=out / records.SUMMARY,
    )
    records.seal(tracker, handle, bundle, out, f"spec{request.spec_path.suffix}")
    records.publish_summary(bundle, (out / records.SUMMARY).read_text())
    return dossier.pdf


def command_line() -> str:
    """The command line of this process, for provenance."""
    return " ".join(sys.argv)
