"""Step 1, stating goals: read and validate the assessment spec (YAML or JSON, parsed safely)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nnassay.schemas.goals import AssessmentSpec
from nnassay.tasks.errors import SpecError
from nnassay.tasks.io.registry_models import resolve_registered


def read_spec(path: Path) -> AssessmentSpec:
    """Parse and validate a spec file; relative paths resolve against its folder.

    Raises:
        SpecError: naming the file, the first field at fault (all fields listed) and the fix.
    """
    raw = _read_mapping(path)
    try:
        spec = AssessmentSpec.model_validate(raw)
    except ValidationError as exc:
        raise spec_error(path, exc, raw) from None
    return resolve_registered(spec).resolve_paths(path.resolve().parent)  # models:/ URIs -> local ONNX


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(
            f"spec file {path} does not exist",
            file=str(path),
            fix="pass the path of an assessment YAML or JSON file",
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise SpecError(
            f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}",
            file=str(path),
            fix="fix the syntax at the position shown",
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            "the spec must be a mapping with keys id, title, model, data, goals",
            file=str(path),
            fix="see examples/digits/assessment.yaml",
        )
    return data


def spec_error(path: Path, exc: ValidationError, raw: dict[str, Any] | None = None) -> SpecError:
    """Turn pydantic's errors into one message naming every field at fault (goals by their id)."""
    lines = [f"{_field(err['loc'], raw)}: {_explain(err)}" for err in exc.errors()]
    first = _field(exc.errors()[0]["loc"], raw)
    return SpecError(
        "; ".join(lines),
        file=str(path),
        field=first,
        fix="correct the field(s) named; `nnassay schema` writes the JSON Schema of the spec",
    )


def _field(loc: tuple[Any, ...], raw: dict[str, Any] | None) -> str:
    """'goals.0.criterion.confidence' -> "goals[G7].criterion.confidence" when goal 0 has id G7."""
    field = ".".join(str(p) for p in loc)
    goals = (raw or {}).get("goals")
    if len(loc) >= 2 and loc[0] == "goals" and isinstance(loc[1], int) and isinstance(goals, list):
        goal = goals[loc[1]] if loc[1] < len(goals) else None
        if isinstance(goal, dict) and isinstance(goal.get("id"), str):
            field = ".".join([f"goals[{goal['id']}]", *(str(p) for p in loc[2:])])
    return field


def _explain(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; unknown keys are rejected)"
    if kind == "missing":
        return "required field is missing"
    return str(err["msg"])
