"""Linear ONNX classifiers with closed-form answers, and contexts for calling methods directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pydantic import TypeAdapter

from nnassay.schemas.goals import FeatureSpec, Layout, ModelSpec
from nnassay.schemas.threats import Threat
from nnassay.tasks.io.data_io import Dataset
from nnassay.tasks.io.model_io import ModelRunner
from nnassay.tasks.methods.registry import RunContext


def linear_onnx(path: Path, weights: np.ndarray, bias: np.ndarray) -> Path:
    """logits = x @ weights.T + bias as a one-Gemm ONNX model with a free batch axis."""
    classes, features = weights.shape
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["logits"], transB=1)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def context(
    model_path: Path,
    x: np.ndarray,
    y: np.ndarray,
    threat: dict[str, Any],
    out: Path,
    *,
    value_range: tuple[float, float] = (-100.0, 100.0),
    seed: int = 0,
    confidence: float = 0.95,
    time_s: float = 300.0,
    unit_scales: bool = True,
) -> RunContext:
    """A RunContext over in-memory tabular data (value range wide: no clipping unless asked).

    Threat magnitudes on tabular data are in units of each feature's scale; with ``unit_scales``
    every feature declares scale 1, so they are data units and the closed forms below hold.
    """
    model = ModelRunner(
        ModelSpec(path=model_path, layout=Layout.FLAT, value_range=value_range), prefer_cuda=False
    )
    data = Dataset(
        x=x.astype(np.float32),
        y=y.astype(np.int64),
        layout=Layout.FLAT,
        kind="tabular",
        path=model_path,
        sha256="0" * 64,
        features=tuple(FeatureSpec(name=str(i), scale=1.0) for i in range(x.shape[1])) if unit_scales else (),
    )
    out.mkdir(parents=True, exist_ok=True)
    return RunContext(
        model=model,
        data=data,
        threat=TypeAdapter(Threat).validate_python(threat),
        metric="",
        seed=seed,
        out_dir=out,
        run_dir=out,
        time_s=time_s,
        confidence=confidence,
    )


def binary_case(
    tmp: Path, margins: list[float], dim: int = 4, seed: int = 0
) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A 2-class linear model and samples at given signed distances (logit margin of class 1 over 0).

    Returns (model path, x, labels = predicted class, w = w1 - w0).
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1, (2, dim))
    w = weights[1] - weights[0]
    direction = w / np.linalg.norm(w) ** 2  # x = t * direction has margin exactly t
    base = rng.normal(0, 1, dim)
    base -= (base @ w) * direction  # margin 0
    x = np.array([base + m * direction for m in margins])
    path = linear_onnx(tmp / "linear.onnx", weights, np.zeros(2))
    return path, x.astype(np.float32), (np.array(margins) > 0).astype(np.int64), w
