"""Noise-based statistical methods on tabular data work in units of each feature's scale (issue 15,
item 2): on the raw table (features from 1e-3 to 3e3) noise of strength s has spread s x scale_j on
feature j, immutable and categorical features never move, integer features stay whole, every feature
stays in its bounds, and the results name their units with the attacks' keys. Randomized smoothing
and CLEVER work in the scaled space x / scale: their radii match the closed forms there."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

sys.path.insert(0, "tests")
sys.path.insert(0, "tests/statistical")
import zoo_models  # noqa: E402
from stat_helpers import linear_onnx  # noqa: E402

from nnassay.schemas.goals import FeatureSpec, Layout, ModelSpec  # noqa: E402
from nnassay.schemas.results import TestStatus  # noqa: E402
from nnassay.schemas.threats import Threat  # noqa: E402
from nnassay.tasks.io.data_io import Dataset  # noqa: E402
from nnassay.tasks.io.model_io import ModelRunner  # noqa: E402
from nnassay.tasks.methods.empirical.features import data_box, tabular_box  # noqa: E402
from nnassay.tasks.methods.registry import RunContext, get_method  # noqa: E402
from nnassay.tasks.methods.statistical import feature_noise  # noqa: E402
from nnassay.tasks.methods.statistical.core import perturb  # noqa: E402
from nnassay.tasks.methods.statistical.feature_noise import (  # noqa: E402
    FeatureBall,
    FeatureGaussian,
    FeatureNoise,
    FeatureUniform,
    features_of,
)
from nnassay.tasks.methods.statistical.smoothing import certify  # noqa: E402

IMMUTABLE, INTEGER, CATEGORICAL, BOUNDED = 1, 2, 3, 4  # feature roles in the typed raw table
CODES = [0.0, 50.0, 100.0]
UNITS = "units of each feature's scale"
CONTINUOUS = [0, 5]  # numeric features without declared bounds: spread unaffected by clipping


def _context(
    model: Path,
    x: np.ndarray,
    y: np.ndarray,
    threat: dict[str, Any],
    out: Path,
    features: tuple[FeatureSpec, ...],
    value_range: tuple[float, float],
) -> RunContext:
    runner = ModelRunner(
        ModelSpec(path=model, layout=Layout.FLAT, value_range=value_range), prefer_cuda=False
    )
    data = Dataset(
        x=x.astype(np.float32),
        y=y.astype(np.int64),
        layout=Layout.FLAT,
        kind="tabular",
        path=model,
        sha256="0" * 64,
        features=features,
    )
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(
        model=runner,
        data=data,
        threat=TypeAdapter(Threat).validate_python(threat),
        metric="",
        seed=5,
        out_dir=out,
        run_dir=out,
    )


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tiny raw-feature MLP and a typed copy of its table: an immutable, an integer, a
    categorical and a bounded feature among features on scales from 1e-3 to 3e3."""
    folder = tmp_path_factory.mktemp("zoo")
    mlp = zoo_models.build("tabular_mlp", folder, tiny=True)
    data = np.load(mlp.data)
    x = data["x"].astype(np.float64)[:200]
    x[:, INTEGER] = np.round(x[:, INTEGER])
    x[:, CATEGORICAL] = np.array(CODES)[np.arange(len(x)) % 3]
    low, high = np.quantile(x[:, BOUNDED], [0.2, 0.8])
    x[:, BOUNDED] = np.clip(x[:, BOUNDED], low, high)
    features = tuple(
        FeatureSpec(name=str(i))
        if i not in (IMMUTABLE, INTEGER, CATEGORICAL, BOUNDED)
        else FeatureSpec(name=str(i), immutable=True)
        if i == IMMUTABLE
        else FeatureSpec(name=str(i), kind="integer", min=0.0)
        if i == INTEGER
        else FeatureSpec(name=str(i), kind="categorical", values=CODES)
        if i == CATEGORICAL
        else FeatureSpec(name=str(i), min=float(low), max=float(high))
        for i in range(x.shape[1])
    )
    value_range = (-1e6, 1e6)

    def context(threat: dict[str, Any], name: str) -> RunContext:
        return _context(mlp.path, x, data["y"][:200], threat, folder / name, features, value_range)

    return {"x": x.astype(np.float32), "context": context, "bounds": (low, high)}


def _noise(table: dict[str, Any]) -> FeatureNoise:
    noise = features_of(table["context"]({"kind": "gaussian_noise", "sigma": 0.1}, "probe"))
    assert noise is not None
    return noise


def _draws(sampler: Any, x0: np.ndarray, n: int = 4000, seed: int = 0) -> np.ndarray:
    out = np.empty((n, x0.size), np.float32)
    sampler.fill(np.random.default_rng(seed), x0, out)
    return out


def test_scales_are_the_attack_box_and_span_the_raw_units(table: dict[str, Any]) -> None:
    ctx = table["context"]({"kind": "gaussian_noise", "sigma": 0.1}, "box")
    noise, box = features_of(ctx), tabular_box(ctx)
    assert noise is not None and box is not None
    assert np.array_equal(noise.box.scale, box.scale)  # the same per-feature box as the attacks
    again = data_box(ctx.data, ctx.model.value_range)  # the same box without a RunContext
    assert again is not None and np.array_equal(again.scale, box.scale)
    assert box.scale[CONTINUOUS].max() / box.scale[CONTINUOUS].min() > 1e5  # 1e-3 ... 3e3
    assert noise.spread[IMMUTABLE] == 0 and noise.spread[CATEGORICAL] == 0


@pytest.mark.parametrize("kind", ["gaussian", "uniform"])
def test_noise_spread_is_proportional_to_each_feature_scale(table: dict[str, Any], kind: str) -> None:
    noise, x0 = _noise(table), table["x"][7]
    strength = 0.05
    sampler = FeatureGaussian(strength, noise) if kind == "gaussian" else FeatureUniform(strength, noise)
    delta = _draws(sampler, x0).astype(np.float64) - x0
    expected = strength * noise.box.scale * (1.0 if kind == "gaussian" else 1 / np.sqrt(3))
    ratio = delta[:, CONTINUOUS].std(axis=0) / expected[CONTINUOUS]
    assert ratio == pytest.approx(np.ones(len(CONTINUOUS)), abs=0.08)  # ~1% sampling error at 4000 draws
    # the same in noise_accuracy's block perturbation
    threat = TypeAdapter(Threat).validate_python(
        {"kind": "gaussian_noise", "sigma": strength}
        if kind == "gaussian"
        else {"kind": "uniform_noise", "eps": strength}
    )
    block = np.repeat(x0[None], 4000, axis=0)
    noisy = perturb(block, threat, strength, np.random.default_rng(1), (-1e6, 1e6), noise)
    ratio = (noisy.astype(np.float64) - x0)[:, CONTINUOUS].std(axis=0) / expected[CONTINUOUS]
    assert ratio == pytest.approx(np.ones(len(CONTINUOUS)), abs=0.08)


@pytest.mark.parametrize("which", ["gaussian", "uniform", "ball", "block"])
def test_fixed_integer_and_bounds_are_kept(table: dict[str, Any], which: str) -> None:
    noise, x = _noise(table), table["x"]
    strength = 2.0  # large: the bounds are reached often
    samplers = {
        "gaussian": FeatureGaussian(strength, noise),
        "uniform": FeatureUniform(strength, noise),
        "ball": FeatureBall(strength, noise),
    }
    if which == "block":
        threat = TypeAdapter(Threat).validate_python({"kind": "gaussian_noise", "sigma": strength})
        block = np.repeat(x[:20], 50, axis=0)
        noisy, base = perturb(block, threat, strength, np.random.default_rng(2), (-1e6, 1e6), noise), block
    else:
        noisy = np.concatenate([_draws(samplers[which], x0, 200, i) for i, x0 in enumerate(x[:20])])
        base = np.repeat(x[:20], 200, axis=0)
    assert np.array_equal(noisy[:, [IMMUTABLE, CATEGORICAL]], base[:, [IMMUTABLE, CATEGORICAL]])
    whole = noisy[:, INTEGER]
    assert np.array_equal(whole, np.round(whole)) and whole.min() >= 0.0  # declared min 0
    assert len(np.unique(whole)) > 3  # the integer feature moves
    low, high = table["bounds"]
    bounded = noisy[:, BOUNDED]
    assert bounded.min() >= np.float32(low) and bounded.max() <= np.float32(high)
    if which != "ball":  # noise is clipped at the bounds (the ball is uniform inside them)
        assert (bounded == np.float32(high)).any() and (bounded == np.float32(low)).any()
    if which in ("uniform", "ball"):  # inside the L-inf ball x +- eps x scale
        assert np.all(np.abs(noisy - base) <= strength * noise.box.scale * (1 + 1e-5) + 1e-6)


def test_ball_gives_integer_features_each_whole_value_equally(table: dict[str, Any]) -> None:
    noise, x0 = _noise(table), table["x"][3]
    eps = 2.5 / noise.box.scale[INTEGER]  # radius 2.5 on the integer feature: 5 whole values
    values = _draws(FeatureBall(float(eps), noise), x0, 20_000)[:, INTEGER] - x0[INTEGER]
    inside = [v for v in range(-2, 3) if x0[INTEGER] + v >= 0]
    counts = np.array([(values == v).sum() for v in inside])
    assert counts.sum() == len(values)
    assert np.all(np.abs(counts / len(values) - 1 / len(inside)) < 0.02)  # uniform over whole values


THREATS = {
    "statistical.noise_accuracy": ({"kind": "gaussian_noise", "sigma": 0.2}, {}),
    "statistical.probabilistic_robustness": (
        {"kind": "uniform_noise", "eps": 0.2},
        {"draws": 300, "tolerated_flip_probability": 0.05},
    ),
    "statistical.randomized_smoothing": (
        {"kind": "l2_ball", "eps": 0.1},
        {"n0": 20, "n": 200, "alpha": 0.01},
    ),
    "statistical.rare_event_ams": (
        {"kind": "linf_ball", "eps": 0.2},
        {"particles": 50, "mh_steps": 2, "log10_floor": -3, "max_samples": 2},
    ),
    "statistical.clever": (
        {"kind": "linf_ball", "eps": 0.2},
        {"n_batches": 4, "batch_size": 8, "max_samples": 3},
    ),
}


@pytest.mark.parametrize("name", list(THREATS))
def test_results_name_their_units_with_the_attack_keys(table: dict[str, Any], name: str) -> None:
    threat, params = THREATS[name]
    ctx = table["context"](threat, name.split(".")[1])
    method = get_method(name)
    outcome = method.run(ctx, method.params_for(ctx.threat, params))
    assert outcome.status == TestStatus.COMPLETED, outcome.reason
    d, box = outcome.details, tabular_box(ctx)
    assert box is not None and d["eps_units"] == UNITS
    assert d["feature_scale"] == [float(v) for v in box.scale]
    assert d["feature_names"] == [str(i) for i in range(6)]
    assert d["fixed_features"] == [IMMUTABLE, CATEGORICAL] and d["integer_features"] == [INTEGER]
    assert isinstance(d["feature_bounds"], list) and len(d["feature_bounds"]) == 6
    assert "integer" in str(d["feature_noise"])
    assert any(UNITS in m.description for m in outcome.metrics.values())


def test_smoothing_radius_is_in_feature_scale_units(tmp_path: Path) -> None:
    """A linear classifier on features of scales 1e-3 to 1e3: the smoothed classifier's exact radius in
    the scaled space is |margin| / ||w x scale||_2, and the certified radii stay at or below it."""
    scales = np.array([1e-3, 1.0, 1e3, 30.0])
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 1, (2, 4)) / scales  # comparable influence of every feature
    w = weights[1] - weights[0]
    margins = np.array([0.5, -1.0, 1.5, 2.5])
    direction = w / (w @ w)
    x = np.array([rng.normal(0, 1, 4) * scales for _ in margins])
    x += (margins - x @ w)[:, None] * direction  # margin of class 1 over 0 exactly as listed
    path = linear_onnx(tmp_path / "linear.onnx", weights, np.zeros(2))
    features = tuple(FeatureSpec(name=str(i), scale=float(s)) for i, s in enumerate(scales))
    y = (margins > 0).astype(np.int64)
    ctx = _context(path, x, y, {"kind": "l2_ball", "eps": 0.1}, tmp_path / "out", features, (-1e9, 1e9))
    noise = features_of(ctx)
    assert noise is not None
    distance = np.abs(margins) / np.linalg.norm(w * scales)  # exact radius in x / scale
    certs, _ = certify(ctx.model, ctx.data.x, 0.5, 100, 20_000, 0.001, seed=1, features=noise)
    assert np.array_equal(certs.prediction, y)
    assert np.all(certs.radius <= distance + 1e-6)
    assert np.all(certs.radius >= 0.8 * distance)  # 20000 draws: close to the exact radius
    method = get_method("statistical.randomized_smoothing")
    outcome = method.run(ctx, method.params_for(ctx.threat, {"sigma": 0.5, "n": 2000}))
    description = outcome.metrics["certified_accuracy"].description
    assert UNITS in description and "L2 radius" in description
    assert UNITS in outcome.metrics["mean_certified_radius"].description
    assert outcome.details["radius_units"] == f"L2, {UNITS}" and UNITS in outcome.series[0].x_label


@pytest.mark.parametrize("kind, order", [("linf_ball", 1), ("l2_ball", 2)])
def test_clever_scores_are_in_feature_scale_units(tmp_path: Path, kind: str, order: int) -> None:
    """On a linear model the CLEVER score is the exact distance to the boundary in x / scale:
    |margin| / ||w x scale||_dual."""
    scales = np.array([1e-3, 1.0, 1e3])
    rng = np.random.default_rng(1)
    weights = rng.normal(0, 1, (2, 3)) / scales
    w = weights[1] - weights[0]
    margins = np.array([0.3, -0.5, 1.0])
    x = np.array([rng.normal(0, 1, 3) * scales for _ in margins])
    x += (margins - x @ w)[:, None] * (w / (w @ w))
    path = linear_onnx(tmp_path / "linear.onnx", weights, np.zeros(2))
    features = tuple(FeatureSpec(name=str(i), scale=float(s)) for i, s in enumerate(scales))
    y = (margins > 0).astype(np.int64)
    ctx = _context(path, x, y, {"kind": kind, "eps": 0.05}, tmp_path / "out", features, (-1e9, 1e9))
    method = get_method("statistical.clever")
    params = method.params_for(ctx.threat, {"sample_radius": 100.0, "n_batches": 4, "batch_size": 8})
    outcome = method.run(ctx, params)
    assert outcome.status == TestStatus.COMPLETED, outcome.reason
    expected = np.abs(margins) / np.linalg.norm(w * scales, ord=order)
    assert outcome.details["scores"] == pytest.approx(expected, rel=1e-3)
    assert UNITS in outcome.metrics["mean_clever_score"].description


def test_images_stay_in_data_units(image_case, context_factory) -> None:  # type: ignore[no-untyped-def]
    ctx = context_factory(image_case, {"kind": "gaussian_noise", "sigma": 0.3})
    assert features_of(ctx) is None and tabular_box(ctx) is None
    method = get_method("statistical.noise_accuracy")
    outcome = method.run(ctx, method.params_for(ctx.threat, {}))
    assert outcome.details["eps_units"] == feature_noise.DATA_UNITS and "feature_scale" not in outcome.details
    rng = np.random.default_rng(0)
    x = ctx.data.x[:8]
    expected = np.clip(x + rng.normal(0.0, 0.3, size=x.shape).astype(np.float32), 0.0, 1.0)
    noisy = perturb(x, ctx.threat, 0.3, np.random.default_rng(0), (0.0, 1.0))
    assert np.array_equal(noisy, expected)  # the data-unit formula, bit for bit
