"""A model call that fails in ONNX Runtime raises (nnassay records it) without ONNX Runtime's own
error line on the terminal, repeated once per failing call (a new-user trial saw 143 of them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

SCRIPT = """
import sys
import numpy as np
from nnassay.schemas.goals import ModelSpec
from nnassay.tasks.io.model_io import ModelRunner

runner = ModelRunner(ModelSpec(path=sys.argv[1], value_range=(0.0, 10.0)), prefer_cuda=False)
failed = 0
for _ in range(3):
    try:
        runner.logits(np.full((1, 2), 9.0, dtype=np.float32))  # index 9 of a 3-row table: Gather fails
    except Exception as exc:
        failed += 1
        assert "Gather" in str(exc) or "index" in str(exc).lower(), exc
print("failed", failed)
"""


def _gather_model(path: Path) -> Path:
    """scores = table[int(x[:, 0])]: any first feature outside 0..2 makes ONNX Runtime fail."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [3, 3], [1, 0, 0, 0, 1, 0, 0, 0, 1])
    nodes = [
        helper.make_node("Slice", ["x", "s0", "s1", "ax"], ["first"]),
        helper.make_node("Squeeze", ["first", "ax"], ["flat"]),
        helper.make_node("Cast", ["flat"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["scores"], axis=0),
    ]
    consts = [
        helper.make_tensor("s0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("s1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
        table,
    ]
    graph = helper.make_graph(
        nodes,
        "gather",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_a_failing_model_call_raises_without_onnx_runtime_error_lines(tmp_path: Path) -> None:
    model = _gather_model(tmp_path / "gather.onnx")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(model)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "failed 3" in done.stdout  # every call failed: the check below could have seen 3 lines
    assert "Non-zero status code" not in done.stderr and "[E:onnxruntime" not in done.stderr
