"""The assessment flow: goals -> plan -> execution -> interpretation -> records -> dossier."""

from __future__ import annotations

from typing import Any, cast

from prefect import flow
from prefect.futures import PrefectFuture
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from nnassay.flows import lifecycle_steps, runs, steps
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance.records import EVIDENCE, fail_run, load_signer
from nnassay.tasks.io.registry_models import download_scope
from nnassay.tasks.pipeline import evidence as ev

# Prefect types TaskRunner invariantly in its future type; a thread pool's futures are PrefectFutures
LOCAL_THREADS = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=2))


@flow(
    name="assess",
    flow_run_name=runs.run_name,
    task_runner=LOCAL_THREADS,
    log_prints=False,
)
def assess(request: AssessRequest) -> EvidenceBundle | State[Any]:
    """Assess one ONNX model against its robustness goals and leave governance records; the run ends
    Failed, naming the goals, when a goal failed or was inconclusive (the state carries the bundle)."""
    with download_scope():  # a models:/ model: downloaded once per run (or CLI command), then removed
        return _assess(request)


def _assess(request: AssessRequest) -> EvidenceBundle | State[Any]:
    started = ev.now()
    request.output.mkdir(parents=True, exist_ok=True)
    spec, facts = steps.state_goals(request)  # 1. goals
    test_plan = steps.plan(spec, facts, request)  # 2. planning
    signer = load_signer(request.sign_key)  # None: the run is not signed
    tracker = steps.make_tracker(request)
    handle = steps.open_tracking(tracker, spec, test_plan, request)
    try:
        past = steps.read_history(tracker, spec, request)  # the spec's earlier assessments, read once
        lifecycle_steps.link_attempts(tracker, handle, request, past)  # crashed attempts
        futures = steps.submit_tests(test_plan, spec, request)  # 3. execution, longest first
        results = steps.collect_results(futures, test_plan, request)  # in plan order, with progress
        verdicts = steps.interpret(spec, results)  # 3. interpretation
        if request.compare_history:
            verdicts = lifecycle_steps.check_regressions(test_plan, results, verdicts, tracker, handle, past)
        explained = steps.explain(spec, test_plan, results, verdicts, request, tracker, handle)
        provenance = steps.provenance(spec, facts, test_plan, request, handle, started, signer)
        bundle = steps.record(
            spec, test_plan, results, verdicts, request, tracker, handle, provenance, past, explained
        )
        steps.report(bundle, request, tracker, handle, signer)  # 4. dossier
    except BaseException as exc:
        fail_run(tracker, handle, f"{type(exc).__name__}: {exc}")
        raise
    runs.add_tags(f"verdict:{bundle.overall.value}")
    return runs.final_state(bundle, request.output / EVIDENCE)
