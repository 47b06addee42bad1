"""Tiny ONNX models built in-test with ``onnx.helper`` for the executor, bound and verifier tests.

Formal tests reach these builders through the ``kit`` fixture defined in ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BENCH = Path("/work/shared/benchmarks/vnncomp")
OPSET = 13


def const(name: str, array: np.ndarray) -> onnx.TensorProto:
    """An initializer (float32 unless the array is integer)."""
    arr = np.asarray(array)
    return numpy_helper.from_array(arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float32), name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    in_shape: Sequence[int | str],
    out_name: str = "y",
    inits: Sequence[onnx.TensorProto] = (),
    opset: int = OPSET,
) -> onnx.ModelProto:
    """One float input ``x`` of ``in_shape``, output ``out_name`` of unknown shape."""
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        list(inits),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def mlp(
    sizes: Sequence[int],
    act: str = "Relu",
    seed: int = 0,
    scale: float = 1.0,
    batch: int | str = "N",
    act_attrs: dict | None = None,
) -> onnx.ModelProto:
    """A Gemm/activation chain with random weights; the last layer has no activation."""
    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        inits += [
            const(f"W{i}", rng.normal(0, scale / np.sqrt(a), (b, a))),
            const(f"b{i}", rng.normal(0, 0.3, b)),
        ]
        out = "y" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"W{i}", f"b{i}"], [out], transB=1))
        if out != "y":
            nodes.append(helper.make_node(act, [out], [f"a{i}"], **(act_attrs or {})))
            out = f"a{i}"
        cur = out
    return make_model(nodes, [batch, sizes[0]], inits=inits)


def save(model: onnx.ModelProto, tmp_path: Path, name: str = "m.onnx") -> Path:
    """Write ``model``; returns the path."""

    path = tmp_path / name
    onnx.save(model, str(path))
    return path


class Kit:
    """The builders above, handed to tests through the ``kit`` fixture (test files do not import conftest)."""

    const = staticmethod(const)
    make_model = staticmethod(make_model)
    mlp = staticmethod(mlp)
    save = staticmethod(save)
    bench = BENCH
