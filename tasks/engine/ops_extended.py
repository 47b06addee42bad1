"""Executor handlers for the ops that common exporters emit beyond plain CNNs and MLPs.

Activations of mobile nets (HardSwish, HardSigmoid, ReLU6 as Clip), transformers (Erf/Gelu,
LayerNormalization and its decomposed form, Softmax and MatMul inside the network), the
normalisations and layers of other vision nets (InstanceNormalization, which GroupNorm exports to,
PRelu, ConvTranspose, GlobalMaxPool), the shape
arithmetic of dynamic exports (Where/Equal/Expand/Mod/Range on constants), and element-wise math.
Each handler follows the ONNX operator definition (onnx.ai/onnx/operators) for opsets 13 to 20.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F  # noqa: N812

if TYPE_CHECKING:
    from nnassay.tasks.engine.onnx_torch import Node, RunContext

Tensor = torch.Tensor


def _unary(fn: Callable[[Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        return fn(xs[0])

    return handler


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        return fn(xs[0], xs[1])

    return handler


def _variadic(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out

    return handler


def _hard_sigmoid(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
    return torch.clamp(alpha * xs[0] + beta, 0.0, 1.0)


def _hard_swish(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0] * torch.clamp(xs[0] / 6.0 + 0.5, 0.0, 1.0)


def _gelu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return F.gelu(xs[0], approximate="tanh" if node.attr("approximate", "none") == "tanh" else "none")


def _elu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return F.elu(xs[0], alpha=float(node.attr("alpha", 1.0)))


def _selu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    alpha = float(node.attr("alpha", 1.67326319217681884765625))
    gamma = float(node.attr("gamma", 1.05070102214813232421875))
    return gamma * torch.where(xs[0] > 0, xs[0], alpha * (torch.exp(xs[0]) - 1.0))


def _pow(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    base, exponent = xs[0], xs[1]
    if exponent.numel() == 1 and float(exponent) == 2.0:
        return base * base  # exact and with a defined gradient at 0
    return torch.pow(base, exponent.to(base.dtype) if base.is_floating_point() else exponent)


def _where(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    cond, a, b = xs[0].to(torch.bool), xs[1], xs[2]
    if a.is_floating_point() != b.is_floating_point():
        dtype = a.dtype if a.is_floating_point() else b.dtype
        a, b = a.to(dtype), b.to(dtype)
    return torch.where(cond, a, b)


def _compare(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        a, b = xs[0], xs[1]
        if a.dtype != b.dtype:
            common = torch.promote_types(a.dtype, b.dtype)
            a, b = a.to(common), b.to(common)
        return fn(a, b)

    return handler


def _mod(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.fmod(xs[0], xs[1]) if node.attr("fmod", 0) else torch.remainder(xs[0], xs[1])


def _expand(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, shape = xs[0], [int(v) for v in xs[1].tolist()]
    rank = max(x.dim(), len(shape))
    target = [1] * (rank - len(shape)) + shape
    current = [1] * (rank - x.dim()) + list(x.shape)
    out = [c if t == 1 else t for c, t in zip(current, target, strict=True)]
    return x.reshape(current).expand(out)


def _range(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    start, limit, delta = (x.reshape(()) for x in xs[:3])
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


def _split(node: Node, xs: list[Any], ctx: RunContext) -> tuple[Tensor, ...]:
    x, axis = xs[0], int(node.attr("axis", 0))
    sizes = xs[1].tolist() if len(xs) > 1 and xs[1] is not None else node.attr("split")
    if sizes is None:
        parts = int(node.attr("num_outputs", len(node.outputs)))
        chunk = math.ceil(x.shape[axis] / parts)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(parts)]
    return tuple(torch.split(x, [int(s) for s in sizes], dim=axis))


def _tile(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return xs[0].repeat(*[int(v) for v in xs[1].tolist()])


def _reduce_axes(node: Node, xs: list[Any], x: Tensor) -> list[int] | None:
    if node.opset >= 18 or node.op_type == "ReduceSum" and node.opset >= 13:
        axes = xs[1].tolist() if len(xs) > 1 and xs[1] is not None and xs[1].numel() else None
    else:
        axes = node.attr("axes")
    if axes is None:
        return None if not node.attr("noop_with_empty_axes", 0) else []
    return [int(a) % x.dim() for a in axes]


def _reduce(
    fn: Callable[[Tensor, list[int], bool], Tensor],
) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        x, keep = xs[0], bool(node.attr("keepdims", 1))
        axes = _reduce_axes(node, xs, x)
        if axes == []:
            return x
        return fn(x, list(range(x.dim())) if axes is None else axes, keep)

    return handler


def _amax(x: Tensor, axes: list[int], keep: bool) -> Tensor:
    return torch.amax(x, dim=axes, keepdim=keep)


def _amin(x: Tensor, axes: list[int], keep: bool) -> Tensor:
    return torch.amin(x, dim=axes, keepdim=keep)


def _arg(fn: Callable[..., Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        x, axis, keep = xs[0], int(node.attr("axis", 0)), bool(node.attr("keepdims", 1))
        if node.attr("select_last_index", 0):
            flipped = fn(torch.flip(x, [axis]), dim=axis, keepdim=keep)
            return x.shape[axis] - 1 - flipped
        return fn(x, dim=axis, keepdim=keep)

    return handler


def _layer_normalization(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, scale = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 else None
    axis = int(node.attr("axis", -1)) % x.dim()
    return F.layer_norm(x, list(x.shape[axis:]), scale, bias, eps=float(node.attr("epsilon", 1e-5)))


def _source_coords(node: Node, out_len: int, in_len: int, scale: float, dtype: torch.dtype) -> Tensor:
    """Input coordinate of each output position on one axis (ONNX Resize's coordinate transform)."""
    x = torch.arange(out_len, dtype=torch.float32)  # ONNX Runtime's precision: the same rounding ties
    mode = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    if mode == "half_pixel":
        src = (x + 0.5) / scale - 0.5
    elif mode == "pytorch_half_pixel":
        src = (x + 0.5) / scale - 0.5 if out_len > 1 else torch.zeros_like(x)
    elif mode == "align_corners":
        src = x * (in_len - 1) / (out_len - 1) if out_len > 1 else torch.zeros_like(x)
    elif mode == "asymmetric":
        src = x / scale
    elif mode == "tf_half_pixel_for_nn":
        src = (x + 0.5) / scale
    else:
        raise ValueError(
            f"node {node.name!r}: Resize coordinate_transformation_mode={mode!r} is not supported; "
            "expected half_pixel, pytorch_half_pixel, align_corners, asymmetric or tf_half_pixel_for_nn"
        )
    return src.to(dtype)


def _resize_axis(node: Node, x: Tensor, axis: int, out_len: int, scale: float) -> Tensor:
    """``x`` resized along ``axis`` by nearest or linear interpolation (separable, so exact per axis)."""
    in_len = x.shape[axis]
    src = _source_coords(node, out_len, in_len, scale, torch.float64)
    if node.attr("mode", "nearest") == "nearest":
        rounding = node.attr("nearest_mode", "round_prefer_floor" if node.opset >= 11 else "floor")
        pick = {
            "round_prefer_floor": lambda v: torch.ceil(v - 0.5),
            "round_prefer_ceil": lambda v: torch.floor(v + 0.5),
            "floor": torch.floor,
            "ceil": torch.ceil,
        }[rounding]
        index = pick(src).clamp(0, in_len - 1).long()
        return torch.index_select(x, axis, index)
    src = src.clamp(0, in_len - 1)
    low = torch.floor(src).long()
    high = (low + 1).clamp(max=in_len - 1)
    shape = [1] * x.dim()
    shape[axis] = out_len
    weight = (src - low).to(x.dtype).reshape(shape)
    return torch.index_select(x, axis, low) * (1 - weight) + torch.index_select(x, axis, high) * weight


def _resize_targets(node: Node, xs: list[Any], x: Tensor) -> tuple[list[int], list[float]]:
    """Output length and scale of every axis, from ``sizes`` or ``scales`` (opset 10: the 2nd input;
    Upsample before opset 9: the ``scales`` attribute), over ``axes`` when the node names them."""
    if node.op_type == "Upsample" or node.opset < 11:
        given = xs[1] if len(xs) > 1 and xs[1] is not None else torch.tensor(node.attr("scales"))
        scales, sizes = given, None
    else:
        sizes = xs[3] if len(xs) > 3 and xs[3] is not None and xs[3].numel() else None
        scales = xs[2] if len(xs) > 2 and xs[2] is not None and xs[2].numel() else None
    axes = [int(a) % x.dim() for a in node.attr("axes", range(x.dim()))]
    lengths, factors = list(x.shape), [1.0] * x.dim()
    for k, axis in enumerate(axes):
        if sizes is not None:
            lengths[axis] = int(sizes.reshape(-1)[k])
            factors[axis] = lengths[axis] / x.shape[axis]
        elif scales is not None:
            factors[axis] = float(scales.reshape(-1)[k])
            lengths[axis] = math.floor(x.shape[axis] * factors[axis])
    return lengths, factors


def _resize(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    """ONNX Resize (and Upsample): nearest and (bi)linear follow the ONNX coordinate transform and
    rounding exactly, axis by axis; cubic uses torch's bicubic (coefficient -0.75, as ONNX's default)."""
    x, mode = xs[0], node.attr("mode", "nearest")
    if node.attr("antialias", 0) or node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise ValueError(
            f"node {node.name!r}: Resize with antialias or keep_aspect_ratio_policy is not supported"
        )
    lengths, factors = _resize_targets(node, xs, x)
    if mode == "cubic":
        align = node.attr("coordinate_transformation_mode", "half_pixel") == "align_corners"
        return F.interpolate(x, size=lengths[2:], mode="bicubic", align_corners=align)
    if mode not in ("nearest", "linear"):
        raise ValueError(f"node {node.name!r}: Resize mode {mode!r} is not supported")
    for axis in range(x.dim()):
        if lengths[axis] != x.shape[axis] or factors[axis] != 1.0:
            x = _resize_axis(node, x, axis, lengths[axis], factors[axis])
    return x


def _bool_binary(fn: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Node, list[Any], RunContext], Tensor]:
    def handler(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
        return fn(xs[0].to(torch.bool), xs[1].to(torch.bool))

    return handler


def _instance_normalization(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    x, scale, bias = xs[0], xs[1].to(xs[0].dtype), xs[2].to(xs[0].dtype)  # Constant nodes stay float32
    return F.instance_norm(x, weight=scale, bias=bias, eps=float(node.attr("epsilon", 1e-5)))


def _prelu(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    """``x`` where ``x >= 0``, else ``slope * x`` (slope broadcast to ``x``: per channel from torch)."""
    x, slope = xs[0], xs[1].to(xs[0].dtype)
    return torch.where(x >= 0, x, slope * x)


def _conv_transpose_pads(node: Node, x: Tensor, full: list[int], n: int) -> list[int]:
    """Begin and end crop of each spatial axis: ``pads``, or those ``output_shape``/``auto_pad`` imply."""
    shape = node.attr("output_shape")
    auto = node.attr("auto_pad", "NOTSET")
    if shape is None and auto in ("NOTSET", "VALID"):
        return list(node.attr("pads", [0] * (2 * n)))
    strides = node.attr("strides", [1] * n)
    target = list(shape)[-n:] if shape is not None else [x.shape[2 + i] * strides[i] for i in range(n)]
    total = [full[i] - target[i] for i in range(n)]
    upper = auto == "SAME_UPPER"
    begin = [t // 2 if upper else t - t // 2 for t in total]
    return begin + [t - b for t, b in zip(total, begin, strict=True)]


def _conv_transpose(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    """Transposed convolution: the full output of F.conv_transpose, then ``output_padding`` and pads."""
    x, w = xs[0], xs[1]
    bias = xs[2] if len(xs) > 2 and xs[2] is not None else None
    n = x.dim() - 2
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
    out = conv(
        x,
        w,
        None,
        stride=node.attr("strides", [1] * n),
        groups=int(node.attr("group", 1)),
        dilation=node.attr("dilations", [1] * n),
    )
    extra = list(node.attr("output_padding", [0] * n))
    out = F.pad(out, [p for i in reversed(range(n)) for p in (0, extra[i])])
    pads = _conv_transpose_pads(node, x, list(out.shape[2:]), n)
    index = [slice(None), slice(None)] + [slice(pads[i], out.shape[2 + i] - pads[i + n]) for i in range(n)]
    out = out[tuple(index)]
    return out if bias is None else out + bias.reshape(1, -1, *([1] * n))


def _global_max_pool(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return torch.amax(xs[0], dim=tuple(range(2, xs[0].dim())), keepdim=True)


def _mean(node: Node, xs: list[Any], ctx: RunContext) -> Tensor:
    return _variadic(torch.add)(node, xs, ctx) / len(xs)


HANDLERS: dict[str, Callable[[Node, list[Any], RunContext], Any]] = {
    "Abs": _unary(torch.abs),
    "And": _bool_binary(torch.logical_and),
    "ArgMax": _arg(torch.argmax),
    "ArgMin": _arg(torch.argmin),
    "Ceil": _unary(torch.ceil),
    "ConvTranspose": _conv_transpose,
    "Elu": _elu,
    "Equal": _compare(torch.eq),
    "Erf": _unary(torch.erf),
    "Exp": _unary(torch.exp),
    "Expand": _expand,
    "Floor": _unary(torch.floor),
    "Gelu": _gelu,
    "GlobalMaxPool": _global_max_pool,
    "Greater": _compare(torch.gt),
    "GreaterOrEqual": _compare(torch.ge),
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "InstanceNormalization": _instance_normalization,
    "LayerNormalization": _layer_normalization,
    "Less": _compare(torch.lt),
    "LessOrEqual": _compare(torch.le),
    "Log": _unary(torch.log),
    "Max": _variadic(torch.maximum),
    "Mean": _mean,
    "Min": _variadic(torch.minimum),
    "Mod": _mod,
    "Not": _unary(torch.logical_not),
    "Or": _bool_binary(torch.logical_or),
    "Pow": _pow,
    "PRelu": _prelu,
    "Range": _range,
    "Reciprocal": _unary(torch.reciprocal),
    "ReduceL2": _reduce(lambda x, a, k: torch.sqrt(torch.sum(x * x, dim=a, keepdim=k))),
    "ReduceLogSumExp": _reduce(lambda x, a, k: torch.logsumexp(x, dim=a, keepdim=k)),
    "ReduceMax": _reduce(_amax),
    "ReduceMean": _reduce(lambda x, a, k: torch.mean(x, dim=a, keepdim=k)),
    "ReduceMin": _reduce(_amin),
    "ReduceSum": _reduce(lambda x, a, k: torch.sum(x, dim=a, keepdim=k)),
    "ReduceSumSquare": _reduce(lambda x, a, k: torch.sum(x * x, dim=a, keepdim=k)),
    "Resize": _resize,
    "Upsample": _resize,
    "Selu": _selu,
    "Sign": _unary(torch.sign),
    "Softplus": _unary(F.softplus),
    "Softsign": _unary(F.softsign),
    "Split": _split,
    "Sqrt": _unary(torch.sqrt),
    "Sum": _variadic(torch.add),
    "Tile": _tile,
    "Where": _where,
    "Xor": _bool_binary(torch.logical_xor),
}
