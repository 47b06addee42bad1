"""From drift to assessment: a derived spec that keeps every goal and adds a domain-shift goal on
the field data, for the lifecycle flow to assess.

The added goal mirrors the spec's own ``domain_shift`` goal (its metric, criterion, risk source and
controls; G9 in ``examples/digits/assessment.yaml``), else its clean-accuracy goal (threat
``none``, metric ``accuracy``), else the ``threshold`` given. The domain-shift method measures
accuracy, so the field batch must carry labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nnassay.schemas.goals import AssessmentSpec, Goal
from nnassay.schemas.monitoring import MonitoringReport
from nnassay.tasks.errors import SpecError
from nnassay.tasks.io.files import write_atomic
from nnassay.tasks.io.spec_io import read_spec

DEFAULT_CONTROLS = ["A.6.2.4", "A.7.4"]


def derive_spec(
    spec_path: Path,
    report: MonitoringReport,
    field_path: Path,
    out_path: Path,
    *,
    threshold: float | None = None,
) -> Path:
    """Write the derived spec (YAML, safe dump, absolute paths) to ``out_path`` and return it.

    Raises:
        SpecError: the spec cannot be read, the field batch has no labels, or no criterion is known.
    """
    if not report.labelled:
        raise SpecError(
            f"the field batch {field_path.name} has no labels; a domain-shift goal measures accuracy",
            file=str(field_path),
            fix="label a sample of the field batch (npz array y, the CSV label column, or class folders)",
        )
    spec = read_spec(spec_path)
    goal = field_goal(spec, report, field_path.resolve(), threshold)
    data = spec.model_dump(mode="json", exclude_none=True)
    data["goals"].append(goal)
    data["id"] = f"{spec.id}-field"[:64]
    data["description"] = _description(spec, report, field_path)
    AssessmentSpec.model_validate(data)  # the lifecycle flow will read it: fail here, not there
    write_atomic(out_path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return out_path


def field_goal(
    spec: AssessmentSpec, report: MonitoringReport, field_path: Path, threshold: float | None
) -> dict[str, Any]:
    """The domain-shift goal on the field batch, as a spec mapping."""
    model_goal = _model_goal(spec)
    if model_goal is None and threshold is None:
        raise SpecError(
            "the spec has no domain_shift or clean accuracy goal to take the criterion from",
            field="goals",
            fix="pass the accuracy threshold the field data must meet",
        )
    criterion: dict[str, Any] = (
        model_goal.criterion.model_dump(mode="json") if model_goal else {"comparator": ">="}
    )
    if threshold is not None:
        criterion["threshold"] = threshold
    drifted = ", ".join(report.drifted) or "no significant change"
    return {
        "id": _unique_id(spec, "FIELD"),
        "statement": f"Field data ({field_path.name}) are read with accuracy {criterion['comparator']} "
        f"{criterion['threshold']:g}.",
        "threat": {"kind": "domain_shift", "path": str(field_path)},
        "metric": "accuracy",
        "criterion": criterion,
        "risk": {
            "id": "R-FIELD",
            "source": model_goal.risk.source if model_goal else "B.2 complexity of environment",
            "impact": model_goal.risk.impact if model_goal else "medium",
            "description": f"The field data drifted from the assessed data ({drifted}).",
        },
        "controls": list(model_goal.controls) if model_goal else DEFAULT_CONTROLS,
    }


def _model_goal(spec: AssessmentSpec) -> Goal | None:
    shift = [g for g in spec.goals if g.threat.kind == "domain_shift"]
    clean = [g for g in spec.goals if g.threat.kind == "none" and g.metric == "accuracy"]
    chosen = shift or clean
    return chosen[0] if chosen else None


def _unique_id(spec: AssessmentSpec, stem: str) -> str:
    ids = {g.id for g in spec.goals}
    return next(f"{stem}{i or ''}" for i in range(len(ids) + 1) if f"{stem}{i or ''}" not in ids)


def _description(spec: AssessmentSpec, report: MonitoringReport, field_path: Path) -> str:
    return (
        f"Derived from assessment {spec.id!r} by field monitoring of {field_path.name} "
        f"(field data sha256 {report.field_sha256}): {report.summary} "
        f"{spec.description}".strip()
    )
