"""Fixtures of the monitoring tests: runners for the tiny models and the example, data builders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from monitor_kit import DIGITS, make_dataset

from nnassay.schemas.goals import DataSpec, Layout, ModelSpec
from nnassay.tasks.io.data_io import Dataset, load_dataset
from nnassay.tasks.io.model_io import ModelRunner


@pytest.fixture(scope="session")
def digits_model() -> ModelRunner:
    return ModelRunner(ModelSpec(path=DIGITS / "model.onnx", layout=Layout.NCHW), prefer_cuda=False)


@pytest.fixture(scope="session")
def digits_reference(digits_model: ModelRunner) -> Dataset:
    return load_dataset(DataSpec(path=DIGITS / "test.npz"), digits_model)


@pytest.fixture(scope="session")
def tabular_model(tabular_case) -> ModelRunner:  # type: ignore[no-untyped-def]
    return ModelRunner(ModelSpec(path=tabular_case.model, layout=Layout.FLAT), prefer_cuda=False)


@pytest.fixture(scope="session")
def image_model(image_case) -> ModelRunner:  # type: ignore[no-untyped-def]
    return ModelRunner(ModelSpec(path=image_case.model, layout=Layout.NCHW), prefer_cuda=False)


@pytest.fixture
def tabular_data(tabular_model: ModelRunner) -> Callable[..., Dataset]:
    def build(n: int, seed: int, shift: dict[int, float] | None = None) -> Dataset:
        x = np.random.default_rng(seed).uniform(0, 1, (n, 5))
        for column, k in (shift or {}).items():
            x[:, column] += k * np.sqrt(1 / 12)  # k standard deviations of U(0, 1)
        return make_dataset(x, tabular_model, seed=seed)

    return build
