"""The torch ONNX executor against ONNX Runtime: every supported op, fixed batch dims, benchmark nets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from nnassay.tasks.engine.onnx_torch import (
    UnsupportedOpsError,
    load_onnx_module,
    max_deviation_from_ort,
    ort_session,
    run_ort,
    supported_ops,
)

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(0, 1, shape)


def op_cases(kit: type) -> dict[str, tuple[onnx.ModelProto, tuple[int, ...]]]:
    """One small model per op type: (model, sample shape)."""
    c, mm, node = kit.const, kit.make_model, helper.make_node
    img = ["N", 2, 6, 6]
    cases = {
        "Gemm": mm(
            [node("Gemm", ["x", "W", "b"], ["y"], transB=1, alpha=0.5, beta=2.0)],
            ["N", 4],
            inits=[c("W", _w(3, 4)), c("b", _w(3))],
        ),
        "MatMul": mm([node("MatMul", ["x", "W"], ["y"])], ["N", 4], inits=[c("W", _w(4, 3))]),
        "Add": mm([node("Add", ["x", "B"], ["y"])], ["N", 4], inits=[c("B", _w(4))]),
        "Sub": mm([node("Sub", ["B", "x"], ["y"])], ["N", 4], inits=[c("B", _w(1, 4))]),
        "Mul": mm([node("Mul", ["x", "B"], ["y"])], ["N", 4], inits=[c("B", _w(4))]),
        "Div": mm([node("Div", ["x", "B"], ["y"])], ["N", 4], inits=[c("B", 1.5 + np.abs(_w(4)))]),
        "Neg": mm([node("Neg", ["x"], ["y"])], ["N", 4]),
        "Relu": mm([node("Relu", ["x"], ["y"])], ["N", 4]),
        "LeakyRelu": mm([node("LeakyRelu", ["x"], ["y"], alpha=0.1)], ["N", 4]),
        "Sigmoid": mm([node("Sigmoid", ["x"], ["y"])], ["N", 4]),
        "Tanh": mm([node("Tanh", ["x"], ["y"])], ["N", 4]),
        "Clip": mm(
            [node("Clip", ["x", "lo", "hi"], ["y"])],
            ["N", 4],
            inits=[c("lo", np.array(-0.5)), c("hi", np.array(0.7))],
        ),
        "Conv": mm(
            [node("Conv", ["x", "W", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2])],
            img,
            inits=[c("W", _w(3, 2, 3, 3)), c("b", _w(3))],
        ),
        "BatchNormalization": mm(
            [node("BatchNormalization", ["x", "s", "bb", "m", "v"], ["y"])],
            img,
            inits=[c("s", _w(2)), c("bb", _w(2)), c("m", _w(2)), c("v", 1 + np.abs(_w(2)))],
        ),
        "MaxPool": mm([node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], img),
        "AveragePool": mm(
            [node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])], img
        ),
        "GlobalAveragePool": mm([node("GlobalAveragePool", ["x"], ["y"])], img),
        "Flatten": mm([node("Flatten", ["x"], ["y"], axis=1)], img),
        "Reshape": mm([node("Reshape", ["x", "s"], ["y"])], img, inits=[c("s", np.array([0, -1]))]),
        "Transpose": mm([node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], img),
        "Identity": mm([node("Identity", ["x"], ["y"])], ["N", 4]),
        "Dropout": mm([node("Dropout", ["x"], ["y"])], ["N", 4]),
        "Constant": mm(
            [
                node("Constant", [], ["k"], value=helper.make_tensor("v", 1, [4], [1, 2, 3, 4])),
                node("Add", ["x", "k"], ["y"]),
            ],
            ["N", 4],
        ),
        "Concat": mm([node("Concat", ["x", "x"], ["y"], axis=1)], ["N", 4]),
        "Softmax": mm([node("Softmax", ["x"], ["y"], axis=1)], ["N", 4]),
        "Squeeze": mm([node("Squeeze", ["x", "a"], ["y"])], ["N", 1, 4], inits=[c("a", np.array([1]))]),
        "Unsqueeze": mm([node("Unsqueeze", ["x", "a"], ["y"])], ["N", 4], inits=[c("a", np.array([1]))]),
        "Pad": mm([node("Pad", ["x", "p"], ["y"])], img, inits=[c("p", np.array([0, 0, 1, 2, 0, 0, 2, 1]))]),
        "Shape+Gather+Slice": mm(
            [
                node("Shape", ["x"], ["s"]),
                node("Gather", ["s", "i"], ["n"], axis=0),
                node("Unsqueeze", ["n", "a"], ["n1"]),
                node("Concat", ["n1", "m1"], ["t"], axis=0),
                node("Reshape", ["x", "t"], ["r"]),
                node("Slice", ["r", "st", "en", "ax"], ["y"]),
            ],
            img,
            inits=[
                c("i", np.array(0)),
                c("a", np.array([0])),
                c("m1", np.array([-1])),
                c("st", np.array([3])),
                c("en", np.array([50])),
                c("ax", np.array([1])),
            ],
        ),
    }
    return {
        k: (v, tuple(d.dim_value for d in v.graph.input[0].type.tensor_type.shape.dim[1:]))
        for k, v in cases.items()
    }


CASE_NAMES = [
    "Gemm",
    "MatMul",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Neg",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Clip",
    "Conv",
    "BatchNormalization",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Identity",
    "Dropout",
    "Constant",
    "Concat",
    "Softmax",
    "Squeeze",
    "Unsqueeze",
    "Pad",
    "Shape+Gather+Slice",
]


@pytest.mark.parametrize("name", CASE_NAMES, ids=str)
def test_each_op_matches_ort(name: str, kit: type) -> None:
    model, shape = op_cases(kit)[name]

    module = load_onnx_module(model)
    x = RNG.normal(0, 1, (5, *shape)).astype(np.float32)
    blob = model.SerializeToString()
    assert max_deviation_from_ort(module, blob, x) < 1e-5
    dev64 = max_deviation_from_ort(load_onnx_module(model).double(), blob, x)
    assert dev64 < 1e-5


def test_every_registered_op_has_a_case() -> None:
    """Ops added for real exporters are compared with ONNX Runtime in tests/test_executor_ops.py."""
    from test_executor_ops import CASES as EXECUTOR_CASES
    from test_executor_ops import COVERED_ELSEWHERE

    covered = (
        {part for name in CASE_NAMES for part in name.split("+")} | set(EXECUTOR_CASES) | COVERED_ELSEWHERE
    )
    assert set(supported_ops()) - covered <= {"Cast", "ConstantOfShape"}


def test_module_is_differentiable(kit: type) -> None:
    module = load_onnx_module(kit.mlp([3, 5, 2]))
    x = torch.randn(4, 3, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_fixed_batch_dim_accepts_any_batch(kit: type) -> None:
    c, node = kit.const, helper.make_node
    model = kit.make_model(
        [node("Reshape", ["x", "s"], ["r"]), node("Gemm", ["r", "W", "b"], ["y"], transB=1)],
        [1, 2, 3],
        inits=[c("s", np.array([1, 6])), c("W", _w(2, 6)), c("b", _w(2))],
    )
    module = load_onnx_module(model)
    x = torch.randn(7, 2, 3)
    y = module(x)
    assert y.shape == (7, 2)
    expected = run_ort(ort_session(model.SerializeToString()), x.numpy())
    np.testing.assert_allclose(y.detach().numpy(), expected, atol=1e-5)


def test_unsupported_ops_are_all_reported(kit: type) -> None:
    node = helper.make_node
    model = kit.make_model(
        [
            node("Sin", ["x"], ["a"], name="sin1"),
            node("Relu", ["a"], ["b"]),
            node("Cos", ["b"], ["c"], name="cos"),
            node("Sin", ["c"], ["y"], name="sin2"),
        ],
        ["N", 3],
    )
    with pytest.raises(UnsupportedOpsError) as info:
        load_onnx_module(model)
    assert info.value.nodes == [("sin1", "Sin"), ("cos", "Cos"), ("sin2", "Sin")]
    assert "sin2" in str(info.value) and "HANDLERS" in str(info.value)


def test_cache_by_path_gives_fresh_modules(mlp_path: Path) -> None:
    a, b = load_onnx_module(mlp_path), load_onnx_module(mlp_path)
    assert a is not b and a.parsed is b.parsed
    a.double()
    assert next(b.buffers()).dtype == torch.float32


def _bench_nets() -> list[Path]:
    root = Path("/work/shared/benchmarks/vnncomp")
    acas = sorted((root / "acasxu" / "onnx").glob("*.onnx"))
    return (
        acas[::11]
        + sorted((root / "mnistfc_2022" / "onnx").glob("*.onnx"))
        + sorted((root / "oval21_2022" / "onnx").glob("*.onnx"))
    )


@pytest.mark.skipif(
    not Path("/work/shared/benchmarks/vnncomp").is_dir(), reason="shared benchmark folder absent"
)
@pytest.mark.parametrize("path", _bench_nets(), ids=lambda p: p.name)
def test_benchmark_nets_match_ort(path: Path) -> None:
    module = load_onnx_module(path)
    n = int(np.prod(module.sample_shape))
    x = np.random.default_rng(1).uniform(-1, 1, (3, n)).astype(np.float32)
    assert max_deviation_from_ort(module, path, x) < 1e-4
    assert max_deviation_from_ort(load_onnx_module(path).double(), path, x) < 1e-4
