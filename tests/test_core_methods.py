"""Foundation methods on tiny models with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from nnassay.schemas.results import TestStatus
from nnassay.tasks.methods.registry import get_method


def test_clean_accuracy_matches_labels_and_interval_covers(image_case, context_factory) -> None:
    ctx = context_factory(image_case, {"kind": "none"})
    method = get_method("statistical.clean_accuracy")
    out = method.run(ctx, method.Params())
    expected = float((ctx.model.predict(ctx.data.x) == ctx.data.y).mean())
    acc = out.metrics["accuracy"]
    assert out.status == TestStatus.COMPLETED
    assert acc.value == expected and 0.8 < expected < 0.97  # labels were flipped for ~10%
    assert acc.interval.low < expected < acc.interval.high
    assert acc.n == len(ctx.data) and acc.successes == round(expected * acc.n)
    assert abs(out.metrics["error_rate"].value - (1 - expected)) < 1e-12


def test_noise_accuracy_zero_noise_limit_and_monotone_flips(image_case, context_factory) -> None:
    method = get_method("statistical.noise_accuracy")
    ctx = context_factory(image_case, {"kind": "gaussian_noise", "sigma": 0.5}, metric="label_flip_rate")
    params = method.params_for(ctx.threat, {"sweep": [1e-6, 0.1, 0.5], "draws": 5})
    out = method.run(ctx, params)
    flips = next(s for s in out.series if s.name == "label flip rate")
    assert flips.x[0] == 0.0 and flips.y[1] == 0.0  # a 1e-6 sigma changes nothing
    assert flips.y[-1] > flips.y[2] > 0.0  # stronger noise flips more
    assert out.metrics["label_flip_rate"].n == 5 * len(ctx.data)


def test_uniform_noise_stays_in_ball_and_range(image_case, context_factory) -> None:
    from nnassay.tasks.methods.statistical.core import perturb

    ctx = context_factory(image_case, {"kind": "uniform_noise", "eps": 0.2})
    x = ctx.data.x
    noisy = perturb(x, ctx.threat, 0.2, np.random.default_rng(0), (0.0, 1.0))
    assert np.abs(noisy - x).max() <= 0.2 + 1e-6
    assert noisy.min() >= 0.0 and noisy.max() <= 1.0


def test_same_seed_same_numbers(image_case, context_factory) -> None:
    method = get_method("statistical.noise_accuracy")
    runs = []
    for _ in range(2):
        ctx = context_factory(image_case, {"kind": "gaussian_noise", "sigma": 0.3}, seed=11)
        runs.append(method.run(ctx, method.params_for(ctx.threat, {})).metrics)
    assert runs[0] == runs[1]


def test_identity_preprocessing_is_skipped_and_others_follow_the_formula(image_case) -> None:
    from nnassay.schemas.goals import ModelSpec, Preprocessing
    from nnassay.tasks.io.model_io import ModelRunner

    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 6, 6)).astype(np.float32)
    plain = ModelRunner(ModelSpec(path=image_case.model), prefer_cuda=False)
    assert plain.identity_preprocessing
    same = plain.preprocess(x)
    assert same.dtype == np.float32 and np.shares_memory(same, x)  # no pass over the batch
    converted = plain.preprocess(x.astype(np.float64))
    assert converted.dtype == np.float32 and converted.flags.c_contiguous
    np.testing.assert_array_equal(converted, x)
    assert np.array_equal(plain.preprocess(x[:, :, ::-1]), x[:, :, ::-1])  # strided input made contiguous

    pre = Preprocessing(scale=2.0, mean=[0.5], std=[0.25])
    scaled = ModelRunner(ModelSpec(path=image_case.model, preprocessing=pre), prefer_cuda=False)
    assert not scaled.identity_preprocessing
    out = scaled.preprocess(x)
    expected = ((x.astype(np.float32) * np.float32(2.0) - np.float32(0.5)) / np.float32(0.25)).astype(
        np.float32
    )
    np.testing.assert_array_equal(out, expected)  # bit-identical to the formula
    assert not np.shares_memory(out, x) and np.array_equal(x, x.copy())  # the input is left alone
    only_scale = ModelRunner(
        ModelSpec(path=image_case.model, preprocessing=Preprocessing(scale=1 / 255)), prefer_cuda=False
    )
    np.testing.assert_array_equal(only_scale.preprocess(x), (x * np.float32(1 / 255)).astype(np.float32))
    np.testing.assert_allclose(scaled.logits(x), plain.logits(expected), rtol=1e-6)


def test_rates_use_the_goals_interval_method(image_case, context_factory) -> None:
    method = get_method("statistical.clean_accuracy")
    ctx = context_factory(image_case, {"kind": "none"}, confidence=0.9)
    exact = method.run(ctx, method.Params()).metrics["accuracy"]
    ctx.interval = "wilson"  # criterion.interval of the goal, as the runner passes it
    wilson = method.run(ctx, method.Params()).metrics["accuracy"]
    assert exact.interval.method == "clopper-pearson" and wilson.interval.method == "wilson"
    assert wilson.interval.confidence == exact.interval.confidence == 0.9
    assert wilson.interval.high - wilson.interval.low < exact.interval.high - exact.interval.low
    forced = method.run(ctx, method.Params(interval="clopper-pearson")).metrics["accuracy"]
    assert forced.interval == exact.interval  # an explicit parameter wins over the goal


def test_accuracy_drop_is_paired_with_mcnemar(image_case, context_factory) -> None:
    from scipy.stats import binomtest

    method = get_method("statistical.noise_accuracy")
    ctx = context_factory(image_case, {"kind": "gaussian_noise", "sigma": 0.4})
    out = method.run(ctx, method.params_for(ctx.threat, {}))
    drop, test = out.metrics["accuracy_drop"], out.details["accuracy_drop_test"]
    assert drop.value == pytest.approx(out.details["clean_accuracy"] - out.metrics["accuracy"].value)
    assert drop.interval is not None and drop.interval.low <= drop.value <= drop.interval.high
    assert drop.interval.confidence == 0.95 and drop.interval.method == "newcombe-paired-hybrid-score"
    only_clean, only_noisy = (
        test["discordant_clean_right_noisy_wrong"],
        test["discordant_clean_wrong_noisy_right"],
    )
    assert only_clean + only_noisy > 0 and drop.value == pytest.approx(
        (only_clean - only_noisy) / len(ctx.data)
    )
    assert test["p_value"] == pytest.approx(binomtest(only_clean, only_clean + only_noisy, 0.5).pvalue)
    several = method.run(ctx, method.params_for(ctx.threat, {"draws": 4})).metrics["accuracy_drop"]
    assert several.interval is not None and several.interval.method.startswith("bootstrap")
    assert several.interval.low <= several.value <= several.interval.high
