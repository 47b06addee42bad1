"""Calibration: the verdict's false-alarm rate on same-distribution splits stays within alpha;
the statistical building blocks (Holm, the sample-size rule, the MMD permutation test) behave."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from monitor_kit import make_dataset, split
from scipy.stats import ks_2samp

from nnassay.schemas.monitoring import DriftVerdict
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.monitoring.monitor import MonitorOptions, monitor
from nnassay.tasks.monitoring.outputs import mmd_permutation_test
from nnassay.tasks.monitoring.verdict import holm, needed_samples
from nnassay.tasks.stats.intervals import proportion_interval

REPEATS = 100
ALPHA = 0.05
FAST = MonitorOptions(alpha=ALPHA, permutations=200, estimate_accuracy=False)


def _false_alarms(pool: Dataset, model: ModelRunner, first: int, field: int) -> int:
    alarms = 0
    for repeat in range(REPEATS):
        reference, rest = split(pool, first, seed=1000 + repeat)
        report = monitor(reference, rest.subset(field), model, alpha=ALPHA, seed=repeat, options=FAST)
        alarms += report.verdict == DriftVerdict.DRIFT
    return alarms


def _assert_within_alpha(alarms: int) -> None:
    interval = proportion_interval(alarms, REPEATS, 0.95)
    assert interval.low <= ALPHA, (
        f"{alarms}/{REPEATS} false alarms: rate interval {interval} lies above {ALPHA}"
    )


@pytest.mark.slow
def test_false_alarm_rate_on_digits_splits(digits_reference: Dataset, digits_model: ModelRunner) -> None:
    _assert_within_alpha(_false_alarms(digits_reference, digits_model, 340, 200))


@pytest.mark.slow
def test_false_alarm_rate_on_tabular_splits(tabular_model: ModelRunner) -> None:
    pool = make_dataset(np.random.default_rng(0).uniform(0, 1, (1500, 5)), tabular_model, seed=0)
    _assert_within_alpha(_false_alarms(pool, tabular_model, 1000, 300))


def test_holm_matches_the_step_down_definition() -> None:
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    assert holm([]).size == 0 and holm([0.9, 0.8]).max() <= 1.0


def test_needed_samples_rule_gives_the_stated_power() -> None:
    """At the needed size a KS test at alpha / m detects a 0.5 sd shift in at least 80% of draws."""
    m_ref, tests, alpha = 2000, 4, 0.05
    n = needed_samples(m_ref, tests, alpha, min_effect=0.5, power=0.8)
    assert n is not None and 50 < n < 400
    rng = np.random.default_rng(0)
    hits = sum(
        ks_2samp(rng.normal(0, 1, m_ref), rng.normal(0.5, 1, n)).pvalue <= alpha / tests for _ in range(200)
    )
    assert hits / 200 >= 0.8
    assert needed_samples(50, tests, alpha) is None  # too small a reference: no batch is enough
    assert needed_samples(m_ref, 20, alpha) > n  # type: ignore[operator]  # more tests, more samples


def test_mmd_permutation_test_is_exact_under_the_null_and_sees_a_shift() -> None:
    rng = np.random.default_rng(0)
    p_null = [
        mmd_permutation_test(rng.normal(size=(40, 3)), rng.normal(size=(30, 3)), permutations=49, rng=rng)[1]
        for _ in range(200)
    ]
    assert 0.1 <= np.mean(np.array(p_null) <= 0.2) <= 0.3  # uniform p-values: about 20% below 0.2
    _, p_shift = mmd_permutation_test(
        rng.normal(size=(100, 3)), rng.normal(0.7, 1, size=(100, 3)), permutations=200, rng=rng
    )
    assert p_shift <= 1 / 201 + 1e-12


def test_a_constant_field_batch_does_not_crash(digits_reference: Dataset, digits_model: ModelRunner) -> None:
    reference, field = split(digits_reference, 340, seed=1)
    blank = replace(field, x=np.zeros_like(field.x))
    report = monitor(reference, blank, digits_model, options=FAST)
    assert report.verdict == DriftVerdict.DRIFT
