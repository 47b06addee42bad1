"""Schemas: round trips through JSON, rejections of malformed specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from nnassay.schemas.common import Interval, Measurement, MethodFamily
from nnassay.schemas.goals import AssessmentSpec, Criterion
from nnassay.schemas.results import MethodResult
from nnassay.tasks.errors import SpecError
from nnassay.tasks.io.spec_io import read_spec
from nnassay.tasks.pipeline.planning import PlanFacts, make_plan

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits" / "assessment.yaml"


def test_example_spec_round_trips_through_json() -> None:
    spec = read_spec(EXAMPLE)
    again = AssessmentSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert [g.id for g in spec.goals] == [f"G{i}" for i in range(1, 13)]
    facts = PlanFacts(spec_sha256="s", model_sha256="m", data_sha256="d", data_samples=540, data_kind="image")
    families = {test.family for test in make_plan(spec, facts).tests}
    assert families == set(MethodFamily), "the example exercises every method family"
    assert spec.model.path.is_absolute() and spec.model.path.exists()


@given(value=st.floats(0, 1), low=st.floats(0, 0.5), width=st.floats(0, 0.5), n=st.integers(1, 10**6))
def test_measurement_round_trips(value: float, low: float, width: float, n: int) -> None:
    m = Measurement(
        value=value,
        interval=Interval(low=low, high=low + width, confidence=0.95, method="wilson"),
        n=n,
        is_rate=True,
    )
    assert Measurement.model_validate_json(m.model_dump_json()) == m


def test_interval_rejects_reversed_ends() -> None:
    with pytest.raises(ValidationError):
        Interval(low=0.9, high=0.1, confidence=0.95, method="x")


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.1])
def test_confidence_outside_unit_interval_rejected(confidence: float) -> None:
    with pytest.raises(ValidationError, match="confidence"):
        Criterion(comparator=">=", threshold=0.5, confidence=confidence)


def _spec_dict() -> dict:
    import yaml

    return yaml.safe_load(EXAMPLE.read_text())


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(data))
    return path


def test_unknown_key_is_named(tmp_path: Path) -> None:
    data = _spec_dict()
    data["goals"][0]["treshold"] = 0.5
    with pytest.raises(SpecError) as err:
        read_spec(_write(tmp_path, data))
    assert "goals[G1].treshold" in str(err.value) and "unknown key" in str(err.value)
    assert str(tmp_path / "spec.json") in str(err.value)


def test_missing_and_wrong_typed_fields_are_named(tmp_path: Path) -> None:
    data = _spec_dict()
    del data["goals"][1]["metric"]
    data["goals"][0]["criterion"]["threshold"] = "high"
    with pytest.raises(SpecError) as err:
        read_spec(_write(tmp_path, data))
    text = str(err.value)
    assert "goals[G2].metric: required field is missing" in text
    assert "goals[G1].criterion.threshold" in text


def test_duplicate_goal_ids_rejected(tmp_path: Path) -> None:
    data = _spec_dict()
    data["goals"][1]["id"] = "G1"
    with pytest.raises(SpecError, match="unique"):
        read_spec(_write(tmp_path, data))


def test_unknown_threat_kind_lists_valid_kinds(tmp_path: Path) -> None:
    data = _spec_dict()
    data["goals"][0]["threat"] = {"kind": "cosmic_rays"}
    with pytest.raises(SpecError) as err:
        read_spec(_write(tmp_path, data))
    assert "gaussian_noise" in str(err.value)


def test_yaml_is_parsed_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        read_spec(path)


def test_every_stage_has_descriptions_and_version() -> None:
    from nnassay.schemas.evidence import EvidenceBundle
    from nnassay.schemas.plan import AssessmentPlan

    for model in (AssessmentSpec, AssessmentPlan, MethodResult, EvidenceBundle):
        schema = model.model_json_schema()
        assert "schema_version" in schema["properties"]
        for name, definition in schema.get("$defs", {}).items():
            for field, spec in definition.get("properties", {}).items():
                assert "description" in spec, f"{name}.{field} has no description"
