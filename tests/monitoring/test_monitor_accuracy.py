"""Accuracy findings: measured with field labels, estimated from calibrated confidence (CBPE) without."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from monitor_kit import split

from nnassay.schemas.monitoring import FindingKind
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.monitoring.accuracy import cbpe_estimate, fit_calibration
from nnassay.tasks.monitoring.field_io import UNLABELLED
from nnassay.tasks.monitoring.monitor import MonitorOptions, monitor

OPTIONS = MonitorOptions(permutations=100)

SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "none": lambda x, rng: x,
    "noise 0.2": lambda x, rng: x + rng.normal(0, 0.2, x.shape),
    "noise 0.3": lambda x, rng: x + rng.normal(0, 0.3, x.shape),
    "brightness 0.3": lambda x, rng: x + 0.3,
    "contrast x0.5": lambda x, rng: x * 0.5,
}


def test_labels_give_an_accuracy_finding(digits_reference: Dataset, digits_model: ModelRunner) -> None:
    reference, field = split(digits_reference, 340, seed=1)
    report = monitor(reference, field, digits_model, options=OPTIONS)
    found = {f.kind: f for f in report.findings}
    accuracy = found[FindingKind.ACCURACY]
    true = float(np.mean(digits_model.predict(field.x) == field.y))
    assert report.labelled and accuracy.counts_for_verdict
    assert accuracy.value == pytest.approx(true)
    assert accuracy.interval is not None and accuracy.interval.low <= true <= accuracy.interval.high
    assert accuracy.reference_value == pytest.approx(
        np.mean(digits_model.predict(reference.x) == reference.y)
    )
    assert not found[FindingKind.ESTIMATED_ACCURACY].counts_for_verdict


def test_without_labels_only_the_estimate_is_given(
    digits_reference: Dataset, digits_model: ModelRunner
) -> None:
    reference, field = split(digits_reference, 340, seed=1)
    unlabelled = replace(field, y=np.full(len(field), UNLABELLED))
    report = monitor(reference, unlabelled, digits_model, options=OPTIONS)
    kinds = {f.kind for f in report.findings}
    assert not report.labelled
    assert FindingKind.ACCURACY not in kinds and FindingKind.ESTIMATED_ACCURACY in kinds
    estimate = next(f for f in report.findings if f.kind == FindingKind.ESTIMATED_ACCURACY)
    assert "isotonic" in estimate.test and "calibration" in estimate.sentence


@pytest.mark.parametrize("shift", list(SHIFTS), ids=str)
def test_cbpe_interval_holds_the_true_accuracy_of_shifted_data(
    digits_reference: Dataset, digits_model: ModelRunner, shift: str
) -> None:
    """Calibrate on one half of the test data; estimate on a shifted copy of the other half."""
    reference, field = split(digits_reference, 270, seed=2)
    moved = np.clip(SHIFTS[shift](field.x, np.random.default_rng(3)), 0, 1).astype(np.float32)
    ref_p, field_p = digits_model.probabilities(reference.x), digits_model.probabilities(moved)
    true = float(np.mean(field_p.argmax(axis=1) == field.y))
    estimate, interval = cbpe_estimate(
        ref_p.max(axis=1),
        ref_p.argmax(axis=1) == reference.y,
        field_p.max(axis=1),
        rng=np.random.default_rng(4),
        n_resamples=500,
    )
    assert interval.low <= estimate <= interval.high
    assert interval.low <= true <= interval.high, (shift, true, estimate, interval)


def test_calibration_is_monotone_and_fits_the_reference() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.3, 1.0, 2000)
    correct = rng.random(2000) < confidence**2  # overconfident model: P(correct) = c^2
    levels, fitted = fit_calibration(confidence, correct)
    assert np.all(np.diff(fitted) >= 0) and np.all(np.diff(levels) > 0)
    assert np.interp(0.8, levels, fitted) == pytest.approx(0.64, abs=0.08)
