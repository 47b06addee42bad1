"""A tabular feature's scale and observed range come from the whole test data file, not from a goal's
sample subset: goals with budget.samples 1 and 60 (and every shard of a test) share one feature box,
and the box of a 1-sample goal is in the features' units (its std), not raw units (fallback 1)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

sys.path.insert(0, "tests")
import zoo_models  # noqa: E402

from nnassay.schemas.goals import DataSpec, Layout, ModelSpec  # noqa: E402
from nnassay.schemas.results import TestStatus  # noqa: E402
from nnassay.tasks.io.data_io import load_dataset  # noqa: E402
from nnassay.tasks.io.model_io import ModelRunner  # noqa: E402
from nnassay.tasks.methods.empirical.features import data_box, data_columns, tabular_box  # noqa: E402
from nnassay.tasks.pipeline import execute  # noqa: E402
from nnassay.tasks.pipeline.execute import load_inputs, run_test, state_goals  # noqa: E402
from nnassay.tasks.pipeline.planning import make_plan  # noqa: E402


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> zoo_models.ZooModel:
    return zoo_models.build("tabular_mlp", tmp_path_factory.mktemp("zoo"), tiny=True)


def _goal(gid: str, threat: dict[str, Any], method: str, samples: int) -> dict[str, Any]:
    return {
        "id": gid,
        "statement": gid,
        "threat": threat,
        "metric": "robust_accuracy" if "ball" in threat["kind"] else "accuracy",
        "criterion": {"comparator": ">=", "threshold": 0.0},
        "risk": {"id": "R", "source": "B.5 risk sources related to machine learning"},
        "methods": [{"name": method}],
        "budget": {"samples": samples},
    }


def _spec(m: zoo_models.ZooModel, folder: Path, goals: list[dict[str, Any]]) -> Path:
    x = np.load(m.data)["x"]
    spec = {
        "id": "scales",
        "title": "feature scales from the whole data",
        "seed": 3,
        "model": {"path": str(m.path), "layout": "NC", "value_range": [float(x.min()), float(x.max()) + 1]},
        "data": {"path": str(m.data)},
        "goals": goals,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _whole_std(m: zoo_models.ZooModel) -> np.ndarray:
    """Each feature's scale as the code defines it: the std of the whole (float32) data."""
    x = np.load(m.data)["x"].astype(np.float32)
    return np.array([float(np.nanstd(x[:, i])) for i in range(x.shape[1])])


def test_a_subset_keeps_the_whole_datas_box(mlp: zoo_models.ZooModel) -> None:
    """Dataset.subset (also of a subset) keeps the whole data's scales and observed ranges."""
    runner = ModelRunner(
        ModelSpec(path=mlp.path, layout=Layout.FLAT, value_range=(0.0, 1e6)), prefer_cuda=False
    )
    whole = load_dataset(DataSpec(path=mlp.data), runner)
    one = whole.subset(60).subset(1)
    assert len(one) == 1 and one.whole_x is whole.x
    full_box, one_box = data_box(whole, (-1e6, 1e6)), data_box(one, (-1e6, 1e6))
    assert full_box is not None and one_box is not None
    np.testing.assert_allclose(one_box.scale, _whole_std(mlp), rtol=1e-6)
    assert np.array_equal(one_box.scale, full_box.scale)
    assert not np.allclose(one_box.scale, 1.0)  # not the fallback of a one-row std
    lows = [c.low for c in data_columns(one)]
    assert lows == [c.low for c in data_columns(whole)] == [float(v) for v in whole.x.min(axis=0)]


def test_goals_of_1_and_60_samples_record_the_same_whole_data_scale(
    mlp: zoo_models.ZooModel, tmp_path: Path
) -> None:
    goals = [
        _goal("ONE", {"kind": "linf_ball", "eps": 0.5}, "empirical.pgd_linf", 1),
        _goal("SIXTY", {"kind": "linf_ball", "eps": 0.5}, "empirical.pgd_linf", 60),
        _goal("NOISE1", {"kind": "gaussian_noise", "sigma": 0.1}, "statistical.noise_accuracy", 1),
    ]
    spec, facts = state_goals(_spec(mlp, tmp_path, goals), prefer_cuda=False)
    plan = make_plan(spec, facts)
    assert sorted(t.samples for t in plan.tests) == [1, 1, 60]
    expected = _whole_std(mlp)
    scales = []
    for test in plan.tests:
        result = run_test(test, spec, tmp_path / "run", prefer_cuda=False)
        assert result.status == TestStatus.COMPLETED, result.reason
        scales.append(np.array(result.details["feature_scale"]))
        np.testing.assert_allclose(scales[-1], expected, rtol=1e-6, err_msg=test.goal_id)
    assert all(np.array_equal(s, scales[0]) for s in scales)
    # every test's (and so every shard's) context holds the same box, whatever its subset
    _, whole = load_inputs(spec, prefer_cuda=False)
    boxes = [
        tabular_box(execute.test_context(t, spec, tmp_path / "ctx", prefer_cuda=False)) for t in plan.tests
    ]
    assert all(b is not None and np.array_equal(b.low, boxes[0].low) for b in boxes)  # type: ignore[union-attr]
    assert all(
        execute.test_context(t, spec, tmp_path / "ctx", prefer_cuda=False).data.whole_x is whole.x
        for t in plan.tests
    )
