"""Verdicts of ``monitor``: no drift on same-distribution data, drift naming what moved, too few samples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from monitor_kit import make_dataset, split

from nnassay.schemas.monitoring import DriftVerdict, FindingKind, MonitoringReport
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.monitoring.monitor import MonitorOptions, monitor

FAST = MonitorOptions(permutations=200, estimate_accuracy=False)


def test_tabular_same_distribution_is_no_drift(
    tabular_data: Callable[..., Dataset], tabular_model: ModelRunner
) -> None:
    report = monitor(tabular_data(1000, seed=1), tabular_data(400, seed=2), tabular_model, options=FAST)
    assert report.verdict == DriftVerdict.NO_DRIFT, report.summary
    assert report.drifted == [] and report.needed_samples is None
    features = [f for f in report.findings if f.kind == FindingKind.FEATURE]
    assert [f.what for f in features] == [f"feature {str(i)!r}" for i in range(5)]
    assert all(f.adjusted_p_value is not None and f.adjusted_p_value >= f.p_value for f in features)  # type: ignore[operator]


def test_tabular_shifted_feature_is_named(
    tabular_data: Callable[..., Dataset], tabular_model: ModelRunner
) -> None:
    field = tabular_data(400, seed=2, shift={3: 1.0})
    report = monitor(tabular_data(1000, seed=1), field, tabular_model, options=FAST)
    assert report.verdict == DriftVerdict.DRIFT
    assert "feature '3'" in report.drifted
    assert not any(
        name in report.drifted for name in ("feature '0'", "feature '1'", "feature '2'", "feature '4'")
    )
    shifted = next(f for f in report.findings if f.what == "feature '3'")
    assert shifted.effect_size == pytest.approx(1.0, abs=0.2)  # standardized mean difference
    assert "feature '3'" in report.summary


def test_categorical_feature_uses_chi_squared(tabular_model: ModelRunner) -> None:
    rng = np.random.default_rng(3)
    x_ref, x_field = rng.uniform(0, 1, (600, 5)), rng.uniform(0, 1, (300, 5))
    x_ref[:, 0] = rng.integers(0, 3, 600)
    x_field[:, 0] = rng.choice(3, 300, p=[0.6, 0.2, 0.2])
    report = monitor(
        make_dataset(x_ref, tabular_model, seed=1),
        make_dataset(x_field, tabular_model, seed=2),
        tabular_model,
        options=FAST,
    )
    finding = next(f for f in report.findings if f.what == "feature '0'")
    assert finding.test.startswith("chi-squared") and finding.effect_name == "Cramér's V"
    assert finding.drifted


def test_images_same_distribution_is_no_drift(digits_reference: Dataset, digits_model: ModelRunner) -> None:
    # One split; about 1 in 20 splits alarms by design (test_monitor_calibration.py measures the rate).
    reference, field = split(digits_reference, 340, seed=1)
    report = monitor(reference, field, digits_model, seed=0, options=FAST)
    assert report.verdict == DriftVerdict.NO_DRIFT, report.summary


@pytest.mark.parametrize(
    ("shift", "named"),
    [
        (lambda x, rng: x + 0.2, "image brightness (mean pixel value)"),
        (lambda x, rng: x + rng.normal(0, 0.15, x.shape), "image contrast (pixel standard deviation)"),
    ],
    ids=["brightness", "noise"],
)
def test_images_shift_is_named(
    digits_reference: Dataset, digits_model: ModelRunner, shift: Callable[..., np.ndarray], named: str
) -> None:
    reference, field = split(digits_reference, 340, seed=0)
    moved = np.clip(shift(field.x, np.random.default_rng(1)), 0, 1).astype(np.float32)
    report = monitor(reference, replace(field, x=moved), digits_model, options=FAST)
    assert report.verdict == DriftVerdict.DRIFT
    assert named in report.drifted


def test_output_tests_alone_see_a_model_relevant_shift(image_model: ModelRunner) -> None:
    """Inputs with the same brightness and contrast but another structure: only the outputs move."""
    rng = np.random.default_rng(0)
    reference = make_dataset(rng.uniform(0, 1, (600, 1, 6, 6)), image_model, seed=1)
    smooth = np.repeat(np.repeat(rng.uniform(0, 1, (300, 1, 3, 3)), 2, axis=2), 2, axis=3)
    report = monitor(reference, make_dataset(smooth, image_model, seed=2), image_model, options=FAST)
    assert report.verdict == DriftVerdict.DRIFT
    assert "model outputs (softmax scores)" in report.drifted


def test_too_few_samples_is_insufficient_data(
    tabular_data: Callable[..., Dataset], tabular_model: ModelRunner
) -> None:
    report = monitor(tabular_data(1000, seed=1), tabular_data(20, seed=2), tabular_model, options=FAST)
    assert report.verdict == DriftVerdict.INSUFFICIENT_DATA
    assert report.needed_samples is not None and report.needed_samples > 20
    assert str(report.needed_samples) in report.summary


def test_a_handful_of_samples_runs_no_test(
    tabular_data: Callable[..., Dataset], tabular_model: ModelRunner
) -> None:
    report = monitor(tabular_data(200, seed=1), tabular_data(3, seed=2), tabular_model, options=FAST)
    assert report.verdict == DriftVerdict.INSUFFICIENT_DATA and report.findings == []


def test_overlap_with_the_reference_is_dropped(digits_reference: Dataset, digits_model: ModelRunner) -> None:
    _, field = split(digits_reference, 340, seed=0)
    report = monitor(digits_reference, field, digits_model, options=FAST)
    assert report.overlap_removed >= len(field) - 5  # a few digits may repeat in the data
    assert report.reference_samples == len(digits_reference) - report.overlap_removed


def test_report_round_trips_and_is_reproducible(digits_reference: Dataset, digits_model: ModelRunner) -> None:
    reference, field = split(digits_reference, 340, seed=0)
    options = MonitorOptions(permutations=100)
    one = monitor(
        reference, field, digits_model, seed=5, options=options, assessment_evidence_sha256="ab" * 32
    )
    two = monitor(
        reference, field, digits_model, seed=5, options=options, assessment_evidence_sha256="ab" * 32
    )
    assert one == two
    assert MonitoringReport.model_validate_json(one.model_dump_json()) == one
    assert one.assessment_evidence_sha256 == "ab" * 32 and one.schema_version == "1"
    assert all(f.sentence for f in one.findings)


def test_field_equal_to_the_reference_leaves_nothing_to_compare(
    tabular_data: Callable[..., Dataset], tabular_model: ModelRunner
) -> None:
    data = tabular_data(300, seed=1)
    report = monitor(data, data, tabular_model, options=FAST)
    assert report.verdict == DriftVerdict.INSUFFICIENT_DATA and report.findings == []
    assert report.overlap_removed == 300 and report.needed_samples is None


def test_options_keep_their_alpha_unless_overridden(
    tabular_data: Callable[..., Dataset], tabular_model: ModelRunner
) -> None:
    reference, field = tabular_data(600, seed=1), tabular_data(200, seed=2)
    assert monitor(reference, field, tabular_model, options=replace(FAST, alpha=0.01)).alpha == 0.01
    assert monitor(reference, field, tabular_model, alpha=0.1, options=replace(FAST, alpha=0.01)).alpha == 0.1
