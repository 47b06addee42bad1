"""`nnassay plan SPEC`: the test plan with each test's estimated time, without running anything.

Imports stay light (fast --help): the pipeline is imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nnassay.flows.cli.options import Debug, fail

if TYPE_CHECKING:
    from nnassay.schemas.plan import AssessmentPlan
    from nnassay.tasks.pipeline.estimate import UnitCosts

EXIT_OK, EXIT_INVALID = 0, 2


def register(app: typer.Typer) -> None:
    """Add the `plan` command to the `nnassay` app."""
    app.command("plan")(plan_cmd)


def plan_cmd(
    spec: Annotated[Path, typer.Argument(help="Assessment spec (YAML or JSON): model, data and goals.")],
    cpu: Annotated[bool, typer.Option("--cpu", help="Use the CPU provider even when CUDA works.")] = False,
    mlflow_uri: Annotated[
        str | None,
        typer.Option("--mlflow-uri", help="MLflow registry the --model-uri is read from."),
    ] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri",
            help="Plan for this MLflow registry model (models:/NAME/VERSION or models:/NAME@ALIAS) instead"
            " of the spec's model.path (its artifact folder is downloaded to time it; nothing is tagged).",
        ),
    ] = None,
    debug: Debug = False,
) -> None:
    """Show the tests `assess` would run, with each test's estimated time and the total, without
    running any. Exit 0: the spec plans; 2: invalid input."""
    from nnassay.schemas.settings import Settings
    from nnassay.tasks.errors import AssessmentError
    from nnassay.tasks.io.registry_models import download_scope
    from nnassay.tasks.pipeline.execute import plan_tests, state_goals

    settings = Settings()
    try:
        with download_scope():  # a models:/ model is timed, then its download removed
            goals, facts = state_goals(
                spec,
                prefer_cuda=settings.prefer_cuda and not cpu,
                model_uri=model_uri,
                registry_uri=mlflow_uri or settings.mlflow_tracking_uri,
            )
            plan = plan_tests(goals, facts, prefer_cuda=settings.prefer_cuda and not cpu)
    except AssessmentError as exc:
        fail(exc, debug)
    typer.echo("\n".join(plan_lines(plan, facts.unit_costs)))
    raise typer.Exit(EXIT_OK)


def plan_lines(plan: AssessmentPlan, units: UnitCosts | None) -> list[str]:
    """The plan as a table (test id, method, samples, estimate, budget), the total and the notes."""
    from nnassay.tasks.pipeline.estimate import format_duration, total_estimate_s

    rows = [
        (
            t.test_id,
            t.method,
            str(t.samples),
            format_duration(t.estimate_s) if t.estimate_s is not None else "-",
            format_duration(t.time_s),
        )
        for t in plan.tests
    ]
    head = ("test", "method", "samples", "estimate", "budget")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        left = [c.ljust(w) for c, w in zip(cells[:2], widths[:2], strict=True)]
        right = [c.rjust(w) for c, w in zip(cells[2:], widths[2:], strict=True)]
        return "  ".join(left + right).rstrip()

    total = total_estimate_s(plan)
    lines = [f"plan of spec {plan.spec_id!r}: {len(plan.tests)} tests", line(head)]
    lines += [line(r) for r in rows]
    lines.append(line(("total", "", "", format_duration(total) if total is not None else "-", "")))
    if plan.explain_estimate_s is not None:
        lines.append(
            f"explanations: up to {format_duration(plan.explain_estimate_s)} more if every goal that can "
            "leave per-sample failures fails (explain: {enabled: false} turns them off)"
        )
    if units is not None:
        lines.append(
            f"(estimates from the model's unit costs, timed in {format_duration(units.measure_s)}; they "
            "move with the machine's load; `assess` runs up to two tests at a time)"
        )
    lines += [f"pilot: {t.test_id}: {t.estimate_pilot}" for t in plan.tests if t.estimate_pilot]
    lines += [f"note: {n}" for n in plan.notes]
    return lines
