"""Every attribution method finds the one feature / pixel region a tiny model reads, and the black
box gives the same answer on a model the torch executor cannot run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnassay.schemas.explain import AttributionMethodName
from nnassay.schemas.goals import Layout
from nnassay.tasks.explain import ExplainOptions, GoalFailures, explain_goal
from nnassay.tasks.explain.attributions import patch_units, torch_executor
from tests.explain.models import NAMES, REGION, image_case, tabular_case

TABULAR_METHODS: list[tuple[AttributionMethodName, bool]] = [
    ("integrated_gradients", False),
    ("saliency", False),
    ("feature_ablation", True),
]
IMAGE_METHODS: list[tuple[AttributionMethodName, bool]] = [
    ("integrated_gradients", False),
    ("saliency", False),
    ("occlusion", True),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("explain")


def _explain(case, method: AttributionMethodName, black_box: bool, out: Path):  # type: ignore[no-untyped-def]
    model, data = case
    failures = GoalFailures("G1", np.flatnonzero(model.predict(data.x) != data.y))
    options = ExplainOptions(methods=(method,), black_box=black_box, random_orders=3)
    return explain_goal(model, data, failures, out, options)


@pytest.mark.parametrize("method,black_box", TABULAR_METHODS)
def test_tabular_methods_rank_the_key_feature_first(
    folder: Path, method: AttributionMethodName, black_box: bool
) -> None:
    found = _explain(tabular_case(folder), method, black_box, folder / method)
    failures = [s for s in found.samples if s.role == "failure"]
    assert len(failures) == 8 and found.methods == [method]
    assert all(s.top_features[0] == NAMES[2] for s in failures)
    assert found.faithfulness[0].beats_random, found.statement
    assert "beat random deletion" in found.statement


@pytest.mark.parametrize("method,black_box", IMAGE_METHODS)
def test_image_methods_rank_the_key_region_first(
    folder: Path, method: AttributionMethodName, black_box: bool
) -> None:
    found = _explain(image_case(folder), method, black_box, folder / f"img_{method}")
    failures = [s for s in found.samples if s.role == "failure"]
    assert len(failures) == 8
    assert all(s.top_features[0] == REGION for s in failures), [s.top_features[:2] for s in failures]
    assert found.faithfulness[0].beats_random, found.statement


def test_black_box_runs_a_model_the_executor_cannot(folder: Path) -> None:
    model, data = tabular_case(folder, activation="Shrink")
    module, why = torch_executor(model)
    assert module is None and "Shrink" in why
    failures = GoalFailures("G2", np.flatnonzero(model.predict(data.x) != data.y))
    found = explain_goal(model, data, failures, folder / "shrink")
    assert found.engine == "onnx_runtime" and found.methods == ["feature_ablation"]
    assert "Shrink" in found.engine_reason and found.executor_max_deviation is None
    assert all(s.top_features[0] == NAMES[2] for s in found.samples if s.role == "failure")
    assert found.faithfulness[0].beats_random


def test_default_methods_on_the_executor_are_ig_and_saliency(folder: Path) -> None:
    model, data = tabular_case(folder)
    failures = GoalFailures("G3", np.flatnonzero(model.predict(data.x) != data.y))
    found = explain_goal(model, data, failures, folder / "defaults", ExplainOptions(k=3, contrast=1))
    assert found.engine == "torch_executor" and found.methods == ["integrated_gradients", "saliency"]
    assert found.executor_max_deviation is not None and found.executor_max_deviation < 1e-4
    assert [s.role for s in found.samples] == ["failure"] * 3 + ["contrast"] + ["failure"] * 3 + ["contrast"]


def test_patches_are_named_by_rows_and_columns() -> None:
    units = patch_units((1, 5, 6), Layout.NCHW, 2)
    assert units.names[:4] == (
        "rows 0-1, cols 0-1",
        "rows 0-1, cols 2-3",
        "rows 0-1, cols 4-5",
        "rows 2-3, cols 0-1",
    )
    assert units.names[-1] == "rows 4-4, cols 4-5"
    assert units.masks.sum(axis=0).max() == 1 and units.masks.any(axis=0).all()
