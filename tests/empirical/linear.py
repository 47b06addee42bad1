"""Helper of the empirical tests: a two-class linear model on 1x2x2 images with known margins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from conftest import TinyCase

W_DIFF = np.array([1.0, -2.0, 0.5, 1.0])  # logit 0 - logit 1 = W_DIFF . x + B_DIFF
B_DIFF = 0.2
X0 = 0.5  # every pixel; margin = 0.5 * sum(W_DIFF) + 0.2 = 0.45
TRUE_LINF = 0.45 / np.abs(W_DIFF).sum()  # 0.1
TRUE_L2 = 0.45 / np.linalg.norm(W_DIFF)  # 0.18


def linear_image_model(path: Path) -> Path:
    """Two-class linear model on 1x2x2 images: logits = W flatten(x) + b."""
    w = np.stack([W_DIFF, np.zeros(4)]).astype(np.float32)
    b = np.array([B_DIFF, 0.0], np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 2, 2])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def make_linear_case(folder: Path) -> TinyCase:
    """The linear model and six test images at 0.5 (all class 0, margin 0.45)."""
    model = linear_image_model(folder / "linear.onnx")
    x = np.full((6, 1, 2, 2), X0, np.float32)
    np.savez(folder / "linear.npz", x=x, y=np.zeros(6, np.int64))
    return TinyCase(model, folder / "linear.npz", "NCHW", "image", 2)
