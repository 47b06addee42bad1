"""From drift to assessment: the derived spec keeps the goals and adds a domain-shift goal on the field data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from monitor_kit import DIGITS

from nnassay.tasks.errors import SpecError
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.io.spec_io import read_spec
from nnassay.tasks.monitoring.derive import derive_spec
from nnassay.tasks.monitoring.monitor import MonitorOptions, load_batch, monitor

SHIFTED = DIGITS / "field" / "batch-02-shifted.npz"


def _report(reference: Dataset, model: ModelRunner, labelled: bool = True):  # type: ignore[no-untyped-def]
    batch = load_batch(SHIFTED, read_spec(DIGITS / "assessment.yaml").data, model)
    report = monitor(
        reference, batch.data, model, options=MonitorOptions(permutations=100, estimate_accuracy=False)
    )
    return report if labelled else report.model_copy(update={"labelled": False})


def test_derived_spec_validates_and_mirrors_the_domain_shift_goal(
    tmp_path: Path, digits_reference: Dataset, digits_model: ModelRunner
) -> None:
    report = _report(digits_reference, digits_model)
    out = derive_spec(DIGITS / "assessment.yaml", report, SHIFTED, tmp_path / "derived.yaml")
    original, derived = read_spec(DIGITS / "assessment.yaml"), read_spec(out)
    assert [g.id for g in derived.goals] == [*(g.id for g in original.goals), "FIELD"]
    assert derived.goals[:-1] == original.goals
    added, g9 = derived.goals[-1], next(g for g in original.goals if g.id == "G9")
    assert added.threat.kind == "domain_shift" and added.threat.path == SHIFTED.resolve()  # type: ignore[union-attr]
    assert (added.metric, added.criterion, added.controls) == (g9.metric, g9.criterion, g9.controls)
    assert "image brightness" in added.risk.description
    assert derived.model.path == original.model.path and derived.data.path == original.data.path
    assert report.field_sha256 in derived.description
    assert yaml.safe_load(out.read_text())["goals"][-1]["id"] == "FIELD"


def test_threshold_override(tmp_path: Path, digits_reference: Dataset, digits_model: ModelRunner) -> None:
    report = _report(digits_reference, digits_model)
    out = derive_spec(DIGITS / "assessment.yaml", report, SHIFTED, tmp_path / "d.yaml", threshold=0.95)
    assert read_spec(out).goals[-1].criterion.threshold == 0.95


def test_unlabelled_field_data_cannot_make_a_domain_shift_goal(
    tmp_path: Path, digits_reference: Dataset, digits_model: ModelRunner
) -> None:
    report = _report(digits_reference, digits_model, labelled=False)
    with pytest.raises(SpecError, match="no labels"):
        derive_spec(DIGITS / "assessment.yaml", report, SHIFTED, tmp_path / "d.yaml")


def test_the_added_goal_runs_with_the_domain_shift_method(
    tmp_path: Path, digits_reference: Dataset, digits_model: ModelRunner
) -> None:
    from nnassay.schemas.results import TestStatus
    from nnassay.tasks.methods.empirical.ood import DomainShiftAccuracy, ShiftParams
    from nnassay.tasks.methods.registry import RunContext

    out = derive_spec(
        DIGITS / "assessment.yaml", _report(digits_reference, digits_model), SHIFTED, tmp_path / "d.yaml"
    )
    goal = read_spec(out).goals[-1]
    method = DomainShiftAccuracy()
    ctx = RunContext(
        model=digits_model,
        data=digits_reference,
        threat=goal.threat,
        metric=goal.metric,
        seed=0,
        out_dir=tmp_path,
        run_dir=tmp_path,
    )
    outcome = method.run(ctx, method.derive_params(goal.threat, {}))  # type: ignore[arg-type]
    assert isinstance(method.derive_params(goal.threat, {}), ShiftParams)  # type: ignore[arg-type]
    assert outcome.status != TestStatus.ERROR and 0.8 < outcome.metrics["accuracy"].value <= 1.0
