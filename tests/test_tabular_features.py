"""Tabular threats per feature (issue 15, item 2): magnitudes in units of each feature's scale, invalid
input outside each feature's own range, integer / categorical / immutable features respected by noise
and attacks alike, and a feature declaration that does not match the data refused with exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

sys.path.insert(0, "tests")
import zoo_models  # noqa: E402

from nnassay.schemas.goals import FeatureSpec  # noqa: E402
from nnassay.schemas.results import MethodResult, TestStatus  # noqa: E402
from nnassay.tasks.methods.empirical.features import columns, feature_box  # noqa: E402
from nnassay.tasks.methods.empirical.invalid import invalid_inputs  # noqa: E402
from nnassay.tasks.methods.empirical.tabular import perturb_tabular  # noqa: E402
from nnassay.tasks.pipeline.execute import run_test, state_goals  # noqa: E402
from nnassay.tasks.pipeline.planning import make_plan  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
INTEGER, IMMUTABLE, CATEGORICAL = 2, 1, 3  # feature roles in the typed copy of the raw table
CODES = [0.0, 50.0, 100.0]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> zoo_models.ZooModel:
    return zoo_models.build("tabular_mlp", tmp_path_factory.mktemp("zoo"), tiny=True)


def _goal(gid: str, threat: dict[str, Any], metric: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": gid,
        "statement": gid,
        "threat": threat,
        "metric": metric,
        "criterion": {"comparator": ">=", "threshold": 0.0},
        "risk": {"id": "R", "source": "B.5 risk sources related to machine learning"},
        **extra,
    }


def _typed_spec(m: zoo_models.ZooModel, folder: Path, goals: list[dict[str, Any]]) -> Path:
    """The raw table with an integer, an immutable and a categorical feature declared."""
    data = np.load(m.data)
    x = data["x"].astype(np.float64)
    x[:, INTEGER] = np.round(x[:, INTEGER])
    x[:, CATEGORICAL] = np.array(CODES)[np.arange(len(x)) % 3]
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "typed.npz", x=x.astype(np.float32), y=data["y"])
    features: list[dict[str, Any]] = [{"name": str(i)} for i in range(x.shape[1])]
    features[INTEGER] = {"name": str(INTEGER), "kind": "integer"}
    features[IMMUTABLE] = {"name": str(IMMUTABLE), "immutable": True}
    features[CATEGORICAL] = {"name": str(CATEGORICAL), "kind": "categorical", "values": CODES}
    spec = {
        "id": "typed",
        "title": "typed features",
        "seed": 3,
        "model": {"path": str(m.path), "layout": "NC", "value_range": [float(x.min()), float(x.max()) + 1]},
        "data": {"path": str(folder / "typed.npz"), "features": features},
        "goals": goals,
    }
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(spec_path: Path, run_dir: Path) -> list[tuple[MethodResult, np.ndarray, np.ndarray]]:
    """Plan and run every test; each result with its perturbed inputs and their original rows."""
    spec, facts = state_goals(spec_path, prefer_cuda=False)
    plan = make_plan(spec, facts)
    out = []
    x = np.load(spec.data.path)["x"]
    for test in plan.tests:
        result = run_test(test, spec, run_dir, prefer_cuda=False)
        assert result.status == TestStatus.COMPLETED, result.reason
        npz = next((a for a in result.artifacts if a.path.endswith(".npz")), None)
        arrays = np.load(run_dir / npz.path) if npz else {}
        key = "x_adv" if "x_adv" in arrays else "x_pert"
        rows = arrays["index"] if "index" in arrays else np.zeros(0, int)
        out.append((result, arrays[key] if key in arrays else np.zeros((0, x.shape[1])), x[rows]))
    return out


def test_noise_follows_each_features_scale() -> None:
    """Strength 0.1 moves a 1e-3-scale feature by ~1e-4 and a 3e3-scale feature by ~300."""
    x, _ = zoo_models.raw_table(n=2000)
    cols = columns(x, (), ())
    noisy = perturb_tabular(x, cols, "numeric_noise", 0.1, np.random.default_rng(0))["noise"]
    moved = np.std(noisy.astype(np.float64) - x, axis=0)
    for j, c in enumerate(cols):
        assert c.spread == pytest.approx(float(np.std(x[:, j])), rel=1e-3)
        assert moved[j] == pytest.approx(0.1 * c.spread, rel=0.3), j  # clipping to the range trims a little
    assert moved[0] < 1e-3 and moved[-1] > 100  # 1e-3 scale: ~1e-4; 3e3 scale: ~300
    declared = columns(x, (), (FeatureSpec(name="0", scale=2.0), FeatureSpec(name="1", noise_scale=3.0)))
    assert (declared[0].spread, declared[1].spread) == (2.0, 3.0)


def test_invalid_input_leaves_each_features_own_range() -> None:
    x, _ = zoo_models.raw_table(n=200)
    cols = columns(x, (), ())
    low, high = np.array([c.low for c in cols]), np.array([c.high for c in cols])
    bad = invalid_inputs(x, "out_of_range", (low, high), np.random.default_rng(1))
    span = high - low
    assert np.all((bad < low) | (bad > high))  # outside its own range, every value
    assert np.all((bad >= low - 2 * span - 1e-6) & (bad <= high + 2 * span + 1e-6))  # not another feature's
    assert bad[:, 0].max() < 1.0  # a 1e-3-scale feature is not pushed to the table's global range
    level = invalid_inputs(x, "constant", (low, high), np.random.default_rng(2))
    assert np.all((level >= low - 1e-6) & (level <= high + 1e-6))


def test_integer_categorical_and_immutable_features_under_perturbation() -> None:
    rng = np.random.default_rng(0)
    x = np.stack(
        [rng.uniform(0, 1, 300), rng.integers(0, 10, 300), rng.choice(CODES, 300), rng.uniform(5, 9, 300)], 1
    ).astype(np.float32)
    specs = (
        FeatureSpec(name="0"),
        FeatureSpec(name="1", kind="integer", min=0, max=9),
        FeatureSpec(name="2", kind="categorical", values=CODES),
        FeatureSpec(name="3", immutable=True),
    )
    cols = columns(x, ("0", "1", "2", "3"), specs)
    for kind, strength in (
        ("numeric_noise", 0.5),
        ("multiplicative", 0.3),
        ("range_edge", 1.0),
        ("missing", 1.0),
    ):
        for label, xv in perturb_tabular(x, cols, kind, strength, np.random.default_rng(1)).items():
            xv = xv.astype(np.float64)
            assert np.array_equal(xv[:, 3], x[:, 3]), (kind, label)  # immutable: never perturbed
            ints = xv[:, 1][np.isfinite(xv[:, 1])]
            assert np.all(ints == np.round(ints)), (kind, label)
            if label != "beyond_range":
                cats = xv[:, 2][np.isfinite(xv[:, 2])]
                assert set(np.unique(cats)) <= set(CODES), (kind, label)
    box = feature_box(x, ("0", "1", "2", "3"), specs, (-100.0, 100.0))
    moved = box.constrain(x + rng.normal(0, 3, x.shape), x).astype(np.float64)
    assert np.array_equal(moved[:, 2:], x[:, 2:])  # categorical and immutable fixed
    assert np.all(moved[:, 1] == np.round(moved[:, 1])) and moved[:, 1].min() >= 0 and moved[:, 1].max() <= 9


@pytest.mark.parametrize("method", ["empirical.pgd_linf", "empirical.tabular_random_search"])
def test_attacks_use_the_per_feature_box(method: str, mlp: zoo_models.ZooModel, tmp_path: Path) -> None:
    """eps on tabular data means eps x each feature's scale; typed features keep their types."""
    eps = 1.0
    threat = {"kind": "linf_ball", "eps": eps}
    goals = [_goal("A", threat, "robust_accuracy", methods=[{"name": method}], budget={"samples": 60})]
    ((result, x_adv, x),) = _run(_typed_spec(mlp, tmp_path, goals), tmp_path / "run")
    assert result.details["eps_units"] == "units of each feature's scale"
    assert len(x_adv), "the attack broke nothing at eps 1 (one standard deviation per feature)"
    scale = np.array(result.details["feature_scale"])
    delta = x_adv.astype(np.float64) - x
    assert np.all(np.abs(delta) <= eps * scale * (1 + 1e-5) + 1e-6)
    assert np.abs(delta[:, 0]).max() < 0.1  # the 1e-3-scale feature moves by at most ~1e-3
    assert np.array_equal(x_adv[:, IMMUTABLE], x[:, IMMUTABLE])
    assert np.array_equal(x_adv[:, CATEGORICAL], x[:, CATEGORICAL])
    assert np.all(x_adv[:, INTEGER] == np.round(x_adv[:, INTEGER]))


def test_tabular_perturbation_and_invalid_input_run_on_typed_features(
    mlp: zoo_models.ZooModel, tmp_path: Path
) -> None:
    goals = [
        _goal("N", {"kind": "tabular", "perturbation": "numeric_noise", "strength": 0.5}, "accuracy"),
        _goal("I", {"kind": "invalid_input", "cases": ["out_of_range"]}, "confident_garbage_rate"),
    ]
    (noise, x_pert, x), (invalid, _, _) = _run(_typed_spec(mlp, tmp_path, goals), tmp_path / "run")
    assert np.array_equal(x_pert[:, IMMUTABLE], x[:, IMMUTABLE])
    assert np.all(x_pert[:, INTEGER] == np.round(x_pert[:, INTEGER]))
    assert [f["immutable"] for f in noise.details["features"]][IMMUTABLE] is True
    assert "confident_garbage_rate" in invalid.metrics


def _assess(spec: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cmd = [sys.executable, "-m", "nnassay.flows", "assess", str(path), "--output", str(folder / "run")]
    return subprocess.run(
        [*cmd, "--no-track", "--cpu"], capture_output=True, text=True, timeout=300, cwd=REPO
    )


def _csv_model(folder: Path, m: zoo_models.ZooModel) -> dict[str, Any]:
    """The zoo model's standard spec, its data as a CSV with named columns."""
    data = np.load(m.data)
    header = ",".join([*(f"f{i}" for i in range(data["x"].shape[1])), "label"])
    rows = np.column_stack([data["x"], data["y"]])
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "table.csv", rows, delimiter=",", header=header, comments="", fmt="%.9g")
    spec = zoo_models.standard_spec(m, samples=20)
    spec["data"] = {"path": str(folder / "table.csv")}
    spec["goals"] = spec["goals"][:1]
    return spec


BAD = {
    "count": ([{"name": f"f{i}"} for i in range(7)], "declares 7 features but the data has 6"),
    "name": ([{"name": "age"}], "data.features[0].name 'age' is not one of the CSV columns"),
    "range": ([{"name": "f0", "min": 5.0, "max": 6.0}], "outside the declared min/max"),
    "categories": (
        [{"name": "f2", "kind": "categorical", "values": [0.0, 1.0]}],
        "not in the declared values",
    ),
    "min_max": ([{"name": "f0", "min": 2.0, "max": 1.0}], "min 2 > max 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_feature_declaration_exits_2_naming_the_field(
    case: str, mlp: zoo_models.ZooModel, tmp_path: Path
) -> None:
    spec = _csv_model(tmp_path, mlp)
    spec["data"]["features"], expected = BAD[case]
    done = _assess(spec, tmp_path / case)
    assert done.returncode == 2, done.stderr[-2000:]
    text = done.stderr + done.stdout
    assert "data.features" in text and expected in text, text[-2000:]
    assert "Traceback" not in text
