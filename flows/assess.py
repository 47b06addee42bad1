"""The assessment flow: goals -> plan -> execution -> interpretation -> records -> dossier."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from nnassay.flows import lifecycle_steps, steps
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance.records import fail_run, load_signer
from nnassay.tasks.pipeline import evidence as ev


@flow(name="assess", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False)
def assess(request: AssessRequest) -> EvidenceBundle:
    """Assess one ONNX model against its robustness goals and leave governance records."""
    started = ev.now()
    request.output.mkdir(parents=True, exist_ok=True)
    spec, facts = steps.state_goals(request)  # 1. goals
    test_plan = steps.plan(spec, facts, request)  # 2. planning
    signer = load_signer(request.sign_key)  # None: the run is not signed
    tracker = steps.make_tracker(request)
    handle = steps.open_tracking(tracker, spec, test_plan)
    try:
        past = steps.read_history(tracker, spec, request)  # the spec's earlier assessments, read once
        lifecycle_steps.link_attempts(tracker, handle, request, past)  # crashed attempts
        futures = [steps.submit_test(t, spec, request) for t in test_plan.tests]  # 3. execution
        results = [f.result() for f in futures]
        verdicts = steps.interpret(spec, results)  # 3. interpretation
        if request.compare_history:
            verdicts = lifecycle_steps.check_regressions(test_plan, results, verdicts, tracker, handle, past)
        provenance = steps.provenance(spec, facts, test_plan, request, handle, started, signer)
        bundle = steps.record(spec, test_plan, results, verdicts, request, tracker, handle, provenance, past)
        steps.report(bundle, request, tracker, handle, signer)  # 4. dossier
    except BaseException as exc:
        fail_run(tracker, handle, f"{type(exc).__name__}: {exc}")
        raise
    return bundle
