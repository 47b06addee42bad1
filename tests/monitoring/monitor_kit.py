"""Data builders of the monitoring tests (imported by the test modules and their conftest)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits"


def make_dataset(
    x: np.ndarray, model: ModelRunner, *, seed: int, flip: float = 0.1, name: str = "d"
) -> Dataset:
    """A Dataset of x with labels equal to the model's predictions, a share ``flip`` changed."""
    y = model.predict(x)
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < flip
    y[flipped] = (y[flipped] + 1) % model.n_classes
    tabular = x.ndim == 2
    return Dataset(
        x=x.astype(np.float32),
        y=y,
        layout=model.layout,
        kind="tabular" if tabular else "image",
        path=Path(f"{name}.npz"),
        sha256=f"{seed:064x}",
        feature_names=tuple(str(i) for i in range(x.shape[1])) if tabular else (),
    )


def split(data: Dataset, first: int, seed: int) -> tuple[Dataset, Dataset]:
    """A random split of ``data`` into ``first`` samples and the rest."""
    order = np.random.default_rng(seed).permutation(len(data))
    a, b = order[:first], order[first:]
    return replace(data, x=data.x[a], y=data.y[a]), replace(data, x=data.x[b], y=data.y[b])
