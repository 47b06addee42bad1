"""Foundation methods on tiny models with known answers."""

from __future__ import annotations

import numpy as np

from schemas.results import TestStatus
from tasks.registry import get_method


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
    from tasks.statistical.core import perturb

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
