"""Formal methods on tabular data bound the attacks' per-feature box (issue 15, item 2): eps in units
of each feature's scale, within each feature's bounds, immutable and categorical features fixed,
integer features relaxed for the proof but whole in every reported counterexample."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import yaml

sys.path.insert(0, "tests")
import zoo_models  # noqa: E402

from nnassay.schemas.results import TestStatus  # noqa: E402
from nnassay.tasks.methods.empirical.features import FeatureBox, tabular_box  # noqa: E402
from nnassay.tasks.methods.formal import methods, verifier  # noqa: E402
from nnassay.tasks.methods.formal.property import Property  # noqa: E402
from nnassay.tasks.methods.registry import RunContext, get_method  # noqa: E402
from nnassay.tasks.pipeline import execute  # noqa: E402
from nnassay.tasks.pipeline.planning import make_plan  # noqa: E402

INTEGER, IMMUTABLE, CATEGORICAL = 2, 1, 3  # feature roles in the typed copy of the raw table
CODES = [0.0, 50.0, 100.0]
SMALL, LARGE = 0.02, 1.0  # radii in units of each feature's scale: mostly proved / mostly broken


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> zoo_models.ZooModel:
    return zoo_models.build("tabular_mlp", tmp_path_factory.mktemp("zoo"), tiny=False)


def _goal(gid: str, method: str, eps: float, samples: int = 20) -> dict[str, Any]:
    return {
        "id": gid,
        "statement": gid,
        "threat": {"kind": "linf_ball", "eps": eps},
        "metric": "verified_fraction" if method.startswith("formal") else "robust_accuracy",
        "criterion": {"comparator": ">=", "threshold": 0.0},
        "risk": {"id": "R", "source": "B.5 risk sources related to machine learning"},
        "methods": [{"name": method, "params": {"time_per_sample_s": 5.0} if "formal" in method else {}}],
        "budget": {"samples": samples},
    }


@pytest.fixture(scope="module")
def contexts(mlp: zoo_models.ZooModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Contexts of formal and attack tests on the raw table (features from 1e-3 to 3e3) with an
    integer, an immutable and a categorical feature declared."""
    folder = tmp_path_factory.mktemp("typed")
    data = np.load(mlp.data)
    x = data["x"].astype(np.float64)
    x[:, INTEGER] = np.round(x[:, INTEGER])
    x[:, CATEGORICAL] = np.array(CODES)[np.arange(len(x)) % 3]
    np.savez(folder / "typed.npz", x=x.astype(np.float32), y=data["y"])
    features: list[dict[str, Any]] = [{"name": str(i)} for i in range(x.shape[1])]
    features[INTEGER] = {"name": str(INTEGER), "kind": "integer"}
    features[IMMUTABLE] = {"name": str(IMMUTABLE), "immutable": True}
    features[CATEGORICAL] = {"name": str(CATEGORICAL), "kind": "categorical", "values": CODES}
    goals = [
        _goal("FS", "formal.local_robustness", SMALL),
        _goal("FL", "formal.local_robustness", LARGE),
        _goal("AL", "empirical.tabular_random_search", LARGE),
    ]
    spec_data = {
        "id": "typed",
        "title": "typed features",
        "seed": 3,
        "model": {"path": str(mlp.path), "layout": "NC", "value_range": [float(x.min()), float(x.max()) + 1]},
        "data": {"path": str(folder / "typed.npz"), "features": features},
        "goals": goals,
    }
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec_data, sort_keys=False))
    spec, facts = execute.state_goals(folder / "spec.yaml", prefer_cuda=False)
    plan = make_plan(spec, facts)
    return {t.goal_id: execute.test_context(t, spec, folder / "run", prefer_cuda=False) for t in plan.tests}


class Recorder:
    """The real verifier, recording the model-space box of every property it is asked about."""

    def __init__(self) -> None:
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []

    def verify(self, path: Any, prop: Property, **kwargs: Any) -> Any:
        box = prop.regions[0].box
        self.boxes.append((box.lower.copy(), box.upper.copy()))
        return verifier.verify(path, prop, **kwargs)


def _run(ctx: RunContext, monkeypatch: pytest.MonkeyPatch, engine: Any = None) -> Any:
    engine = engine or Recorder()
    monkeypatch.setattr(methods, "load_engine", lambda: engine)
    method = get_method("formal.local_robustness")
    eps = ctx.threat.eps
    return method.run(ctx, method.params_for(ctx.threat, {"time_per_sample_s": 5.0})), engine, eps


def _counterexamples(ctx: RunContext, outcome: Any) -> tuple[np.ndarray, np.ndarray]:
    ref = next(a for a in outcome.artifacts if a.path.endswith("counterexamples.npz"))
    arrays = np.load(ctx.run_dir / ref.path)
    return arrays["x_adv"].astype(np.float64), arrays["index"]


def test_the_verified_box_is_the_attack_box(
    contexts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = contexts["FS"]
    outcome, engine, eps = _run(ctx, monkeypatch)
    box = tabular_box(ctx)
    assert box is not None and outcome.status == TestStatus.COMPLETED, outcome.reason
    d = outcome.details
    assert d["eps_units"] == "units of each feature's scale" and "relaxed" in d["box_relaxation"]
    assert d["feature_names"] == [str(i) for i in range(6)]
    assert d["feature_scale"] == [float(v) for v in box.scale]
    assert d["fixed_features"] == [IMMUTABLE, CATEGORICAL] and d["integer_features"] == [INTEGER]
    assert min(d["feature_scale"]) < 1e-2 and max(d["feature_scale"]) > 100  # raw units: 1e-3 to 3e3
    attack = get_method("empirical.tabular_random_search")
    attacked = attack.run(contexts["AL"], attack.params_for(contexts["AL"].threat, {"queries": 20}))
    for key in ("feature_names", "feature_scale", "feature_bounds", "fixed_features", "integer_features"):
        assert attacked.details[key] == d[key], key  # the same numbers on both sides
    asked = [r["index"] for r in d["per_sample"] if r["method"] != "clean"]
    assert len(engine.boxes) == len(asked) > 0
    for i, (lower, upper) in zip(asked, engine.boxes, strict=True):
        x = ctx.data.x[i].astype(np.float64)
        want_lo = np.clip(x - eps * box.scale * ~box.frozen, box.low, box.high)
        want_hi = np.clip(x + eps * box.scale * ~box.frozen, box.low, box.high)
        size = np.maximum(np.abs(want_lo), np.abs(want_hi)).astype(np.float32)
        ulps = 8 * np.spacing(size).astype(np.float64) + 1e-30
        assert np.all(np.abs(lower - want_lo) <= ulps) and np.all(np.abs(upper - want_hi) <= ulps)
        assert np.all(upper[box.frozen] - lower[box.frozen] <= 2 * ulps[box.frozen])  # fixed features


def test_proofs_hold_over_the_per_feature_box(
    contexts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Soundness: no point of a proved sample's box (integer features whole) changes the class."""
    ctx = contexts["FS"]
    outcome, _, eps = _run(ctx, monkeypatch)
    box = tabular_box(ctx)
    assert box is not None
    proved = outcome.details["verified_indices"]
    assert proved, outcome.details["per_sample"]
    rng = np.random.default_rng(0)
    for i in proved:
        lower, upper = box.ball(ctx.data.x[i], eps)
        corners = np.where(rng.random((256, lower.size)) < 0.5, lower, upper)
        points = np.concatenate([corners, rng.uniform(lower, upper, (1024, lower.size))])
        for relaxed in (points, np.where(box.integer, np.clip(np.round(points), lower, upper), points)):
            pred = ctx.model.predict(relaxed.astype(np.float32))
            assert np.all(pred == ctx.data.y[i]), f"sample {i} changes class inside its proved box"


def test_counterexamples_are_valid_inputs_inside_the_box(
    contexts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = contexts["FL"]
    outcome, _, eps = _run(ctx, monkeypatch)
    rows = [
        r for r in outcome.details["per_sample"] if r["verdict"] == "falsified" and r["method"] != "clean"
    ]
    assert rows, outcome.details["per_sample"]
    x_adv, index = _counterexamples(ctx, outcome)
    box = tabular_box(ctx)
    assert box is not None
    for z, i in zip(x_adv, index, strict=True):
        x = ctx.data.x[i].astype(np.float64)
        if np.array_equal(z, x):
            continue  # misclassified without perturbation
        lower, upper = box.ball(x, eps)
        assert np.all(z >= lower - 1e-6 * np.abs(lower)) and np.all(z <= upper + 1e-6 * np.abs(upper))
        assert z[IMMUTABLE] == x[IMMUTABLE] and z[CATEGORICAL] == x[CATEGORICAL]
        assert z[INTEGER] == np.round(z[INTEGER])
        assert ctx.model.predict(z[None].astype(np.float32))[0] != ctx.data.y[i]


class Fractional:
    """A stand-in verifier answering 'sat' with a given point moved off the integer grid."""

    def __init__(self, point: np.ndarray) -> None:
        self.point = point

    def verify(self, path: Any, prop: Property, **kwargs: Any) -> Any:
        box = prop.regions[0].box
        cex = np.clip(self.point, box.lower, box.upper).astype(np.float32)
        return type("Outcome", (), {"verdict": "sat", "counterexample": (cex, None), "reason": ""})()


def test_a_counterexample_is_snapped_to_whole_values_before_it_counts(
    contexts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = contexts["FL"]
    box = tabular_box(ctx)
    assert box is not None and box.scale[INTEGER] * LARGE > 1  # the box holds several whole values
    space = methods.space_of(ctx)
    method = get_method("formal.local_robustness")
    assert isinstance(method, methods.LocalRobustness)
    # a sample the model gets right, and the verifier's point: the sample with its integer feature
    # off the grid by 0.4, which snaps back to the sample itself (classified correctly)
    i = int(np.flatnonzero(ctx.model.predict(ctx.data.x) == ctx.data.y)[0])
    x = ctx.data.x[i].astype(np.float64)
    off = x.copy()
    off[INTEGER] += 0.4
    res = method.verify_sample(Fractional(off), ctx, i, 1.0, LARGE, space)
    assert res.verdict == "unknown" and res.x_adv is None and "whole" in res.reason
    # a misclassified valid point of the box, moved off the grid: reported snapped back onto it
    broken = _valid_adversarial(ctx, box, i, x)
    off = broken.copy()
    off[INTEGER] += 0.3 if broken[INTEGER] < x[INTEGER] else -0.3
    res = method.verify_sample(Fractional(off), ctx, i, 1.0, LARGE, space)
    assert res.verdict == "falsified" and res.x_adv is not None
    assert res.x_adv[INTEGER] == np.round(res.x_adv[INTEGER])
    assert res.x_adv[IMMUTABLE] == x[IMMUTABLE] and res.x_adv[CATEGORICAL] == x[CATEGORICAL]


def _valid_adversarial(ctx: RunContext, box: FeatureBox, i: int, x: np.ndarray) -> np.ndarray:
    """A misclassified point of sample i's box with whole integer features and fixed features at x."""
    lower, upper = box.ball(x, LARGE)
    rng = np.random.default_rng(1)
    points = box.constrain(rng.uniform(lower, upper, (20_000, x.size)), np.broadcast_to(x, (20_000, x.size)))
    wrong = np.flatnonzero(ctx.model.predict(points) != ctx.data.y[i])
    if not len(wrong):
        pytest.fail(f"no adversarial point found for sample {i} at eps {LARGE}")
    return points[wrong[0]].astype(np.float64)
