"""Step 3, execution: run one planned test with its registered method. No Prefect here.

Models and data are loaded once per process and shared by the tests (ONNX Runtime sessions are
thread-safe for inference), so parallel task runs do not reload them.
"""

from __future__ import annotations

import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan, TestSpec
from nnassay.schemas.results import MethodOutcome, MethodResult, TestStatus
from nnassay.schemas.settings import Settings
from nnassay.tasks.io.data_io import Dataset, load_dataset
from nnassay.tasks.io.files import sha256_file
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.io.spec_io import read_spec
from nnassay.tasks.methods.registry import Progress, RunContext, get_method
from nnassay.tasks.pipeline.estimate import format_duration, unit_costs
from nnassay.tasks.pipeline.interpret import DUPLICATE_INPUTS
from nnassay.tasks.pipeline.planning import PlanFacts, make_plan
from nnassay.tasks.pipeline.sharding import Shard, Shardable, ShardResult

_CACHE: dict[str, tuple[str, tuple[ModelRunner, Dataset]]] = {}  # key -> (file stamp, inputs)
UNIT_COST_SAMPLES = 8  # test samples the model's unit costs are timed on (tiled to the batch sizes)
_LOCK = threading.Lock()


def load_inputs(spec: AssessmentSpec, *, prefer_cuda: bool = True) -> tuple[ModelRunner, Dataset]:
    """Load (once per process) the model on ONNX Runtime and the data checked against it.

    The key includes the files' size and modification time, so a long-lived process (a Dask worker,
    a served schedule) picks up a model or data file replaced in place.
    """
    key = spec.model.model_dump_json() + spec.data.model_dump_json() + str(prefer_cuda)
    stamp = _stamp(spec)
    with _LOCK:
        if key not in _CACHE or _CACHE[key][0] != stamp:
            model = ModelRunner(spec.model, prefer_cuda=prefer_cuda, threads=Settings().ort_threads)
            _CACHE[key] = (stamp, (model, load_dataset(spec.data, model)))
        return _CACHE[key][1]


def _stamp(spec: AssessmentSpec) -> str:
    stamps = []
    for path in (Path(spec.model.path), Path(spec.data.path)):
        try:
            st = path.stat()
            stamps.append(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
        except OSError:
            stamps.append("missing")  # loading reports the missing file properly
    return "|".join(stamps)


def state_goals(
    spec_path: Path,
    *,
    prefer_cuda: bool = True,
    model_uri: str | None = None,
    registry_uri: str | None = None,
) -> tuple[AssessmentSpec, PlanFacts]:
    """Step 1: read the spec (a registry model downloaded: ``model_uri`` overrides model.path), load
    the model on ONNX Runtime, check the data, time the model once (unit costs); facts for planning."""
    spec = read_spec(spec_path, model_uri=model_uri, registry_uri=registry_uri)
    model, data = load_inputs(spec, prefer_cuda=prefer_cuda)
    facts = PlanFacts(
        spec_sha256=sha256_file(spec_path),
        model_sha256=model.sha256,
        data_sha256=data.sha256,
        data_samples=len(data),
        data_kind=data.kind,
        provider=model.provider,
        unit_costs=unit_costs(model, data.x[:UNIT_COST_SAMPLES]),
        clean_accuracy=_clean_accuracy(model, data),
        **executor_facts(model),
    )
    return spec, facts


ACCURACY_ROWS = 256  # rows whose clean accuracy prices the attacks (one forward call: cheap)


_ACCURACY: weakref.WeakKeyDictionary[ModelRunner, tuple[Dataset, float | None]] = weakref.WeakKeyDictionary()


def _clean_accuracy(model: ModelRunner, data: Dataset) -> float | None:
    """Clean accuracy on the first rows (the rows the tests take first), for the time estimates only;
    measured once per loaded model and data (the CLI's preflight and the flow share them)."""
    known = _ACCURACY.get(model)
    if known is not None and known[0] is data:
        return known[1]
    rows = min(len(data), ACCURACY_ROWS)
    accuracy = float(np.mean(model.predict(data.x[:rows]) == data.y[:rows])) if rows else None
    _ACCURACY[model] = (data, accuracy)
    return accuracy


def executor_facts(model: ModelRunner) -> dict[str, Any]:
    """Whether the torch executor can build the model's score graph (white-box methods need it);
    the op types it lacks, or the problem, when it cannot. Parses the graph only (no run)."""
    from nnassay.tasks.engine.onnx_torch import UnsupportedOpsError, load_onnx_module

    try:
        load_onnx_module(model.score_graph())
    except UnsupportedOpsError as exc:
        ops = tuple(sorted({op for _, op in exc.nodes}))
        return {
            "executor_ok": False,
            "executor_missing_ops": ops,
            "executor_problem": f"lacks ops {list(ops)}",
        }
    except Exception as exc:  # any failure to build it means no white-box method can run
        return {"executor_ok": False, "executor_problem": str(exc).splitlines()[0][:300]}
    return {"executor_ok": True}


def preflight(
    spec_path: Path,
    *,
    prefer_cuda: bool = True,
    model_uri: str | None = None,
    registry_uri: str | None = None,
) -> AssessmentPlan:
    """Check everything that can be checked before a run starts (spec, model, data, plan)."""
    spec, facts = state_goals(
        spec_path, prefer_cuda=prefer_cuda, model_uri=model_uri, registry_uri=registry_uri
    )
    return plan_tests(spec, facts, prefer_cuda=prefer_cuda)


def plan_tests(spec: AssessmentSpec, facts: PlanFacts, *, prefer_cuda: bool = True) -> AssessmentPlan:
    """Step 2: the test plan (``make_plan``), its attack and proof estimates checked by pilots
    (``nnassay.tasks.pipeline.pilot``; remembered per loaded model, so preflight and flow share them)."""
    from nnassay.tasks.pipeline.pilot import pilot_plan

    plan = make_plan(spec, facts)
    model, data = load_inputs(spec, prefer_cuda=prefer_cuda)
    return pilot_plan(plan, spec, model, data, facts)


def test_context(
    test: TestSpec,
    spec: AssessmentSpec,
    run_dir: Path,
    *,
    prefer_cuda: bool = True,
    progress: Progress | None = None,
) -> RunContext:
    """The context a method receives for one planned test (model and data loaded once per process)."""
    model, data = load_inputs(spec, prefer_cuda=prefer_cuda)
    out_dir = run_dir / "tests" / test.test_id.replace("/", "__")
    out_dir.mkdir(parents=True, exist_ok=True)
    return method_context(test, spec, model, data.subset(test.samples), out_dir, run_dir, progress=progress)


def method_context(
    test: TestSpec,
    spec: AssessmentSpec,
    model: ModelRunner,
    data: Dataset,
    out_dir: Path,
    run_dir: Path,
    *,
    time_s: float | None = None,
    progress: Progress | None = None,
) -> RunContext:
    """The context of ``test`` on the samples ``data`` (the test's budget unless ``time_s`` is given)."""
    goal = next(g for g in spec.goals if g.id == test.goal_id)
    return RunContext(
        model=model,
        data=data,
        threat=test.threat,
        metric=test.metric,
        seed=test.seed,
        out_dir=out_dir,
        run_dir=run_dir,
        time_s=test.time_s if time_s is None else time_s,
        confidence=goal.criterion.confidence,
        interval=goal.criterion.interval,
        progress=progress or (lambda done, total: None),
    )


def run_test(
    test: TestSpec,
    spec: AssessmentSpec,
    run_dir: Path,
    *,
    prefer_cuda: bool = True,
    progress: Progress | None = None,
) -> MethodResult:
    """Run one test; any failure inside the method becomes an 'error' result, never a crash."""
    started = time.monotonic()
    ctx = test_context(test, spec, run_dir, prefer_cuda=prefer_cuda, progress=progress)
    method = get_method(test.method)
    try:
        outcome = method.run(ctx, method.Params.model_validate(test.params))
    except Exception as exc:  # a method bug must not lose the other tests' results
        outcome = _error_outcome(exc)
    return _result(test, outcome, ctx, time.monotonic() - started)


def run_shard(
    test: TestSpec, spec: AssessmentSpec, run_dir: Path, shard: Shard, *, prefer_cuda: bool = True
) -> ShardResult:
    """Run one shard of a shardable test; a failure is returned (and reported by the merge)."""
    started = time.monotonic()
    ctx = test_context(test, spec, run_dir, prefer_cuda=prefer_cuda)
    method = get_method(test.method)
    assert isinstance(method, Shardable), f"method {test.method!r} cannot be sharded"
    try:
        part = method.run_part(ctx, method.Params.model_validate(test.params), shard.start, shard.stop)
    except Exception as exc:  # reported as the test's error result by merge_shards
        outcome = _error_outcome(exc)
        return ShardResult(
            shard, None, outcome.reason, str(outcome.details.get("traceback")), time.monotonic() - started
        )
    return ShardResult(shard, part, time_s=time.monotonic() - started)


def merge_shards(
    test: TestSpec,
    spec: AssessmentSpec,
    run_dir: Path,
    shards: list[ShardResult],
    *,
    prefer_cuda: bool = True,
) -> MethodResult:
    """The test's result from its shards, equal to an unsharded run's (timing aside)."""
    started = time.monotonic()
    ctx = test_context(test, spec, run_dir, prefer_cuda=prefer_cuda)
    method = get_method(test.method)
    assert isinstance(method, Shardable), f"method {test.method!r} cannot be sharded"
    failed = [s for s in shards if s.error is not None]
    if failed:
        reason = f"shard {failed[0].shard.label} failed: {failed[0].error}"
        outcome = MethodOutcome(
            status=TestStatus.ERROR, reason=reason[:500], details={"traceback": failed[0].traceback or ""}
        )
    else:
        try:
            outcome = method.merge_parts(
                ctx, method.Params.model_validate(test.params), [s.part for s in shards]
            )
        except Exception as exc:  # a merge bug is an error result, like a method bug
            outcome = _error_outcome(exc)
    busy = sum(s.time_s for s in shards) + time.monotonic() - started
    return _result(test, outcome, ctx, busy)


def _error_outcome(exc: Exception) -> MethodOutcome:
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return MethodOutcome(
        status=TestStatus.ERROR,
        reason=f"{detail[:500]}",
        details={"traceback": traceback.format_exc()[-4000:]},
    )


def _result(test: TestSpec, outcome: MethodOutcome, ctx: RunContext, time_s: float) -> MethodResult:
    # intervals assume independent samples: the count of exact repeats is flagged by the interpretation
    outcome = outcome.model_copy(
        update={"details": {**outcome.details, DUPLICATE_INPUTS: ctx.data.duplicates}}
    )
    return MethodResult.from_outcome(
        outcome,
        test_id=test.test_id,
        goal_id=test.goal_id,
        method=test.method,
        family=test.family,
        seed=test.seed,
        time_s=round(time_s, 4),
        provider=ctx.model.provider,
    )


def progress_printer(test_id: str, sink: Callable[[str], None], every_s: float = 2.0) -> Progress:
    """A progress callback that reports counts and time left for one test, at most every few seconds."""
    started = time.monotonic()
    last = [started]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < every_s and done < total:
            return
        last[0] = now
        elapsed = now - started
        left = elapsed / done * (total - done) if done else float("nan")
        sink(f"{test_id}: {done}/{total} done, {elapsed:.1f}s elapsed, ~{left:.1f}s left")

    return report


class OverallProgress:
    """The assessment's progress as tests finish: 'test k of n done, ~T left', where T adds up the
    plan's estimates (``TestSpec.estimate_s``) of the tests not finished yet (test time, as in the
    plan line; left out when no estimate is known)."""

    def __init__(self, tests: Sequence[TestSpec], sink: Callable[[str], None]) -> None:
        self.estimates = {t.test_id: t.estimate_s for t in tests}
        self.finished: set[str] = set()
        self.sink = sink

    def done(self, test_id: str) -> str:
        """Count ``test_id`` as finished; send the progress line to the sink and return it."""
        self.finished.add(test_id)
        k, n = len(self.finished), len(self.estimates)
        left = [s for t, s in self.estimates.items() if t not in self.finished and s is not None]
        line = f"test {k} of {n} done" + (f", ~{format_duration(sum(left))} left" if left else "")
        self.sink(line)
        return line
