"""Every op the torch executor runs agrees with ONNX Runtime, one small graph per op; the op table
drives the test list, so a handler added without a case fails `test_every_handler_has_a_case`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nnassay.tasks.engine.onnx_torch import HANDLERS, load_onnx_module

ML = "ai.onnx.ml"
Case = Callable[[], tuple[onnx.ModelProto, np.ndarray]]


def _model(nodes: list[onnx.NodeProto], shape: list[int], inits: list[onnx.TensorProto] = (), *, opset: int = 17,
           out_type: int = TensorProto.FLOAT) -> onnx.ModelProto:  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", out_type, None)], list(inits),
    )  # fmt: skip
    imports = [helper.make_opsetid("", opset), helper.make_opsetid(ML, 3)]
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 8
    return model


def _c(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _x(*shape: int, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    return np.random.default_rng(0).uniform(low, high, shape).astype(np.float32)


def _unary(op: str, low: float = -2.0, high: float = 2.0, **attrs: object) -> Case:
    return lambda: (
        _model([helper.make_node(op, ["x"], ["y"], **attrs)], [4, 5]),
        _x(4, 5, low=low, high=high),
    )


def _binary_const(
    op: str, value: np.ndarray, out_type: int = TensorProto.FLOAT, dtype: type = np.float32
) -> Case:
    return lambda: (
        _model([helper.make_node(op, ["x", "c"], ["y"])], [4, 5], [_c("c", value, dtype)], out_type=out_type),
        _x(4, 5),
    )


def _compare(op: str) -> Case:
    """A comparison whose boolean result selects between x and -x (Where), as exporters use it."""
    nodes = [helper.make_node(op, ["x", "c"], ["b"]), helper.make_node("Neg", ["x"], ["n"]),
             helper.make_node("Where", ["b", "x", "n"], ["y"])]  # fmt: skip
    return lambda: (_model(nodes, [4, 5], [_c("c", np.float32(0.3))]), _x(4, 5))


def _logical(op: str) -> Case:
    nodes = [helper.make_node("Greater", ["x", "z"], ["a"]), helper.make_node("Less", ["x", "h"], ["b"]),
             helper.make_node(op, ["a", "b"], ["c"]), helper.make_node("Cast", ["c"], ["y"], to=TensorProto.FLOAT)]  # fmt: skip
    return lambda: (_model(nodes, [4, 5], [_c("z", 0.0), _c("h", 1.0)]), _x(4, 5))


def _reduce(op: str) -> Case:
    axes = [_c("axes", [1], np.int64)]
    return lambda: (
        _model([helper.make_node(op, ["x", "axes"], ["y"], keepdims=0)], [3, 4, 5], axes, opset=18),
        _x(3, 4, 5),
    )


def _shape_chain() -> Case:
    """Range, Expand, Mod and Equal on shapes, as a dynamic ViT export computes positions."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["n"], axis=0),
        helper.make_node("Range", ["zero", "n", "one"], ["r"]),
        helper.make_node("Mod", ["r", "two"], ["m"]),
        helper.make_node("Equal", ["m", "zero"], ["e"]),
        helper.make_node("Cast", ["e"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Expand", ["f", "s"], ["g"]),
        helper.make_node("Mul", ["x", "g"], ["y"]),
    ]
    inits = [_c("zero", 0, np.int64), _c("one", 1, np.int64), _c("two", 2, np.int64)]
    return lambda: (_model(nodes, [4, 5], inits), _x(4, 5))


def _split() -> Case:
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
        helper.make_node("Sub", ["a", "b"], ["y"]),
    ]
    return lambda: (_model(nodes, [4, 6], [_c("sizes", [3, 3], np.int64)]), _x(4, 6))


def _resize(mode: str) -> Case:
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode)
    return lambda: (_model([node], [2, 3, 4, 4], [_c("scales", [1, 1, 2, 2])]), _x(2, 3, 4, 4))


def _layer_norm() -> Case:
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5)
    inits = [_c("g", np.linspace(0.5, 1.5, 5)), _c("b", np.linspace(-1, 1, 5))]
    return lambda: (_model([node], [3, 4, 5], inits), _x(3, 4, 5))


def _variadic(op: str) -> Case:
    node = helper.make_node(op, ["x", "c", "x"], ["y"])
    return lambda: (_model([node], [4, 5], [_c("c", np.linspace(-1, 1, 5))]), _x(4, 5))


def _arg(op: str) -> Case:
    nodes = [
        helper.make_node(op, ["x"], ["i"], axis=1, keepdims=0),
        helper.make_node("Cast", ["i"], ["y"], to=TensorProto.FLOAT),
    ]
    return lambda: (_model(nodes, [4, 5]), _x(4, 5))


def _ml(op: str, **attrs: object) -> Case:
    return lambda: (
        _model([helper.make_node(op, ["x"], ["y"], domain=ML, **attrs)], [4, 3]),
        _x(4, 3, low=0.1),
    )


def _linear_classifier(classes: int, post: str) -> Case:
    rows = 1 if classes == 2 else classes
    w = np.random.default_rng(1).normal(size=(rows, 3)).astype(np.float32)
    node = helper.make_node(
        "LinearClassifier", ["x"], ["label", "y"], domain=ML, coefficients=w.ravel().tolist(),
        intercepts=[0.1] * rows, classlabels_ints=list(range(classes)), post_transform=post,
    )  # fmt: skip
    return lambda: (_model([node], [4, 3]), _x(4, 3))


def _imputer() -> Case:
    node = helper.make_node("Imputer", ["x"], ["y"], domain=ML, imputed_value_floats=[1.0, 2.0, 3.0],
                            replaced_value_float=float("nan"))  # fmt: skip

    def case() -> tuple[onnx.ModelProto, np.ndarray]:
        x = _x(4, 3)
        x[1, 2] = x[3, 0] = np.nan
        return _model([node], [4, 3]), x

    return case


def _one_hot() -> Case:
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
             helper.make_node("OneHotEncoder", ["i"], ["y"], domain=ML, cats_int64s=[0, 1, 2], zeros=1)]  # fmt: skip
    return lambda: (_model(nodes, [4, 3]), np.random.default_rng(0).integers(0, 3, (4, 3)).astype(np.float32))


def _array_feature_extractor() -> Case:
    node = helper.make_node("ArrayFeatureExtractor", ["x", "idx"], ["y"], domain=ML)
    return lambda: (_model([node], [4, 3], [_c("idx", [2, 0], np.int64)]), _x(4, 3))


CASES: dict[str, Case] = {
    "Abs": _unary("Abs"),
    "Ceil": _unary("Ceil"),
    "Elu": _unary("Elu", alpha=0.7),
    "Erf": _unary("Erf"),
    "Exp": _unary("Exp"),
    "Floor": _unary("Floor"),
    "Gelu": lambda: (_model([helper.make_node("Gelu", ["x"], ["y"])], [4, 5], opset=20), _x(4, 5)),
    "HardSigmoid": _unary("HardSigmoid"),
    "HardSwish": _unary("HardSwish", low=-5, high=5),
    "Log": _unary("Log", low=0.1),
    "Reciprocal": _unary("Reciprocal", low=0.5),
    "Selu": _unary("Selu"),
    "Sign": _unary("Sign"),
    "Softplus": _unary("Softplus"),
    "Softsign": _unary("Softsign"),
    "Sqrt": _unary("Sqrt", low=0.0),
    "Clip": lambda: (
        _model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], [4, 5], [_c("lo", 0.0), _c("hi", 6.0)]),
        _x(4, 5, low=-3, high=9),
    ),
    "Pow": _binary_const("Pow", np.float32(2.0)),
    "Mod": lambda: (
        _model([helper.make_node("Mod", ["x", "c"], ["y"], fmod=1)], [4, 5], [_c("c", np.float32(0.7))]),
        _x(4, 5),
    ),
    "Equal": _compare("Equal"),
    "Greater": _compare("Greater"),
    "GreaterOrEqual": _compare("GreaterOrEqual"),
    "Less": _compare("Less"),
    "LessOrEqual": _compare("LessOrEqual"),
    "Where": _compare("Greater"),
    "And": _logical("And"),
    "Or": _logical("Or"),
    "Xor": _logical("Xor"),
    "Not": _logical("And"),
    "ReduceMean": _reduce("ReduceMean"),
    "ReduceSum": _reduce("ReduceSum"),
    "ReduceMax": _reduce("ReduceMax"),
    "ReduceMin": _reduce("ReduceMin"),
    "ReduceL2": _reduce("ReduceL2"),
    "ReduceLogSumExp": _reduce("ReduceLogSumExp"),
    "ReduceSumSquare": _reduce("ReduceSumSquare"),
    "Max": _variadic("Max"),
    "Min": _variadic("Min"),
    "Mean": _variadic("Mean"),
    "Sum": _variadic("Sum"),
    "ArgMax": _arg("ArgMax"),
    "ArgMin": _arg("ArgMin"),
    "Range": _shape_chain(),
    "Expand": _shape_chain(),
    "Split": _split(),
    "Resize": _resize("nearest"),
    "Tile": lambda: (
        _model([helper.make_node("Tile", ["x", "r"], ["y"])], [2, 3], [_c("r", [2, 1], np.int64)]),
        _x(2, 3),
    ),
    "LayerNormalization": _layer_norm(),
    f"{ML}:Scaler": _ml("Scaler", offset=[0.5, 1.0, -1.0], scale=[2.0, 0.5, 1.5]),
    f"{ML}:Normalizer": _ml("Normalizer", norm="L2"),
    f"{ML}:Binarizer": _ml("Binarizer", threshold=0.5),
    f"{ML}:LinearClassifier": _linear_classifier(3, "SOFTMAX"),
    f"{ML}:Imputer": _imputer(),
    f"{ML}:OneHotEncoder": _one_hot(),
    f"{ML}:ArrayFeatureExtractor": _array_feature_extractor(),
}
EXTRA = {
    "resize_linear": _resize("linear"),
    "normalizer_l1": _ml("Normalizer", norm="L1"),
    "normalizer_max": _ml("Normalizer", norm="MAX"),
    "linear_binary_logistic": _linear_classifier(2, "LOGISTIC"),
    "linear_binary_none": _linear_classifier(2, "NONE"),
    "linear_multi_none": _linear_classifier(3, "NONE"),
}
# Ops covered by the older executor tests (tests/formal/test_onnx_torch.py) or only meaningful inside a graph.
COVERED_ELSEWHERE = {
    "Add", "AveragePool", "BatchNormalization", "Cast", "Concat", "Constant", "ConstantOfShape", "Conv", "Div",
    "Dropout", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "LeakyRelu", "MatMul", "MaxPool", "Mul",
    "Neg", "Pad", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Squeeze", "Sub", "Tanh", "Transpose",
    "Unsqueeze", f"{ML}:ZipMap",  # ZipMap: tests/test_zoo_models.py (scikit-learn classifiers with ZipMap)
    # tests/test_heldout_torch.py (hand-built nodes with every attribute, and held-out torch exports):
    "ConvTranspose", "GlobalMaxPool", "GRU", "InstanceNormalization", "LSTM", "PRelu", "RNN", "Upsample",
}  # fmt: skip


def test_every_handler_has_a_case() -> None:
    missing = set(HANDLERS) - set(CASES) - COVERED_ELSEWHERE
    assert not missing, f"executor ops without an ONNX Runtime comparison: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(CASES) + sorted(EXTRA))
def test_op_agrees_with_onnx_runtime(name: str) -> None:
    model, x = {**CASES, **EXTRA}[name]()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(["y"], {"x": x})[0]
    got = load_onnx_module(model).run(torch.tensor(x))["y"]
    np.testing.assert_allclose(
        got.detach().numpy().astype(np.float64), expected.astype(np.float64), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    "name", ["HardSwish", "Gelu", "LayerNormalization", f"{ML}:Scaler", f"{ML}:LinearClassifier"]
)
def test_differentiable_ops_give_finite_gradients(name: str) -> None:
    model, x = CASES[name]()
    inp = torch.tensor(x, requires_grad=True)
    out = load_onnx_module(model).run(inp)["y"]
    (
        out * torch.arange(out.shape[-1], dtype=out.dtype)
    ).sum().backward()  # a plain sum of softmax is constant
    assert inp.grad is not None and torch.isfinite(inp.grad).all() and inp.grad.abs().sum() > 0
