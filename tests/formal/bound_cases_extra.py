"""Soundness cases for the bound ops added for real exporters (``formal/ops_extra.py``).

Merged into ``test_bounds.op_models``: each case is a tiny model whose sampled outputs must lie in
the IBP, CROWN and alpha-CROWN bounds (and ``test_every_bound_op_has_a_soundness_case`` finds them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from bound_cases_heldout import heldout_op_models
from onnx import helper

ML = "ai.onnx.ml"


def _with_ml(model: onnx.ModelProto) -> onnx.ModelProto:
    model.opset_import.append(helper.make_opsetid(ML, 3))
    return model


def extra_op_models(kit: Any) -> dict[str, tuple[object, int]]:
    """Small models ending in (or built around) each new bound op: (model, number of inputs)."""
    c, mm, node = kit.const, kit.make_model, helper.make_node
    rng = np.random.default_rng(1)
    w1, b1 = c("W1", rng.normal(0, 1.5, (6, 4))), c("b1", rng.normal(0, 1, 6))
    gemm = node("Gemm", ["x", "W1", "b1"], ["h"], transB=1)
    w2, b2 = c("W2", rng.normal(0, 1, (3, 6))), c("b2", rng.normal(0, 1, 3))

    def chain(*nodes: Any, inits: tuple = (), opset: int = 13, tail: bool = True) -> tuple[object, int]:
        """x -> Gemm(6) -> nodes (last output "a" when ``tail``) -> Gemm(3) -> y."""
        last = [node("Gemm", ["a", "W2", "b2"], ["y"], transB=1)] if tail else []
        inits_all = [w1, b1, *([w2, b2] if tail else []), *inits]
        return mm([gemm, *nodes, *last], ["N", 4], inits=inits_all, opset=opset), 4

    def unary(op: str, **attrs: Any) -> tuple[object, int]:
        return chain(node(op, ["h"], ["a"], **attrs))

    def positive(op: str) -> tuple[object, int]:  # ops defined on x > 0: after a sigmoid (+ 0.5)
        return chain(
            node("Sigmoid", ["h"], ["s"]),
            node("Add", ["s", "half"], ["p"]),
            node(op, ["p"], ["a"]),
            inits=(c("half", np.array(0.5)),),
        )

    img = ["N", 2, 4, 4]
    conv = node("Conv", ["x", "Wc", "bc"], ["h"], pads=[1, 1, 1, 1])
    conv_w = [c("Wc", rng.normal(0, 0.5, (2, 2, 3, 3))), c("bc", rng.normal(0, 0.3, 2))]

    def on_image(*nodes: Any, inits: tuple = ()) -> tuple[object, int]:
        return mm([conv, *nodes], img, inits=[*conv_w, *inits]), 32

    ln_scale, ln_bias = c("g", rng.normal(1, 0.2, 6)), c("be", rng.normal(0, 0.2, 6))
    return {
        **heldout_op_models(kit),  # PRelu, InstanceNormalization, ConvTranspose, ... (issue 15)
        "HardSigmoid": unary("HardSigmoid", alpha=0.3, beta=0.4),
        "HardSwish": unary(
            "HardSwish",
        ),
        "Erf": unary("Erf"),
        "Gelu": chain(node("Gelu", ["h"], ["a"]), opset=20),
        "Gelu-tanh": chain(node("Gelu", ["h"], ["a"], approximate="tanh"), opset=20),
        "Exp": unary("Exp"),
        "Softplus": unary("Softplus"),
        "Elu": unary("Elu", alpha=0.7),
        "Selu": unary("Selu"),
        "Log": positive("Log"),
        "Sqrt": positive("Sqrt"),
        "Reciprocal": positive("Reciprocal"),
        "Pow-2+Cast": chain(
            node("Pow", ["h", "two"], ["p"]),
            node("Cast", ["p"], ["a"], to=1),
            inits=(c("two", np.array(2.0)),),
        ),
        "Softmax-inside": unary("Softmax", axis=-1),
        "LayerNormalization": chain(
            node("LayerNormalization", ["h", "g", "be"], ["a"], axis=-1, epsilon=1e-5),
            inits=(ln_scale, ln_bias),
            opset=17,
        ),
        "LayerNorm-decomposed": chain(
            node("ReduceMean", ["h"], ["mu"], axes=[-1]),
            node("Sub", ["h", "mu"], ["d"]),
            node("Pow", ["d", "two"], ["sq"]),
            node("ReduceMean", ["sq"], ["var"], axes=[-1]),
            node("Add", ["var", "eps"], ["ve"]),
            node("Sqrt", ["ve"], ["sd"]),
            node("Div", ["d", "sd"], ["a"]),
            inits=(c("two", np.array(2.0)), c("eps", np.array(1e-5))),
        ),
        "Gelu-decomposed": chain(
            node("Div", ["h", "r2"], ["hd"]),
            node("Erf", ["hd"], ["e"]),
            node("Add", ["e", "one"], ["e1"]),
            node("Mul", ["h", "e1"], ["m"]),
            node("Mul", ["m", "half"], ["a"]),
            inits=(c("r2", np.array(np.sqrt(2.0))), c("one", np.array(1.0)), c("half", np.array(0.5))),
        ),
        "Mul-branches": chain(
            node("Relu", ["h"], ["r"]), node("Tanh", ["h"], ["t"]), node("Mul", ["r", "t"], ["a"])
        ),
        "MatMul-attention": chain(
            node("Reshape", ["h", "s23"], ["q"]),
            node("Transpose", ["q"], ["kt"], perm=[0, 2, 1]),
            node("MatMul", ["q", "kt"], ["att"]),
            node("Softmax", ["att"], ["p"], axis=-1),
            node("MatMul", ["p", "q"], ["o"]),
            node("Reshape", ["o", "s6"], ["a"]),
            inits=(c("s23", np.array([-1, 2, 3])), c("s6", np.array([-1, 6]))),
        ),
        "Max+Min-branches": chain(
            node("Relu", ["h"], ["r"]),
            node("Neg", ["h"], ["n"]),
            node("Max", ["r", "n"], ["mx"]),
            node("Min", ["mx", "h"], ["a"]),
        ),
        "ReduceSum+ReduceMax+ReduceMin": chain(
            node("Reshape", ["h", "s23"], ["q"]),
            node("ReduceMax", ["q"], ["mx"], axes=[2], keepdims=1),
            node("ReduceMin", ["q"], ["mn"], axes=[2], keepdims=1),
            node("ReduceSum", ["q", "ax2"], ["sm"], keepdims=1),
            node("Concat", ["mx", "mn", "sm"], ["cc"], axis=2),
            node("Reshape", ["cc", "s6"], ["a"]),
            inits=(c("s23", np.array([-1, 2, 3])), c("s6", np.array([-1, 6])), c("ax2", np.array([2]))),
        ),
        "Split+Expand+Tile+Where+Mean+Sum": chain(
            node("Split", ["h", "sp"], ["h1", "h2"], axis=1),
            node("Relu", ["h1"], ["r1"]),
            node("Sum", ["r1", "h2"], ["s"]),
            node("Mean", ["s", "cst"], ["mn"]),
            node("Where", ["cond", "mn", "cst"], ["w"]),
            node("Tile", ["w", "rep"], ["t"]),
            node("Expand", ["t", "shape"], ["a"]),
            inits=(
                c("sp", np.array([3, 3])),
                c("cst", rng.normal(0, 1, 3)),
                helper.make_tensor("cond", onnx.TensorProto.BOOL, [3], [True, False, True]),
                c("rep", np.array([1, 2])),
                c("shape", np.array([1, 6])),
            ),
            opset=13,
        ),
        "Resize-nearest": on_image(
            node("Relu", ["h"], ["r"]),
            node("Resize", ["r", "", "sc"], ["y"], mode="nearest"),
            inits=(c("sc", np.array([1.0, 1.0, 2.0, 2.0])),),
        ),
        "ml-Scaler+LinearClassifier": (
            _with_ml(
                mm(
                    [
                        node(
                            "Scaler",
                            ["x"],
                            ["s"],
                            domain=ML,
                            offset=[0.1, -0.2, 0.3, 0.0],
                            scale=[2.0, 1.0, 0.5, 1.5],
                        ),
                        node(
                            "Imputer",
                            ["s"],
                            ["i"],
                            domain=ML,
                            imputed_value_floats=[0.0],
                            replaced_value_float=float("nan"),
                        ),
                        node("ArrayFeatureExtractor", ["i", "cols"], ["f"], domain=ML),
                        node(
                            "LinearClassifier",
                            ["f"],
                            ["label", "y"],
                            domain=ML,
                            classlabels_ints=[0, 1, 2],
                            coefficients=rng.normal(0, 1, 9).tolist(),
                            intercepts=[0.1, -0.2, 0.3],
                            post_transform="NONE",
                        ),
                    ],
                    ["N", 4],
                    inits=[c("cols", np.array([0, 2, 3]))],
                )
            ),
            4,
        ),
        "ml-Normalizer-L2": (
            _with_ml(
                mm(
                    [
                        gemm,
                        node("Normalizer", ["h"], ["a"], domain=ML, norm="L2"),
                        node("Gemm", ["a", "W2", "b2"], ["y"], transB=1),
                    ],
                    ["N", 4],
                    inits=[w1, b1, w2, b2],
                )
            ),
            4,
        ),
    }


def softmax_tail_models(kit: Any) -> dict[str, tuple[onnx.ModelProto, onnx.ModelProto]]:
    """Models whose class scores end in an order-keeping tail the verifier drops (model, logits model)."""
    mm, node = kit.make_model, helper.make_node
    rng = np.random.default_rng(2)
    coef = rng.normal(0, 1, 12).tolist()
    lin = dict(domain=ML, classlabels_ints=[0, 1, 2], coefficients=coef, intercepts=[0.1, 0.0, -0.1])
    model = _with_ml(
        mm(
            [
                node("LinearClassifier", ["x"], ["label", "p"], post_transform="SOFTMAX", **lin),
                node("Normalizer", ["p"], ["y"], domain=ML, norm="L1"),
            ],
            ["N", 4],
        )
    )
    logits = _with_ml(
        mm([node("LinearClassifier", ["x"], ["label", "y"], post_transform="NONE", **lin)], ["N", 4])
    )
    return {"ml-LinearClassifier-softmax+Normalizer-L1": (model, logits)}
