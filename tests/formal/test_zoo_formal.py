"""The formal methods on the zoo's tiny models (issue 15): what torch and skl2onnx emit is bounded.

MobileNetV3-style (HardSwish, HardSigmoid, squeeze-excitation products), a small ViT (LayerNorm,
attention products, Softmax, GELU, batch-second layouts) and skl2onnx classifiers (label output
first, Scaler/LinearClassifier/Normalizer): every sample is verified or falsified at a tiny eps,
through the class scores the runner chose. An op without a bound, or a bound too large for the
memory budget, is ``unknown`` naming it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from nnassay.schemas.goals import DataSpec, ModelSpec
from nnassay.schemas.results import TestStatus
from nnassay.schemas.threats import LinfBall
from nnassay.tasks.io.data_io import load_dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.empirical.features import tabular_box
from nnassay.tasks.methods.formal import verifier
from nnassay.tasks.methods.formal.property import local_robustness
from nnassay.tasks.methods.registry import RunContext, get_method

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zoo_models  # noqa: E402 (tests/zoo_models.py builds the models)

EPS = {"mobilenetv3": 1e-6, "vit": 1e-6, "sk_logreg": 1e-3, "sk_mlp": 1e-3}  # IBP-sized: seconds


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("zoo")
    return {name: zoo_models.build(name, folder, tiny=True) for name in EPS}


def _context(m: Any, eps: float, out: Path, samples: int = 2) -> RunContext:
    """A context whose labels are the model's own predictions: the tiny models are barely trained,
    and a misclassified sample would be falsified without ever reaching the bounds."""
    value_range = m.value_range or (0.0, float(np.load(m.data)["x"].max()) * 1.01)  # raw tabular units
    spec = ModelSpec(path=m.path, layout=m.layout, value_range=value_range)
    model = ModelRunner(spec, prefer_cuda=False)
    x = np.load(m.data)["x"][:samples]
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "data.npz", x=x, y=model.predict(x))
    data = load_dataset(DataSpec(path=out / "data.npz"), model)
    threat = LinfBall.model_validate({"kind": "linf_ball", "eps": eps})
    return RunContext(
        model=model, data=data, threat=threat, metric="", seed=0, out_dir=out, run_dir=out, time_s=120.0
    )


@pytest.mark.parametrize("name", sorted(EPS), ids=str)
def test_local_robustness_decides_every_sample_of_the_zoo_model(
    name: str, zoo: dict[str, Any], tmp_path: Path
) -> None:
    ctx = _context(zoo[name], EPS[name], tmp_path)
    method = get_method("formal.local_robustness")
    outcome = method.run(ctx, method.params_for(ctx.threat, {"time_per_sample_s": 20.0}))
    assert outcome.status == TestStatus.COMPLETED, outcome.reason
    details = outcome.details
    assert details["verified"] + details["falsified"] == 2, details["per_sample"]
    box = tabular_box(ctx)  # tables: eps in units of each feature's scale, as for the attacks
    radius = EPS[name] * box.scale if box is not None else EPS[name]
    for index in details["verified_indices"]:  # proved samples resist random corners and points
        x, label = ctx.data.x[index], ctx.data.y[index]
        rng = np.random.default_rng(index)
        noise = rng.choice([-1.0, 1.0], size=(64, *x.shape)) * radius
        batch = (x + noise).astype(np.float32)
        batch = np.clip(batch, *ctx.model.value_range)
        assert (ctx.model.predict(batch) == label).all()


def test_an_op_without_bounds_is_unknown_naming_it(kit: type, tmp_path: Path) -> None:
    node, c = helper.make_node, kit.const
    rng = np.random.default_rng(0)
    model = kit.make_model(
        [
            node("Gemm", ["x", "W", "b"], ["h"], transB=1, name="fc"),
            node("Softsign", ["h"], ["s"], name="odd_activation"),
            node("Gemm", ["s", "W2", "b2"], ["y"], transB=1, name="head"),
        ],
        ["N", 3],
        inits=[
            c("W", rng.normal(0, 1, (4, 3))),
            c("b", np.zeros(4)),
            c("W2", rng.normal(0, 1, (2, 4))),
            c("b2", np.zeros(2)),
        ],
    )
    path = kit.save(model, tmp_path)
    from nnassay.tasks.methods.formal.command import run_model

    x = np.full(3, 0.5)
    label = int(np.argmax(run_model(path, x.astype(np.float32))))  # the model's class: robust nearby
    out = verifier.verify(path, local_robustness(x, label, 1e-6, 2, 0.0, 1.0), timeout_s=20)
    assert out.verdict == "unknown"
    assert (
        "Softsign" in out.reason and "odd_activation" in out.reason and "counterexample search" in out.reason
    )
    # with the other label the centre itself is a counterexample: found without any bound
    wrong = verifier.verify(path, local_robustness(x, 1 - label, 1e-6, 2, 0.0, 1.0), timeout_s=20)
    assert wrong.verdict == "sat" and wrong.method == "falsifier"


def test_bounds_over_the_memory_budget_are_unknown_naming_estimate_and_budget(zoo: dict[str, Any]) -> None:
    m = zoo["vit"]
    x = np.load(m.data)["x"][:1]
    label = int(ort.InferenceSession(str(m.path)).run(None, {"input": x})[0].argmax())
    prop = local_robustness(x[0].reshape(-1), label, 0.002, 10, 0.0, 1.0)  # IBP alone cannot prove it
    out = verifier.verify(m.path, prop, timeout_s=60, memory_budget=10_000)
    assert out.verdict == "unknown", out.reason
    assert "memory budget of 10 kB" in out.reason and "CROWN bounds would need about" in out.reason
