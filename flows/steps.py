"""Prefect tasks named after the TR 24029-1 steps; each is a thin wrapper around tasks/ functions."""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from nnassay.flows.runs import add_tags, run_log
from nnassay.schemas.evidence import ArtifactDigest, EvidenceBundle, GoalVerdict, Provenance
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan, TestSpec
from nnassay.schemas.results import MethodResult
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance import dossier, history, records, resume
from nnassay.tasks.governance.tracking import MlflowTracker, Tracker
from nnassay.tasks.io import registry_models
from nnassay.tasks.io.files import sha256_file, write_json
from nnassay.tasks.pipeline import evidence as ev
from nnassay.tasks.pipeline import execute, explain_step, planning, sharding
from nnassay.tasks.pipeline.sharding import Shard, ShardResult

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HISTORY_ROWS = 50  # earlier assessments shown in the evidence and the dossier


@task(name="state goals", cache_policy=NO_CACHE)
def state_goals(request: AssessRequest) -> tuple[AssessmentSpec, planning.PlanFacts]:
    """Step 1: read and validate the spec, load the model on ONNX Runtime and check the data."""
    return execute.state_goals(
        request.spec_path,
        prefer_cuda=request.prefer_cuda,
        model_uri=request.model_uri,
        registry_uri=request.mlflow_tracking_uri,
    )


@task(name="plan", cache_policy=NO_CACHE)
def plan(spec: AssessmentSpec, facts: planning.PlanFacts, request: AssessRequest) -> AssessmentPlan:
    """Step 2: the test plan, saved as plan.json next to a copy of the spec."""
    test_plan = execute.plan_tests(spec, facts, prefer_cuda=request.prefer_cuda)
    write_json(request.output / records.PLAN, test_plan)
    shutil.copyfile(request.spec_path, request.output / f"spec{request.spec_path.suffix}")
    add_tags(f"spec:{spec.id}", f"model:{test_plan.model_sha256[:12]}")
    run_log().info(
        "spec %r: %d goal(s), %d test(s) planned; model sha256 %s",
        spec.id,
        len(spec.goals),
        len(test_plan.tests),
        test_plan.model_sha256[:16],
    )
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
    progress = execute.progress_printer(test.test_id, print_progress) if request.progress else None
    result = execute.run_test(test, spec, request.output, prefer_cuda=request.prefer_cuda, progress=progress)
    if request.progress:
        print_progress(f"{test.test_id}: {result.status.value} in {result.time_s:.1f}s")
    _log_result(result)
    return result


def _log_result(result: MethodResult) -> None:
    metrics = ", ".join(f"{k} = {m.value:.4g}" for k, m in result.metrics.items())
    run_log().info(
        "test %s (goal %s): %s in %.1fs%s%s",
        result.test_id,
        result.goal_id,
        result.status.value,
        result.time_s,
        f"; {metrics}" if metrics else "",
        f"; {result.reason}" if result.reason else "",
    )


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
    if request.progress:
        print_progress(
            f"{test.test_id}: {result.status.value} ({len(shards)} shards, {result.time_s:.1f}s busy)"
        )
    _log_result(result)
    return result


def submit_test(test: TestSpec, spec: AssessmentSpec, request: AssessRequest) -> PrefectFuture[MethodResult]:
    """Submit one test whole, or as shards plus a merge when it is large; results persist in the run folder."""
    options = resume.result_options(request.output, resume=request.resume)  # JSON, digest-checked
    shards = sharding.plan_shards(test, request.shard_samples)
    if request.resume:  # cache entries not exactly as nnassay writes them are never read
        resume.screen_cache(request.output, test, spec, prefer_cuda=request.prefer_cuda, shards=shards)
    if not shards:
        return run_test.with_options(**options).submit(test, spec, request)
    parts = [run_shard.with_options(**options).submit(test, spec, request, s) for s in shards]
    return merge_shards.with_options(**options).submit(test, spec, request, parts)  # type: ignore[arg-type]


def submit_tests(
    test_plan: AssessmentPlan, spec: AssessmentSpec, request: AssessRequest
) -> list[PrefectFuture[MethodResult]]:
    """Submit every test, the longest (by its estimate) first, so that the worker threads finish at
    about the same time instead of one running a long test alone at the end; futures in plan order."""
    tests = test_plan.tests
    order = sorted(range(len(tests)), key=lambda i: -(tests[i].estimate_s or 0.0))
    submitted = {i: submit_test(tests[i], spec, request) for i in order}
    return [submitted[i] for i in range(len(tests))]


def collect_results(
    futures: list[PrefectFuture[MethodResult]], test_plan: AssessmentPlan, request: AssessRequest
) -> list[MethodResult]:
    """The tests' results in plan order, waited for as they finish (on local threads or Dask workers),
    each reported by the flow as 'test k of n done, ~T left' (terminal and run log)."""
    position = {future: i for i, future in enumerate(futures)}
    log = run_log()

    def report(line: str) -> None:
        log.info(line)
        if request.progress:
            print_progress(line)

    progress = execute.OverallProgress(test_plan.tests, report)
    finished: queue.SimpleQueue[PrefectFuture[MethodResult]] = queue.SimpleQueue()
    for future in futures:
        future.add_done_callback(finished.put)
    results: list[MethodResult | None] = [None] * len(futures)
    for _ in futures:
        future = _next_finished(finished)
        i = position[future]
        results[i] = future.result()
        progress.done(test_plan.tests[i].test_id)
    return [r for r in results if r is not None]


def _next_finished(finished: queue.SimpleQueue[PrefectFuture[MethodResult]]) -> PrefectFuture[MethodResult]:
    """Wait in short slices: a SIGTERM delivered to another thread is handled (by the main thread)
    only when it runs Python code again, never during one long wait."""
    while True:
        with contextlib.suppress(queue.Empty):
            return finished.get(timeout=0.2)


@task(name="interpret", cache_policy=NO_CACHE)
def interpret(spec: AssessmentSpec, results: list[MethodResult]) -> list[GoalVerdict]:
    """Step 3, interpretation: one verdict per goal against its criterion (each in the run's log)."""
    verdicts = ev.interpret_all(spec, results)
    log = run_log()
    for v in verdicts:
        value = f"{v.measured.value:.4g}" if v.measured else "not measured"
        criterion = f"{v.criterion.comparator} {v.criterion.threshold:g}"
        level = logging.INFO if v.verdict.value == "pass" else logging.WARNING
        log.log(
            level,
            "goal %s: %s (%s = %s, needs %s): %s",
            v.goal_id,
            v.verdict.value.upper(),
            v.metric,
            value,
            criterion,
            v.reason,
        )
    return verdicts


@task(name="explain", cache_policy=NO_CACHE)
def explain(
    spec: AssessmentSpec,
    test_plan: AssessmentPlan,
    results: list[MethodResult],
    verdicts: list[GoalVerdict],
    request: AssessRequest,
    tracker: Tracker | None,
    handle: records.TrackingHandle,
) -> explain_step.ExplainOutcome:
    """Step 'explain': attributions of each failed or inconclusive goal's failures, checked for
    faithfulness, with pictures (explanations/<goal>/); logged to MLflow; a line per goal in the log."""
    log = run_log()

    def report(level: int, line: str) -> None:
        log.log(level, line)
        if request.progress:
            print_progress(line)

    outcome = explain_step.explain_failures(
        spec, test_plan, results, verdicts, request.output, prefer_cuda=request.prefer_cuda, report=report
    )
    explain_step.log_explanations(tracker, handle.run_id, request.output, outcome)
    return outcome


def make_tracker(request: AssessRequest) -> Tracker | None:
    """An MLflow tracker on the requested URI (or the run folder's SQLite store), or None."""
    if not request.track:
        return None
    uri = request.tracking_uri()
    return MlflowTracker(uri, artifact_root=artifact_root(uri))


def artifact_root(uri: str) -> Path | None:
    """Where a new experiment of a local SQLite store keeps artifacts: 'mlartifacts' beside the
    database (shared by every run folder using it); None: the store or server decides."""
    prefix = "sqlite:///"
    return Path(uri.removeprefix(prefix)).parent / "mlartifacts" if uri.startswith(prefix) else None


@task(name="open tracking", cache_policy=NO_CACHE)
def open_tracking(
    tracker: Tracker | None, spec: AssessmentSpec, test_plan: AssessmentPlan, request: AssessRequest
) -> records.TrackingHandle:
    """Start the MLflow parent run (MLflow's system tags, the data sets and the model as its inputs)."""
    source_type = "JOB" if runtime.deployment.id else "LOCAL"  # a deployment's runs are scheduled jobs
    system = records.system_tags(request.command or command_line(), source_type, ev.git_commit())
    handle = records.open_run(
        tracker, spec, test_plan, records.new_assessment_id(), ev.code_version(), system
    )
    try:
        records.log_lineage(tracker, handle, spec, test_plan)
    except Exception as exc:  # noqa: BLE001 (lineage links help readers; the evidence does not need them)
        run_log().warning("MLflow lineage (data sets, model) not recorded: %s", exc)
    return handle


@task(name="read history", cache_policy=NO_CACHE)
def read_history(
    tracker: Tracker | None, spec: AssessmentSpec, request: AssessRequest
) -> history.SpecHistory:
    """The spec's earlier assessments in the tracking store, read once for every step that needs them
    (crashed attempts, regression check, hash chain and history rows)."""
    limit = 10_000 if request.compare_history else 2 * HISTORY_ROWS  # a long trend only for lifecycles
    return history.read_history(tracker.uri if tracker else None, spec.id, limit=limit)


def provenance(
    spec: AssessmentSpec,
    facts: planning.PlanFacts,
    test_plan: AssessmentPlan,
    request: AssessRequest,
    handle: records.TrackingHandle,
    started: datetime,
    signer: Ed25519PrivateKey | None,
) -> Provenance:
    """Where, when and with what the assessment ran: built once, at the end of execution."""
    flow_run = runtime.flow_run.id
    model, data = execute.load_inputs(spec, prefer_cuda=request.prefer_cuda)  # loaded once per process
    return ev.build_provenance(
        spec,
        request.spec_path,
        test_plan,
        assessment_id=handle.assessment_id,
        started=started,
        provider=facts.provider,
        command=request.command or command_line(),
        flow_run_id=str(flow_run) if flow_run else None,
        mlflow_run_id=handle.run_id,
        mlflow_tracking_uri=handle.uri,
        signer_public_key_sha256=records.signer_fingerprint(signer),
        model_registry_uri=registry_models.registry_uri_of(Path(spec.model.path)),
        extra={
            "run_folder": str(request.output.resolve()),
            "cwd": str(Path.cwd()),
            "model_reading": model.describe(),  # which output, logits or probabilities, class columns
            "labels_read": data.labels_read or None,  # how y became class indices (text or 1, 5, 9)
            **resume.cache_notes(request.output, started),  # cached results refused, recomputed
        },
    )


@task(name="record", cache_policy=NO_CACHE)
def record(
    spec: AssessmentSpec,
    test_plan: AssessmentPlan,
    results: list[MethodResult],
    verdicts: list[GoalVerdict],
    request: AssessRequest,
    tracker: Tracker | None,
    handle: records.TrackingHandle,
    prov: Provenance,
    past: history.SpecHistory,
    explained: explain_step.ExplainOutcome | None = None,
) -> EvidenceBundle:
    """Step 'record': nested MLflow runs per test and the evidence bundle (evidence.json)."""
    out = request.output
    explained = explained or explain_step.ExplainOutcome()
    files = records.write_results(out, results) + [
        ArtifactDigest(path=records.PLAN, sha256=sha256_file(out / records.PLAN), role="plan")
    ]
    files += explained.files
    prov = prov.model_copy(update={"extra": {**prov.extra, **explained.notes()}})
    records.log_results(tracker, handle, test_plan, results, out)  # each with its files
    files += records.copy_registry_model(spec, out)
    manifest = ev.manifest(request.spec_path, spec, prov.spec_sha256, test_plan, results, files)
    earlier = past.finished(HISTORY_ROWS)
    bundle = ev.assemble_evidence(
        spec,
        test_plan,
        results,
        verdicts,
        prov,
        manifest,
        previous_sha256=earlier[0].evidence_sha256 if earlier else None,
        history=history.history_rows(earlier),
        explanations=explained.sets,
    )
    write_json(out / records.EVIDENCE, bundle)
    return bundle


@task(name="report", cache_policy=NO_CACHE)
def report(
    bundle: EvidenceBundle,
    request: AssessRequest,
    tracker: Tracker | None,
    handle: records.TrackingHandle,
    signer: Ed25519PrivateKey | None,
) -> Path:
    """Step 'report': the dossier (PDF/A-3 with the evidence embedded, HTML, Markdown) from the evidence
    alone, the JUnit report when asked; then the manifest (signed when a key is set), MLflow tags and
    artifacts, registry tags."""
    out = request.output
    files = dossier.write_dossier(
        bundle,
        (out / records.EVIDENCE).read_bytes(),
        out / records.DOSSIER,
        run_dir=out,
        html=out / records.DOSSIER_HTML,
        markdown=out / records.SUMMARY,
        signing_key=signer,
        certificate=request.sign_cert,  # PAdES-signed before the manifest digests it
    )
    if request.junit_xml is not None:
        dossier.write_junit(bundle, request.junit_xml)
    records.seal(tracker, handle, bundle, out, f"spec{request.spec_path.suffix}", signer)
    link = tracker.run_link(handle.run_id) if tracker and handle.run_id else None
    records.publish_summary(bundle, (out / records.SUMMARY).read_text(), mlflow_run=link, dossier=files.pdf)
    return files.pdf


_PRINTING = threading.Lock()  # tests run in threads: one whole line at a time


def print_progress(line: str) -> None:
    """Terminal progress of a test, on standard error (``AssessRequest.progress``): one write per
    line under a lock (print's separate newline let two tests' lines run together)."""
    with _PRINTING:
        sys.stderr.write(f"  {line}\n")
        sys.stderr.flush()


def command_line() -> str:
    """The command line of this process, for provenance."""
    return " ".join(sys.argv)
