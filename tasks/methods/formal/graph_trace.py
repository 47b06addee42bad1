"""What the verifier learns from tracing an ONNX graph: where each tensor keeps the batch, which
constants follow the batch size, which final ops keep the order of the scores, and the check that
the bound network reproduces the graph.
"""

from __future__ import annotations

from typing import Any

import torch

from nnassay.tasks.engine.onnx_torch import Node, UnsupportedOpsError
from nnassay.tasks.methods.formal.layers import Network
from nnassay.tasks.methods.formal.op_context import Layout, to_flat

Tensor = torch.Tensor


ORDER_KEEPING = ("Identity", "Cast", "ai.onnx.ml:Normalizer", "ai.onnx.ml:ZipMap")


def tail_of(nodes: list[Node], final: str) -> set[str]:
    """Tensors from which ``final`` follows through ops that keep the order of positive scores only."""
    tail = {final}
    for node in reversed(nodes):
        if node.op_type in ORDER_KEEPING and node.outputs[0] in tail:
            tail.add(node.inputs[0])
    return tail


def output_of(node: Node, env: dict[str, Any], final: str, used: set[str]) -> int:
    """The output bounded: the first float tensor the graph uses (LinearClassifier: the scores)."""
    for j, name in enumerate(node.outputs):
        value = env.get(name)
        if (name in used or name == final) and isinstance(value, Tensor) and value.is_floating_point():
            return j
    return 0


def check_reproduces(net: Network, x: Tensor, expected: Any, layout: Layout | None, source: str) -> None:
    """The bound network must compute the graph's output on the traced samples (the order of the scores
    when a final Softmax was dropped); anything else is a conversion fault, reported, never bounded."""
    with torch.no_grad():
        got = net.forward(x.reshape(x.shape[0], -1))
    want = to_flat(expected.double(), x.shape[0], layout) if layout and isinstance(expected, Tensor) else None
    if want is not None and want.shape == got.shape:
        if net.output_softmax:
            ok = bool((got.argsort(1) == want.argsort(1)).all()) or bool(
                (got.argmax(1) == want.argmax(1)).all()
                and torch.allclose(torch.softmax(got, 1), want, atol=1e-6)
            )
        else:
            ok = torch.allclose(got, want, rtol=1e-6, atol=1e-6 * (1 + float(want.abs().max())))
        if ok:
            return
    raise UnsupportedOpsError([("output", "the bound network does not reproduce the graph's output")], source)


def batch_constants(env: dict[str, Any], env3: dict[str, Any]) -> set[str]:
    """Tensors whose leading axis follows the batch without depending on the input values (an
    Expand of a class token to the batch): constants, but bounded with the batch they are used in."""
    return {
        name
        for name, v in env.items()
        if isinstance(v, Tensor)
        and v.dim() > 0
        and v.shape[0] == 2
        and isinstance(env3.get(name), Tensor)
        and env3[name].shape[0] == 3
        and bool((v[:1] == v).all())
    }
