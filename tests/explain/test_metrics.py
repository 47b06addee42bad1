"""Explanation metrics for goals: attribution stability under noise, faithfulness gain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnassay.schemas.goals import Layout
from nnassay.tasks.explain import ExplainOptions, explain_goal, failures_from_flags
from nnassay.tasks.explain.metrics import attribution_stability, faithfulness_gain, signed_rank_correlation
from tests.explain.models import dataset, image_case, runner

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return image_case(tmp_path_factory.mktemp("metrics"))


def test_stability_falls_as_the_noise_grows() -> None:
    """On the bundled digits CNN: tiny noise keeps the attributions, strong noise moves them."""
    model = runner(DIGITS / "model.onnx", Layout.NCHW)
    with np.load(DIGITS / "test.npz") as npz:
        data = dataset(npz["x"][:10], npz["y"][:10], "image", Layout.NCHW)
    rows = np.arange(10)
    small = attribution_stability(model, data, rows, sigma=0.01, draws=4, method="integrated_gradients")
    large = attribution_stability(model, data, rows, sigma=0.3, draws=4, method="integrated_gradients")
    assert small.value > 0.9 and large.value < small.value - 0.1
    assert small.n == 10 and small.interval is not None and "sigma 0.01" in small.description


def test_stability_on_the_black_box(case) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    found = attribution_stability(
        model, data, np.arange(6), sigma=0.02, draws=3, options=ExplainOptions(black_box=True)
    )
    assert found.value > 0.5 and "occlusion" in found.description


def test_rank_correlation_of_constant_rankings() -> None:
    assert signed_rank_correlation(np.zeros(4), np.zeros(4)) == 1.0
    assert signed_rank_correlation(np.zeros(4), np.arange(4.0)) == 0.0
    assert signed_rank_correlation(np.arange(4.0), -np.arange(4.0)) == pytest.approx(-1.0)


def test_faithfulness_gain_is_a_measurement(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, data = case
    found = explain_goal(
        model,
        data,
        failures_from_flags("G1", model.predict(data.x) != data.y),
        tmp_path,
        ExplainOptions(black_box=True),
    )
    gain = faithfulness_gain(found.faithfulness[0])
    assert gain.value > 0 and gain.interval is not None and gain.interval.low > 0 and gain.n == 8
