"""Helpers of the explanation tests: tiny ONNX models whose decision depends on one known feature
(tabular) or one known pixel region (image), wrapped as ``ModelRunner`` and ``Dataset``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nnassay.schemas.goals import Layout, ModelSpec
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner

KEY_FEATURE = 2  # the only feature the tabular model reads
NAMES = ("age", "income", "debt", "tenure", "score")
REGION = "rows 0-1, cols 2-3"  # the only pixels the image model reads (2x2 patches of a 6x6 image)


def _save(
    nodes: list[onnx.NodeProto], shape: list[int | str], inits: dict[str, np.ndarray], path: Path
) -> Path:
    graph = helper.make_graph(
        nodes,
        "explain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def one_feature_model(path: Path, activation: str = "Relu") -> Path:
    """5 features -> 8 hidden -> 2 classes; only feature 2 has non-zero input weights, so class 0
    wins exactly when feature 2 is above 0.5. ``activation`` 'Shrink' is an op the executor lacks."""
    rng = np.random.default_rng(0)
    w1 = np.zeros((8, 5))
    w1[:4, KEY_FEATURE], w1[4:, KEY_FEATURE] = rng.uniform(1, 2, 4), -rng.uniform(1, 2, 4)
    b1 = -w1[:, KEY_FEATURE] * 0.5  # hidden unit j: w_j (x2 - 0.5)
    w2 = np.zeros((2, 8))
    w2[0, :4], w2[1, 4:] = 2.0, 2.0
    attrs = {"lambd": 0.0, "bias": 0.0} if activation == "Shrink" else {}
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"], transB=1),
        helper.make_node(activation, ["h"], ["a"], **attrs),
        helper.make_node("Gemm", ["a", "W2", "B2"], ["logits"], transB=1),
    ]
    inits = {"W1": w1, "B1": b1, "W2": w2, "B2": np.zeros(2)}
    if activation == "Shrink":  # Shrink with lambd 0 is the identity: put the ReLU back with Max
        nodes[1:2] = [
            helper.make_node("Shrink", ["h"], ["s"], **attrs),
            helper.make_node("Max", ["s", "Z"], ["a"]),
        ]
        inits["Z"] = np.zeros(1)
    return _save(nodes, ["N", 5], inits, path)


def one_region_model(path: Path) -> Path:
    """1x6x6 images -> 2 classes; logit 0 - logit 1 = 4 * (mean of rows 0-1, cols 2-3) - 2."""
    w = np.zeros((2, 36))
    mask = np.zeros((6, 6))
    mask[0:2, 2:4] = 1.0
    w[0] = 4.0 * mask.reshape(-1) / mask.sum()
    nodes = [
        helper.make_node("Flatten", ["x"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    return _save(nodes, ["N", 1, 6, 6], {"W": w, "B": np.array([-2.0, 0.0])}, path)


def runner(path: Path, layout: Layout) -> ModelRunner:
    """A CPU runner over data in [0, 1]."""
    return ModelRunner(ModelSpec(path=path, layout=layout, value_range=(0.0, 1.0)), prefer_cuda=False)


def dataset(x: np.ndarray, y: np.ndarray, kind: str, layout: Layout, names: tuple[str, ...] = ()) -> Dataset:
    """A test data set held in memory."""
    return Dataset(x.astype(np.float32), y.astype(np.int64), layout, kind, Path("mem.npz"), "0" * 64, names)


def labelled(model: ModelRunner, x: np.ndarray, wrong: int) -> np.ndarray:
    """Labels equal to the model's answers, with the first ``wrong`` rows' labels flipped (failures)."""
    y = model.predict(x)
    y[:wrong] = 1 - y[:wrong]
    return y


def tabular_case(folder: Path, activation: str = "Relu") -> tuple[ModelRunner, Dataset]:
    """The one-feature model with 60 rows in [0, 1], the first 10 mislabelled."""
    model = runner(one_feature_model(folder / f"tabular_{activation}.onnx", activation), Layout.FLAT)
    x = np.random.default_rng(1).uniform(0, 1, (60, 5))
    x[:, KEY_FEATURE] = np.where(np.arange(60) % 2 == 0, 0.85, 0.15) + np.random.default_rng(2).uniform(
        -0.1, 0.1, 60
    )
    return model, dataset(x, labelled(model, x.astype(np.float32), 10), "tabular", Layout.FLAT, NAMES)


def image_case(folder: Path) -> tuple[ModelRunner, Dataset]:
    """The one-region model with 40 images in [0, 1], the first 8 mislabelled. Their region is bright:
    against a black baseline only brightness can be evidence, so the failures choose class 0 because
    of the region (a dark region arguing for class 1 would show as negative attribution)."""
    model = runner(one_region_model(folder / "image.onnx"), Layout.NCHW)
    x = np.random.default_rng(3).uniform(0, 1, (40, 1, 6, 6))
    bright = (np.arange(40) % 2 == 0) | (np.arange(40) < 8)  # failures: bright region, class 0 chosen
    x[:, 0, 0:2, 2:4] = np.where(bright, 0.9, 0.1)[:, None, None]
    return model, dataset(x, labelled(model, x.astype(np.float32), 8), "image", Layout.NCHW)
