"""Execute an ONNX graph op by op in torch: differentiable, any batch size, float32 or float64.

Shared by the empirical attacks (gradients) and the formal verifier (falsifier, constant folding).
One handler per ONNX op type, looked up in ``HANDLERS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)
from onnx import numpy_helper

from nnassay.tasks.engine import ops_extended, ops_ml, ops_recurrent

Tensor = torch.Tensor


class UnsupportedOpsError(Exception):
    """The graph holds ops the torch executor cannot run; ``nodes`` lists every one of them."""

    def __init__(self, nodes: list[tuple[str, str]], source: str = "") -> None:
        self.nodes = nodes
        listed = ", ".join(f"{name!r} ({op})" for name, op in nodes)
        super().__init__(
            f"{source or 'the ONNX model'}: {len(nodes)} unsupported node(s): {listed}; export the model "
            "without these ops or add a handler to HANDLERS in tasks/engine/onnx_torch.py (supported op "
            f"types: {supported_ops()})"  # the list last: a shortened message keeps what matters
        )


@dataclass(frozen=True)
class Node:
    """One ONNX node with its attributes decoded to Python values."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 13

    def attr(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when the node does not set it."""
        return self.attrs.get(key, default)


@dataclass
class RunContext:
    """What a handler may need besides its inputs: the batch size of this call and the declared one."""

    batch: int
    declared_batch: int | None


Handler = Callable[[Node, list[Any], RunContext], Any]


# ---------------------------------------------------------------------------------------------- ops
def _identity(node: Node, xs: list[Any], ctx: RunContext) -> Any:
    return xs[0]


def _cast(node: Node, xs: list[Any], ctx: RunContext) -> Any:
    to = int(node.attr("to", 1))
    np_type = onnx.helper.tensor_dtype_to_np_dtype(to)
    if np.issubdtype(np_type, np.floating):  # the graph's working precision (float32 constants, or
        return xs[0].to(_float_of(xs[0]))  # all float64 after .double()): skl2onnx casts to double mid-graph
    return xs[0].to(torch.int64) if np.issubdtype(np_type, np.integer) else xs[0].to(torch.bool)


def _float_of(x: Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


def _constant(node: Node, xs: list[Any], ctx: RunContext) -> Any:
    return node.attr("value")


def _gemm(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    a, b = xs[0], xs[1]
    a = a.transpose(-1, -2) if node.attr("transA", 0) else a
    b = b.transpose(-1, -2) if node.attr("transB", 0) else b
    out = node.attr("alpha", 1.0) * (a @ b)
    if len(xs) > 2 and xs[2] is not None:
        out = out + node.attr("beta", 1.0) * xs[2]
    return out


def _mat_mul(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.matmul(xs[0], xs[1])


def _add(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0] + xs[1]


def _sub(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0] - xs[1]


def _mul(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0] * xs[1]


def _div(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    if not xs[0].is_floating_point() and not xs[1].is_floating_point():
        return torch.div(xs[0], xs[1], rounding_mode="trunc")
    return xs[0] / xs[1]


def _neg(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return -xs[0]


def _relu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.relu(xs[0])


def _leaky_relu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return F.leaky_relu(xs[0], float(node.attr("alpha", 0.01)))


def _sigmoid(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.sigmoid(xs[0])


def _tanh(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.tanh(xs[0])


def _clip(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    if node.opset < 11:
        low, high = node.attr("min", -math.inf), node.attr("max", math.inf)
    else:
        low = xs[1] if len(xs) > 1 and xs[1] is not None else -math.inf
        high = xs[2] if len(xs) > 2 and xs[2] is not None else math.inf
    low = float(low) if isinstance(low, Tensor) else low
    high = float(high) if isinstance(high, Tensor) else high
    return torch.clamp(xs[0], min=low if low > -math.inf else None, max=high if high < math.inf else None)


def _pads_nd(node: Node, n: int) -> tuple[list[int], bool]:
    """ONNX pads (begin..., end...) for an op over ``n`` spatial axes; True when begin != end."""
    pads = list(node.attr("pads", [0] * (2 * n)))
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET", "VALID", b"VALID"):
        raise ValueError(
            f"node {node.name!r}: auto_pad={node.attr('auto_pad')!r} is not supported; "
            "export with explicit pads"
        )
    return pads, pads[:n] != pads[n:]


def _torch_pads(pads: list[int], n: int) -> list[int]:
    """ONNX (begin..., end...) pads as F.pad's (last axis first, begin then end)."""
    return [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])]


def _conv(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, w = xs[0], xs[1]
    b = xs[2] if len(xs) > 2 else None
    n = x.dim() - 2
    pads, asym = _pads_nd(node, n)
    if asym:
        x = F.pad(x, _torch_pads(pads, n))
        pads = [0] * (2 * n)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return conv(
        x,
        w,
        b,
        stride=node.attr("strides", [1] * n),
        padding=pads[:n],
        dilation=node.attr("dilations", [1] * n),
        groups=node.attr("group", 1),
    )


def _batch_normalization(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, scale, bias, mean, var = xs[:5]
    shape = [1, -1] + [1] * (x.dim() - 2)
    inv = scale / torch.sqrt(var + node.attr("epsilon", 1e-5))
    return (x - mean.reshape(shape)) * inv.reshape(shape) + bias.reshape(shape)


def _max_pool(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0]
    n = x.dim() - 2
    pads, asym = _pads_nd(node, n)
    if asym:
        x = F.pad(x, _torch_pads(pads, n), value=-math.inf)
        pads = [0] * (2 * n)
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[n]
    return pool(
        x,
        node.attr("kernel_shape"),
        node.attr("strides", [1] * n),
        pads[:n],
        node.attr("dilations", [1] * n),
        bool(node.attr("ceil_mode", 0)),
    )


def _average_pool(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0]
    n = x.dim() - 2
    pads, asym = _pads_nd(node, n)
    include = bool(node.attr("count_include_pad", 0))
    if asym:
        if not include:
            raise ValueError(f"node {node.name!r}: asymmetric pads need count_include_pad=1")
        x = F.pad(x, _torch_pads(pads, n))
        pads = [0] * (2 * n)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[n]
    return pool(  # type: ignore[operator]
        x,
        node.attr("kernel_shape"),
        node.attr("strides", [1] * n),
        pads[:n],
        bool(node.attr("ceil_mode", 0)),
        include,
    )


def _global_average_pool(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0].mean(dim=tuple(range(2, xs[0].dim())), keepdim=True)


def _flatten(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    axis = node.attr("axis", 1)
    x = xs[0]
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def _reshape(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, target = xs[0], [int(v) for v in xs[1].tolist()]
    shape = [x.shape[i] if v == 0 and not node.attr("allowzero", 0) else v for i, v in enumerate(target)]
    if (
        ctx.declared_batch is not None
        and shape
        and shape[0] == ctx.declared_batch != ctx.batch
        and x.dim() > 0
        and x.shape[0] == ctx.batch
    ):
        shape[0] = ctx.batch  # a batch size frozen into the graph at export time
    return x.reshape(shape)


def _transpose(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    perm = node.attr("perm") or list(reversed(range(xs[0].dim())))
    return xs[0].permute(*perm)


def _concat(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    parts = [x for x in xs if x is not None and x.numel() > 0] or [xs[0]]
    if any(p.is_floating_point() for p in parts):
        dtype = next(p.dtype for p in parts if p.is_floating_point())
        parts = [p.to(dtype) for p in parts]
    return torch.cat(parts, dim=node.attr("axis"))


def _softmax(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0]
    axis = node.attr("axis", 1 if node.opset < 13 else -1)
    if node.opset >= 13:
        return torch.softmax(x, dim=axis)
    axis = axis + x.dim() if axis < 0 else axis
    flat = x.reshape(math.prod(x.shape[:axis]), -1)
    return torch.softmax(flat, dim=1).reshape(x.shape)


def _axes(node: Node, xs: list[Any]) -> list[int] | None:
    if len(xs) > 1 and xs[1] is not None:
        return [int(v) for v in xs[1].tolist()]
    axes = node.attr("axes")
    return None if axes is None else list(axes)


def _squeeze(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, axes = xs[0], _axes(node, xs)
    if axes is None:
        return x.squeeze()
    axes = sorted((a + x.dim()) % x.dim() for a in axes)
    keep = [s for i, s in enumerate(x.shape) if i not in axes]
    return x.reshape(keep)


def _unsqueeze(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, axes = xs[0], _axes(node, xs) or []
    rank = x.dim() + len(axes)
    for a in sorted((a + rank) % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _shape(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    shape = list(xs[0].shape)
    start, end = node.attr("start", 0), node.attr("end", len(shape))
    return torch.tensor(shape[start:end], dtype=torch.int64)


def _gather(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    data, idx = xs[0], xs[1].to(torch.int64)
    axis = node.attr("axis", 0) % data.dim()
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    out = torch.index_select(data, axis, idx.reshape(-1))
    return out.reshape([*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]])


def _slice(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0]
    if node.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes, steps = node.attr("axes") or list(range(len(starts))), [1] * len(starts)
    else:
        starts, ends = xs[1].tolist(), xs[2].tolist()
        axes = xs[3].tolist() if len(xs) > 3 and xs[3] is not None else list(range(len(starts)))
        steps = xs[4].tolist() if len(xs) > 4 and xs[4] is not None else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step != 1:
            raise ValueError(f"node {node.name!r}: Slice step {step} is not supported; expected 1")
        dim = x.shape[axis]
        index[axis] = slice(max(min(start, dim), -dim), max(min(end, dim), -dim - 1))
    return x[tuple(index)]


def _pad(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x = xs[0]
    pads = list(node.attr("pads")) if node.opset < 11 else xs[1].tolist()
    value = (
        node.attr("value", 0.0)
        if node.opset < 11
        else (float(xs[2]) if len(xs) > 2 and xs[2] is not None else 0.0)
    )
    if node.attr("mode", "constant") not in ("constant", b"constant"):
        raise ValueError(
            f"node {node.name!r}: Pad mode {node.attr('mode')!r} is not supported; expected 'constant'"
        )
    n = x.dim()
    torch_pads = [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])]
    return F.pad(x, torch_pads, value=value)


def _constant_of_shape(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    value = node.attr("value")
    fill = value.reshape(-1)[0] if isinstance(value, Tensor) else torch.tensor(0.0)
    return torch.full([int(v) for v in xs[0].tolist()], fill.item(), dtype=fill.dtype)


HANDLERS: dict[str, Handler] = {
    "Add": _add,
    "AveragePool": _average_pool,
    "BatchNormalization": _batch_normalization,
    "Cast": _cast,
    "Clip": _clip,
    "Concat": _concat,
    "Constant": _constant,
    "ConstantOfShape": _constant_of_shape,
    "Conv": _conv,
    "Div": _div,
    "Dropout": _identity,
    "Flatten": _flatten,
    "Gather": _gather,
    "Gemm": _gemm,
    "GlobalAveragePool": _global_average_pool,
    "Identity": _identity,
    "LeakyRelu": _leaky_relu,
    "MatMul": _mat_mul,
    "MaxPool": _max_pool,
    "Mul": _mul,
    "Neg": _neg,
    "Pad": _pad,
    "Relu": _relu,
    "Reshape": _reshape,
    "Shape": _shape,
    "Sigmoid": _sigmoid,
    "Slice": _slice,
    "Softmax": _softmax,
    "Squeeze": _squeeze,
    "Sub": _sub,
    "Tanh": _tanh,
    "Transpose": _transpose,
    "Unsqueeze": _unsqueeze,
    **ops_extended.HANDLERS,
    **ops_recurrent.HANDLERS,
    **ops_ml.HANDLERS,  # keyed "ai.onnx.ml:<OpType>"
}


def supported_ops() -> list[str]:
    """Every ONNX op type the executor runs."""
    return sorted(HANDLERS)


def op_key(op_type: str, domain: str = "") -> str:
    """The ``HANDLERS`` key of an op: its type in the default domain, ``domain:type`` elsewhere."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}:{op_type}"


def handler_for(op_type: str, domain: str = "") -> Handler | None:
    """The handler of ``op_type`` (in ``domain``), or None when there is none."""
    return HANDLERS.get(op_key(op_type, domain))


# --------------------------------------------------------------------------------------- the module
@dataclass(frozen=True)
class ParsedGraph:
    """The parts of an ONNX model the executor needs, decoded once and cached."""

    input_name: str
    input_dims: tuple[int | None, ...]
    output_names: tuple[str, ...]
    output_dims: tuple[int | None, ...]
    constants: dict[str, np.ndarray]
    nodes: tuple[Node, ...]


def parse_graph(model: onnx.ModelProto, source: str = "") -> ParsedGraph:
    """Decode ``model``; raise ``UnsupportedOpsError`` listing every node without a handler."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes, missing = [], []
    for k, n in enumerate(graph.node):
        name = n.name or f"{n.op_type}_{k}"
        key = op_key(n.op_type, n.domain)
        if key not in HANDLERS:
            missing.append((name, key))
            continue
        attrs = {a.name: _attr_value(a) for a in n.attribute}
        nodes.append(Node(name, key, tuple(n.input), tuple(n.output), attrs, opset))
    if missing:
        raise UnsupportedOpsError(missing, source)
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise ValueError(f"{source}: expected exactly one graph input, found {[i.name for i in inputs]}")
    return ParsedGraph(
        inputs[0].name,
        _dims(inputs[0]),
        tuple(o.name for o in graph.output),
        _dims(graph.output[0]),
        constants,
        tuple(nodes),
    )


def _attr_value(attr: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        return torch.from_numpy(numpy_helper.to_array(value).copy())
    if isinstance(value, bytes):
        return value.decode()
    return value


def _dims(value: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


class OnnxModule(torch.nn.Module):
    """An ONNX graph run op by op in torch; the first input axis is the batch, whatever was declared.

    Float constants are buffers, so ``.double()`` turns the whole graph to float64.
    """

    def __init__(self, parsed: ParsedGraph) -> None:
        super().__init__()
        self.parsed = parsed
        self._names: dict[str, str] = {}
        self._int_consts: dict[str, Tensor] = {}
        for k, (name, array) in enumerate(parsed.constants.items()):
            tensor = torch.from_numpy(np.array(array, copy=True))
            if tensor.is_floating_point():
                self._names[name] = f"c{k}"
                self.register_buffer(f"c{k}", tensor.float())
            else:
                self._int_consts[name] = tensor
        dims = parsed.input_dims
        self.declared_batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None
        self.sample_shape = tuple(d if d is not None else -1 for d in dims[1:])

    def _apply(self, fn: Any, recurse: bool = True) -> OnnxModule:
        """``.to(device)``, ``.double()`` etc. reach the integer constants (shapes, indices) too."""
        self._int_consts = {name: fn(t) for name, t in self._int_consts.items()}
        return super()._apply(fn, recurse)  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        """The first graph output for a batch ``x`` (any batch size; flat rows are reshaped)."""
        return self.run(x)[self.parsed.output_names[0]]

    def run(self, x: Tensor) -> dict[str, Tensor]:
        """Every tensor of the graph for the batch ``x``, keyed by its ONNX name."""
        if x.dim() == 2 and len(self.sample_shape) != 1 and -1 not in self.sample_shape:
            x = x.reshape(x.shape[0], *self.sample_shape)
        env: dict[str, Any] = dict(self._int_consts)
        env.update({name: getattr(self, attr) for name, attr in self._names.items()})
        env[self.parsed.input_name] = x
        ctx = RunContext(batch=x.shape[0], declared_batch=self.declared_batch)
        for node in self.parsed.nodes:
            args = [env[i] if i else None for i in node.inputs]
            out = handler_for(node.op_type)(node, args, ctx)  # type: ignore[misc]
            outs = out if isinstance(out, tuple) else (out,)
            env.update(zip(node.outputs, outs, strict=False))
        return env


_CACHE: dict[tuple[str, int, int], ParsedGraph] = {}


def load_onnx_module(path_or_model: Path | str | onnx.ModelProto) -> OnnxModule:
    """A fresh torch module (float32) for an ONNX file or model; parsed files are cached by mtime.

    Raises:
        UnsupportedOpsError: listing every node whose op type has no handler.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        return OnnxModule(parse_graph(path_or_model, "the ONNX model"))
    path = Path(path_or_model).resolve()
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        _CACHE[key] = parse_graph(onnx.load(str(path)), str(path))
    return OnnxModule(_CACHE[key])


def ort_session(path: Path | str | bytes) -> Any:
    """An ONNX Runtime CPU session with quiet logging (a file, or a serialized model)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 2
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_ort(session: Any, inputs: np.ndarray) -> np.ndarray:
    """First output of ``session`` for a batch of inputs (flat rows or full shape), one row per sample.

    Runs the batch in one call when the graph's batch axis is free, else in chunks of the batch size
    frozen into the graph (the last chunk padded with copies of its last row, which are dropped).
    """
    meta = session.get_inputs()[0]
    dtype = np.float64 if meta.type == "tensor(double)" else np.float32
    sample = [d if isinstance(d, int) and d > 0 else -1 for d in meta.shape[1:]]
    batch = (
        np.asarray(inputs, dtype=dtype).reshape(len(inputs), *sample)
        if -1 not in sample
        else np.asarray(inputs, dtype)
    )
    if isinstance(meta.shape[0], int) and meta.shape[0] > 0:
        step = meta.shape[0]
        outs = []
        for i in range(0, len(batch), step):
            chunk = batch[i : i + step]
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], step - len(chunk), axis=0)])
            outs.append(np.asarray(session.run(None, {meta.name: padded})[0])[: len(chunk)])
        if not outs:
            return np.zeros((0, 0), np.float32)
        out = np.concatenate(outs)
    else:
        out = session.run(None, {meta.name: batch})[0]
    return np.asarray(out).reshape(len(inputs), -1)


def max_deviation_from_ort(
    module: torch.nn.Module, onnx_path: Path | str | bytes, inputs: np.ndarray
) -> float:
    """Largest absolute difference between ``module`` and ONNX Runtime on the same model-space inputs."""
    expected = run_ort(ort_session(onnx_path), inputs).astype(np.float64)
    dtype = next((b.dtype for b in module.buffers() if b.is_floating_point()), torch.float32)
    with torch.no_grad():
        got = module(torch.as_tensor(np.asarray(inputs), dtype=dtype)).reshape(len(inputs), -1)
    return float(np.max(np.abs(got.double().numpy() - expected))) if expected.size else 0.0


def model_sample_shape(parsed: ParsedGraph) -> Sequence[int]:
    """Per-sample input shape (batch axis dropped; symbolic dims as -1)."""
    return tuple(d if d is not None else -1 for d in parsed.input_dims[1:])
