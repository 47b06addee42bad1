"""ONNX graph -> verifier IR (``nnassay.tasks.methods.formal.layers.Network``): one bound operator per ONNX op.

``BOUND_OPS`` maps each ONNX op type to a function returning IR layers.
The graph is run once in torch (batch of 2) to learn every tensor's shape and to fold constant
sub-graphs (Shape/Gather/Concat feeding a Reshape, ...). Branching graphs (residual Add/Sub,
Concat of computed tensors, a tensor used twice) are bounded through a state of live slots (see
``network_from_module``). Ops without a bound operator, and combinations of computed tensors that
are not affine (a product of two branches, ...), are all collected and reported together.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from nnassay.tasks.engine.onnx_torch import (
    Node,
    OnnxModule,
    RunContext,
    UnsupportedOpsError,
    handler_for,
    load_onnx_module,
)
from nnassay.tasks.methods.formal.graph_trace import batch_constants, check_reproduces, output_of, tail_of
from nnassay.tasks.methods.formal.layers import (
    Activation,
    Affine,
    Conv,
    ConvGeometry,
    Dense,
    Diag,
    Embedded,
    EmbeddedActivation,
    Layer,
    LeakyRelu,
    MaxPool,
    Network,
    Relu,
    Select,
    Sigmoid,
    Tanh,
)
from nnassay.tasks.methods.formal.op_context import (
    STANDARD,
    BoundOp,
    BoundOpError,
    Layout,
    OpContext,
    layout_of,
    no_layer,
    probe_affine,
    sample_shape,
)
from nnassay.tasks.methods.formal.ops_combine import combine_nonlinear, split_layers
from nnassay.tasks.methods.formal.ops_extra import EXTRA_BOUND_OPS, clip_layers
from nnassay.tasks.methods.formal.relax_attention import NonlinearMap

Tensor = torch.Tensor


def _elementwise(ctx: OpContext) -> list[Layer]:
    """Add/Sub/Mul/Div with a constant: a diagonal layer when the shape is kept, else dense."""
    if ctx.node.op_type == "Div" and ctx.live_index != 0:
        raise BoundOpError(
            "division by a computed tensor is not affine; only division by a constant is supported"
        )
    if ctx.node.op_type == "Mul" and all(c is None for i, c in enumerate(ctx.consts) if i != ctx.live_index):
        raise BoundOpError("product of two computed tensors is not supported")
    if ctx.in_shape != ctx.out_shape:
        return probe_affine(ctx)
    with torch.no_grad():
        zero = ctx.apply(torch.zeros(1, ctx.n_in, dtype=torch.float64))[0]
        one = ctx.apply(torch.ones(1, ctx.n_in, dtype=torch.float64))[0]
    return [Diag(one - zero, zero)]


def _gemm(ctx: OpContext) -> list[Layer]:
    node = ctx.node
    if ctx.live_index != 0 or len(ctx.in_shape) != 1:
        return probe_affine(ctx)
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
    return probe_affine(ctx)


def _conv(ctx: OpContext) -> list[Layer]:
    node = ctx.node
    if len(ctx.in_shape) != 3 or ctx.live_index != 0:
        return probe_affine(ctx)
    pads = list(node.attr("pads", [0, 0, 0, 0]))
    if pads[:2] != pads[2:] or node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return probe_affine(ctx)
    (c_in, h_in, w_in), (c_out, h_out, w_out) = ctx.in_shape, ctx.out_shape
    (stride_h, stride_w), (dilation_h, dilation_w) = (
        node.attr("strides", [1, 1]),
        node.attr("dilations", [1, 1]),
    )
    geo = ConvGeometry(
        (c_in, h_in, w_in),
        (c_out, h_out, w_out),
        (stride_h, stride_w),
        (pads[0], pads[1]),
        (dilation_h, dilation_w),
        int(node.attr("group", 1)),
    )
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
    return clip_layers(ctx.n_in, low, high)


def _max_pool(ctx: OpContext) -> list[Layer]:
    """The windows of a 1-D or 2-D MaxPool as input indices (-1 for padding): exact with ``MaxPool``.

    ``ceil_mode`` adds windows that run past the end; they read the extra positions as padding, and
    the window count must match the traced output (torch's and ONNX's rule on a last window that
    would start in the padding).
    """
    node = ctx.node
    if len(ctx.in_shape) not in (2, 3) or len(ctx.out_shape) != len(ctx.in_shape):
        raise BoundOpError("MaxPool over more than two spatial axes is not supported")
    flat = len(ctx.in_shape) == 2  # (c, L) is pooled as (c, 1, L)
    c, h, w = (ctx.in_shape[0], 1, ctx.in_shape[1]) if flat else ctx.in_shape
    out_hw = (1, ctx.out_shape[1]) if flat else (ctx.out_shape[1], ctx.out_shape[2])
    n = len(ctx.in_shape) - 1
    lead = [1] if flat else []
    kernel = lead + list(node.attr("kernel_shape"))
    strides = lead + list(node.attr("strides", [1] * n))
    dilations = lead + list(node.attr("dilations", [1] * n))
    given = list(node.attr("pads", [0] * (2 * n)))
    pads = [0, given[0], 0, given[1]] if flat else given
    extra = [  # past the end padding that ceil_mode's last window reads
        max(
            0,
            (out_hw[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1 - size - pads[i] - pads[i + 2],
        )
        for i, size in enumerate((h, w))
    ]
    index = torch.arange(c * h * w, dtype=torch.float64).reshape(1, c, h, w) + 1
    index = F.pad(index, [pads[1], pads[3] + extra[1], pads[0], pads[2] + extra[0]])  # padding -> -1
    cols = F.unfold(index, tuple(kernel), dilation=tuple(dilations), stride=tuple(strides))  # (1, c*k, L)
    k = math.prod(kernel)
    windows = cols.reshape(c, k, -1).permute(0, 2, 1).reshape(-1, k).long() - 1
    if windows.shape[0] != ctx.n_out or bool((windows < 0).all(1).any()):
        raise BoundOpError(
            f"MaxPool window count {windows.shape[0]} does not match the output size {ctx.n_out}, "
            "or a window holds only padding"
        )
    return [MaxPool(windows, ctx.n_in)]


def _global_max_pool(ctx: OpContext) -> list[Layer]:
    """Max over each channel's positions: one ``MaxPool`` window per channel."""
    channels = ctx.in_shape[0]
    return [MaxPool(torch.arange(ctx.n_in).reshape(channels, -1), ctx.n_in)]


BOUND_OPS: dict[str, BoundOp] = {
    "Identity": no_layer,
    "Dropout": no_layer,
    "Flatten": no_layer,
    "Reshape": no_layer,
    "Squeeze": no_layer,
    "Unsqueeze": no_layer,
    "Add": _elementwise,
    "Sub": _elementwise,
    "Mul": _elementwise,
    "Div": _elementwise,
    "Neg": _elementwise,
    "Transpose": probe_affine,
    "Pad": probe_affine,
    "Slice": probe_affine,
    "Concat": probe_affine,
    "Gather": probe_affine,
    "AveragePool": probe_affine,
    "GlobalAveragePool": probe_affine,
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
    "GlobalMaxPool": _global_max_pool,
    "ConvTranspose": probe_affine,
}
BOUND_OPS.update(EXTRA_BOUND_OPS)  # smooth activations, attention, reductions, ai.onnx.ml (``ops_extra``)


AFFINE_OPS = {
    no_layer,
    probe_affine,
    _elementwise,
    _gemm,
    _mat_mul,
    _conv,
    _batch_normalization,
    EXTRA_BOUND_OPS["Cast"],
}
LAYOUT_FREE = {  # elementwise, or told where the batch axis is (``OpContext.in_layout``)
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Erf", "Gelu", "Exp", "Log",
    "Sqrt", "Reciprocal", "Softplus", "Elu", "Selu", "Pow", "Softmax", "LayerNormalization", "ReduceMax",
    "ReduceMin",
}  # fmt: skip


def bound_op_for(op_type: str) -> BoundOp | None:
    """The bound operator of ``op_type``, or None when there is none."""
    return BOUND_OPS.get(op_type)


def supported_bound_ops() -> list[str]:
    """Every ONNX op type the bound propagation handles."""
    return sorted(BOUND_OPS)


def build_network(source: Path | str | Any, output_name: str | None = None) -> Network:
    """The IR chain of an ONNX model (path or ModelProto) up to ``output_name`` (default: the first output).

    Raises:
        UnsupportedOpsError: every node without a bound operator, or that combines computed tensors
            in a way that is not affine.
    """
    module = load_onnx_module(source)
    name = str(source) if isinstance(source, Path | str) else "the ONNX model"
    return network_from_module(module, name, output_name)


def network_from_module(module: OnnxModule, source: str = "", output_name: str | None = None) -> Network:
    """Trace ``module`` once (batch of 2, float64) and convert every live node.

    A single chain becomes a plain chain of layers. A branching graph (a tensor used by several
    nodes, a residual Add/Sub or a Concat of computed tensors) becomes a chain over the *state*:
    the concatenation of every computed tensor still needed. Each node then routes the state
    (``Select``), works on its own slot at the end and lets the other slots pass unchanged
    (``Embedded``/``EmbeddedActivation``). Nodes whose inputs are all constants or shapes were
    computed by the trace and are constants here (constant folding).
    """
    parsed = module.parsed
    if -1 in module.sample_shape:
        raise UnsupportedOpsError([(parsed.input_name, "symbolic input shape")], source)
    module = module.double()
    with torch.no_grad():  # distinct samples, so that the trace shows where each tensor keeps the batch
        probe = torch.rand(
            3, *module.sample_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        env = module.run(probe[:2])
        env3 = module.run(probe)
        env1 = module.run(probe[:1])
    batch_consts = batch_constants(env, env3)
    ints = {  # shape constants that follow the batch size ([T, B, 3, D] for a Reshape): affine in it
        name: (v, env3[name])
        for name, v in env.items()
        if isinstance(v, Tensor)
        and not v.is_floating_point()
        and isinstance(env3.get(name), Tensor)
        and env3[name].shape == v.shape
        and not bool((env3[name] == v).all())
    }
    layouts = {
        name: lay
        for name, v in env.items()
        if (lay := layout_of(v, env3.get(name), env1.get(name))) is not None
    }
    final = output_name or parsed.output_names[0]
    nodes = _needed_nodes(parsed.nodes, final)
    producers = {name: node for node in nodes for name in node.outputs}
    tail = tail_of(nodes, final)
    live = {parsed.input_name}
    for node in nodes:
        if node.op_type != "Shape" and any(name in live for name in node.inputs):
            live.update(node.outputs)
    last_use = {
        name: i
        for i, node in enumerate(nodes)
        if node.op_type != "Shape"
        for name in node.inputs
        if name in live
    }
    used = set(last_use)
    state = _State([(parsed.input_name, math.prod(module.sample_shape))])
    layers: list[Layer] = []
    problems: list[tuple[str, str]] = []
    softmax = False
    for i, node in enumerate(nodes):
        live_idx = [j for j, name in enumerate(node.inputs) if name in live]
        if not live_idx or node.op_type == "Shape":
            continue
        index = output_of(node, env, final, used)
        out = node.outputs[index]
        size = env[out].numel() // 2 if isinstance(env.get(out), Tensor) else 0
        keep = [
            name for name, _ in state.slots if last_use.get(name, -1) > i or (name == final and out != final)
        ]
        if problems:  # the network will not be built: only collect what else is unsupported
            if len(live_idx) == 1:
                _, problem, _ = _convert(
                    node, live_idx[0], env, out in tail, index, softmax, batch_consts, layouts, ints
                )
                if problem:
                    problems.append((node.name, f"{node.op_type} ({problem})"))
            continue
        try:
            if node.op_type == "Split" and len(live_idx) == 1 and live_idx[0] == 0:
                layers += split_layers(state, node, node.inputs[0], keep, env)
                continue
            if len(live_idx) > 1:
                if node.op_type in ("Add", "Sub", "Concat", "Where", "Sum"):
                    if any(layouts.get(node.inputs[j]) != STANDARD for j in live_idx):
                        raise BoundOpError(
                            "combining tensors whose batch axis is not the first is not supported"
                        )
                    layers += state.combine(node, live_idx, keep, env, size)
                else:
                    layers += combine_nonlinear(state, node, live_idx, keep, env, producers, layouts)
                continue
        except (BoundOpError, RuntimeError, IndexError) as exc:  # a shape the probe cannot replay: reported
            problems.append((node.name, f"{node.op_type} ({exc})"))
            continue
        new_layers, problem, dropped = _convert(
            node, live_idx[0], env, out in tail, index, softmax, batch_consts, layouts, ints
        )
        if problem:
            problems.append((node.name, f"{node.op_type} ({problem})"))
            continue
        src = node.inputs[live_idx[0]]
        layers += state.route(keep, [src])
        layers += _embed(new_layers, state.size - state.sizes[src]) if len(state.slots) > 1 else new_layers
        state.replace_last(out, size)
        softmax = softmax or dropped
    if not problems:
        layers += state.route([], [final]) if [n for n, _ in state.slots] != [final] else []
    if problems:
        raise UnsupportedOpsError(problems, source)
    net = Network(fuse_affine(layers), math.prod(module.sample_shape), output_softmax=softmax)
    check_reproduces(net, probe[:2], env[final], layouts.get(final), source)
    return net


def fuse_affine(layers: list[Layer]) -> list[Layer]:
    """Merge neighbouring Dense/Diag layers (MatMul+Add, Gemm+Mul, normalisation prefixes, Conv+BN).

    Fewer layers make every backward pass cheaper; the products are formed in float64, whose
    rounding (1e-16 relative) is far inside the final margin of ``bounds.final_margin``.
    """
    out: list[Layer] = []
    for layer in layers:
        prev = out[-1] if out else None
        merged = _merge(prev, layer) if prev is not None else None
        if merged is None:
            out.append(layer)
        else:
            out[-1] = merged
    return out


def _merge(first: Layer, second: Layer) -> Layer | None:
    if isinstance(first, Diag) and isinstance(second, Diag):
        return Diag(second.scale * first.scale, second.scale * first.shift + second.shift)
    if isinstance(first, Dense) and isinstance(second, Diag):
        return Dense(second.scale.unsqueeze(1) * first.weight, second.scale * first.bias + second.shift)
    if isinstance(first, Diag) and isinstance(second, Dense):
        return Dense(second.weight * first.scale, second.weight @ first.shift + second.bias)
    if isinstance(first, Conv) and isinstance(second, Diag):
        c_out = first.geo.out_shape[0]
        scale, shift = second.scale.reshape(c_out, -1), second.shift.reshape(c_out, -1)
        if bool((scale == scale[:, :1]).all()) and bool((shift == shift[:, :1]).all()):
            s, t = scale[:, 0], shift[:, 0]
            bias = first.bias_map.reshape(c_out, -1)[:, 0]
            return Conv(first.weight * s.reshape(-1, 1, 1, 1), s * bias + t, first.geo)
    return None


def _needed_nodes(nodes: tuple[Node, ...], final: str) -> list[Node]:
    """The nodes the first output depends on, in graph order (dead branches dropped)."""
    needed, keep = {final}, []
    for node in reversed(nodes):
        if any(o in needed for o in node.outputs):
            keep.append(node)
            needed.update(name for name in node.inputs if name)
    return keep[::-1]


class _State:
    """The computed tensors kept along a branching graph, as ordered (name, size) slots."""

    def __init__(self, slots: list[tuple[str, int]]) -> None:
        self.slots = slots

    @property
    def size(self) -> int:
        return sum(n for _, n in self.slots)

    @property
    def sizes(self) -> dict[str, int]:
        return dict(self.slots)

    def offset(self, name: str) -> int:
        pos = 0
        for slot, n in self.slots:
            if slot == name:
                return pos
            pos += n
        raise KeyError(name)

    def route(self, keep: list[str], tail: list[str]) -> list[Layer]:
        """A ``Select`` laying the state out as the kept slots then ``tail`` (nothing when already so)."""
        order = [name for name, _ in self.slots if name in keep] + tail
        if [n for n, _ in self.slots] == order:
            return []
        sizes, n_in = self.sizes, self.size
        idx = torch.cat([torch.arange(sizes[name]) + self.offset(name) for name in order]).unsqueeze(1)
        self.slots = [(name, sizes[name]) for name in order]
        return [
            Select(
                idx,
                torch.ones(idx.shape, dtype=torch.float64),
                torch.zeros(idx.shape[0], dtype=torch.float64),
                n_in,
            )
        ]

    def replace_last(self, name: str, size: int) -> None:
        self.slots[-1] = (name, size)

    def combine(
        self, node: Node, live_idx: list[int], keep: list[str], env: dict[str, Any], size: int
    ) -> list[Layer]:
        """A ``Select`` for Add/Sub/Concat of computed tensors: kept slots, then the node's output."""
        if node.op_type not in ("Add", "Sub", "Concat", "Where", "Sum"):
            raise BoundOpError("only Add, Sub and Concat may combine two computed tensors (branching graph)")
        n_in, sizes = self.size, self.sizes
        consts = [env[name] if name and j not in live_idx else None for j, name in enumerate(node.inputs)]

        def run(fill: dict[int, Tensor], with_consts: bool) -> Tensor:
            args: list[Any] = []
            for j, name in enumerate(node.inputs):
                if j in live_idx:
                    base = env[name][:1].double()
                    args.append(fill[j].reshape(base.shape) if j in fill else torch.zeros_like(base))
                else:
                    c = consts[j]
                    args.append(
                        c
                        if with_consts or not isinstance(c, Tensor) or not c.is_floating_point()
                        else torch.zeros_like(c)
                    )
            out = handler_for(node.op_type)(node, args, RunContext(1, None))  # type: ignore[misc]
            return (out[0] if isinstance(out, tuple) else out).reshape(-1).double()

        terms_idx, terms_w = [], []
        for j in live_idx:
            pos = torch.arange(sizes[node.inputs[j]], dtype=torch.float64) + self.offset(node.inputs[j]) + 1
            coded = run({j: pos}, False)
            terms_idx.append(coded.abs().round().long() - 1)
            terms_w.append(torch.sign(coded))
        bias = run({}, True)
        idx, weight = torch.stack(terms_idx, 1), torch.stack(terms_w, 1)
        head = (
            torch.cat([torch.arange(sizes[name]) + self.offset(name) for name in keep])
            if keep
            else torch.zeros(0)
        )
        pad = torch.full((head.numel(), idx.shape[1] - 1), -1)
        full_idx = torch.cat([torch.cat([head.long().unsqueeze(1), pad], 1), idx])
        full_w = torch.cat([torch.ones(head.numel(), idx.shape[1], dtype=torch.float64), weight])
        full_b = torch.cat([torch.zeros(head.numel(), dtype=torch.float64), bias])
        layer = Select(full_idx, full_w, full_b, n_in)
        x = torch.randn(3, n_in, dtype=torch.float64)
        expected = run(
            {
                j: x[0, self.offset(node.inputs[j]) : self.offset(node.inputs[j]) + sizes[node.inputs[j]]]
                for j in live_idx
            },
            True,
        )
        if bias.numel() != size or not torch.allclose(
            layer.forward(x[:1])[0, head.numel() :], expected, atol=1e-9
        ):
            raise BoundOpError(
                "the combination is not a selection/sum of its inputs (e.g. broadcasting over them)"
            )
        self.slots = [(name, sizes[name]) for name in keep] + [(node.outputs[0], size)]
        return [layer]


def _embed(layers: list[Layer], keep: int) -> list[Layer]:
    """``layers`` acting on the last values of the state, the first ``keep`` values passing through."""
    if keep == 0:
        return layers
    out: list[Layer] = []
    for layer in layers:
        if isinstance(layer, Affine):
            out.append(Embedded(layer, keep))
        elif isinstance(layer, Activation):
            out.append(EmbeddedActivation(layer, keep))
        elif isinstance(layer, NonlinearMap):
            out.append(layer.embedded(keep))
        elif isinstance(layer, MaxPool):
            head = torch.full((keep, layer.windows.shape[1]), -1, dtype=torch.long)
            head[:, 0] = torch.arange(keep)
            windows = torch.where(layer.windows >= 0, layer.windows + keep, layer.windows)
            out.append(MaxPool(torch.cat([head, windows]), keep + layer.n_in))
        else:
            raise BoundOpError(f"{type(layer).__name__} cannot act on one branch of a graph")
    return out


def _convert(
    node: Node,
    live_index: int,
    env: dict[str, Any],
    is_last: bool,
    output_index: int = 0,
    tail_dropped: bool = False,
    batch_consts: set[str] | None = None,
    layouts: dict[str, Layout] | None = None,
    batch_ints: dict[str, tuple[Tensor, Tensor]] | None = None,
) -> tuple[list[Layer], str, bool]:
    """The node's layers, the reason when it has none, and whether it dropped itself as a final Softmax."""
    op = bound_op_for(node.op_type)
    if op is None:
        return [], "no bound operator", False
    name_in, name_out = node.inputs[live_index], node.outputs[output_index]
    x_in, x_out = env[name_in], env[name_out]
    lay_in, lay_out = (layouts or {}).get(name_in), (layouts or {}).get(name_out)
    if lay_in is None or lay_out is None or not isinstance(x_out, Tensor):
        return [], "mixes the batch axis", False
    if STANDARD not in (lay_in, lay_out) or lay_in != lay_out:
        if op in AFFINE_OPS:
            op = probe_affine  # the probe runs the op with the batch where the graph has it
        elif not (lay_in == lay_out and node.op_type in LAYOUT_FREE):
            why = (
                "the batch axis is not the first one here; only affine and elementwise ops are bounded there"
            )
            return [], why, False
    consts = [None if i == live_index or not name else env[name] for i, name in enumerate(node.inputs)]
    ctx = OpContext(
        node,
        consts,
        live_index,
        sample_shape(x_in, lay_in),
        sample_shape(x_out, lay_out),
        is_last,
        output_index,
        tail_dropped,
        batch_consts=tuple(
            i for i, name in enumerate(node.inputs) if i != live_index and name in (batch_consts or ())
        ),
        in_layout=lay_in,
        out_layout=lay_out,
        batch_ints={
            i: (batch_ints or {})[name] for i, name in enumerate(node.inputs) if name in (batch_ints or {})
        },
    )
    try:
        return op(ctx), "", ctx.dropped_tail
    except (
        BoundOpError,
        RuntimeError,
        IndexError,
    ) as exc:  # e.g. a constant that follows the batch elsewhere
        return [], str(exc)[:300], False
