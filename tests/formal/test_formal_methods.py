"""Formal methods of the registry. The plumbing (data/model space mapping, counterexample checks,
artifacts, metrics) is tested with a small stand-in verifier (interval bounds + sampling) whose
answers are obvious; the real engine gets its own soundness checks at the end."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from nnassay.schemas.common import ClaimKind
from nnassay.schemas.goals import DataSpec, ModelSpec, Preprocessing
from nnassay.schemas.results import TestStatus
from nnassay.schemas.threats import LinfBall, VnnlibProperty
from nnassay.tasks.io.data_io import load_dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.empirical.features import tabular_box
from nnassay.tasks.methods.formal import methods, verifier
from nnassay.tasks.methods.formal.command import check_counterexample, run_model
from nnassay.tasks.methods.formal.methods import affine_of
from nnassay.tasks.methods.formal.property import Property
from nnassay.tasks.methods.registry import RunContext, get_method

PRE = Preprocessing(scale=2.0, mean=[0.5], std=[0.25])  # model input = (2x - 0.5) / 0.25


def ball(eps: float, sweep: list[float] | None = None) -> LinfBall:
    return LinfBall.model_validate({"kind": "linf_ball", "eps": eps, "sweep": sweep})


class Outcome:
    def __init__(self, verdict: str, cex: Any = None) -> None:
        self.verdict, self.counterexample, self.method, self.time_s = verdict, cex, "stand-in", 0.0
        self.margin, self.branches, self.reason, self.max_ort_deviation = None, 0, "", 0.0
        self.unsupported: list[str] = []


def interval_bounds(path: Path, lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sound output bounds of a Flatten/Gemm(transB)/Relu graph over a box (interval arithmetic)."""
    model = onnx.load(str(path))
    weights = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    lo, hi = lower.astype(np.float64), upper.astype(np.float64)
    for node in model.graph.node:
        if node.op_type == "Gemm":
            w, b = weights[node.input[1]], weights[node.input[2]]
            center, radius = (lo + hi) / 2, (hi - lo) / 2
            mid, spread = w @ center + b, np.abs(w) @ radius
            lo, hi = mid - spread - 1e-9, mid + spread + 1e-9
        elif node.op_type == "Relu":
            lo, hi = np.maximum(lo, 0), np.maximum(hi, 0)
    return lo, hi


class StandIn:
    """verify(): unsat when interval bounds exclude every clause, sat when a sampled point violates."""

    calls = 0

    def verify(
        self, onnx_path: Path, prop: Property, *, timeout_s: float, deadline: float | None = None
    ) -> Outcome:
        StandIn.calls += 1
        proved = True
        for region in prop.regions:
            lo, hi = interval_bounds(onnx_path, region.box.lower, region.box.upper)
            for clause in region.disjuncts:
                if not any(
                    np.maximum(h.coeffs, 0) @ lo + np.minimum(h.coeffs, 0) @ hi > h.rhs for h in clause
                ):
                    proved = False
        if proved:
            return Outcome("unsat")
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        meta = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in meta.shape]
        rng = np.random.default_rng(0)
        for region in prop.regions:
            box = region.box
            points = [box.lower + (box.upper - box.lower) * rng.random(box.lower.size) for _ in range(64)]
            for x in [box.lower, box.upper, *points]:
                x32 = np.clip(x, box.lower, box.upper).astype(np.float32)
                y = session.run(None, {meta.name: x32.reshape(shape)})[0].reshape(-1)
                if check_counterexample(prop, x32, y) is None:
                    return Outcome("sat", (x32, run_model(onnx_path, x32)))
        return Outcome("unknown")


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> StandIn:
    engine = StandIn()
    monkeypatch.setattr(methods, "load_engine", lambda: engine)
    return engine


def context(case: Any, threat: Any, out: Path, *, pre: Preprocessing = PRE, samples: int = 20) -> RunContext:
    """A context on a tiny case whose model has a non-trivial preprocessing (data range [0, 1])."""
    spec = ModelSpec(path=case.model, layout=case.layout, value_range=(0.0, 1.0), preprocessing=pre)
    model = ModelRunner(spec, prefer_cuda=False)
    data = load_dataset(DataSpec(path=case.data), model).subset(samples)
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(
        model=model, data=data, threat=threat, metric="", seed=0, out_dir=out, run_dir=out, time_s=120.0
    )


def run(name: str, ctx: RunContext, **overrides: Any) -> Any:
    method = get_method(name)
    return method.run(ctx, method.params_for(ctx.threat, overrides))


def attack_by_sampling(ctx: RunContext, index: int, eps: float, draws: int = 200) -> bool:
    """True when a random point of the data-space ball (corners included) is misclassified; on
    tabular data the ball is the per-feature box the attacks use (eps x each feature's scale)."""
    x, label = ctx.data.x[index], ctx.data.y[index]
    box = tabular_box(ctx)
    radius = eps * box.scale if box is not None else eps
    rng = np.random.default_rng(index)
    signs = rng.choice([-1.0, 1.0], size=(draws, *x.shape))
    noise = np.concatenate([signs[: draws // 2], rng.uniform(-1, 1, (draws - draws // 2, *x.shape))])
    batch = np.clip(x + radius * noise, 0, 1).astype(np.float32)
    return bool((ctx.model.predict(batch) != label).any())


def test_affine_box_covers_float32_preprocessing(image_case: Any, tmp_path: Path) -> None:
    ctx = context(image_case, ball(0.05), tmp_path)
    affine = affine_of(ctx)
    x = ctx.data.x[0]
    lower, upper = np.clip(x - 0.05, 0, 1), np.clip(x + 0.05, 0, 1)
    box = affine.box(lower.astype(np.float64), upper.astype(np.float64))
    points = np.concatenate(
        [lower[None], upper[None], np.random.default_rng(0).uniform(lower, upper, (50, *x.shape))]
    )
    mapped = ctx.model.preprocess(points.astype(np.float32)).reshape(len(points), -1)
    assert np.all(mapped >= box.lower) and np.all(mapped <= box.upper)
    assert np.allclose(affine.to_data(ctx.model.preprocess(x[None])[0]), x, atol=1e-6)


def test_local_robustness_is_sound_and_saves_checked_counterexamples(
    stand_in: StandIn, image_case: Any, tmp_path: Path
) -> None:
    eps = 0.02
    ctx = context(image_case, ball(eps), tmp_path)
    outcome = run("formal.local_robustness", ctx)
    d = outcome.details
    assert outcome.status == TestStatus.COMPLETED and d["verified"] + d["falsified"] + d["unknown"] == 20
    assert d["verified"] > 0 and d["falsified"] > 0, d  # the tiny model has both kinds at this eps
    verified = outcome.metrics["verified_fraction"]
    assert verified.claim == ClaimKind.PROOF and verified.is_rate and verified.successes == d["verified"]
    assert verified.value == d["verified"] / 20 and verified.interval is not None
    for index in d["verified_indices"]:
        assert not attack_by_sampling(ctx, index, eps), f"sample {index} was proved but is attackable"
    arrays = [a for a in outcome.artifacts if a.media_type == "application/x-npz"]
    with np.load(io.BytesIO((tmp_path / arrays[0].path).read_bytes())) as saved:
        x_adv, index = saved["x_adv"], saved["index"]
    assert sorted(index.tolist()) == sorted(d["falsified_indices"])
    assert np.abs(x_adv - ctx.data.x[index]).max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert np.all(ctx.model.predict(x_adv) != ctx.data.y[index])
    pngs = [a for a in outcome.artifacts if a.media_type == "image/png"]
    assert all((tmp_path / a.path).read_bytes().startswith(b"\x89PNG") for a in pngs)
    assert len(pngs) == sum(r["verdict"] == "falsified" and r["method"] != "clean" for r in d["per_sample"])


def test_local_robustness_radius_option(stand_in: StandIn, tabular_case: Any, tmp_path: Path) -> None:
    ctx = context(tabular_case, ball(0.01), tmp_path, samples=6)
    outcome = run("formal.local_robustness", ctx, certified_radius=True, eps_max=0.2)
    for row in outcome.details["per_sample"]:
        if row["verdict"] == "robust":
            assert row["radius_lower"] >= 0.01
            assert row["radius_upper"] is None or row["radius_upper"] >= row["radius_lower"]


def test_max_stable_space_radii_and_curve(stand_in: StandIn, tabular_case: Any, tmp_path: Path) -> None:
    eps = 0.05
    ctx = context(tabular_case, ball(eps, [0.01, 0.1]), tmp_path, samples=10)
    outcome = run("formal.max_stable_space", ctx, tol=0.1)
    lower, upper = outcome.details["radius_lower"], outcome.details["radius_upper"]
    assert all(u is None or lo <= u for lo, u in zip(lower, upper, strict=True))
    wrong = ctx.model.predict(ctx.data.x) != ctx.data.y
    assert all(lower[i] == 0.0 for i in np.flatnonzero(wrong))
    for i, r in enumerate(lower):
        if r > 0:
            assert not attack_by_sampling(ctx, i, r), f"sample {i} attackable inside its certified radius {r}"
    at_eps = outcome.metrics["certified_fraction_at_eps"]
    assert at_eps.successes == sum(r >= eps for r in lower) == len(outcome.details["verified_indices"])
    curve = outcome.series[0]
    assert curve.name == "certified accuracy" and curve.x == [0.01, eps, 0.1]
    assert all(a >= b for a, b in zip(curve.y, curve.y[1:], strict=False))
    assert outcome.metrics["mean_certified_radius"].value == pytest.approx(float(np.mean(lower)))


def vnnlib_text(n_in: int, n_out: int, center: np.ndarray, condition: str) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + [
        f"(declare-const Y_{j} Real)" for j in range(n_out)
    ]
    lines += [
        f"(assert (>= X_{i} {float(v) - 0.01!r}))\n(assert (<= X_{i} {float(v) + 0.01!r}))"
        for i, v in enumerate(center)
    ]
    return "\n".join([*lines, f"(assert {condition})"]) + "\n"


@pytest.mark.parametrize(("condition", "holds"), [("(<= Y_0 -1000)", 1.0), ("(<= Y_0 1000)", 0.0)])
def test_vnnlib_property_holds_or_not(
    stand_in: StandIn, tabular_case: Any, tmp_path: Path, condition: str, holds: float
) -> None:
    with np.load(tabular_case.data) as data:
        center = data["x"][0].astype(np.float64)
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text(5, 3, center, condition))
    ctx = context(
        tabular_case, VnnlibProperty(kind="vnnlib", path=path), tmp_path / "run", pre=Preprocessing()
    )
    outcome = run("formal.vnnlib_property", ctx)
    assert outcome.status == TestStatus.COMPLETED and outcome.metrics["property_holds"].value == holds
    assert bool(outcome.artifacts) == (holds == 0.0)


def test_vnnlib_property_size_mismatch_and_undecided(
    stand_in: StandIn, tabular_case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.vnnlib"
    path.write_text(vnnlib_text(4, 3, np.zeros(4), "(<= Y_0 0)"))
    ctx = context(
        tabular_case, VnnlibProperty(kind="vnnlib", path=path), tmp_path / "run", pre=Preprocessing()
    )
    outcome = run("formal.vnnlib_property", ctx)
    assert outcome.status == TestStatus.INCONCLUSIVE and "but the model has 5 inputs" in outcome.reason
    path.write_text(vnnlib_text(5, 3, np.zeros(5), "(<= Y_0 0)"))
    monkeypatch.setattr(stand_in, "verify", lambda *a, **k: Outcome("timeout"))
    outcome = run("formal.vnnlib_property", ctx)
    assert outcome.status == TestStatus.INCONCLUSIVE and "(timeout)" in outcome.reason and not outcome.metrics


def test_real_engine_local_robustness_is_sound(image_case: Any, tmp_path: Path) -> None:
    eps = 0.02
    ctx = context(image_case, ball(eps), tmp_path)
    outcome = run("formal.local_robustness", ctx, time_per_sample_s=5.0)
    assert outcome.status == TestStatus.COMPLETED, outcome.reason
    assert outcome.details["verifier_devices"] == [verifier.pick_device().type]  # the device used is recorded
    for index in outcome.details["verified_indices"]:
        assert not attack_by_sampling(ctx, index, eps), f"sample {index} was proved but is attackable"
    for index in outcome.details["falsified_indices"]:
        assert index not in outcome.details["verified_indices"]
