"""ONNX graph -> verifier IR (``tasks.formal.layers.Network``): one bound operator per ONNX op.

``BOUND_OPS`` maps each ONNX op type to a function returning IR layers.
The graph is run once in torch (batch of 2) to learn every tensor's shape and to fold constant
sub-graphs (Shape/Gather/Concat feeding a Reshape, ...). Ops without a bound operator, and graphs
that are not a single chain from the input to the output, are all collected and reported together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from tasks.formal.layers import (
    Conv,
    ConvGeometry,
    Dense,
    Diag,
    Layer,
    LeakyRelu,
    MaxPool,
    Network,
    Relu,
    Sigmoid,
    Tanh,
)
from tasks.onnx_torch import Node, OnnxModule, UnsupportedOpsError, handler_for, load_onnx_module

Tensor = torch.Tensor
MAX_PROBE_ENTRIES = 30_000_000  # largest dense matrix built by probing a generic affine op


@dataclass
class OpContext:
    """What a bound operator sees: its node, constant inputs (None for the live one), shapes."""

    node: Node
    consts: list[Any]
    live_index: int
    in_shape: tuple[int, ...]  # per sample, batch axis dropped
    out_shape: tuple[int, ...]
    is_last: bool

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)

    def apply(self, x: Tensor) -> Tensor:
        """Run the ONNX op on a batch of flat live inputs (constants filled in), flat output."""
        args = list(self.consts)
        args[self.live_index] = x.reshape(x.shape[0], *self.in_shape)
        args = [a.double() if isinstance(a, Tensor) and a.is_floating_point() else a for a in args]
        from tasks.onnx_torch import RunContext

        out = handler_for(self.node.op_type)(self.node, args, RunContext(x.shape[0], None))  # type: ignore[misc]
        out = out[0] if isinstance(out, tuple) else out
        return out.reshape(x.shape[0], -1)


class BoundOpError(ValueError):
    """This node cannot be turned into IR layers; the message says why and what would work."""


BoundOp = Callable[[OpContext], list[Layer]]


def _no_layer(ctx: OpContext) -> list[Layer]:
    return []  # row-major order of the sample is unchanged: nothing to do on flat vectors




def _probe_affine(ctx: OpContext) -> list[Layer]:
    """Any affine op as a dense layer: ``b = f(0)``, column ``i`` of ``W`` = ``f(e_i) - f(0)``."""
    if ctx.n_in * ctx.n_out > MAX_PROBE_ENTRIES:
        raise BoundOpError(f"{ctx.n_in}x{ctx.n_out} dense matrix is too large (limit {MAX_PROBE_ENTRIES} entries)")
    with torch.no_grad():
        zero = ctx.apply(torch.zeros(1, ctx.n_in, dtype=torch.float64))[0]
        cols = ctx.apply(torch.eye(ctx.n_in, dtype=torch.float64)) - zero
    return [Dense(cols.T.contiguous(), zero)]


def _elementwise(ctx: OpContext) -> list[Layer]:
    """Add/Sub/Mul/Div with a constant: a diagonal layer when the shape is kept, else dense."""
    if ctx.node.op_type == "Div" and ctx.live_index != 0:
        raise BoundOpError("division by a computed tensor is not affine; only division by a constant is supported")
    if ctx.node.op_type == "Mul" and all(c is None for i, c in enumerate(ctx.consts) if i != ctx.live_index):
        raise BoundOpError("product of two computed tensors is not supported")
    if ctx.in_shape != ctx.out_shape:
        return _probe_affine(ctx)
    with torch.no_grad():
        zero = ctx.apply(torch.zeros(1, ctx.n_in, dtype=torch.float64))[0]
        one = ctx.apply(torch.ones(1, ctx.n_in, dtype=torch.float64))[0]
    return [Diag(one - zero, zero)]




def _gemm(ctx: OpContext) -> list[Layer]:
    node = ctx.node
    if ctx.live_index != 0 or len(ctx.in_shape) != 1:
        return _probe_affine(ctx)
    w = ctx.consts[1].double()
    w = w if node.attr("transB", 0) else w.T
    if node.attr("transA", 0):
        raise BoundOpError("Gemm with transA=1 on the computed input is not supported")
    bias = torch.zeros(w.shape[0], dtype=torch.float64)
    if len(ctx.consts) > 2 and ctx.consts[2] is not None:
        bias = bias + node.attr("beta", 1.0) * ctx.consts[2].double().reshape(-1).expand(w.shape[0])
    return [Dense(node.attr("alpha", 1.0) * w, bias)]


def _mat_mul(ctx: OpContext) -> list[Layer]:
    if ctx.live_index == 0 and len(ctx.in_shape) == 1 and ctx.consts[1].dim() == 2:
        w = ctx.consts[1].double()
        return [Dense(w.T.contiguous(), torch.zeros(w.shape[1], dtype=torch.float64))]
    return _probe_affine(ctx)


def _conv(ctx: OpContext) -> list[Layer]:
    node = ctx.node
    if len(ctx.in_shape) != 3 or ctx.live_index != 0:
        return _probe_affine(ctx)
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:] or node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return _probe_affine(ctx)
    geo = ConvGeometry(ctx.in_shape, ctx.out_shape, tuple(node.attr("strides", [1, 1])), tuple(pads[:2]),
                       tuple(node.attr("dilations", [1, 1])), int(node.attr("group", 1)))  # type: ignore[arg-type]
    bias = ctx.consts[2] if len(ctx.consts) > 2 else None
    return [Conv(ctx.consts[1], bias, geo)]


def _batch_normalization(ctx: OpContext) -> list[Layer]:
    scale, bias, mean, var = (c.double() for c in ctx.consts[1:5])
    inv = scale / torch.sqrt(var + ctx.node.attr("epsilon", 1e-5))
    spatial = math.prod(ctx.in_shape[1:])
    return [Diag(inv.repeat_interleave(spatial), (bias - mean * inv).repeat_interleave(spatial))]


def _relu(ctx: OpContext) -> list[Layer]:
    return [Relu(ctx.n_in)]


def _leaky_relu(ctx: OpContext) -> list[Layer]:
    return [LeakyRelu(ctx.n_in, float(ctx.node.attr("alpha", 0.01)))]


def _sigmoid(ctx: OpContext) -> list[Layer]:
    return [Sigmoid(ctx.n_in)]


def _tanh(ctx: OpContext) -> list[Layer]:
    return [Tanh(ctx.n_in)]


def _clip(ctx: OpContext) -> list[Layer]:
    """``clip(x, a, b) = b - relu((b - a) - relu(x - a))``: exact with two ReLU layers."""
    node = ctx.node
    if node.opset < 11:
        low, high = node.attr("min", -math.inf), node.attr("max", math.inf)
    else:
        low = float(ctx.consts[1]) if len(ctx.consts) > 1 and ctx.consts[1] is not None else -math.inf
        high = float(ctx.consts[2]) if len(ctx.consts) > 2 and ctx.consts[2] is not None else math.inf
    n, ones = ctx.n_in, torch.ones(ctx.n_in, dtype=torch.float64)
    if math.isinf(low) and math.isinf(high):
        return []
    if math.isinf(high):
        return [Diag(ones, -low * ones), Relu(n), Diag(ones, low * ones)]
    if math.isinf(low):
        return [Diag(-ones, high * ones), Relu(n), Diag(-ones, high * ones)]
    return [Diag(ones, -low * ones), Relu(n), Diag(-ones, (high - low) * ones), Relu(n), Diag(-ones, high * ones)]


def _max_pool(ctx: OpContext) -> list[Layer]:
    node = ctx.node
    if node.attr("ceil_mode", 0) or len(ctx.in_shape) != 3:
        raise BoundOpError("MaxPool with ceil_mode=1 or non-2-D input is not supported")
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    c, h, w = ctx.in_shape
    index = torch.arange(c * h * w, dtype=torch.float64).reshape(1, c, h, w) + 1
    index = F.pad(index, [pads[1], pads[3], pads[0], pads[2]])  # padding reads as index 0 -> -1
    cols = F.unfold(index, node.attr("kernel_shape"), dilation=node.attr("dilations", [1, 1]),
                    stride=node.attr("strides", [1, 1]))  # (1, c*k, L)
    k = math.prod(node.attr("kernel_shape"))
    windows = cols.reshape(c, k, -1).permute(0, 2, 1).reshape(-1, k).long() - 1
    if windows.shape[0] != ctx.n_out:
        raise BoundOpError(f"MaxPool window count {windows.shape[0]} does not match the output size {ctx.n_out}")
    return [MaxPool(windows, ctx.n_in)]


def _softmax(ctx: OpContext) -> list[Layer]:
    if not ctx.is_last:
        raise BoundOpError("Softmax is supported only as the last op (argmax properties)")
    return []  # dropped; the caller records it via Network.output_softmax


BOUND_OPS: dict[str, BoundOp] = {
    "Identity": _no_layer,
    "Dropout": _no_layer,
    "Flatten": _no_layer,
    "Reshape": _no_layer,
    "Squeeze": _no_layer,
    "Unsqueeze": _no_layer,
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "Neg": _elementwise,
    "Transpose": _probe_affine,
    "Pad": _probe_affine,
    "Slice": _probe_affine,
    "Concat": _probe_affine,
    "Gather": _probe_affine,
    "AveragePool": _probe_affine,
    "GlobalAveragePool": _probe_affine,
    "Gemm": _gemm,
    "MatMul": _mat_mul,
    "Conv": _conv,
    "BatchNormalization": _batch_normalization,
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "Sigmoid": _sigmoid,
    "Tanh": _tanh,
    "Clip": _clip,
    "MaxPool": _max_pool,
    "Softmax": _softmax,
}


def bound_op_for(op_type: str) -> BoundOp | None:
    """The bound operator of ``op_type``, or None when there is none."""
    return BOUND_OPS.get(op_type)


def supported_bound_ops() -> list[str]:
    """Every ONNX op type the bound propagation handles."""
    return sorted(BOUND_OPS)


def build_network(source: Path | str | Any) -> Network:
    """The IR chain of an ONNX model (path or ModelProto).

    Raises:
        UnsupportedOpsError: every node without a bound operator, or that breaks the chain.
    """
    module = load_onnx_module(source)
    return network_from_module(module, str(source) if isinstance(source, Path | str) else "the ONNX model")


def network_from_module(module: OnnxModule, source: str = "") -> Network:
    """Trace ``module`` once (batch of 2, float64) and convert every live node."""
    parsed = module.parsed
    if -1 in module.sample_shape:
        raise UnsupportedOpsError([(parsed.input_name, "symbolic input shape")], source)
    module = module.double()
    with torch.no_grad():
        env = module.run(torch.zeros(2, *module.sample_shape, dtype=torch.float64))
    live, current = {parsed.input_name}, parsed.input_name
    layers: list[Layer] = []
    problems: list[tuple[str, str]] = []
    softmax = False
    final = parsed.output_names[0]
    for node in parsed.nodes:
        live_idx = [i for i, name in enumerate(node.inputs) if name in live]
        if not live_idx or node.op_type == "Shape":
            continue
        live.update(node.outputs)
        if len(live_idx) != 1 or node.inputs[live_idx[0]] != current:
            problems.append((node.name, f"{node.op_type} (branching graph: only single-chain graphs are bounded)"))
            current = node.outputs[0]
            continue
        new_layers, problem = _convert(node, live_idx[0], env, node.outputs[0] == final)
        if problem:
            problems.append((node.name, f"{node.op_type} ({problem})"))
        layers += new_layers
        softmax = softmax or node.op_type == "Softmax"
        current = node.outputs[0]
    if current != final and not problems:
        problems.append((final, "output is not at the end of the input chain"))
    if problems:
        raise UnsupportedOpsError(problems, source)
    return Network(layers, math.prod(module.sample_shape), output_softmax=softmax)


def _convert(node: Node, live_index: int, env: dict[str, Any], is_last: bool) -> tuple[list[Layer], str]:
    op = bound_op_for(node.op_type)
    if op is None:
        return [], "no bound operator"
    x_in, x_out = env[node.inputs[live_index]], env[node.outputs[0]]
    if x_in.shape[0] != 2 or x_out.shape[0] != 2:
        return [], "mixes the batch axis"
    consts = [None if i == live_index or not name else env[name] for i, name in enumerate(node.inputs)]
    ctx = OpContext(node, consts, live_index, tuple(x_in.shape[1:]), tuple(x_out.shape[1:]), is_last)
    try:
        return op(ctx), ""
    except BoundOpError as exc:
        return [], str(exc)
