"""The assessment flow: goals -> plan -> execution -> interpretation -> records -> dossier."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, runtime
from prefect.task_runners import ThreadPoolTaskRunner

from nnassay.flows import lifecycle_steps, steps
from nnassay.schemas.evidence import EvidenceBundle
from nnassay.schemas.settings import AssessRequest
from nnassay.tasks.governance.records import fail_run
from nnassay.tasks.pipeline import evidence as ev
from nnassay.tasks.pipeline.execute import load_inputs


@flow(name="assess", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=False)
def assess(request: AssessRequest) -> EvidenceBundle:
    """Assess one ONNX model against its robustness goals and leave governance records."""
    started = ev.now()
    request.output.mkdir(parents=True, exist_ok=True)
    spec, facts = steps.state_goals(request)  # 1. goals
    test_plan = steps.plan(spec, facts, request)  # 2. planning
    tracker = steps.make_tracker(request)
    handle = steps.open_tracking(tracker, spec, test_plan)
    try:
        lifecycle_steps.link_attempts(tracker, handle, spec, request)  # crashed attempts
        futures = [steps.submit_test(t, spec, request) for t in test_plan.tests]  # 3. execution
        results = [f.result() for f in futures]
        verdicts = steps.interpret(spec, results)  # 3. interpretation
        if request.compare_history:
            verdicts = lifecycle_steps.check_regressions(spec, test_plan, results, verdicts, tracker, handle)
        provider = load_inputs(spec, prefer_cuda=request.prefer_cuda)[0].provider
        flow_run = runtime.flow_run.id
        provenance = ev.provenance_fields(
            spec,
            request.spec_path,
            test_plan,
            assessment_id=handle.assessment_id,
            started=started,
            provider=provider,
            command=request.command or steps.command_line(),
            flow_run_id=str(flow_run) if flow_run else None,
        )
        provenance["extra"] = {
            **provenance.get("extra", {}),
            "run_folder": str(request.output.resolve()),
            "cwd": str(Path.cwd()),
        }
        bundle = steps.record(spec, test_plan, results, verdicts, request, tracker, handle, provenance)
        steps.report(bundle, request, tracker, handle)  # 4. dossier
    except BaseException as exc:
        fail_run(tracker, handle, f"{type(exc).__name__}: {exc}")
        raise
    return bundle
