"""Step 'explain', after interpretation: for each goal that failed or is inconclusive, explain its
per-sample failures (``nnassay.tasks.explain``), draw one panel of the goal's explained samples, and log
the folder and the faithfulness figures to MLflow. No Prefect here (``flows/steps.py`` wraps it).

Files go to ``<run>/explanations/<goal id>/``: the arrays by digest (``<sha256>.npy``) and the goal's
panel (``panel.png``). One goal's failure to explain is a warning and a recorded reason, never a
lost assessment.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import JsonValue

from nnassay.schemas.common import Verdict
from nnassay.schemas.evidence import ArtifactDigest, GoalVerdict
from nnassay.schemas.explain import ExplanationSet, FaithfulnessSummary
from nnassay.schemas.goals import AssessmentSpec
from nnassay.schemas.plan import AssessmentPlan
from nnassay.schemas.results import ArtifactRef, MethodResult
from nnassay.tasks.explain.explain import ExplainOptions, explain_goal
from nnassay.tasks.explain.faithfulness import MIN_SAMPLES_TO_CLAIM
from nnassay.tasks.explain.gather import Found, gather
from nnassay.tasks.explain.pictures import panel_png
from nnassay.tasks.governance.tracking import Tracker, explanation_metrics
from nnassay.tasks.io.files import sha256_bytes, sha256_file, write_atomic
from nnassay.tasks.io.model_io import ModelRunner

EXPLANATIONS = "explanations"  # the run folder's explanation folder (one sub-folder per goal)
EXPLAINED = (Verdict.FAIL, Verdict.INCONCLUSIVE)
Report = Callable[[int, str], None]  # (logging level, line): the run log, and progress when asked


@dataclass(frozen=True)
class ExplainOutcome:
    """The explanation sets, the goals left unexplained with the reason, and the files written."""

    sets: list[ExplanationSet] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    files: list[ArtifactDigest] = field(default_factory=list)
    time_s: float = 0.0

    def notes(self) -> dict[str, JsonValue]:
        """For the provenance: why a failed or inconclusive goal has no explanation."""
        return {"explanations_not_made": dict(self.skipped)} if self.skipped else {}


def _log(level: int, line: str) -> None:
    logging.getLogger("nnassay").log(level, line)


def goals_to_explain(verdicts: Sequence[GoalVerdict]) -> list[GoalVerdict]:
    """The goals that failed or are inconclusive, in the spec's order."""
    return [v for v in verdicts if v.verdict in EXPLAINED]


def options_for(spec: AssessmentSpec) -> ExplainOptions:
    """k failures and the contrast samples from the spec, seeded by the spec (lowest rows first)."""
    return ExplainOptions(k=spec.explain.samples, contrast=spec.explain.contrast, seed=spec.seed)


def explain_failures(
    spec: AssessmentSpec,
    plan: AssessmentPlan,
    results: Sequence[MethodResult],
    verdicts: Sequence[GoalVerdict],
    run_dir: Path,
    *,
    prefer_cuda: bool = True,
    report: Report = _log,
) -> ExplainOutcome:
    """Explain every failed or inconclusive goal's failures (nothing when ``spec.explain.enabled``
    is false). A previous attempt's explanation folder is replaced, so it holds this run's only."""
    from nnassay.tasks.pipeline.execute import load_inputs

    started = time.perf_counter()
    folder = run_dir / EXPLANATIONS
    shutil.rmtree(folder, ignore_errors=True)
    targets = goals_to_explain(verdicts)
    if not spec.explain.enabled or not targets:
        return ExplainOutcome()
    runner, data = load_inputs(spec, prefer_cuda=prefer_cuda)
    sets, skipped = [], {}
    for verdict in targets:
        goal = verdict.goal_id
        try:
            found = gather(verdict, plan.tests, results, runner, data, run_dir, k=spec.explain.samples)
            if found.failures is None:
                skipped[goal] = f"no per-sample failures to explain ({found.reason})"
                report(logging.INFO, f"explain {goal}: nothing to explain: {found.reason}")
                continue
            explained = explain_one(runner, found, folder / goal, run_dir, options_for(spec))
        except Exception as exc:  # noqa: BLE001 (one goal's explanation must not lose the assessment)
            shutil.rmtree(folder / goal, ignore_errors=True)
            skipped[goal] = f"the explanation failed: {type(exc).__name__}: {str(exc)[:300]}"
            report(logging.WARNING, f"explain {goal}: {skipped[goal]}")
            continue
        sets.append(explained)
        report(logging.INFO, summary_line(explained))
    return ExplainOutcome(sets, skipped, folder_digests(run_dir, folder), time.perf_counter() - started)


def explain_one(
    runner: ModelRunner, found: Found, folder: Path, run_dir: Path, options: ExplainOptions
) -> ExplanationSet:
    """One goal's explanation set with one panel picture of its samples, in the same folder."""
    assert found.failures is not None
    explained = explain_goal(runner, found.data, found.failures, folder, options)
    if not explained.samples:
        return explained
    png = panel_png(
        explained.samples,
        folder,
        kind=found.data.kind,
        layout=found.data.layout,
        value_range=runner.value_range,
        feature_names=found.data.feature_names,
    )
    path = write_atomic(folder / "panel.png", png)
    failures = len({s.sample_index for s in explained.samples if s.role == "failure"})
    methods = ", ".join(m.replace("_", " ") for m in explained.methods)
    caption = (
        f"Goal {explained.goal_id}: {failures} failed samples (then contrast samples), a row each; "
        + (
            "the input and each method's attribution over it (red: towards the chosen class, blue: against)"
            if found.data.kind == "image"
            else "each method's five strongest features (red: towards the chosen class)"
        )
        + f"; methods: {methods}"
    )
    picture = ArtifactRef(
        path=path.relative_to(run_dir).as_posix(),
        sha256=sha256_bytes(png),
        media_type="image/png",
        caption=caption,
    )
    return explained.model_copy(update={"picture": picture})


def summary_line(es: ExplanationSet) -> str:
    """One log line per explained goal: how many samples, which methods, beats random or not."""
    failed = len({s.sample_index for s in es.samples if s.role == "failure"})
    verdicts = ", ".join(
        f"{f.method} {_against_random(f)} (gain [{f.gain_interval.low:.2f}, {f.gain_interval.high:.2f}])"
        for f in es.faithfulness
    )
    return (
        f"explain {es.goal_id}: {failed} of {es.failures_available} failures explained on "
        f"{es.engine.replace('_', ' ')} in {es.time_s:.1f}s" + (f"; {verdicts}" if verdicts else "")
    )


def _against_random(f: FaithfulnessSummary) -> str:
    if f.samples < MIN_SAMPLES_TO_CLAIM:
        return f"on too few samples ({f.samples}) to compare with random"
    return "beats random" if f.beats_random else "does not beat random"


def folder_digests(run_dir: Path, folder: Path) -> list[ArtifactDigest]:
    """Digests of every file written under the explanation folder, for the evidence manifest."""
    if not folder.is_dir():
        return []
    return [
        ArtifactDigest(path=p.relative_to(run_dir).as_posix(), sha256=sha256_file(p), role="explanation")
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def log_explanations(
    tracker: Tracker | None, run_id: str | None, run_dir: Path, outcome: ExplainOutcome
) -> None:
    """Each goal's folder as artifacts of the parent run under ``explanations/<goal>`` (the nested runs
    are per test, a goal may have several), and the faithfulness figures as its metrics."""
    if tracker is None or run_id is None or not outcome.sets:
        return
    for es in outcome.sets:
        goal_dir = run_dir / EXPLANATIONS / es.goal_id
        if goal_dir.is_dir():
            tracker.log_artifact(run_id, goal_dir, f"{EXPLANATIONS}/{es.goal_id}")
    tracker.log_metrics(run_id, explanation_metrics(outcome.sets))
